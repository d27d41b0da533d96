"""``bench quality`` on a small planted data set (the shared data sets are for the benchmark
itself): the baselines are tuned on validation only, every model cell is measured once and
kept on a re-run, the summary reads the cells; the readers of the shared data sets' formats;
the implicit-ALS wrapper's fold-in is implicit's own."""

import json

import numpy as np
import pytest
from test_bpr import CFG

from pipelines.bench import quality
from pipelines.bench.baselines import ImplicitALS, fit_implicit_als, valid_ndcg
from pipelines.bench.common import load_pairs
from recunlearn.config import RunConfig
from recunlearn.models.ease import fit_ease
from recunlearn.testing import checkerboard

pytest.importorskip("implicit")


def _config(tmp_path, **over):
    qc = quality.QualityConfig.load(quality_conf())
    qc.datasets, qc.models, qc.n_shards = ["toy"], ["popularity", "ease", "bpr"], [2]
    qc.ease_lambda = [1.0, 30.0, 1000.0]
    qc.implicit_als = {
        "factors": [4, 8],
        "regularization": [0.1],
        "alpha": [5.0],
        "iterations": [3],
    }
    for k, v in over.items():
        setattr(qc, k, v)
    return qc


def quality_conf():
    from jobs.bench import DEFAULT_QUALITY

    return DEFAULT_QUALITY


def test_the_shipped_quality_config_loads_and_names_the_four_data_sets():
    qc = quality.QualityConfig.load(quality_conf())
    assert qc.datasets == [
        "movielens-100k",
        "movielens-1m",
        "amazon-digital-music",
        "lastfm-hetrec-2k",
    ]
    assert qc.n_shards == [5, 10, 20] and "ease" in qc.models and qc.ease_lambda


def test_bench_quality_tunes_on_validation_and_keeps_finished_cells(tmp_path, monkeypatch):
    data = checkerboard(n_users=60, n_items=30)
    monkeypatch.setattr(quality, "dataset_dir", lambda name, data_dir=None: tmp_path)
    monkeypatch.setattr(quality, "load_split", lambda name, folder, seed: (data, {}))
    cfg = RunConfig(model=CFG.model_dump(), aggregator={"max_epochs": 2})
    written = []
    res = quality.run(
        cfg, _config(tmp_path), out_dir=tmp_path, done=lambda r: written.append(json.dumps(r))
    )
    toy = res["datasets"]["toy"]
    base = toy["baselines"]
    # EASE: the lambda with the best validation NDCG is the one scored on test
    grid = base["ease"]["grid"]
    assert base["ease"]["chosen"]["lambda"] == max(grid, key=lambda g: g["valid_ndcg"])["lambda"]
    best = fit_ease(data.user_keys, data.train, lam=base["ease"]["chosen"]["lambda"])[0]
    assert valid_ndcg(best, data) == base["ease"]["chosen"]["valid_ndcg"]
    als = base["implicit-als"]
    assert len(als["grid"]) >= 2 and 0 < als["ndcg@20"] <= 1
    assert als["chosen"] == max(als["grid"], key=lambda g: g["valid_ndcg"])
    for model in ("popularity", "ease", "bpr"):
        cells = toy["models"][model]["cells"]
        assert sorted(cells) == ["K2", "full"]
        assert cells["K2"]["n_shards"] == 2 and cells["full"]["method"] == "full"
    assert toy["models"]["bpr"]["cells"]["K2"]["method"] == quality.production_method(cfg)
    s = toy["summary"]
    fulls = {m: toy["models"][m]["cells"]["full"]["ndcg@20"] for m in ("ease", "bpr")}
    assert s["best_full_model"]["model"] == max(fulls, key=lambda m: fulls[m])
    ref = max(base["ease"]["ndcg@20"], base["implicit-als"]["ndcg@20"])
    assert s["best_full_model"]["vs_strongest_baseline"] == round(max(fulls.values()) / ref, 4)
    assert len(written) >= 7  # the baselines, then every cell as it finishes
    (tmp_path / "quality.json").write_text(json.dumps(res))
    md = quality.markdown(res)
    assert "| ease |" in md and "| bpr |" in md and "Sharded method:" in md
    assert quality.plot(res, tmp_path)[0].endswith("quality.png")

    # a re-run keeps every finished cell; another K adds its cells only
    stamps = {m: r["cells"]["full"]["measured_at"] for m, r in toy["models"].items()}
    again = quality.run(cfg, _config(tmp_path, n_shards=[2, 3]), out_dir=tmp_path)
    models = again["datasets"]["toy"]["models"]
    assert {m: r["cells"]["full"]["measured_at"] for m, r in models.items()} == stamps
    assert all(sorted(r["cells"]) == ["K2", "K3", "full"] for r in models.values())
    # other model settings make a model's cells stale
    other = cfg.model_copy(
        update={"model": cfg.model.model_copy(update={"dim": cfg.model.dim + 1})}
    )
    third = quality.run(other, _config(tmp_path, models=["bpr"], n_shards=[]), out_dir=tmp_path)
    assert sorted(third["datasets"]["toy"]["models"]["bpr"]["cells"]) == ["full"]


def test_implicit_als_fold_in_is_implicits_recalculated_user():
    data = checkerboard(n_users=40, n_items=24)
    model, _ = fit_implicit_als(
        data, factors=6, regularization=0.1, alpha=4.0, iterations=5, seed=3
    )
    from implicit.cpu.als import AlternatingLeastSquares

    als = AlternatingLeastSquares(factors=6, regularization=0.1, alpha=4.0, random_state=3)
    als.user_factors = model.user.numpy().copy()
    als.item_factors = model.item.numpy().copy()
    rows = np.array([0, 7, 19])
    hist = data.train[rows].astype(np.float32)
    theirs = np.asarray(als.recalculate_user(rows, hist)) @ model.item.numpy().T
    ours = model.score_history(data.train[rows]).numpy()
    assert np.allclose(ours, theirs, atol=1e-3)
    again = ImplicitALS.from_state(model.state())
    assert np.array_equal(again.score(rows).numpy(), model.score(rows).numpy())


