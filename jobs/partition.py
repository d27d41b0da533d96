"""Partition users into K balanced shards and persist the shard map."""

from __future__ import annotations

import argparse
import sys

from jobs._common import add_config_args, print_json, setup, with_engines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recunlearn partition", description=__doc__)
    add_config_args(p)
    args = p.parse_args(argv)
    cfg, layout = setup(args)
    from pipelines.partition import partition_users

    print_json(
        with_engines(
            cfg, lambda spark: partition_users(spark, cfg=cfg, layout=layout), ray_needed=False
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
