"""Process open forget requests: delete, vacuum, retrain touched shards, refit, publish."""

from __future__ import annotations

import argparse
import sys

from jobs._common import add_config_args, print_json, setup, with_engines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recunlearn unlearn", description=__doc__)
    add_config_args(p)
    args = p.parse_args(argv)
    cfg, layout = setup(args)
    from pipelines.unlearn import unlearn

    result = with_engines(cfg, lambda spark: unlearn(spark, cfg=cfg, layout=layout))
    result.pop("functional", None)  # per-user evidence lives in the ledger, not on stdout
    print_json(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
