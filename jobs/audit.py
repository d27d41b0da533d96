"""Audit every retrained or verified forget request (``--request ID`` for some of them only;
a prefix of the id will do); ``--user``/``--file`` add raw ids to the log scan.

No engine is started: the scans read Parquet and ``_delta_log`` files directly, and the
ledger, the registry and the audit table go through delta-rs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs._common import add_config_args, read_ids, request_by_prefix, secret_for, setup


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recunlearn audit", description=__doc__)
    add_config_args(p)
    p.add_argument(
        "--request",
        action="append",
        default=[],
        metavar="ID",
        help="audit this request only (its id or a prefix of it; repeatable)",
    )
    p.add_argument("--user", action="append", default=[], help="raw id to look for in _delta_log")
    p.add_argument("--file", type=Path, help="file of raw ids to look for")
    args = p.parse_args(argv)
    cfg, layout = setup(args)
    from pipelines.audit import audit, render_audit_md
    from recunlearn.storage.ledger import ForgetLedger

    request_ids = None
    if args.request:
        requests = ForgetLedger(None, layout.ledger).requests()
        found = [request_by_prefix(requests, prefix, "audit") for prefix in args.request]
        if any(r is None for r in found):
            return 2
        request_ids = [r.request_id for r in found if r is not None]
    raw = list(args.user) + (read_ids(args.file) if args.file else [])
    report = audit(
        None, layout=layout, secret=secret_for(cfg, layout), raw_ids=raw, request_ids=request_ids
    )
    print(render_audit_md(report) if report.get("requests") else report.get("note"))
    return 0 if report["passed"] else 3


if __name__ == "__main__":
    sys.exit(main())
