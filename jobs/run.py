"""Run the whole pipeline on the configured data set (what ``make run`` calls)."""

from __future__ import annotations

import argparse
import sys

from jobs._common import add_config_args, print_json, setup, with_engines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recunlearn run", description=__doc__)
    add_config_args(p)
    p.add_argument("--forget", type=int, default=12, help="users to forget (default 12)")
    p.add_argument("--keep-state", action="store_true", help="do not wipe tables/models first")
    args = p.parse_args(argv)
    cfg, layout = setup(args)
    from pipelines.run import run_all

    report = with_engines(
        cfg,
        lambda spark: run_all(
            spark, cfg=cfg, layout=layout, n_forget=args.forget, fresh=not args.keep_state
        ),
    )
    print(report["_table"])
    print_json(report["_paths"])
    return 0 if report["audit"]["passed"] else 3


if __name__ == "__main__":
    sys.exit(main())
