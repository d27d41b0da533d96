"""Engine helpers: the one Delta-enabled Spark session builder and the Ray connection.

Nothing here runs at import time. Jobs call ``spark_session`` / ``connect_ray`` and pass the
results into pipeline steps.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from recunlearn.config import RayConfig, SparkConfig
from recunlearn.errors import ConfigError, EngineStartError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)
T = TypeVar("T")

JARS_ENV = "RECUNLEARN_JARS_DIR"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def delta_jars() -> list[str]:
    """Delta Lake's jars, resolved from Maven Central by ``make jars`` into ``jars/``."""
    folder = Path(os.environ.get(JARS_ENV, PROJECT_ROOT / "jars"))
    jars = sorted(glob.glob(str(folder / "*.jar")))
    if not any("delta-spark" in Path(j).name for j in jars):
        raise ConfigError(f"no delta-spark jar in {folder}; run `make jars` (or set {JARS_ENV})")
    return jars


SPARK_CHECKS = (
    "that `java -version` runs Java 17 (JAVA_HOME), that the machine has memory for "
    "spark.driver.memory, and the jars in jars/ (`make jars`)"
)
RAY_CHECKS = (
    "free memory and /dev/shm, stale Ray processes holding ports (`ray stop`), the "
    "address in ray.address / RAY_ADDRESS, and the host's load (a busy host can time out "
    "Ray's start: raise ray.start_attempts or ray.start_backoff_s)"
)


def start_with_retries(
    engine: str,
    start: Callable[[], T],
    *,
    attempts: int,
    backoff_s: float,
    checks: str,
    cleanup: Callable[[], None] | None = None,
) -> T:
    """``start()`` with up to ``attempts`` tries, waiting ``backoff_s`` (doubled each time)
    between them and calling ``cleanup`` after each failure; then one ``EngineStartError``
    that names the engine, the tries and the last error, and says what to check."""
    for i in range(attempts):
        try:
            return start()
        except Exception as exc:  # the engines raise many kinds (py4j, pyspark, ray, OSError)
            first_line = (str(exc).strip().splitlines() or [""])[0][:300]
            last = f"{type(exc).__name__}: {first_line}"
            if cleanup is not None:
                try:
                    cleanup()
                except Exception as again:  # keep the start error, not the cleanup's
                    log.debug("%s cleanup after a failed start: %s", engine, again)
            if i + 1 < attempts:
                delay = backoff_s * 2**i
                log.warning(
                    "%s did not start (try %d of %d: %s); trying again in %.1fs",
                    engine,
                    i + 1,
                    attempts,
                    last,
                    delay,
                )
                time.sleep(delay)
    raise EngineStartError(
        f"{engine} did not start after {attempts} tries, {backoff_s:g}s apart and "
        f"doubling (last error: {last}). Nothing was changed; check {checks}."
    )


def spark_session(cfg: SparkConfig) -> SparkSession:
    """A Delta-enabled session, started with ``cfg.start_attempts`` tries. Settings given by
    spark-submit (master, jars) win."""
    return start_with_retries(
        "Spark",
        lambda: _spark_session(cfg),
        attempts=cfg.start_attempts,
        backoff_s=cfg.start_backoff_s,
        checks=SPARK_CHECKS,
    )


def _spark_session(cfg: SparkConfig) -> SparkSession:
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    if os.environ.get("PYSPARK_GATEWAY_PORT"):  # under spark-submit: its JVM runs already
        SparkContext._ensure_initialized()  # connect, so SparkConf reads what it was given
    submitted = SparkConf()  # holds what spark-submit passed, empty otherwise
    b = SparkSession.builder.appName(cfg.app_name)
    if not submitted.contains("spark.master"):
        b = b.master(cfg.master)
    if not submitted.contains("spark.jars") or "delta" not in submitted.get("spark.jars", ""):
        b = b.config("spark.jars", ",".join(delta_jars()))
    settings = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        # Zero-retention VACUUM is how forgotten rows leave the disk; we run it on purpose.
        "spark.databricks.delta.retentionDurationCheck.enabled": "false",
        # Interaction tables must not keep deleted rows in change feeds or deletion vectors.
        "spark.databricks.delta.properties.defaults.enableChangeDataFeed": "false",
        "spark.databricks.delta.properties.defaults.enableDeletionVectors": "false",
        "spark.sql.shuffle.partitions": str(cfg.shuffle_partitions),
        # Delta rebuilds table state with 50 tasks by default: seconds of overhead per
        # MERGE/VACUUM on small tables. Scale it with the cluster (cluster.yaml raises it).
        "spark.databricks.delta.snapshotPartitions": str(cfg.shuffle_partitions),
        "spark.default.parallelism": str(cfg.shuffle_partitions),
        # VACUUM lists files with this parallelism (10000 by default): far too many tasks here.
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": str(cfg.shuffle_partitions),
        "spark.driver.memory": cfg.driver_memory,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        # pandas <-> Spark through Arrow (key lists, shard maps), not row by row through Py4J
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    master = submitted.get("spark.master", cfg.master)
    if master.startswith("local") and not os.environ.get("PYSPARK_PYTHON"):
        # Python workers (mapInPandas: the synthetic generator) run this interpreter, with
        # its packages, not the first python3 on the PATH; PySpark reads the variable when
        # the context starts. A cluster ships its own environment (spark.pyspark.python).
        os.environ["PYSPARK_PYTHON"] = sys.executable
    settings.update(cfg.extra)
    for k, v in settings.items():
        if not submitted.contains(k):
            b = b.config(k, v)
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


_SPILL: dict[
    str, Path
] = {}  # the object-spilling folder of the local instance this process started


def connect_ray(cfg: RayConfig, *, spill_dir: str | Path | None = None) -> None:
    """Connect to a Ray cluster (``cfg.address`` or ``RAY_ADDRESS``) or start a local one.

    A local instance spills objects to ``spill_dir`` (the job's own folder), which
    ``disconnect_ray`` removes; a cluster's spilling is set where its head is started."""
    import ray

    if ray.is_initialized():
        return
    start_with_retries(
        "Ray",
        lambda: _connect_ray(cfg, spill_dir),
        attempts=cfg.start_attempts,
        backoff_s=cfg.start_backoff_s,
        checks=RAY_CHECKS,
        cleanup=ray.shutdown,
    )
    log.info("ray connected: %s CPUs", ray.cluster_resources().get("CPU"))


def _connect_ray(cfg: RayConfig, spill_dir: str | Path | None) -> None:
    import ray

    address = cfg.address or os.environ.get("RAY_ADDRESS")
    # Shard data travels by path, not through the object store; keep Ray quiet and local.
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        extra: dict[str, Any] = {}
        if spill_dir is not None:
            Path(spill_dir).mkdir(parents=True, exist_ok=True)
            _SPILL["dir"] = Path(spill_dir)
            extra["object_spilling_directory"] = str(spill_dir)
        if cfg.object_store_mb:
            extra["object_store_memory"] = cfg.object_store_mb * 2**20
        ray.init(
            num_cpus=cfg.num_cpus,
            include_dashboard=cfg.include_dashboard,
            log_to_driver=True,
            configure_logging=False,
            # workers at the driver's and the JVM's priority, not Ray's nice 15 (see RayConfig)
            _system_config={"worker_niceness": cfg.worker_niceness},
            **extra,
        )


def disconnect_ray() -> None:
    """Shut Ray down (if connected) and remove the spill folder of the local instance."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    folder = _SPILL.pop("dir", None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def ray_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))
