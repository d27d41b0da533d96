"""The exact family's choices through the real pipeline (Spark + Delta, Ray, torch):
RecEraser's balanced k-means partition (UBP) under its capacity cap, and UltraRE-style learned
weights as the aggregator, refit on retained data when a user is forgotten."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recunlearn import checkpoints
from recunlearn.ensemble import LearnedWeights, load_ensemble
from recunlearn.tables import ForgetLedger, ModelRegistry
from pipelines.audit import audit
from pipelines.forget import submit_user_requests
from pipelines.ingest import ingest
from pipelines.partition import partition_users
from pipelines.train import train_all
from pipelines.unlearn import unlearn

from conftest import write_ml100k

pytestmark = [pytest.mark.spark, pytest.mark.ray, pytest.mark.e2e]
SECRET = b"test-secret-key-0123456789"


def test_kmeans_partition_and_learned_weights_end_to_end(spark, ray_local, cfg, layout, tmp_path):
    cfg = cfg.model_copy(update={
        "sharding": cfg.sharding.model_copy(update={"method": "kmeans", "capacity": 1.2}),
        "aggregator": cfg.aggregator.model_copy(update={"kind": "learned"})})
    raw = tmp_path / "raw"
    write_ml100k(raw)
    ingest(spark, cfg=cfg, layout=layout, raw_path=raw, secret=SECRET)
    part = partition_users(spark, cfg=cfg, layout=layout)
    assert part["method"] == "kmeans" and sum(part["sizes"]) == part["users"]
    assert max(part["sizes"]) <= math.ceil(1.2 * part["users"] / cfg.sharding.n_shards)
    train_all(spark, cfg=cfg, layout=layout, partition=part)
    registry = ModelRegistry(spark, layout)
    v1 = registry.current_manifest()
    agg1 = checkpoints.load_state(v1["aggregator"]["path"])
    assert agg1["kind"] == "learned" and agg1["meta"]["stats"]["n_train"] > 0

    submit_user_requests(spark, layout=layout, secret=SECRET, raw_ids=["5"])
    res = unlearn(spark, cfg=cfg, layout=layout)
    v2 = registry.current_manifest()
    assert v2["version"] > v1["version"] and len(res["shards_touched"]) == 1
    # the weights were refit on the retained data of the new table version
    assert v2["aggregator"]["path"] != v1["aggregator"]["path"]
    assert v2["aggregator"]["delta_version"] == v2["table_version"]
    ens = load_ensemble(v2)
    assert isinstance(ens.aggregator, LearnedWeights) and np.isfinite(ens.aggregator.w.numpy()).all()
    rows = ForgetLedger(spark, layout.ledger).rows()
    assert [r["status"] for r in rows] == ["completed"]
    report = audit(spark, layout=layout, secret=SECRET, raw_ids=["5"])
    assert report["passed"]
