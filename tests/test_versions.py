"""Typed model versions and checkpoints: JSON with paths relative to the data directory (so a
data directory moves whole), the registry through delta-rs, and publish_version's prune and
retire rules."""

import shutil

import numpy as np
import pytest
import scipy.sparse as sp

from recunlearn.models.popularity import Popularity
from recunlearn.storage import checkpoints
from recunlearn.storage.layout import Layout
from recunlearn.storage.registry import ModelRegistry, publish_version, trained_on
from recunlearn.storage.versions import CheckpointMeta, Component, ModelVersion


def _save(
    layout: Layout, component: str, shard: int | None, delta_version: int, run: str
) -> Component:
    model = Popularity(np.array(["a", "b"]), sp.csr_matrix(np.eye(2, 3, dtype=np.float32)))
    meta = CheckpointMeta(
        shard_id=shard,
        delta_version=delta_version,
        job_id=run,
        n_users=2,
        n_train=2,
        extra={"curve": [0.1]},
    )
    return Component.of(checkpoints.save(layout.checkpoints, component, run, model.state(), meta))


def _version(layout: Layout, n: int, delta_version: int, run: str) -> ModelVersion:
    shards = {
        k: _save(layout, checkpoints.shard_component(k), k, delta_version, run) for k in range(2)
    }
    return ModelVersion(
        version=n,
        n_shards=2,
        n_items=3,
        table_version=delta_version,
        shards=shards,
        aggregator=_save(layout, "aggregator", None, delta_version, run),
        reference=None,
        guarantee="test",
        config_fingerprint="f",
        parent=n - 1 or None,
    )


def test_a_data_directory_moves_whole(tmp_path):
    layout = Layout(tmp_path / "a")
    registry = ModelRegistry(layout)
    v1 = _version(layout, 1, 0, "r1")
    publish_version(registry, v1, request_ids=[], note="first")
    # what is stored names no absolute path
    row = registry.current()
    assert row["manifest"] == "models/v00001/manifest.json"
    stored = (layout.models / "v00001" / "manifest.json").read_text()
    assert str(tmp_path) not in stored and '"path": "checkpoints/shard-000/r1.pt"' in stored
    assert str(tmp_path) not in (layout.checkpoints / "shard-000" / "r1.json").read_text()

    shutil.move(tmp_path / "a", tmp_path / "b")
    moved = Layout(tmp_path / "b")
    back = ModelRegistry(moved).current_version()
    assert back is not None and back.version == 1
    assert all(p.startswith(str(tmp_path / "b")) for p in back.paths())
    model = checkpoints.load_state(back.shards[1].path)
    assert model["kind"] == "popularity"
    metas = checkpoints.all_metas(moved.checkpoints)
    assert {m["path"] for m in metas} == back.paths() and all(m["exists"] for m in metas)
    assert back.to_json(moved.root) == v1.to_json(layout.root)  # the same record, wherever it lies


def test_publish_prunes_what_held_forgotten_rows_and_retires(tmp_path):
    layout = Layout(tmp_path)
    registry = ModelRegistry(layout)
    v1 = _version(layout, 1, 0, "r1")
    publish_version(registry, v1, request_ids=[], note="first")
    # shard 1 retrained after a delete at table version 3; an orphan of a failed attempt at 3 too
    orphan = _save(layout, checkpoints.shard_component(1), 1, 3, "failed")
    new1 = _save(layout, checkpoints.shard_component(1), 1, 3, "r2")
    agg = _save(layout, "aggregator", None, 3, "r2")
    v2 = v1.replace(
        version=2, parent=1, shards={0: v1.shards[0], 1: new1}, aggregator=agg, table_version=3
    )
    done = publish_version(
        registry,
        v2,
        request_ids=["q"],
        note="unlearned",
        prune=trained_on([1], delete_version=3),
        retire="superseded",
    )
    assert sorted(done.removed) == ["aggregator/r1", "shard-001/failed (orphan)", "shard-001/r1"]
    assert done.retired == [1]
    assert [(v["version"], v["status"]) for v in registry.versions()] == [
        (1, "retired"),
        (2, "published"),
    ]
    on_disk = {m["path"] for m in checkpoints.all_metas(layout.checkpoints)}
    assert on_disk == v2.paths() and orphan.path not in on_disk


def test_records_refuse_what_does_not_fit(tmp_path):
    with pytest.raises(ValueError, match="do not cover"):
        ModelVersion(
            version=1,
            n_shards=3,
            n_items=1,
            table_version=0,
            shards={0: Component("x")},
            aggregator=Component("a"),
            reference=None,
            guarantee="",
            config_fingerprint="",
        )
    with pytest.raises(ValueError, match="shadow"):
        CheckpointMeta(shard_id=0, delta_version=0, job_id="j", extra={"seed": 1}).to_json()
