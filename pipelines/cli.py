"""The `aesthetic` command line: one verb per job a user has (DESIGN.md, "CLI").

Each verb parses its own arguments and calls plain functions; heavy imports
(torch) happen only inside the verbs that need them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

VERBS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def verb(name: str, help_text: str, configure: Callable[[argparse.ArgumentParser], None]):
    def register(run: Callable[[argparse.Namespace], int]):
        VERBS[name] = (help_text, configure, run)
        return run

    return register


def _sample_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder to write ava/, sac/ and kuler/ into")
    p.add_argument("--ava", type=int, default=240, help="AVA images (0 skips the dataset)")
    p.add_argument("--sac", type=int, default=120, help="SAC images")
    p.add_argument("--kuler", type=int, default=300, help="Kuler colour themes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--faults", action="store_true", help="plant real-world damage that must end in rejects")


@verb("sample-data", "write small raw drops in the real AVA, SAC and Kuler formats", _sample_data_args)
def _sample_data(args: argparse.Namespace) -> int:
    from ingest.sample_data import write_sample_data

    report = write_sample_data(args.out, args.ava, args.sac, args.kuler, args.seed, args.faults)
    print(
        f"wrote {report.ava_rows} AVA rows, {report.sac_images} SAC images ({report.sac_ratings} ratings), "
        f"{report.kuler_themes} Kuler themes ({report.kuler_ratings} ratings) under {report.out}"
    )
    if report.faults:
        print("planted faults: " + json.dumps(report.faults, sort_keys=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aesthetic", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, (help_text, configure, _) in VERBS.items():
        configure(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return VERBS[args.verb][2](args)


if __name__ == "__main__":
    sys.exit(main())
