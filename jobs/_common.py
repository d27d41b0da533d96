"""What every job does first: config, logging, layout, engines."""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from recunlearn.config import RunConfig, load_config
from recunlearn.engines import PROJECT_ROOT
from recunlearn.logs import FORMATS
from recunlearn.logs import configure as configure_logs
from recunlearn.storage.layout import Layout

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from recunlearn.storage.requests import Request

DEFAULT_CONFIG = PROJECT_ROOT / "conf" / "default.yaml"
T = TypeVar("T")


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        default=os.environ.get("RECUNLEARN_CONFIG", str(DEFAULT_CONFIG)),
        help="YAML config (default: conf/default.yaml)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set sharding.n_shards=5",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument(
        "--log-format",
        choices=FORMATS,
        default=os.environ.get("RECUNLEARN_LOG_FORMAT", "auto"),
        help="text, json (one object per line), or auto: text on a terminal, json otherwise "
        "(env RECUNLEARN_LOG_FORMAT)",
    )


def setup(args: argparse.Namespace) -> tuple[RunConfig, Layout]:
    configure_logs(args.log_format, verbose=args.verbose)
    cfg = load_config(args.config, args.overrides)
    return cfg, layout_for(cfg)


def layout_for(cfg: RunConfig) -> Layout:
    return Layout(cfg.resolved_data_dir(PROJECT_ROOT))


def engines(
    cfg: RunConfig, *, ray_needed: bool = True, layout: Layout | None = None
) -> SparkSession:
    """Spark, and Ray when needed; a local Ray spills into a folder of this run's own under
    ``scratch/ray-spill`` (removed by ``shutdown``)."""
    from recunlearn.engines import connect_ray, spark_session

    # Ray first: processes it starts must not inherit the Py4J socket of a live JVM.
    if ray_needed:
        spill = (
            layout.scratch / "ray-spill" / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
            if layout
            else None
        )
        connect_ray(cfg.ray, spill_dir=spill)
    return spark_session(cfg.spark)


def with_engines(cfg: RunConfig, step: Callable[[Any], T], *, ray_needed: bool = True) -> T:
    """Run ``step(spark)`` with the engines up, and take them down whatever happens."""
    spark = engines(cfg, ray_needed=ray_needed, layout=layout_for(cfg))
    try:
        return step(spark)
    finally:
        shutdown(spark)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def shutdown(spark) -> None:  # noqa: ANN001
    from recunlearn.engines import disconnect_ray

    disconnect_ray()
    spark.stop()


def secret_for(cfg: RunConfig, layout: Layout) -> bytes:
    from recunlearn.data.pseudonym import secret_from_config

    return secret_from_config(cfg.pseudonym, layout.root)


def request_by_prefix(requests: list[Request], prefix: str, command: str) -> Request | None:
    """The one request whose id starts with ``prefix``; None (after saying how many matched,
    on stderr) when not exactly one does."""
    match = [r for r in requests if r.request_id.startswith(prefix)]
    if len(match) != 1:
        print(f"recunlearn {command}: {len(match)} requests match {prefix!r}", file=sys.stderr)
        return None
    return match[0]


def read_ids(path: Path) -> list[str]:
    """One raw user id per line (blank lines skipped); a CSV with a ``user_id`` header works."""
    lines = [ln.rstrip("\n") for ln in path.read_text().splitlines()]
    if lines and lines[0].strip().lower() in ("user_id", "user"):
        lines = lines[1:]
    return [ln.split(",")[0] for ln in lines if ln.strip()]
