"""The contract every exact method and every sub-model keeps (issue 3).

Sub-models (BPR-MF, WMF, item-kNN, LightGCN, NCF) behind one interface: deterministic for a
seed, scores of the right shape, a state that round-trips, and a fold-in that reads a
history without changing a parameter. Exact methods (SISA, RecEraser, UltraRE, LASER) over
every sub-model: unlearning gives the model that retraining from scratch on the retained
data gives (same seeds, same frozen groups), bit for bit; the forgotten users are unknown to
it; and only the shards (or sequential stages) that held them were retrained.
"""

import numpy as np
import pytest
import torch

from recunlearn.config import FACTOR_MODELS, RunConfig
from recunlearn.models import fit_model, load_model
from pipelines.bench.methods import make_method

from test_bpr import CFG, checkerboard

MODELS = ("bpr", "wmf", "itemknn", "lightgcn", "ncf", "ease")
METHODS = ("sisa", "receraser", "ultrare", "laser")


def _cfg(kind: str) -> RunConfig:
    model = {**CFG.model_dump(), "kind": kind, "dim": 8, "wmf_reg": 0.5, "knn_k": 10,
             "lightgcn_batch_size": 256, "ncf_layers": [8], "ncf_fold_in_steps": 10,
             "ease_lambda": 10.0}
    return RunConfig(model=model, aggregator={"max_epochs": 2},
                     sharding={"embedding_rank": 4, "group_epochs": 10})


def _params(model) -> list[torch.Tensor]:
    state = model.state()
    out = []

    def walk(x):
        if isinstance(x, torch.Tensor):
            out.append(x)
        elif isinstance(x, dict):
            for k in sorted(x):
                if k != "meta":
                    walk(x[k])
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
    walk(state)
    return out


def _same(a, b) -> bool:
    pa, pb = _params(a), _params(b)
    return len(pa) == len(pb) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(pa, pb))


@pytest.fixture(scope="module")
def data():
    return checkerboard(n_users=48, n_items=24)


@pytest.mark.parametrize("kind", MODELS)
def test_submodel_interface(kind, data):
    torch.use_deterministic_algorithms(True)
    cfg = _cfg(kind).model
    model, stats = fit_model(data, cfg, seed=3)
    again, _ = fit_model(data, cfg, seed=3)
    assert _same(model, again), "same data and seed must give the same model"
    assert {"fit_seconds", "epochs", "n_users", "n_train"} <= set(stats)
    rows = np.arange(data.n_users)
    scores = model.score(rows)
    assert scores.shape == (data.n_users, data.n_items) and torch.isfinite(scores).all()
    # it learned something: a user's own-parity held-out items outrank the other parity's
    parity = np.array([int(k[1:]) % 2 for k in data.user_keys])
    own = scores[:, torch.arange(data.n_items) % 2 == 0].mean(1) > scores[:, torch.arange(data.n_items) % 2 == 1].mean(1)
    assert (own.numpy() == (parity == 0)).mean() > 0.9
    # the state round-trips to the same scores
    back = load_model(model.state())
    assert type(back) is type(model) and torch.allclose(back.score(rows), scores)
    # fold-in reads a history and changes nothing; it ranks the history's parity first
    before = [p.clone() for p in _params(model)]
    folded = model.score_history(data.train[:6])
    assert folded.shape == (6, data.n_items)
    assert all(torch.equal(x, y) for x, y in zip(before, _params(model)))
    even = folded[:, 0::2].mean(1) > folded[:, 1::2].mean(1)
    assert (even.numpy() == (parity[:6] == 0)).all()
    # a user the model never saw is scored from the history alone
    assert not model.knows(np.array(["nobody"]))[0]


def test_ncf_fold_ins(data):
    """NCF's linear fold-in scores through a shortcut that must equal the network with the MLP
    user vector at the trained users' mean; the Adam fold-in, kept as an option, still ranks
    the history's parity first."""
    model, _ = fit_model(data, _cfg("ncf").model, seed=3)
    assert model.fold_in_mode == "linear"
    hist = data.train[:6]
    gu, mu = model.fold_in(hist)
    assert torch.allclose(mu, model.module.mlp_user.mean(0).expand_as(mu))
    with torch.no_grad():
        assert torch.allclose(model.score_history(hist), model.module.logits(gu, mu), atol=1e-5)
    parity = np.array([int(k[1:]) % 2 for k in data.user_keys[:6]])
    model.fold_in_mode = "adam"
    folded = model.score_history(hist)
    assert ((folded[:, 0::2].mean(1) > folded[:, 1::2].mean(1)).numpy() == (parity == 0)).all()
    assert load_model(model.state()).fold_in_mode == "adam"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", MODELS)
def test_exact_unlearning_equals_replay(kind, method, data):
    torch.use_deterministic_algorithms(True)
    cfg = _cfg(kind)
    m = make_method(method, cfg, 3)
    fitted = m.fit(data, 11)
    forget = data.user_keys[[5, 6]]
    retained = data.without_users(forget)
    unlearned = m.unlearn(fitted, retained, forget, 11)
    replay = m.replay(fitted, retained, 11)

    if method == "laser":
        stages_u, stages_r = unlearned.run.stages, replay.run.stages
        assert len(stages_u) == len(stages_r) == 3
        assert all(_same(a, b) for a, b in zip(stages_u, stages_r))
        # restarted at the earliest group holding a forgotten user; earlier stages kept as they were
        start = fitted.run.restart_position(forget)
        assert all(a is b for a, b in zip(unlearned.run.stages[:start], fitted.run.stages[:start]))
        assert len(unlearned.shards_touched) == 3 - start
        served = [unlearned.model]
    else:
        touched = sorted(set(fitted.shard_of[np.searchsorted(fitted.keys, forget)].tolist()))
        assert unlearned.shards_touched == touched
        for k, (a, b) in enumerate(zip(unlearned.model.shards, replay.model.shards)):
            assert _same(a, b), f"shard {k} differs from its replay"
            if k not in touched:
                assert a is fitted.model.shards[k]
        expect_agg = {"sisa": "mean", "receraser": "attention", "ultrare": "learned"}[method]
        assert unlearned.model.aggregator.kind == (expect_agg if kind in FACTOR_MODELS else "mean")
        served = unlearned.model.shards
    for model in served:
        assert not model.knows(forget).any()
    # the served scores are the replay's
    keys, hist = retained.user_keys, retained.train
    assert torch.equal(unlearned.model.score_users(keys, hist), replay.model.score_users(keys, hist))
