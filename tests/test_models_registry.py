"""Sub-model selection: the config's checks, fitting and reloading every kind, and the
ensemble's mean over shards of any kind."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recunlearn.config import load_config
from recunlearn.data.interactions import InteractionData
from recunlearn.data.split import split_pairs
from recunlearn.engines import PROJECT_ROOT
from recunlearn.errors import ConfigError
from recunlearn.models import fit_model
from recunlearn.sharding.ensemble import MeanAggregator, ShardedEnsemble

CONF = PROJECT_ROOT / "conf" / "test.yaml"


def small_data(seed=0):
    rng = np.random.default_rng(seed)
    u, i = np.nonzero(rng.random((60, 30)) < 0.2)
    keys = np.array([f"u{x:03d}" for x in range(60)])[u]
    return InteractionData.from_columns(
        keys, i, split_pairs(keys, i, valid=0.1, test=0.1, seed=1), 30
    )


def test_config_rejects_mismatched_model_and_method():
    with pytest.raises(ConfigError, match="aggregator.kind=mean"):
        load_config(CONF, ["model.kind=wmf", "aggregator.kind=attention"])
    with pytest.raises(ConfigError, match="updates wmf models"):
        load_config(CONF, ["unlearn.method=als"])
    with pytest.raises(ConfigError, match="updates bpr models"):
        load_config(CONF, ["model.kind=itemknn", "unlearn.method=scif"])
    assert load_config(CONF, ["model.kind=itemknn", "unlearn.method=knn"]).model.kind == "itemknn"
    # the fitted aggregators need user vectors: LightGCN has them, NCF does not
    assert (
        load_config(CONF, ["model.kind=lightgcn", "aggregator.kind=attention"]).model.kind
        == "lightgcn"
    )
    with pytest.raises(ConfigError, match="aggregator.kind=mean"):
        load_config(CONF, ["model.kind=ncf", "aggregator.kind=learned"])


def test_ensemble_mean_over_other_kinds():
    data = small_data(1)
    cfg = load_config(CONF, ["model.kind=itemknn"]).model
    halves = [data.subset(np.arange(0, 30)), data.subset(np.arange(30, data.n_users))]
    shards = [fit_model(h, cfg, seed=0)[0] for h in halves]
    ens = ShardedEnsemble(shards, MeanAggregator())
    keys, hist = data.user_keys[:4], data.train[:4]
    want = (shards[0].score_users(keys, hist) + shards[1].score_users(keys, hist)) / 2
    assert torch.allclose(ens.score(keys, hist), want)
    assert ens.knows(data.user_keys).all()


def test_has_pairs_matches_a_dense_lookup():
    from recunlearn.data.interactions import has_pairs

    rng = np.random.default_rng(5)
    dense = (rng.random((40, 30)) < 0.2).astype(np.float32)
    dense[3] = 0  # a row without interactions
    m = sp.csr_matrix(dense)
    m.data[:2] = 0  # stored zeros are not interactions
    dense = m.toarray()
    rows, cols = rng.integers(0, 40, 500), rng.integers(0, 30, 500)
    rows[:5] = 3
    assert np.array_equal(has_pairs(m, rows, cols), dense[rows, cols] != 0)
    assert has_pairs(m, np.array([], int), np.array([], int)).shape == (0,)
    assert not has_pairs(sp.csr_matrix((5, 5)), np.array([1]), np.array([2])).any()
