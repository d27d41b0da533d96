"""Evaluate the published model version (ensemble, mean ensemble, full reference)."""

from __future__ import annotations

import argparse
import json
import sys

from jobs._common import add_config_args, engines, setup, shutdown


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recunlearn evaluate", description=__doc__)
    add_config_args(p)
    args = p.parse_args(argv)
    cfg, layout = setup(args)
    from pipelines.evaluate import evaluate_published

    spark = engines(cfg, ray_needed=False)
    try:
        out = evaluate_published(spark, cfg=cfg, layout=layout, label="latest")
    finally:
        shutdown(spark)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
