"""``recunlearn data fetch NAME``: download a data set into data_dir/raw (checksummed)."""

from __future__ import annotations

import argparse
import sys

from jobs._common import add_config_args, setup


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recunlearn data", description=__doc__)
    add_config_args(p)
    sub = p.add_subparsers(dest="action", required=True)
    f = sub.add_parser("fetch", help="download and verify a data set")
    f.add_argument("name", choices=["movielens-100k"])
    args = p.parse_args(argv)
    cfg, layout = setup(args)
    from recunlearn.data.datasets import fetch

    print(fetch(args.name, layout.raw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
