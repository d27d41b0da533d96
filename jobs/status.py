"""An operator's view: requests by state, the latest requests, the published model.

``--request ID`` (a prefix will do) shows one request's transitions; ``--json`` prints the
same as JSON for scripts."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from jobs._common import add_config_args, print_json, setup


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recunlearn status", description=__doc__)
    add_config_args(p)
    p.add_argument("--last", type=int, default=20, help="requests to list (default 20)")
    p.add_argument("--request", help="one request's history (its id or a prefix of it)")
    p.add_argument("--json", action="store_true", help="print JSON")
    args = p.parse_args(argv)
    cfg, layout = setup(args)
    from recunlearn.tables import STATES, ForgetLedger, ModelRegistry

    # delta-rs reads, no engine
    rows, current = ForgetLedger(None, layout.ledger).rows(), ModelRegistry(None, layout).current()
    if args.request:
        match = [r for r in rows if r["request_id"].startswith(args.request)]
        if len(match) != 1:
            print(f"recunlearn status: {len(match)} requests match {args.request!r}", file=sys.stderr)
            return 2
        r = match[0]
        if args.json:
            print_json(r)
            return 0
        print(f"request {r['request_id']}  {r['target_type'] or 'user'}  key {(r['user_key'] or '-')[:8]}...  "
              f"now {r['status']}  shards={r['shards'] or []}  v={r['model_version'] or '-'}")
        for h in r["history"] or []:
            print(f"  {h['at']}  {h['state']:<11} {h['job_id']}")
        if r["reason"]:
            print(f"  reason: {r['reason']}")
        return 0
    counts = Counter(r["status"] for r in rows)
    if args.json:
        print_json({"model_version": current["version"] if current else None,
                    "requests": {s: counts.get(s, 0) for s in STATES if counts.get(s)},
                    "latest": [{k: r[k] for k in ("request_id", "target_type", "status", "shards",
                                                  "model_version", "guarantee", "reason", "updated_at")}
                               for r in rows[-args.last:]]})
        return 0
    print("model version:", f"v{current['version']} ({current['note']})" if current else "none published")
    print("requests:", ", ".join(f"{s}={counts[s]}" for s in STATES if counts.get(s)) or "none")
    for r in rows[-args.last:]:
        when = r["completed_at"] or r["updated_at"] or r["received_at"]
        kind = (r["target_type"] or "user") + (f":{r['attribute']}" if r.get("attribute") else "")
        print(f"  {r['request_id'][:12]}  {kind:<21} key {(r['user_key'] or '-')[:8]}...  {r['status']:<11} "
              f"shards={r['shards'] or []}  v={r['model_version'] or '-'}  {r.get('guarantee') or '-':<18} "
              f"{when}  {r['reason'] or ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
