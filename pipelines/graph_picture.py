"""Draw the asset graph of the code location, coloured by group: `python -m pipelines.graph_picture OUT.png`."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pipelines.assets_index import GROUPS, PARTITIONED_GROUPS  # noqa: E402

ALL_GROUPS = GROUPS + PARTITIONED_GROUPS


def layered_graph() -> tuple[dict[str, str], dict[str, list[str]], dict[str, int]]:
    """(asset -> group, asset -> parents, asset -> column): columns by longest path from a root."""
    from pipelines.definitions import defs

    graph = defs.resolve_asset_graph()
    groups, parents = {}, {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        name = key.to_user_string()
        groups[name] = node.group_name
        parents[name] = sorted(p.to_user_string() for p in node.parent_keys)
    depth: dict[str, int] = {}

    def column(name: str) -> int:
        if name not in depth:
            depth[name] = 1 + max((column(p) for p in parents[name]), default=-1)
        return depth[name]

    for name in groups:
        column(name)
    return groups, parents, depth


def draw(out: Path) -> Path:
    groups, parents, depth = layered_graph()
    colours = dict(zip(ALL_GROUPS, plt.get_cmap("tab10").colors, strict=False))
    columns: dict[int, list[str]] = {}
    for name in sorted(groups, key=lambda n: (ALL_GROUPS.index(groups[n]), n)):
        columns.setdefault(depth[name], []).append(name)
    pos = {}
    for col, names in columns.items():
        for row, name in enumerate(names):
            pos[name] = (col * 2.6, -(row - (len(names) - 1) / 2) * 1.0)
    fig, ax = plt.subplots(figsize=(2.6 * len(columns) + 1, 1.0 * max(map(len, columns.values())) + 1.5))
    for name, ps in parents.items():
        for p in ps:
            (x0, y0), (x1, y1) = pos[p], pos[name]
            ax.annotate("", xy=(x1 - 1.0, y1), xytext=(x0 + 1.0, y0),
                        arrowprops={"arrowstyle": "->", "color": "#666", "lw": 1})
    for name, (x, y) in pos.items():
        ax.text(x, y, name, ha="center", va="center", fontsize=9, family="monospace",
                bbox={"boxstyle": "round,pad=0.4", "fc": colours[groups[name]], "alpha": 0.35, "ec": "#333"})
    for group in ALL_GROUPS:
        ax.plot([], [], "s", color=colours[group], alpha=0.5, label=group, markersize=10)
    ax.legend(loc="upper center", ncol=len(ALL_GROUPS), frameon=False, bbox_to_anchor=(0.5, 1.08))
    ax.set_xlim(-1.3, 2.6 * (len(columns) - 1) + 1.3)
    ax.set_ylim(min(y for _, y in pos.values()) - 0.8, max(y for _, y in pos.values()) + 0.8)
    ax.axis("off")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


if __name__ == "__main__":
    print(draw(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/asset-graph.png")))
