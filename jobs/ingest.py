"""Ingest a raw interaction log into the Delta ``interactions`` table."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jobs._common import add_config_args, engines, secret_for, setup, shutdown


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recunlearn ingest", description=__doc__)
    add_config_args(p)
    p.add_argument("--input", help="raw file or folder (default: dataset.path or the fetched copy)")
    args = p.parse_args(argv)
    cfg, layout = setup(args)
    from pipelines.ingest import ingest
    from pipelines.run import raw_data_path

    raw = Path(args.input) if args.input else raw_data_path(cfg, layout)
    spark = engines(cfg, ray_needed=False)
    try:
        stats = ingest(spark, cfg=cfg, layout=layout, raw_path=raw, secret=secret_for(cfg, layout))
    finally:
        shutdown(spark)
    print(json.dumps(stats, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
