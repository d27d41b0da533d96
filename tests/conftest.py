"""Shared fixtures: one Spark session and one local Ray instance per test run, synthetic
data with a known structure, a config whose data directory is a tmp path, and a trained
deployment (trained once per run, copied into each test that asks for it)."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recunlearn.config import RunConfig, load_config
from recunlearn.storage.layout import Layout

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def spark(ray_local):
    # Ray starts first, as the jobs do: its processes must not inherit the JVM's Py4J socket.
    from recunlearn.config import SparkConfig
    from recunlearn.engines import spark_session

    session = spark_session(
        SparkConfig(master="local[2]", shuffle_partitions=2, driver_memory="2g")
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def ray_local():
    import ray

    from recunlearn.config import RayConfig
    from recunlearn.engines import connect_ray

    connect_ray(RayConfig(num_cpus=2))
    yield
    ray.shutdown()


def write_ml100k(
    path: Path,
    n_users: int = 60,
    n_items: int = 48,
    n_groups: int = 3,
    per_user: int = 14,
    seed: int = 0,
) -> dict[str, list[int]]:
    """A u.data file with planted taste groups: users of group g rate items of block g.

    Returns the raw user ids per group. Ids start at 1 like MovieLens.
    """
    rng = np.random.default_rng(seed)
    block = n_items // n_groups
    groups: dict[str, list[int]] = {str(g): [] for g in range(n_groups)}
    lines = []
    for u in range(1, n_users + 1):
        g = (u - 1) % n_groups
        groups[str(g)].append(u)
        own = rng.choice(np.arange(g * block, (g + 1) * block), size=per_user - 2, replace=False)
        other = rng.choice(np.arange(n_items), size=2, replace=False)
        for i in sorted(set(own.tolist() + other.tolist())):
            lines.append(f"{u}\t{i + 1}\t{rng.integers(1, 6)}\t{880000000 + u * 100 + i}")
    path.mkdir(parents=True, exist_ok=True)
    (path / "u.data").write_text("\n".join(lines) + "\n")
    return groups


@pytest.fixture()
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunConfig:
    monkeypatch.setenv("RECUNLEARN_PSEUDONYM_KEY", "test-secret-key-0123456789")
    monkeypatch.delenv("RECUNLEARN_HOME", raising=False)
    return load_config(ROOT / "conf" / "test.yaml", [f"data_dir={tmp_path / 'data'}"])


@pytest.fixture()
def layout(cfg: RunConfig) -> Layout:
    return Layout(Path(cfg.data_dir))


def shared_data_dir() -> Path | None:
    root = os.environ.get("RECUNLEARN_DATA_DIR")
    return Path(root) if root and Path(root).exists() else None


SECRET = b"test-secret-key-0123456789"  # the pseudonymisation key of cfg (and the deployment)


@pytest.fixture(scope="session")
def deployment(spark, ray_local, tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    """The default pipeline (``write_ml100k``'s log, conf/test.yaml) ingested, partitioned
    and trained once per test run, in a folder of its own: (that folder, the partition)."""
    from pipelines.ingest import ingest
    from pipelines.partition import partition_users
    from pipelines.train import train_all

    root = tmp_path_factory.mktemp("deployment")
    cfg = load_config(ROOT / "conf" / "test.yaml", [f"data_dir={root / 'data'}"])
    layout = Layout(Path(cfg.data_dir))
    write_ml100k(root / "raw")
    ingest(spark, cfg=cfg, layout=layout, raw_path=root / "raw", secret=SECRET)
    part = partition_users(spark, cfg=cfg, layout=layout)
    train_all(spark, cfg=cfg, layout=layout, partition=part)
    return root, part


@pytest.fixture()
def trained(deployment, layout: Layout, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """This test's own copy of the trained deployment in ``layout`` (its data directory moves
    whole: every stored path is relative) and of its raw log: (raw folder, partition), as if
    the test had ingested ``write_ml100k``'s log, partitioned and trained with ``cfg``."""
    root, part = deployment
    shutil.copytree(root / "data", layout.root, dirs_exist_ok=True)
    shutil.copytree(root / "raw", tmp_path / "raw")
    return tmp_path / "raw", copy.deepcopy(part)
