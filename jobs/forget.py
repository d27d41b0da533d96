"""File forget requests: ``--user ID`` (repeatable) or ``--file`` (one id per line)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jobs._common import add_config_args, read_ids, secret_for, setup, with_engines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recunlearn forget", description=__doc__)
    add_config_args(p)
    p.add_argument("--user", action="append", default=[], help="raw user id to forget")
    p.add_argument("--file", type=Path, help="file of raw user ids, one per line")
    args = p.parse_args(argv)
    ids = list(args.user) + (read_ids(args.file) if args.file else [])
    if not ids:
        p.error("give --user ID or --file PATH")
    cfg, layout = setup(args)
    from pipelines.forget import submit_user_requests

    secret = secret_for(cfg, layout)
    outcomes = with_engines(cfg, lambda spark: submit_user_requests(spark, layout=layout, secret=secret,
                                                                    raw_ids=ids), ray_needed=False)
    for o in outcomes:
        print(json.dumps({k: o.get(k) for k in ("position", "request_id", "outcome", "status", "reason")}))
    return 0 if all(o["outcome"] != "rejected" for o in outcomes) else 2


if __name__ == "__main__":
    sys.exit(main())