def test_readers_of_the_shared_data_sets_formats(tmp_path):
    (tmp_path / "interactions.csv").write_text("user_id,item_id\n1,1\n2,1\n2,7\n")
    users, items = load_pairs("amazon-digital-music", tmp_path)
    assert users.tolist() == ["1", "2", "2"] and items.tolist() == ["1", "1", "7"]
    (tmp_path / "user_artists.dat").write_text(
        "userID\tartistID\tweight\n2\t51\t13883\n2\t52\t11690\n"
    )
    users, items = load_pairs("lastfm-hetrec-2k", tmp_path)
    assert users.tolist() == ["2", "2"] and items.tolist() == ["51", "52"]


def test_bench_tune_chooses_on_validation_and_reads_test_once(tmp_path, monkeypatch):
    from pipelines.bench import tune

    data = checkerboard(n_users=60, n_items=30)
    monkeypatch.setattr(tune, "dataset_dir", lambda name, data_dir=None: tmp_path)
    monkeypatch.setattr(tune, "load_split", lambda name, folder, seed: (data, {}))
    grid = {"ease_lambda": [1.0, 30.0, 1000.0]}
    res = tune.run(RunConfig(), datasets=["toy"], model="ease", grid=grid, out_dir=tmp_path)
    r = res["toy"]["ease"]
    assert [g["ease_lambda"] for g in r["grid"]] == grid["ease_lambda"]
    best = max(r["grid"], key=lambda g: g["valid_ndcg"])
    assert r["chosen"] == {"ease_lambda": best["ease_lambda"], "valid_ndcg": best["valid_ndcg"]}
    model = fit_ease(data.user_keys, data.train, lam=best["ease_lambda"])[0]
    assert r["test"]["ndcg@20"] == quality._test(model, data, 20)["ndcg@20"]
    assert r["at_grid_edge"] == (["ease_lambda"] if best["ease_lambda"] != 30.0 else [])
    assert "| ease_lambda | valid NDCG@20 | fit s |" in tune.markdown(res)
    assert {"ease", "wmf"} <= set(tune.load_grids(quality_conf().parent / "tune.yaml"))


def test_a_model_that_refuses_the_data_set_is_skipped_with_its_reason(tmp_path, monkeypatch):
    data = checkerboard(n_users=30, n_items=30)
    monkeypatch.setattr(quality, "dataset_dir", lambda name, data_dir=None: tmp_path)
    monkeypatch.setattr(quality, "load_split", lambda name, folder, seed: (data, {}))
    cfg = RunConfig(model={"kind": "ease", "ease_max_items": 20})
    qc = _config(tmp_path, models=["ease", "popularity"])
    res = quality.run(cfg, qc, out_dir=tmp_path)["datasets"]["toy"]
    assert "ease_max_items is 20" in res["models"]["ease"]["skipped"]
    assert res["models"]["ease"]["cells"] == {} and "full" in res["models"]["popularity"]["cells"]
    assert "| ease | skipped:" in quality.markdown({"datasets": {"toy": res}})
    # the configured kind's own settings reach the bench; another kind gets its defaults
    assert quality.settings_of(cfg, "ease").ease_max_items == 20
    assert quality.settings_of(cfg, "wmf").kind == "wmf"


def test_bench_tune_for_shards_scores_the_production_ensemble(tmp_path, monkeypatch):
    from pipelines.bench import tune

    data = checkerboard(n_users=60, n_items=30)
    monkeypatch.setattr(tune, "dataset_dir", lambda name, data_dir=None: tmp_path)
    monkeypatch.setattr(tune, "load_split", lambda name, folder, seed: (data, {}))
    cfg = RunConfig(model={"kind": "wmf", "dim": 4})
    grid = {"wmf_reg": [0.5, 5.0]}
    res = tune.run(cfg, datasets=["toy"], model="wmf", grid=grid, out_dir=tmp_path, n_shards=2)
    (tag,) = res["toy"]
    assert tag == f"wmf at K=2 ({quality.production_method(cfg)})"
    r = res["toy"][tag]
    assert r["n_shards"] == 2 and r["fixed"]["size_classes"] == []  # the grid reaches the shards
    assert len({g["valid_ndcg"] for g in r["grid"]}) == 2  # two settings, two ensembles


def test_grid_search_widens_past_an_edge_until_the_best_is_inside():
    from pipelines.bench.baselines import grid_search

    # a score peaked at x = 40, y = 3: the grid [1, 2, 4] x [2, 3, 5] has its best on x's edge
    def fit(st):
        return st, 0.0

    def score(st):
        return -abs(st["x"] - 40) - abs(st["y"] - 3)

    best, search = grid_search({"x": [1, 2, 4], "y": [2, 3, 5]}, fit, score, widen=3)
    assert [g["x"] for g in search["grid"][9:]] == [8, 16, 32]  # one step out each time
    assert best == {"x": 32, "y": 3} and search["at_grid_edge"] == ["x"]  # still on the edge
    best, search = grid_search({"x": [1, 2, 4], "y": [2, 3, 5]}, fit, score, widen=5)
    assert best == {"x": 32, "y": 3} and search["at_grid_edge"] == []  # 64 scored worse
