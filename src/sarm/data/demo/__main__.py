"""Write the bundled demo data, then its baselines: `python -m sarm.data.demo --out resources/demo`.

Run from the repository root (the defaults are relative to it); needs the Debian packages wordnet-base and
fortunes-min.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from sarm.data.demo.baselines import write_baselines
from sarm.data.demo.build import SEED, build
from sarm.data.demo.files import write_demo
from sarm.data.demo.sources import FORTUNES, WORDNET, missing_files

DEMO = Path("resources/demo")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sarm.data.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEMO)
    parser.add_argument(
        "--wordnet", type=Path, default=WORDNET, help="folder of WordNet 3.0 data.* / index.* files"
    )
    parser.add_argument(
        "--fortunes", type=Path, default=FORTUNES, help="folder of the fortunes-min cookie files"
    )
    parser.add_argument("--templates", type=Path, default=DEMO / "templates.yaml")
    parser.add_argument("--seed", type=int, default=SEED)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--skip-baselines", action="store_true", help="do not (re)write baselines.csv / .md")
    which.add_argument(
        "--baselines-only",
        action="store_true",
        help="only (re)write baselines.csv / .md from the files in --out",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.baselines_only:
        if missing := missing_files(args.wordnet, args.fortunes):
            sys.exit(f"missing {missing[0]}: install the Debian packages wordnet-base and fortunes-min")
        write_demo(args.out, build(args.wordnet, args.fortunes, args.templates, args.seed))
    if not args.skip_baselines:
        write_baselines(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
