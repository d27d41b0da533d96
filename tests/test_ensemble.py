"""Ensemble and aggregators on the checkerboard, split into user shards."""

import numpy as np
import torch
from test_bpr import CFG

from recunlearn.config import AggregatorConfig
from recunlearn.data.interactions import InteractionData
from recunlearn.models.bpr import fit_bpr
from recunlearn.sharding.ensemble import (
    MeanAggregator,
    ShardedEnsemble,
    fit_attention,
    fit_learned,
    load_aggregator,
)
from recunlearn.testing import checkerboard


def shards_of(data: InteractionData, k: int = 3):
    out = []
    for s in range(k):
        keep = np.arange(data.n_users) % k == s
        sub = InteractionData(
            data.user_keys[keep], data.train[keep], data.valid[keep], data.test[keep]
        )
        model, _ = fit_bpr(sub, CFG, seed=10 + s)
        out.append(model)
    return out


def test_mean_ensemble_scores_home_and_unknown_users_sensibly():
    data = checkerboard(n_users=60, n_items=30)
    shards = shards_of(data)
    ens = ShardedEnsemble(shards, MeanAggregator())
    assert ens.knows(data.user_keys).all()
    assert not ens.knows(np.array(["stranger"])).any()
    top = torch.topk(ens.score(data.user_keys, data.train), 5, dim=1).indices
    parity = torch.tensor([int(k[1:]) % 2 for k in data.user_keys])
    assert ((top % 2) == parity[:, None]).float().mean() > 0.9
    # a user no shard was trained on is scored from history alone, parameters untouched
    liked = np.array([1, 3, 5, 7, 9, 11, 13, 15])
    hist = InteractionData.from_columns(
        np.array(["stranger"] * 8), liked, np.array(["train"] * 8), data.n_items
    ).train
    s = ens.score(np.array(["stranger"]), hist)[0]
    s[liked] = -torch.inf
    assert (torch.topk(s, 5).indices % 2 == 1).float().mean() >= 0.8


def test_attention_starts_at_the_mean_keeps_its_best_and_round_trips():
    data = checkerboard(n_users=60, n_items=30)
    shards = shards_of(data)
    agg, stats = fit_attention(
        shards, data, AggregatorConfig(max_epochs=3), seed=1, rng=np.random.default_rng(0)
    )
    # epoch 0 is the plain mean (zero bonus, unit gains); early stopping never ends below it
    epoch, loss, at_start = stats["curve"][0]
    assert epoch == 0 and loss is None  # validated before any step
    # the best validation is kept (curve scores are rounded to 5 places)
    assert round(stats["valid_ndcg"], 5) == max(c[2] for c in stats["curve"]) >= at_start
    vecs = torch.randn(3, 4, shards[0].item.shape[1])
    home = torch.zeros(3, 4, dtype=torch.bool)
    again = load_aggregator(agg.state())
    assert torch.allclose(again.weights(vecs, home), agg.weights(vecs, home))


def test_learned_weights_turn_down_a_noisy_shard_and_round_trip():
    data = checkerboard(n_users=60, n_items=30)
    shards = shards_of(data)
    g = torch.Generator().manual_seed(3)
    noisy = shards[2]  # its items scrambled: its scores carry no signal, only noise
    noisy.item = torch.randn(noisy.item.shape, generator=g) * noisy.item.std() * 3
    agg, stats = fit_learned(shards, data, AggregatorConfig(), seed=1, rng=np.random.default_rng(0))
    assert stats["kept"] == "learned" and stats["valid_ndcg_learned"] >= stats["valid_ndcg_mean"]
    w = agg.w.abs()
    assert w[2] < 0.6 * min(w[0], w[1]) and stats["valid_ndcg_learned"] > stats["valid_ndcg_mean"]
    again = load_aggregator(agg.state())
    vecs = torch.randn(3, 4, shards[0].item.shape[1])
    home = torch.rand(3, 4) < 0.3
    assert torch.equal(again.weights(vecs, home), agg.weights(vecs, home))
    scores = torch.randn(3, 4, data.n_items)
    assert torch.allclose(
        again.combine(scores, vecs, home), (agg.weights(vecs, home).T[:, :, None] * scores).sum(0)
    )
