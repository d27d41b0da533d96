"""``bench exact`` end to end on a small planted data set (the real data sets are for the
benchmark itself): every cell is trained, timed and unlearned, the outputs are written and
merged, and the summary figures are computed from the cells."""

import json

from test_bpr import CFG

from pipelines.bench import exact
from recunlearn.config import RunConfig
from recunlearn.testing import checkerboard


def test_bench_exact_cells_outputs_and_merge(tmp_path, monkeypatch):
    data = checkerboard(n_users=60, n_items=30)
    monkeypatch.setattr(exact, "dataset_dir", lambda name, data_dir=None: tmp_path)
    monkeypatch.setattr(exact, "load_split", lambda name, folder, seed: (data, {}))
    cfg = RunConfig(model=CFG.model_dump(), aggregator={"max_epochs": 2})
    written = []

    def done(result):
        written.append(json.loads(json.dumps(result)))
        (tmp_path / "exact.json").write_text(json.dumps(result))

    res = exact.run(
        cfg,
        datasets=["toy"],
        methods=["sisa", "ultrare", "laser"],
        ks=[2, 3],
        out_dir=tmp_path,
        kinds=("random",),
        share=0.05,
        done=done,
    )
    cells = res["datasets"]["toy"]["models"]["bpr"]["cells"]
    assert sorted(cells) == [
        "laser-K2",
        "laser-K3",
        "sisa-K2",
        "sisa-K3",
        "ultrare-K2",
        "ultrare-K3",
    ]
    assert len(written) == 6
    full = res["datasets"]["toy"]["models"]["bpr"]["full"]
    for c in cells.values():
        assert 0 < c["ndcg@20"] <= 1 and c["ndcg_vs_full"] == round(
            c["ndcg@20"] / full["ndcg@20"], 4
        )
        one = c["unlearn"]["one"]
        assert one["users"] == 1 and one["seconds"] > 0
        # a sharded method retrains the user's shard; LASER the stages from the user's group on
        assert (
            one["shards_touched"] == 1
            if c["method"] != "laser"
            else 1 <= one["shards_touched"] <= c["n_shards"]
        )
        assert c["unlearn"]["random"]["users"] == 3  # 5% of 60
        assert 1 <= c["unlearn"]["random"]["shards_touched"] <= c["n_shards"]
        assert set(c["a_igf"]) >= {"active", "inactive", "gap"}
        kind = {"sisa": "mean", "ultrare": "learned", "laser": None}[c["method"]]
        assert c["aggregator"]["kind"] == kind
        assert (c["aggregator"]["kept"] in ("learned", "mean")) == (kind == "learned")
    loss = exact.k_loss(cells, "sisa", [2, 3])
    assert loss == round(1 - cells["sisa-K3"]["ndcg@20"] / cells["sisa-K2"]["ndcg@20"], 4)
    md = exact.markdown(res)
    assert "| sisa | 2 |" in md and "loss from K=2 to K=3" in md
    assert [p.endswith("exact-toy.png") for p in exact.plot(res, tmp_path)] == [True]
    # a rerun of one method keeps the other's cells; another sub-model gets its own table
    again = exact.run(
        cfg,
        datasets=["toy"],
        methods=["sisa"],
        ks=[2],
        out_dir=tmp_path,
        kinds=(),
        models=("bpr", "itemknn"),
    )
    models = again["datasets"]["toy"]["models"]
    assert sorted(models["bpr"]["cells"]) == sorted(cells) and sorted(
        models["itemknn"]["cells"]
    ) == ["sisa-K2"]
    assert "## toy, itemknn" in exact.markdown(again)


def test_results_from_before_the_models_dimension_load_as_bpr(tmp_path):
    old = {
        "seed": 1,
        "datasets": {"ml": {"users": 3, "full": {"ndcg@20": 0.2}, "cells": {"sisa-K5": {"n": 1}}}},
    }
    (tmp_path / "exact.json").write_text(json.dumps(old))
    res = exact._load(tmp_path)["datasets"]["ml"]
    assert "cells" not in res and res["models"]["bpr"] == {
        "full": {"ndcg@20": 0.2},
        "cells": {"sisa-K5": {"n": 1}},
    }
