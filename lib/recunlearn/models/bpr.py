"""BPR matrix factorisation (Rendle et al., 2009) in torch, with item biases.

The module knows its parameters and loss; :func:`fit_bpr` trains any ``PairwiseModule``
(BPR-MF's, LightGCN's, NCF's) with ``TorchTrainer``'s epoch loop and ``PairSampler``'s batches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from recunlearn.data.interactions import InteractionData
from recunlearn.metrics import evaluate
from recunlearn.models.base import FactorModel
from recunlearn.models.trainer import PairSampler, PairwiseModule, TorchTrainer

if TYPE_CHECKING:
    from recunlearn.config import ModelSettings

log = logging.getLogger(__name__)


class FactorModule(nn.Module):
    """Trainable user, item and item-bias parameters scored as user . item + bias (BPR-MF's;
    LightGCN's layer 0, which it propagates before scoring): a ``PairwiseModule`` less its
    loss and its trained model."""

    negatives = 1

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        init_std: float,
        generator: torch.Generator,
        *,
        train_bias: bool = True,
    ) -> None:
        super().__init__()
        self.user = nn.Parameter(torch.empty(n_users, dim))
        self.item = nn.Parameter(torch.empty(n_items, dim))
        self.bias = nn.Parameter(torch.zeros(n_items), requires_grad=train_bias)
        nn.init.normal_(self.user, std=init_std, generator=generator)
        nn.init.normal_(self.item, std=init_std, generator=generator)

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(users, items, item bias) as scored: score(u, i) = users[u] . items[i] + bias[i]."""
        return self.user, self.item, self.bias

    def scorer(self) -> Callable[[np.ndarray], torch.Tensor]:
        users, items, bias = self.embeddings()
        return lambda rows: users[torch.from_numpy(rows)] @ items.T + bias

    def warm_start(self, keys: np.ndarray, init: BPRMF) -> None:
        """Copy ``init``'s item parameters and the rows of the users it knows (a LightGCN's
        layer-0 embeddings, ``init.base``, where it has them)."""
        user, item, bias = getattr(init, "base", None) or (init.user, init.item, init.bias)
        rows = init.rows_of(keys)
        known = np.flatnonzero(rows >= 0)
        with torch.no_grad():
            self.item.copy_(item)
            self.bias.copy_(bias)
            if len(known):
                self.user[torch.from_numpy(known)] = user[torch.from_numpy(rows[known])]


class BPRModule(FactorModule):
    def loss(self, u: torch.Tensor, i: torch.Tensor, j: torch.Tensor, reg: float) -> torch.Tensor:
        # embedding() rather than indexing: its dense backward is a fast deterministic
        # scatter, where index backward under deterministic mode sorts every step
        emb = nn.functional.embedding
        pu, qi, qj = emb(u, self.user), emb(i, self.item), emb(j, self.item)
        x = (pu * (qi - qj)).sum(1) + self.bias[i] - self.bias[j]
        penalty = pu.pow(2).sum() + qi.pow(2).sum() + qj.pow(2).sum()
        return -nn.functional.logsigmoid(x).mean() + reg * penalty / len(u)

    def model(self, user_keys: np.ndarray) -> BPRMF:
        return BPRMF(user_keys, self.user, self.item, self.bias)


class SparseBPRModule(BPRModule):
    """BPR-MF whose step costs what its batch touches (``model.optimizer: sparse_adam``):
    the loss reads users, items and item biases through sparse embedding lookups, so the
    gradients are sparse and ``SparseAdam`` updates only the rows of the batch. The dense
    module's Adam updates every row of every parameter each step (and its embedding backward
    is a dense scatter over the item table): on an item-heavy log, most of a shard's time.

    The initial values are the dense module's for the same generator; the trajectories differ
    (Adam's moments of rows a batch does not touch stay where they were)."""

    def __init__(
        self, n_users: int, n_items: int, dim: int, init_std: float, generator: torch.Generator
    ) -> None:
        nn.Module.__init__(self)
        self.user = nn.Parameter(torch.empty(n_users, dim))
        self.item = nn.Parameter(torch.empty(n_items, dim))
        self.item_bias = nn.Parameter(torch.zeros(n_items, 1))  # 2-D: a sparse lookup's table
        nn.init.normal_(self.user, std=init_std, generator=generator)
        nn.init.normal_(self.item, std=init_std, generator=generator)

    @property
    def bias(self) -> torch.Tensor:  # type: ignore[override]  # a view of item_bias
        return self.item_bias[:, 0]

    def loss(self, u: torch.Tensor, i: torch.Tensor, j: torch.Tensor, reg: float) -> torch.Tensor:
        emb = nn.functional.embedding
        pu, qi, qj = (
            emb(x, t, sparse=True) for x, t in ((u, self.user), (i, self.item), (j, self.item))
        )
        bi, bj = (
            emb(i, self.item_bias, sparse=True)[:, 0],
            emb(j, self.item_bias, sparse=True)[:, 0],
        )
        x = (pu * (qi - qj)).sum(1) + bi - bj
        penalty = pu.pow(2).sum() + qi.pow(2).sum() + qj.pow(2).sum()
        return -nn.functional.logsigmoid(x).mean() + reg * penalty / len(u)


class BPRMF(FactorModel):
    """Trained BPR-MF factors for the users in ``user_keys``."""

    def __init__(
        self,
        user_keys: np.ndarray,
        user: torch.Tensor,
        item: torch.Tensor,
        bias: torch.Tensor,
        meta: dict[str, Any] | None = None,
        fold_in_reg: float = 1.0,
    ) -> None:
        self.user_keys = np.asarray(user_keys).astype(str)
        self.user = user.detach().float().contiguous()
        self.item = item.detach().float().contiguous()
        self.bias = bias.detach().float().contiguous()
        self.n_items = int(item.shape[0])
        self.meta = dict(meta or {})
        self.fold_in_reg = fold_in_reg
        self._fold: torch.Tensor | None = None

    def fold_in(self, history: sp.csr_matrix, *, chunk: int = 4096) -> torch.Tensor:
        """User vectors from interaction rows alone; the model's parameters never change.

        Two vectorised steps: the direction from least squares, argmin ||x - Q p||^2 +
        reg ||p||^2 (one shared (d, d) solve for all users), then a per-user scale by Newton
        steps on a class-balanced logistic likelihood of x under a * Q p + b, which puts the
        folded vector on the trained users' logit scale (without it, item biases swamp it).
        """
        if self._fold is None:
            self._fold = fold_matrix(self.item, self.fold_in_reg)
        fold: torch.Tensor = self._fold
        return linear_fold_in(history, self.item, self.bias, fold, chunk=chunk)

    def state(self) -> dict[str, Any]:
        return {
            "kind": "bpr",
            "user_keys": self.user_keys.tolist(),
            "user": self.user,
            "item": self.item,
            "bias": self.bias,
            "meta": self.meta,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BPRMF:
        return cls(
            np.asarray(state["user_keys"], dtype=str),
            state["user"],
            state["item"],
            state["bias"],
            state.get("meta"),
        )


def fold_matrix(item: torch.Tensor, reg: float) -> torch.Tensor:
    """(n_items, d): a history row times it is the ridge least-squares user vector,
    argmin ||x - Q p||^2 + reg ||p||^2 (one shared (d, d) solve)."""
    q = item.double()
    gram = q.T @ q + reg * torch.eye(q.shape[1], dtype=torch.float64)
    return torch.linalg.solve(gram, q.T).T.float()


def linear_fold_in(
    history: sp.csr_matrix,
    item: torch.Tensor,
    bias: torch.Tensor,
    fold: torch.Tensor,
    *,
    chunk: int = 4096,
) -> torch.Tensor:
    """User vectors for a model scoring ``p . item[i] + bias[i]``, from history rows alone:
    the least-squares direction (``fold``, see :func:`fold_matrix`), scaled per user onto the
    trained users' logit scale (:func:`_logit_scale`)."""
    direction = torch.from_numpy(np.asarray(history.astype(np.float32) @ fold.numpy()))
    out = torch.empty_like(direction)
    for s in range(0, history.shape[0], chunk):
        p = direction[s : s + chunk]
        out[s : s + chunk] = p * _logit_scale(p @ item.T, history[s : s + chunk], bias)[:, None]
    return out


def _logit_scale(
    s0: torch.Tensor,
    history: sp.csr_matrix,
    bias: torch.Tensor,
    *,
    steps: int = 30,
    tol: float = 1e-3,
) -> torch.Tensor:
    """Per-row a >= 0 maximising the class-balanced log-likelihood of the rows of ``history``
    (positives weighted 1/n_pos, the other items 1/n_neg) under sigmoid(a * s0 + bias).

    Safeguarded Newton steps on the rows still moving by more than ``tol`` (relative): the
    likelihood is concave in a, so its gradient falls with a, and each row keeps a bracket
    [lo, hi] around the optimum (lo: gradient seen positive, hi: negative). A Newton step
    that leaves the bracket is replaced by its midpoint (or, with no upper end yet, a
    doubling): past the optimum the logits saturate, the curvature vanishes and plain Newton
    steps overshoot back and forth. The terms over positives come from the sparse history,
    and over all items from two dense row sums, so a step costs a few passes over the rows'
    scores, and converged rows drop out."""
    n, n_items = s0.shape
    coo = history.tocoo()
    r = torch.from_numpy(coo.row.astype(np.int64))
    c = torch.from_numpy(coo.col.astype(np.int64))
    counts = torch.from_numpy(np.diff(history.indptr).astype(np.float32))
    n_pos, n_neg = counts.clamp(min=1), (n_items - counts).clamp(min=1)
    ps, pb = s0[r, c], bias[c]  # positives' scores and biases
    a = torch.ones(n)
    lo, hi = torch.zeros(n), torch.full((n,), float("inf"))
    active, s_act = torch.arange(n), s0
    for _ in range(steps):
        m, aa = len(active), a[active]
        ss = torch.sigmoid(torch.addcmul(bias, aa[:, None], s_act)).mul_(s_act)  # sig * s0
        all_g = ss.sum(1)
        all_h = torch.einsum("ni,ni->n", ss, s_act) - torch.einsum(
            "ni,ni->n", ss, ss
        )  # sig(1-sig)s0^2
        sig = torch.sigmoid(aa[r] * ps + pb)
        pos_g = torch.zeros(m).index_add_(0, r, (1 - sig) * ps)
        pos_s = torch.zeros(m).index_add_(0, r, sig * ps)
        pos_h = torch.zeros(m).index_add_(0, r, sig * (1 - sig) * ps * ps)
        grad = pos_g / n_pos[active] - (all_g - pos_s) / n_neg[active]
        hess = pos_h / n_pos[active] + (all_h - pos_h) / n_neg[active] + 1e-6
        la = torch.where(grad > 0, aa, lo[active])
        ha = torch.where(grad < 0, aa, hi[active])
        lo[active], hi[active] = la, ha
        new = aa + grad / hess
        outside = (new <= la) | (new >= ha)
        new = torch.where(
            outside, torch.where(torch.isinf(ha), 2 * aa.clamp(min=0.5), (la + ha) / 2), new
        )
        a[active] = new
        moving = (new - aa).abs() > tol * new.clamp(min=1.0)
        if not moving.any():
            break
        keep = torch.nonzero(moving).flatten()
        if len(keep) < m:  # drop the converged rows (and their positives)
            at = torch.full((m,), -1, dtype=torch.long)
            at[keep] = torch.arange(len(keep))
            on = moving[r]
            r, ps, pb = at[r[on]], ps[on], pb[on]
            active, s_act = active[keep], s_act[keep]
    return a


class Adversary(Protocol):
    """An in-training attribute adversary (``recunlearn.attribute.adversarial``)."""

    def parameters(self) -> Iterator[nn.Parameter]: ...

    def loss(self, user: torch.Tensor, users: torch.Tensor) -> torch.Tensor: ...


def fit_bpr(
    data: InteractionData,
    cfg: ModelSettings,
    *,
    seed: int,
    adversary: Adversary | None = None,
    module: Callable[[torch.Generator], PairwiseModule] | None = None,
    init: Any = None,
    max_epochs: int | None = None,
    batch_size: int | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train BPR-MF on ``data.train``, early-stopping on ``data.valid`` (never on test).

    Deterministic for a given seed and data: every random draw comes from one generator.
    ``adversary`` (optional) adds ``adversary.loss(user_embeddings, batch_users)`` to every
    step and trains its parameters with the model's (in-training attribute unlearning).
    ``module(generator)`` builds another ``PairwiseModule`` in place of BPR-MF's (LightGCN,
    NCF), drawing its initial values from the fit's generator; ``init`` warm-starts the users
    it knows and every item from a trained model's parameters (sequential training);
    ``max_epochs`` and ``batch_size`` override the config's.
    """
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    n_users, n_items = data.train.shape
    sparse = cfg.optimizer == "sparse_adam"
    if sparse and (module is not None or adversary is not None):
        raise ValueError(
            "model.optimizer=sparse_adam trains BPR-MF's own module, without an adversary"
        )
    net: PairwiseModule = (
        (SparseBPRModule if sparse else BPRModule)(n_users, n_items, cfg.dim, cfg.init_std, g)
        if module is None
        else module(g)
    )
    # the adversary reads the user factors: only a FactorModule has them
    factors = net if isinstance(net, FactorModule) else None
    if adversary is not None and factors is None:
        raise TypeError(f"an attribute adversary trains on user factors; {type(net).__name__}")
    if init is not None:
        net.warm_start(data.user_keys, init)
    params = list(net.parameters()) + (
        list(adversary.parameters()) if adversary is not None else []
    )
    sampler = PairSampler(
        data.train,
        batch_size=cfg.batch_size if batch_size is None else batch_size,
        negatives=net.negatives,
        generator=g,
    )
    valid_users = np.flatnonzero(np.diff(data.valid.indptr) > 0)

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, int]]:
        for u, i, j in sampler.epoch():
            loss = net.loss(u, i, j, cfg.reg)
            if adversary is not None and factors is not None:
                loss = loss + adversary.loss(factors.user, u)
            yield loss, len(u)

    def validate() -> float:
        with torch.no_grad():
            m = evaluate(net.scorer(), valid_users, data.train, data.valid, k=cfg.eval_k)
        return m[f"ndcg@{cfg.eval_k}"]

    trainer = TorchTrainer(
        lr=cfg.lr,
        max_epochs=cfg.max_epochs if max_epochs is None else max_epochs,
        patience=cfg.patience,
        eval_every=cfg.eval_every,
        optimizer="sparse_adam" if sparse else "adam",
    )
    fit = trainer.fit(
        net,  # type: ignore[arg-type]  # a PairwiseModule is an nn.Module
        batches,
        validate if len(valid_users) else None,
        params=params,
    )
    stats = {
        "epochs": fit.epochs,
        "best_epoch": fit.best_epoch,
        "valid_ndcg": fit.best,
        "fit_seconds": time.perf_counter() - t0,
        "n_users": n_users,
        "n_train": sampler.nnz,
        "curve": fit.curve,
    }
    return net.model(data.user_keys), stats
