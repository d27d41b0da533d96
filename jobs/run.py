"""Run the whole pipeline on the configured data set (what ``make run`` calls)."""

from __future__ import annotations

import argparse
import json
import sys

from jobs._common import add_config_args, engines, setup, shutdown


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recunlearn run", description=__doc__)
    add_config_args(p)
    p.add_argument("--forget", type=int, default=12, help="users to forget (default 12)")
    p.add_argument("--keep-state", action="store_true", help="do not wipe tables/models first")
    args = p.parse_args(argv)
    cfg, layout = setup(args)
    from pipelines.run import run_all

    spark = engines(cfg)
    try:
        report = run_all(spark, cfg=cfg, layout=layout, n_forget=args.forget, fresh=not args.keep_state)
    finally:
        shutdown(spark)
    print(report["_table"])
    print(json.dumps(report["_paths"], indent=2))
    return 0 if report["audit"]["passed"] else 3


if __name__ == "__main__":
    sys.exit(main())
