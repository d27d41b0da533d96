"""``bench e2e`` on a planted data set through the real engines: one run per K, the single
request's publication time and steps recorded, and the speed-up computed against K=1."""

from __future__ import annotations

import pytest
from conftest import write_ml100k

from pipelines.bench import e2e

pytestmark = [pytest.mark.spark, pytest.mark.ray, pytest.mark.e2e, pytest.mark.slow]


def test_bench_e2e_runs_each_k_and_compares_with_the_full_retrain(spark, ray_local, cfg, tmp_path):
    raw = tmp_path / "raw"
    write_ml100k(raw)
    cfg = cfg.model_copy(
        update={
            "dataset": cfg.dataset.model_copy(update={"path": str(raw)}),
            "sharding": cfg.sharding.model_copy(update={"method": "random"}),
            "unlearn": cfg.unlearn.model_copy(update={"membership": False}),
        }
    )
    res = e2e.run(spark, cfg, ks=[3, 1], state_root=tmp_path / "state", n_forget=3)
    runs = res["runs"]
    assert sorted(runs) == ["1", "3"]
    for r in runs.values():
        assert r["audit_passed"] and len(r["shards_touched"]) == 1
        assert 0 < r["to_publish_seconds"] <= r["end_to_end_seconds"]
        assert {"delete", "vacuum", "retrain_shards", "publish"} <= set(r["steps_seconds"])
        assert r["speedup_vs_full_retrain"] == round(
            runs["1"]["to_publish_seconds"] / r["to_publish_seconds"], 2
        )
    assert runs["1"]["shards_touched"] == [0] and runs["1"]["speedup_vs_full_retrain"] == 1.0
    assert (tmp_path / "state" / "k3" / "reports" / "report.json").exists()
    assert "| 3 | random |" in e2e.markdown(res)
