"""The sharded ensemble and its aggregators.

Every shard model scores every user: with the user's trained vector in the shard that holds
the user (its home shard), and with a least-squares fold-in of the user's current history
elsewhere. Fold-in reads the history at serving time and never changes a parameter, so a
forgotten user, whose history is gone, leaves nothing behind.

Aggregators combine the K score vectors:
- ``MeanAggregator``: the plain mean (SISA);
- ``LearnedWeights``: UltraRE-style learned weights, a logistic regression over the K shard
  scores (and the home shard's), refit on retained data after every deletion;
- ``AttentionAggregator``: RecEraser-style attention over the user's K shard embeddings,
  softmax_k(h . tanh(W_k e_uk + c) + home_bonus [k is home]), times a per-shard gain; trained
  with the BPR loss on retained training data, shard models frozen, early-stopped on
  validation.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from recunlearn.config import AggregatorConfig
from recunlearn.data.interactions import InteractionData, has_pairs
from recunlearn.metrics import evaluate
from recunlearn.models.base import FactorModel
from recunlearn.models.trainer import TorchTrainer


def shard_views(
    shards: Sequence[Any], keys: np.ndarray, history: sp.csr_matrix, *, trained: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """User vectors (K, n, d) in every shard's space and the home mask (K, n).

    With ``trained=False`` every vector is a fold-in, even in the home shard.
    """
    vecs, home = [], []
    for m in shards:
        rows = m.rows_of(keys)
        known = rows >= 0
        v = m.fold_in(history)
        if trained and known.any():
            v[torch.from_numpy(np.flatnonzero(known))] = m.user[torch.from_numpy(rows[known])]
        vecs.append(v)
        home.append(torch.from_numpy(known))
    return torch.stack(vecs), torch.stack(home)


def shard_scores(shards: Sequence[Any], vecs: torch.Tensor) -> torch.Tensor:
    """Scores (K, n, n_items) from user vectors (K, n, d)."""
    return torch.stack([vecs[k] @ m.item.T + m.bias for k, m in enumerate(shards)])


@runtime_checkable
class Aggregator(Protocol):
    """Combines K shard models' scores of the same users into one: weights (n, K) from the
    users' per-shard vectors (K, n, d) and home mask (K, n). The fitted kinds learn them on
    retained data (``fit``); the mean has nothing to fit."""

    kind: str

    def weights(self, vecs: torch.Tensor, home: torch.Tensor) -> torch.Tensor: ...

    def combine(
        self, scores: torch.Tensor, vecs: torch.Tensor, home: torch.Tensor
    ) -> torch.Tensor: ...

    def state(self) -> dict[str, Any]: ...


class MeanAggregator:
    kind = "mean"

    def weights(self, vecs: torch.Tensor, home: torch.Tensor) -> torch.Tensor:
        k = vecs.shape[0]
        return torch.full((vecs.shape[1], k), 1.0 / k)

    def combine(self, scores: torch.Tensor, vecs: torch.Tensor, home: torch.Tensor) -> torch.Tensor:
        return scores.mean(0)

    def state(self) -> dict[str, Any]:
        return {"kind": "mean"}


class AttentionModule(nn.Module):
    def __init__(self, n_shards: int, dim: int, att_dim: int, g: torch.Generator) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.empty(n_shards, dim, att_dim))
        nn.init.normal_(self.w, std=1.0 / np.sqrt(dim), generator=g)
        self.c = nn.Parameter(torch.zeros(att_dim))
        self.h = nn.Parameter(torch.zeros(att_dim))
        # Starts as the plain mean (zero bonus, unit gains): training can only move away
        # from it when validation says so.
        self.home_bonus = nn.Parameter(torch.tensor(0.0))
        self.gain = nn.Parameter(torch.ones(n_shards))

    def weights(self, vecs: torch.Tensor, home: torch.Tensor) -> torch.Tensor:
        """Attention (n, K) from user vectors (K, n, d) and home mask (K, n)."""
        z = torch.tanh(torch.einsum("knd,kda->kna", vecs, self.w) + self.c)
        logits = (z @ self.h) + self.home_bonus * home.float()
        return torch.softmax(logits.T, dim=1) * self.gain[None, :]


class AttentionAggregator:
    kind = "attention"

    def __init__(self, module: AttentionModule, meta: dict[str, Any] | None = None) -> None:
        self.module = module
        self.meta = dict(meta or {})

    def weights(self, vecs: torch.Tensor, home: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.module.weights(vecs, home)

    def combine(self, scores: torch.Tensor, vecs: torch.Tensor, home: torch.Tensor) -> torch.Tensor:
        w = self.weights(vecs, home)  # (n, K)
        return torch.einsum("nk,kni->ni", w, scores)

    def state(self) -> dict[str, Any]:
        return {
            "kind": "attention",
            "params": self.module.state_dict(),
            "meta": self.meta,
            "shape": list(self.module.w.shape),
        }


def _attention_from_state(state: dict[str, Any]) -> AttentionAggregator:
    k, d, a = state["shape"]
    module = AttentionModule(k, d, a, torch.Generator().manual_seed(0))
    module.load_state_dict(state["params"])
    return AttentionAggregator(module, state.get("meta"))


def load_aggregator(state: dict[str, Any]) -> Aggregator:
    """The aggregator a checkpoint's state describes; an unknown kind is refused."""
    return aggregator_kind(state.get("kind", "?")).load(state)


