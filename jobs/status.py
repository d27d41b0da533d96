"""An operator's view: requests by state, the latest requests, the published model, and each
open request's age against the deadline (``unlearn.request_deadline_days``, 30 by default:
GDPR's one month).

``--request ID`` (a prefix will do) shows one request's transitions; ``--json`` prints the
same as JSON for scripts. ``--overdue`` lists the requests past the deadline and exits 4 when
there is any (0 when none), for a scheduler to alert on. No engine is started."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from jobs._common import add_config_args, print_json, request_by_prefix, setup

EXIT_OVERDUE = 4


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recunlearn status", description=__doc__)
    add_config_args(p)
    p.add_argument("--last", type=int, default=20, help="requests to list (default 20)")
    p.add_argument("--request", help="one request's history (its id or a prefix of it)")
    p.add_argument(
        "--overdue",
        action="store_true",
        help=f"list the requests past the deadline; exit {EXIT_OVERDUE} if there is any",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    args = p.parse_args(argv)
    cfg, layout = setup(args)
    from recunlearn.storage.ledger import STATES, ForgetLedger, request_ages
    from recunlearn.storage.registry import ModelRegistry

    # delta-rs reads, no engine
    requests = ForgetLedger(None, layout.ledger).requests()
    current = ModelRegistry(layout).current()
    deadline = cfg.unlearn.request_deadline_days
    ages = request_ages(requests, deadline_days=deadline)
    overdue = [a for a in ages if a["overdue"]]
    if args.overdue:
        if args.json:
            print_json({"deadline_days": deadline, "overdue": overdue})
        elif overdue:
            print(f"{len(overdue)} request(s) past the {deadline:g}-day deadline:")
            for a in overdue:
                print(
                    f"  {a['request_id'][:12]}  {a['target_type']:<12} {a['status']:<11} "
                    f"received {a['received_at']}  {a['age_days']:.1f} days"
                )
        else:
            print(f"no request past the {deadline:g}-day deadline ({len(ages)} open)")
        return EXIT_OVERDUE if overdue else 0
    if args.request:
        r = request_by_prefix(requests, args.request, "status")
        if r is None:
            return 2
        if args.json:
            print_json(r.to_row())
            return 0
        print(
            f"request {r.request_id}  {r.target}  key {(r.user_key or '-')[:8]}...  "
            f"now {r.state}  shards={list(r.shards)}  v={r.model_version or '-'}"
        )
        for h in r.history:
            print(f"  {h.at}  {h.state:<11} {h.job_id}")
        if r.reason:
            print(f"  reason: {r.reason}")
        return 0
    counts = Counter(r.state for r in requests)
    age_of = {a["request_id"]: a["age_days"] for a in ages}
    if args.json:
        print_json(
            {
                "model_version": current["version"] if current else None,
                "requests": {str(s): counts[s] for s in STATES if counts.get(s)},
                "deadline_days": deadline,
                "open": len(ages),
                "oldest_open_age_days": ages[0]["age_days"] if ages else None,
                "overdue": [a["request_id"] for a in overdue],
                "latest": [
                    {
                        **{
                            k: row[k]
                            for k in (
                                "request_id",
                                "target_type",
                                "status",
                                "shards",
                                "model_version",
                                "guarantee",
                                "reason",
                                "updated_at",
                            )
                        },
                        "age_days": age_of.get(row["request_id"]),
                    }
                    for row in (r.to_row() for r in requests[-args.last :])
                ],
            }
        )
        return 0
    print(
        "model version:",
        f"v{current['version']} ({current['note']})" if current else "none published",
    )
    print("requests:", ", ".join(f"{s}={counts[s]}" for s in STATES if counts.get(s)) or "none")
    print(
        f"open: {len(ages)}"
        + (f", oldest {ages[0]['age_days']:.1f} days" if ages else "")
        + f"; deadline {deadline:g} days; overdue: {len(overdue)}"
    )
    for r in requests[-args.last :]:
        when = r.completed_at or r.updated_at or r.received_at
        kind = str(r.target) + (f":{r.attribute}" if r.attribute else "")
        age = f"open {age_of[r.request_id]:.1f} d" if r.request_id in age_of else ""
        print(
            f"  {r.request_id[:12]}  {kind:<21} key {(r.user_key or '-')[:8]}...  "
            f"{r.state:<11} "
            f"shards={list(r.shards)}  v={r.model_version or '-'}  "
            f"{r.guarantee or '-':<18} "
            f"{when}  {age:<11} {r.reason or ''}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
