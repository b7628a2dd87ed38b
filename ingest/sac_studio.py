"""Studio ratings as SAC snapshots (docs/critic.md, "Studio: a person in the loop").

`write_studio_snapshot` puts a session's rated designs where the SAC stage reads them: the PNGs under
`$AESTHETIC_RAW/sac/images/studio/`, then one SQLite file with SAC's tables (the schema `ingest/sac.py` reads)
plus `studio_picks` (each pick with the rank the critic gave it) into `sac/inbox/`. Every file is renamed into
place whole (common/atomic.py), the snapshot last, so the inbox sensor never sees a half-written one or one whose
images are missing; a name already in the inbox is never written again. `studio_summary` reads the picks of a
snapshot back for the `sac_snapshots` asset's metadata.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from common.agreement import agreement
from common.atomic import atomic_path
from ingest.sac_schema import SAC_SCHEMA

PICKS_TABLE = "studio_picks"
PICKS_SCHEMA = (f"CREATE TABLE {PICKS_TABLE} (sid INTEGER, iid INTEGER, round INTEGER, critic_iid INTEGER, "
                "critic_rank INTEGER)")


def write_studio_snapshot(raw: Path, name: str, generations: Sequence[tuple], images: Sequence[tuple],
                          paths: Sequence[tuple], ratings: Sequence[tuple], picks: Sequence[tuple],
                          files: dict[str, Path]) -> str:
    """Write the snapshot `<name>.sqlite` into raw/sac/inbox/ (rows in SAC's column order; files: SAC path ->
    PNG) and return its path. Idempotent by name: a snapshot already in the inbox is left as it is."""
    sac = Path(raw) / "sac"
    dest = sac / "inbox" / f"{name}.sqlite"
    if dest.exists():
        return str(dest)
    for rel, src in files.items():
        target = sac / "images" / rel
        if not target.exists():
            with atomic_path(target, fsync=True) as tmp:
                shutil.copyfile(src, tmp)
    with atomic_path(dest, fsync=True) as tmp:
        con = sqlite3.connect(tmp)
        try:
            con.executescript(SAC_SCHEMA + PICKS_SCHEMA + ";")
            con.executemany("INSERT INTO generations VALUES (?, ?, ?, ?, ?)", generations)
            con.executemany("INSERT INTO images VALUES (?, ?, ?)", images)
            con.executemany("INSERT INTO paths VALUES (?, ?)", paths)
            con.executemany("INSERT INTO ratings VALUES (?, ?, ?, ?)", ratings)
            con.executemany(f"INSERT INTO {PICKS_TABLE} VALUES (?, ?, ?, ?, ?)", picks)
            con.commit()
        finally:
            con.close()
    return str(dest)


def studio_summary(path: Path) -> dict | None:
    """The critic-agreement figures (common/agreement.py) of a studio snapshot's picks, with the ratings it
    carries; None for a snapshot that is not the studio's (no studio_picks table) or whose table cannot be read.
    Only metadata: the ratings themselves were ingested by then, so a damaged table is reported, not fatal."""
    try:
        con = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
        try:
            if not con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                               [PICKS_TABLE]).fetchone():
                return None
            # A rank that is not a positive integer is no rank: left out, and counted.
            rows = con.execute(f"SELECT critic_rank, typeof(critic_rank) = 'integer' AND critic_rank >= 1 "
                               f"FROM {PICKS_TABLE} ORDER BY round, iid").fetchall()
            rated = con.execute("SELECT count(*) FROM ratings").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return None
    figures = agreement([rank for rank, ok in rows if ok])
    return {"ratings": rated, **figures, **({"bad_ranks": len(rows) - figures["picks"]}
                                            if len(rows) > figures["picks"] else {})}