class ShardedEnsemble:
    """K shard models plus an aggregator, scoring users from their keys and histories."""

    def __init__(self, shards: Sequence[Any], aggregator: Aggregator, overlay: Any = None) -> None:
        self.shards = list(shards)
        self.aggregator = aggregator
        self.n_items = shards[0].n_items
        # attribute edits (recunlearn.attribute.edit.AttributeOverlay) over the unedited shards
        self.overlay = overlay

    def knows(self, keys: np.ndarray) -> np.ndarray:
        """Whether any shard holds a trained vector for each key."""
        return np.any([m.rows_of(keys) >= 0 for m in self.shards], axis=0)

    def score(self, keys: np.ndarray, history: sp.csr_matrix) -> torch.Tensor:
        """Aggregated scores of users by key (``history``: their current interaction rows)."""
        with torch.no_grad():
            if not all(isinstance(m, FactorModel) for m in self.shards):
                # other sub-models (WMF, item-kNN): each shard scores as it serves (trained row at
                # home, its own fold-in elsewhere), and the mean combines them
                return torch.stack([m.score_users(keys, history) for m in self.shards]).mean(0)
            vecs, home = shard_views(self.shards, keys, history)
            if self.overlay is not None:
                vecs = self.overlay.apply(keys, vecs)
            return self.aggregator.combine(shard_scores(self.shards, vecs), vecs, home)

    score_users = score  # the interface shared with single models (Recommender.score_users)


@dataclass
class _PairData:
    """What an aggregator learns from, on retained training data with the shards frozen.

    Validation uses inference views (home shards' trained vectors). Training pairs must be
    unseen by the views that score them: a home shard has memorised its training pairs, and a
    fold-in fit to an item ranks that item high. So each user's training items are split:
    views are folded in from one part ("shown"), the loss is taken on the other ("held"),
    each held pair with one seeded negative the user never had. Shard models are frozen, so
    every pair's K shard scores are fixed and computed once; the validation users' views and
    scores too.
    """

    fold: torch.Tensor  # (K, n_users, d) fold-in views from the shown part
    home: torch.Tensor  # (K, n_users) bool
    pos_u: torch.Tensor  # (P,) user row of each held pair
    pos: torch.Tensor  # (K, P) shard scores of the held item
    neg: torch.Tensor  # (K, P) shard scores of its negative
    valid_users: np.ndarray
    vecs_v: torch.Tensor
    home_v: torch.Tensor
    scores_v: torch.Tensor
    data: InteractionData

    def validate(self, weights: Any) -> float:
        """Validation NDCG@20 with ``weights(vecs, home) -> (n, K)``."""
        with torch.no_grad():

            def rows(r: np.ndarray) -> torch.Tensor:
                p = torch.from_numpy(np.searchsorted(self.valid_users, r))
                return torch.einsum(
                    "nk,kni->ni", weights(self.vecs_v[:, p], self.home_v[:, p]), self.scores_v[:, p]
                )

            return evaluate(
                rows, self.valid_users, self.data.train, self.data.valid, k=20, batch=256
            )["ndcg@20"]


