"""The contract every exact method keeps (issue 3); the sub-models' own contract is
``recunlearn.testing`` (tests/test_components.py).

Exact methods (SISA, RecEraser, UltraRE, LASER) over
every sub-model: unlearning gives the model that retraining from scratch on the retained
data gives (same seeds, same frozen groups), bit for bit; the forgotten users are unknown to
it; and only the shards (or sequential stages) that held them were retrained.
"""

import numpy as np
import pytest
import torch
from test_bpr import CFG

from pipelines.bench.methods import make_method
from recunlearn.config import RunConfig
from recunlearn.models import FACTOR_MODELS, fit_model, load_model
from recunlearn.testing import checkerboard, same_state

MODELS = ("bpr", "wmf", "itemknn", "lightgcn", "ncf", "ease")
METHODS = ("sisa", "receraser", "ultrare", "laser")


def _cfg(kind: str) -> RunConfig:
    own = {
        "wmf": {"wmf_reg": 0.5},
        "itemknn": {"knn_k": 10},
        "lightgcn": {"lightgcn_batch_size": 256},
        "ncf": {"ncf_layers": [8], "ncf_fold_in_steps": 10},
        "ease": {"ease_lambda": 10.0},
    }
    model = {**CFG.model_dump(), "kind": kind, "dim": 8, **own.get(kind, {})}
    return RunConfig(
        model=model,
        aggregator={"max_epochs": 2},
        sharding={"embedding_rank": 4, "group_epochs": 10},
    )


@pytest.fixture(scope="module")
def data():
    return checkerboard(n_users=48, n_items=24)


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
        assert all(same_state(a, b) for a, b in zip(stages_u, stages_r, strict=True))
        # restarted at the earliest group holding a forgotten user; earlier stages kept as they were
        start = fitted.run.restart_position(forget)
        assert all(
            a is b
            for a, b in zip(unlearned.run.stages[:start], fitted.run.stages[:start], strict=True)
        )
        assert len(unlearned.shards_touched) == 3 - start
        served = [unlearned.model]
    else:
        touched = sorted(set(fitted.shard_of[np.searchsorted(fitted.keys, forget)].tolist()))
        assert unlearned.shards_touched == touched
        for k, (a, b) in enumerate(zip(unlearned.model.shards, replay.model.shards, strict=True)):
            assert same_state(a, b), f"shard {k} differs from its replay"
            if k not in touched:
                assert a is fitted.model.shards[k]
        expect_agg = {"sisa": "mean", "receraser": "attention", "ultrare": "learned"}[method]
        assert unlearned.model.aggregator.kind == (expect_agg if kind in FACTOR_MODELS else "mean")
        served = unlearned.model.shards
    for model in served:
        assert not model.knows(forget).any()
    # the served scores are the replay's
    keys, hist = retained.user_keys, retained.train
    assert torch.equal(
        unlearned.model.score_users(keys, hist), replay.model.score_users(keys, hist)
    )
