"""File forget requests: ``--user ID`` (repeatable) or ``--file`` (one id per line) forget
users; ``--item ID`` forgets every interaction with an item; ``--interaction USER ITEM`` one
interaction.

With ``--attribute gender|age`` the request is to unlearn that attribute from the users'
embeddings (everyone's when no user is named); ``--undo`` takes such an edit back. The next
``recunlearn unlearn`` applies them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jobs._common import add_config_args, read_ids, secret_for, setup


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recunlearn forget", description=__doc__)
    add_config_args(p)
    p.add_argument("--user", action="append", default=[], help="raw user id to forget")
    p.add_argument("--file", type=Path, help="file of raw user ids, one per line")
    p.add_argument(
        "--item", action="append", default=[], help="raw item id: forget every interaction with it"
    )
    p.add_argument(
        "--interaction",
        nargs=2,
        action="append",
        default=[],
        metavar=("USER", "ITEM"),
        help="forget one interaction (raw user id, raw item id)",
    )
    p.add_argument(
        "--attribute",
        choices=["gender", "age"],
        help="unlearn this attribute from the users' embeddings (all users if none named)",
    )
    p.add_argument("--undo", action="store_true", help="with --attribute: take the edit back")
    args = p.parse_args(argv)
    ids = list(args.user) + (read_ids(args.file) if args.file else [])
    if args.undo and not args.attribute:
        p.error("--undo needs --attribute")
    if not ids and not args.attribute and not args.item and not args.interaction:
        p.error("give --user ID, --file PATH, --item ID or --interaction USER ITEM")
    if (args.item or args.interaction) and args.attribute:
        p.error("--item and --interaction do not combine with --attribute")
    cfg, layout = setup(args)
    secret = secret_for(cfg, layout)
    # No engine: the intake checks and writes the Delta tables through delta-rs (no JVM, no Ray).
    if args.attribute:
        from pipelines.attribute import submit_attribute_requests

        outcomes = submit_attribute_requests(
            None,
            cfg=cfg,
            layout=layout,
            secret=secret,
            name=args.attribute,
            raw_ids=ids or None,
            undo=args.undo,
        )
    else:
        from pipelines.forget import submit_data_requests, submit_user_requests

        outcomes = submit_user_requests(layout=layout, secret=secret, raw_ids=ids) if ids else []
        if args.item or args.interaction:
            more = submit_data_requests(
                layout=layout,
                secret=secret,
                items=args.item,
                interactions=[tuple(x) for x in args.interaction],
            )
            outcomes += [{**o, "position": o["position"] + len(ids)} for o in more]
    for o in outcomes:
        print(
            json.dumps(
                {k: o.get(k) for k in ("position", "request_id", "outcome", "status", "reason")}
            )
        )
    return 0 if all(o["outcome"] != "rejected" for o in outcomes) else 2


if __name__ == "__main__":
    sys.exit(main())