def _pair_data(
    shards: list[FactorModel],
    data: InteractionData,
    cfg: AggregatorConfig,
    g: torch.Generator,
    rng: np.random.Generator,
) -> _PairData:
    k = len(shards)
    for m in shards:
        m.fold_in_reg = cfg.fold_in_reg
    home = torch.stack([torch.from_numpy(m.rows_of(data.user_keys) >= 0) for m in shards])
    coo = data.train.tocoo()
    held = rng.random(coo.nnz) < cfg.holdout
    shown = sp.csr_matrix(
        (coo.data[~held], (coo.row[~held], coo.col[~held])), shape=data.train.shape
    )
    fold, _ = shard_views(shards, data.user_keys, shown, trained=False)
    items = torch.stack([m.item for m in shards])  # (K, n_items, d)
    bias = torch.stack([m.bias for m in shards])  # (K, n_items)
    pos_u = torch.from_numpy(coo.row[held].astype(np.int64))
    pos_i = torch.from_numpy(coo.col[held].astype(np.int64))
    # negatives among the items the user never had: a shown item would score high under the
    # fold-in and teach the aggregator that fold-in scores mislead
    pos_j = torch.randint(data.n_items, (len(pos_u),), generator=g)
    for _ in range(20):
        seen = torch.from_numpy(has_pairs(data.train, pos_u.numpy(), pos_j.numpy()))
        if not seen.any():
            break
        pos_j[seen] = torch.randint(data.n_items, (int(seen.sum()),), generator=g)
    kk = torch.arange(k)[:, None]
    pos, neg = torch.empty(k, len(pos_u)), torch.empty(k, len(pos_u))
    with torch.no_grad():
        for s in range(0, len(pos_u), cfg.batch_size):
            u = pos_u[s : s + cfg.batch_size]
            for out, it in ((pos, pos_i), (neg, pos_j)):
                i = it[s : s + cfg.batch_size][None, :]
                out[:, s : s + len(u)] = (fold[:, u] * items[kk, i]).sum(-1) + bias[kk, i]
    valid_users = np.flatnonzero(np.diff(data.valid.indptr) > 0)
    if len(valid_users) > cfg.max_valid_users:
        valid_users = np.sort(rng.choice(valid_users, cfg.max_valid_users, replace=False))
    budget = cfg.valid_cache_mb * 2**20 // (4 * k * data.n_items)
    if len(valid_users) > budget:
        valid_users = np.sort(rng.choice(valid_users, max(int(budget), 10), replace=False))
    vecs_v, home_v = shard_views(shards, data.user_keys[valid_users], data.train[valid_users])
    with torch.no_grad():
        scores_v = torch.einsum("knd,kid->kni", vecs_v, items) + bias[:, None, :]
    return _PairData(fold, home, pos_u, pos, neg, valid_users, vecs_v, home_v, scores_v, data)


def fit_attention(
    shards: list[FactorModel],
    data: InteractionData,
    cfg: AggregatorConfig,
    *,
    seed: int,
    rng: np.random.Generator,
) -> tuple[AttentionAggregator, dict[str, Any]]:
    """Train the attention aggregator on ``data.train`` (retained data only), shard models
    frozen, with the BPR loss on held pairs (``_PairData``), in ``TorchTrainer``'s loop from
    the initial (near-uniform) weights; early-stop on validation NDCG@20 of at most
    ``cfg.max_valid_users`` users."""
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    pd_ = _pair_data(shards, data, cfg, g, rng)
    module = AttentionModule(len(shards), pd_.fold.shape[2], cfg.attention_dim, g)
    diffs = pd_.pos - pd_.neg
    pos_u = pd_.pos_u

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, int]]:
        perm = torch.randperm(len(pos_u), generator=g)
        for s in range(0, len(pos_u), cfg.batch_size):
            idx = perm[s : s + cfg.batch_size]
            # attention depends on the user only: compute it once per distinct user in the batch
            uniq, inv = torch.unique(pos_u[idx], return_inverse=True)
            w = module.weights(pd_.fold[:, uniq], pd_.home[:, uniq])[inv]  # (B, K)
            yield -nn.functional.logsigmoid((w * diffs[:, idx].T).sum(1)).mean(), len(idx)

    trainer = TorchTrainer(
        lr=cfg.lr, max_epochs=cfg.max_epochs, patience=cfg.patience, validate_first=True
    )
    fit = trainer.fit(module, batches, lambda: pd_.validate(module.weights))
    stats = {
        "epochs": fit.epochs,
        "valid_ndcg": fit.best,
        "fit_seconds": time.perf_counter() - t0,
        "n_train": int(len(pos_u)),
        "curve": fit.curve,
    }
    return AttentionAggregator(module, {"stats": stats}), stats


