"""Evaluate the published model version (ensemble, mean ensemble, full reference)."""

from __future__ import annotations

import argparse
import sys

from jobs._common import add_config_args, print_json, setup, with_engines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recunlearn evaluate", description=__doc__)
    add_config_args(p)
    args = p.parse_args(argv)
    cfg, layout = setup(args)
    from pipelines.evaluate import evaluate_published

    print_json(
        with_engines(
            cfg,
            lambda spark: evaluate_published(spark, cfg=cfg, layout=layout, label="latest"),
            ray_needed=False,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
