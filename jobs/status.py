"""An operator's view: requests by status, the latest requests, the published model."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from jobs._common import add_config_args, setup, with_engines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recunlearn status", description=__doc__)
    add_config_args(p)
    p.add_argument("--last", type=int, default=20, help="requests to list (default 20)")
    args = p.parse_args(argv)
    cfg, layout = setup(args)
    from recunlearn.tables import ForgetLedger, ModelRegistry

    rows, current = with_engines(cfg, lambda spark: (ForgetLedger(spark, layout.ledger).rows(),
                                                     ModelRegistry(spark, layout).current()),
                                 ray_needed=False)
    counts = Counter(r["status"] for r in rows)
    print("model version:", f"v{current['version']} ({current['note']})" if current else "none published")
    print("requests:", ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none")
    for r in rows[-args.last:]:
        when = r["completed_at"] or r["updated_at"] or r["received_at"]
        kind = (r["target_type"] or "user") + (f":{r['attribute']}" if r.get("attribute") else "")
        print(f"  {r['request_id'][:12]}  {kind:<21} key {r['user_key'][:8]}...  {r['status']:<11} "
              f"shards={r['shards'] or []}  v={r['model_version'] or '-'}  {r.get('guarantee') or '-':<18} "
              f"{when}  {r['reason'] or ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
