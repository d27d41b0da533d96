"""Process open forget requests: delete, vacuum, retrain touched shards, refit, publish.

``--method exact`` (the default from ``unlearn.method``) retrains the touched shards, and
completes requests a fast method answered earlier. ``--method scif|influence|finetune|ascent``
answers at once: delete, vacuum, update the touched shard models in place, publish with an
approximate guarantee; the exact retrain follows when the policy (``unlearn.policy``) says it
is due, in the same run, or with the next ``--method exact`` run (e.g. nightly).
``--method als|knn|ease|inplace`` (with ``model.kind`` wmf|itemknn|ease, or any kind that
forgets exactly in place) updates the touched shard models exactly without a retrain.
"""

from __future__ import annotations

import argparse
import sys

from jobs._common import add_config_args, print_json, setup, with_engines
from recunlearn.unlearning.methods import METHODS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recunlearn unlearn", description=__doc__)
    add_config_args(p)
    p.add_argument(
        "--method",
        choices=list(METHODS),
        metavar="METHOD",
        help="unlearning method (default: unlearn.method in the config): "
        + "; ".join(f"{k}: {m.summary}" for k, m in METHODS.items()),
    )
    args = p.parse_args(argv)
    cfg, layout = setup(args)
    from pipelines.unlearn import unlearn

    result = with_engines(
        cfg, lambda spark: unlearn(spark, cfg=cfg, layout=layout, method=args.method)
    )
    result.pop("functional", None)  # per-user evidence lives in the ledger, not on stdout
    if isinstance(result.get("exact"), dict):
        result["exact"].pop("functional", None)
    print_json(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
