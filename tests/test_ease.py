"""EASE's exact unlearning: after forgetting users, interactions or items, the inverse Gram
matrix and the weights equal a refit on the retained rows (float64 round-off), by the
Woodbury path and by the new-inverse path; the fold-in is the model itself."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recunlearn.errors import ConfigError
from recunlearn.models import load_model
from recunlearn.models.ease import EASE


def _data(n_users=240, n_items=70, seed=0):
    rng = np.random.default_rng(seed)
    x = sp.random(n_users, n_items, density=0.12, random_state=rng, format="csr")
    x.data[:] = 1.0
    keys = np.array([f"k{u:04d}" for u in range(n_users)])
    return keys, x.astype(np.float32)


def _close(a: EASE, b: EASE) -> float:
    """Largest difference of the weights, relative to their largest magnitude."""
    wa, wb = a.weights().double(), b.weights().double()
    return float((wa - wb).abs().max() / wb.abs().max())


@pytest.mark.parametrize("refresh_share", [0.25, 0.0])  # Woodbury; a new inverse every time
def test_forgetting_users_equals_a_refit(refresh_share):
    keys, x = _data()
    model = EASE(keys, x, lam=5.0, refresh_share=refresh_share)
    gone = keys[[3, 17, 100]]
    stats = model.forget_users(gone)
    assert stats["users_removed"] == 3 and stats["path"] == (
        "woodbury" if refresh_share else "inverse"
    )
    keep = ~np.isin(keys, gone)
    refit = EASE(keys[keep], x[keep], lam=5.0)
    assert _close(model, refit) < 1e-9
    assert np.abs(model.p - refit.p).max() < 1e-9 and np.array_equal(model.gram, refit.gram)
    assert not model.knows(gone).any() and model.knows(keys[keep]).all()


def test_forgetting_interactions_and_items_equals_a_refit_after_a_sequence():
    keys, x = _data(seed=1)
    model = EASE(keys, x, lam=3.0)
    rng = np.random.default_rng(2)
    xx = x.tolil()
    for _ in range(6):  # interactions of a few users, then an item, then a user, and again
        coo = sp.csr_matrix(xx).tocoo()
        pick = rng.choice(coo.nnz, size=5, replace=False)
        rows, items = coo.row[pick], coo.col[pick]
        model.forget_pairs(model.rows_of(keys[rows]), items)
        for r, i in zip(rows, items, strict=True):
            xx[r, i] = 0
        item = int(rng.integers(0, x.shape[1]))
        model.forget_items(np.array([item]))
        xx[:, item] = 0
    retained = sp.csr_matrix(xx)
    retained.eliminate_zeros()
    refit = EASE(keys, retained, lam=3.0)
    assert _close(model, refit) < 1e-9
    assert (model.x != refit.x).nnz == 0
    # a forgotten item is recommended to nobody, as in the refit
    assert float(model.score(np.arange(len(keys)))[:, item].abs().max()) == 0.0


def test_fold_in_is_the_model_and_the_state_round_trips():
    keys, x = _data(seed=3)
    model = EASE(keys, x, lam=10.0)
    rows = np.array([0, 5, 9])
    assert torch.equal(model.score(rows), model.score_history(x[rows]))
    back = load_model(model.state())
    assert isinstance(back, EASE) and torch.equal(back.score(rows), model.score(rows))
    # and a reloaded model still unlearns exactly
    back.forget_users(keys[:2])
    assert _close(back, EASE(keys[2:], x[2:], lam=10.0)) < 1e-9


def test_a_catalogue_over_the_budget_is_refused_by_name():
    keys, x = _data(n_items=50)
    with pytest.raises(ConfigError, match="ease_max_items is 40"):
        EASE(keys, x, lam=1.0, max_items=40)
