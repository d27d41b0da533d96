"""Ingest a raw interaction log into the Delta ``interactions`` table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs._common import add_config_args, print_json, secret_for, setup, with_engines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recunlearn ingest", description=__doc__)
    add_config_args(p)
    p.add_argument("--input", help="raw file or folder (default: dataset.path or the fetched copy)")
    args = p.parse_args(argv)
    cfg, layout = setup(args)
    from pipelines.ingest import ingest
    from pipelines.run import raw_data_path

    raw = Path(args.input) if args.input else raw_data_path(cfg, layout)
    secret = secret_for(cfg, layout)
    print_json(
        with_engines(
            cfg,
            lambda spark: ingest(spark, cfg=cfg, layout=layout, raw_path=raw, secret=secret),
            ray_needed=False,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
