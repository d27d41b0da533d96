"""Train every shard, the aggregator and the reference on Ray; publish a model version."""

from __future__ import annotations

import argparse
import sys

from jobs._common import add_config_args, print_json, setup, with_engines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recunlearn train", description=__doc__)
    add_config_args(p)
    args = p.parse_args(argv)
    cfg, layout = setup(args)
    from pipelines.train import train_all

    print_json(with_engines(cfg, lambda spark: train_all(spark, cfg=cfg, layout=layout)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
