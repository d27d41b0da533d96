"""Audit every completed forget request; ``--user``/``--file`` add raw ids to the log scan."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs._common import add_config_args, read_ids, secret_for, setup, with_engines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recunlearn audit", description=__doc__)
    add_config_args(p)
    p.add_argument("--user", action="append", default=[], help="raw id to look for in _delta_log")
    p.add_argument("--file", type=Path, help="file of raw ids to look for")
    args = p.parse_args(argv)
    cfg, layout = setup(args)
    from pipelines.audit import audit, render_audit_md

    raw = list(args.user) + (read_ids(args.file) if args.file else [])
    secret = secret_for(cfg, layout)
    report = with_engines(cfg, lambda spark: audit(spark, layout=layout, secret=secret, raw_ids=raw),
                          ray_needed=False)
    print(render_audit_md(report) if report.get("requests") else report.get("note"))
    return 0 if report["passed"] else 3


if __name__ == "__main__":
    sys.exit(main())
