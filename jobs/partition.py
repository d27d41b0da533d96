"""Partition users into K balanced shards and persist the shard map."""

from __future__ import annotations

import argparse
import json
import sys

from jobs._common import add_config_args, engines, setup, shutdown


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recunlearn partition", description=__doc__)
    add_config_args(p)
    args = p.parse_args(argv)
    cfg, layout = setup(args)
    from pipelines.partition import partition_users

    spark = engines(cfg, ray_needed=False)
    try:
        stats = partition_users(spark, cfg=cfg, layout=layout)
    finally:
        shutdown(spark)
    print(json.dumps(stats, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
