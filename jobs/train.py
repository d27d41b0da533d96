"""Train every shard, the aggregator and the reference on Ray; publish a model version."""

from __future__ import annotations

import argparse
import json
import sys

from jobs._common import add_config_args, engines, setup, shutdown


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recunlearn train", description=__doc__)
    add_config_args(p)
    args = p.parse_args(argv)
    cfg, layout = setup(args)
    from pipelines.train import train_all

    spark = engines(cfg)
    try:
        stats = train_all(spark, cfg=cfg, layout=layout)
    finally:
        shutdown(spark)
    print(json.dumps(stats, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