class LearnedWeights:
    """UltraRE-style learned weights: score = sum_k (w_k + h [k is home]) s_k, the weights
    from a logistic regression over the K shard scores of held pairs and their negatives."""

    kind = "learned"

    def __init__(
        self, w: torch.Tensor, home_weight: float, meta: dict[str, Any] | None = None
    ) -> None:
        self.w = w.detach().clone().float()
        self.home_weight = float(home_weight)
        self.meta = dict(meta or {})

    def weights(self, vecs: torch.Tensor, home: torch.Tensor) -> torch.Tensor:
        return self.w[None, :] + self.home_weight * home.T.float()

    def combine(self, scores: torch.Tensor, vecs: torch.Tensor, home: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nk,kni->ni", self.weights(vecs, home), scores)

    def state(self) -> dict[str, Any]:
        return {"kind": "learned", "w": self.w, "home_weight": self.home_weight, "meta": self.meta}


def fit_learned(
    shards: list[FactorModel],
    data: InteractionData,
    cfg: AggregatorConfig,
    *,
    seed: int,
    rng: np.random.Generator,
) -> tuple[LearnedWeights, dict[str, Any]]:
    """Logistic regression (L-BFGS, full batch, L2 ``cfg.learned_l2``) of held pair vs negative
    on the K shard scores and the home shard's score, from the plain mean. The fit is kept
    only if validation NDCG@20 is at least the mean's (it is recorded either way)."""
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    pd_ = _pair_data(shards, data, cfg, g, rng)
    k = len(shards)
    home_p = pd_.home[:, pd_.pos_u].float()  # (K, P)
    x = torch.cat(
        [
            torch.cat([pd_.pos.T, (home_p * pd_.pos).sum(0)[:, None]], 1),
            torch.cat([pd_.neg.T, (home_p * pd_.neg).sum(0)[:, None]], 1),
        ]
    ).double()
    y = torch.cat([torch.ones(len(pd_.pos_u)), torch.zeros(len(pd_.pos_u))]).double()
    scale = x.std(0).clamp_min(1e-12)  # standardised features: a well-conditioned problem
    theta = torch.zeros(k + 2, dtype=torch.float64, requires_grad=True)  # k weights, home, bias
    with torch.no_grad():
        theta[:k] = scale[:k] / k  # the mean, in standardised units
    opt = torch.optim.LBFGS(
        [theta], lr=1.0, max_iter=cfg.learned_iterations, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        z = (x / scale) @ theta[: k + 1] + theta[k + 1]
        loss = (
            nn.functional.binary_cross_entropy_with_logits(z, y)
            + cfg.learned_l2 * (theta[: k + 1] ** 2).sum()
        )
        loss.backward()
        return loss

    opt.step(closure)
    raw = (theta.detach()[: k + 1] / scale).float()
    learned = LearnedWeights(raw[:k], float(raw[k]))
    mean = LearnedWeights(torch.full((k,), 1.0 / k), 0.0)
    ndcg_learned, ndcg_mean = pd_.validate(learned.weights), pd_.validate(mean.weights)
    chosen = learned if ndcg_learned >= ndcg_mean else mean
    stats = {
        "epochs": 1,
        "valid_ndcg": max(ndcg_learned, ndcg_mean),
        "valid_ndcg_learned": ndcg_learned,
        "valid_ndcg_mean": ndcg_mean,
        "kept": "learned" if chosen is learned else "mean",
        "weights": [round(float(v), 5) for v in chosen.w],
        "home_weight": round(chosen.home_weight, 5),
        "fit_seconds": time.perf_counter() - t0,
        "n_train": int(len(pd_.pos_u)),
    }
    chosen.meta = {"stats": stats}
    return chosen, stats


@dataclass(frozen=True)
class AggregatorKind:
    """One aggregator kind: how to rebuild it from a state, and how to fit it (None: nothing
    to fit; ``fit(shards, data, cfg, *, seed, rng) -> (aggregator, stats)``)."""

    name: str
    load: Callable[[dict[str, Any]], Aggregator]
    fit: Callable[..., tuple[Aggregator, dict[str, Any]]] | None
    summary: str


AGGREGATORS: dict[str, AggregatorKind] = {
    a.name: a
    for a in (
        AggregatorKind(
            "mean", lambda state: MeanAggregator(), None, "the plain mean of the shards' scores"
        ),
        AggregatorKind(
            "attention",
            _attention_from_state,
            fit_attention,
            "RecEraser's attention over the shards' user vectors, fit on retained data",
        ),
        AggregatorKind(
            "learned",
            lambda state: LearnedWeights(state["w"], state["home_weight"], state.get("meta")),
            fit_learned,
            "UltraRE's learned weights (logistic regression over shard scores)",
        ),
    )
}


def aggregator_kind(name: str) -> AggregatorKind:
    try:
        return AGGREGATORS[name]
    except KeyError:
        raise ValueError(
            f"unknown aggregator kind {name!r}: one of {', '.join(AGGREGATORS)}"
        ) from None
