"""``recunlearn data fetch NAME``: download a data set into data_dir/raw (checksummed).
``recunlearn data synth --interactions N --like lfm-2b|amazon``: write a seeded synthetic log
in that log's raw format (a Spark job; see ``pipelines.synth``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs._common import add_config_args, print_json, setup, with_engines


def _count(text: str) -> int:
    """1000000, 1_000_000, 1M, 10m, 2.5K, 1B."""
    t = text.strip().replace("_", "").upper()
    scale = {"K": 10**3, "M": 10**6, "B": 10**9}.get(t[-1:], 1)
    try:
        return int(float(t[:-1] if scale > 1 else t) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count: {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recunlearn data", description=__doc__)
    add_config_args(p)
    sub = p.add_subparsers(dest="action", required=True)
    f = sub.add_parser("fetch", help="download and verify a data set")
    f.add_argument("name", choices=["movielens-100k"])
    s = sub.add_parser("synth", help="write a seeded synthetic log in a real log's raw format")
    s.add_argument("--interactions", type=_count, required=True, help="rows, e.g. 1M or 100M")
    s.add_argument("--like", choices=["lfm-2b", "amazon"], default="lfm-2b")
    s.add_argument("--out", type=Path, help="folder (default: data_dir/raw/synth-LIKE-N)")
    s.add_argument("--seed", type=int, help="default: the config's seed")
    s.add_argument("--users", type=_count, help="default: from the profile's activity")
    s.add_argument("--items", type=_count, help="default: from the profile's catalogue")
    s.add_argument("--compression", choices=["none", "gzip", "bzip2"], default="none")
    args = p.parse_args(argv)
    cfg, layout = setup(args)
    if args.action == "fetch":
        from recunlearn.data.datasets import fetch

        print(fetch(args.name, layout.raw))
        return 0
    from pipelines.synth import synthesize

    out = args.out or layout.raw / f"synth-{args.like}-{args.interactions}"
    print_json(
        with_engines(
            cfg,
            lambda spark: synthesize(
                spark,
                like=args.like,
                interactions=args.interactions,
                out=out,
                seed=cfg.seed if args.seed is None else args.seed,
                compression=args.compression,
                users=args.users,
                items=args.items,
            ),
            ray_needed=False,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
