"""EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019) with exact
unlearning by low-rank updates of its inverse Gram matrix.

The model is one item-item matrix. With ``X`` the binary user-item matrix, ``G = X^T X`` and
``P = (G + lambda I)^-1``, the weights are ``B_ij = -P_ij / P_jj`` off the diagonal and 0 on
it; a user is scored by ``x_u B``. No parameter belongs to a user: a user the model was not
trained on is scored by the same formula from their history (the fold-in is exact), and
forgetting a user leaves nothing of them once ``G`` no longer counts their rows.

Deletion changes ``G`` by a symmetric low-rank term ``U S U^T``:
- users with rows ``X_u`` (m x I): ``U = X_u^T``, ``S = -I_m``;
- interactions ``d_u`` taken from a user's row ``x_u``: ``-(x_u^T d_u + d_u^T x_u - d_u^T d_u)``,
  two columns ``[x_u, d_u]`` per user with ``S = [[0, -1], [-1, 1]]``;
- items ``T``: their rows and columns of ``G`` go to 0, two columns ``[e_T, G_T]`` with
  ``S = [[G_TT, -I], [-I, 0]]``;
and ``P`` follows by Woodbury: ``P' = P - P U (S^-1 + U^T P U)^-1 U^T P``, which costs
``O(I^2 r)`` for rank ``r`` against ``O(I^3)`` for a new inverse. ``G`` itself is updated in
integer counts (exact in float64). When the rank passes ``refresh_share`` of the items the new
inverse is cheaper and is taken instead; either way the result equals a refit on the
retained data to float64 round-off (tested against refits).

Memory: ``G`` and ``P`` are dense ``I x I`` float64 (about 16 I^2 bytes: 190 MB at ML-1M's
3.4K items, 3.2 GB at 20K); ``model.ease_max_items`` refuses larger catalogues, for which an
item-item model needs a sparse approximation instead (not built).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import torch

from recunlearn.data.interactions import (
    binary_csr,
    csr_from_state,
    csr_state,
    drop_rows,
    replace_rows,
    without_columns,
    without_pairs,
)
from recunlearn.errors import ConfigError
from recunlearn.models.base import Recommender

if TYPE_CHECKING:
    from recunlearn.config import EASESettings
    from recunlearn.data.interactions import InteractionData


def _inverse(gram: np.ndarray, lam: float) -> np.ndarray:
    """``(gram + lam I)^-1`` through a Cholesky factorisation (the matrix is positive definite)."""
    a = gram + lam * np.eye(len(gram))
    c, lower = sla.cho_factor(a, overwrite_a=True, check_finite=False)
    # C order: the updates write into P through its F-ordered transpose without a copy
    p = sla.cho_solve((c, lower), np.eye(len(gram)), overwrite_b=True, check_finite=False)
    return np.ascontiguousarray(p)


class EASE(Recommender):
    def __init__(
        self,
        user_keys: np.ndarray,
        x: sp.csr_matrix,
        *,
        lam: float,
        max_items: int = 20000,
        refresh_share: float = 0.25,
        p: np.ndarray | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        n_items = int(x.shape[1])
        if n_items > max_items:
            raise ConfigError(
                f"EASE keeps two dense {n_items} x {n_items} float64 matrices "
                f"({16 * n_items**2 / 2**30:.1f} GiB); model.ease_max_items is {max_items}"
            )
        self.user_keys = np.asarray(user_keys).astype(str)
        self.x = binary_csr(x)
        self.n_items = n_items
        self.lam = float(lam)
        self.max_items = max_items
        self.refresh_share = float(refresh_share)
        self.meta = dict(meta or {})
        self.gram = np.asarray((self.x.T @ self.x).toarray(), dtype=np.float64)
        self.p = (
            _inverse(self.gram, self.lam)
            if p is None
            else np.ascontiguousarray(p, dtype=np.float64)
        )
        self._b: np.ndarray | None = None

    # ---- the weights
    def weights(self) -> torch.Tensor:
        """``B`` (I x I, float32), computed from ``P`` when first needed after a change."""
        if self._b is None:
            b = self.p / -np.diag(self.p)[None, :]
            np.fill_diagonal(b, 0.0)
            self._b = b.astype(np.float32)
        return torch.from_numpy(self._b)

    # ---- exact unlearning
    def _update(self, idx: np.ndarray | None, u: np.ndarray, s_inv: np.ndarray) -> dict[str, Any]:
        """``P`` for ``G + U S U^T`` (``G`` already updated), from ``S^-1``, where ``U`` is zero
        outside the rows ``idx`` (None: every row) and ``u = U[idx]``: Woodbury, or a new inverse
        when the rank makes that cheaper. ``P U`` reads only the rows ``idx`` of ``P`` (it is
        symmetric); the rank-r correction is one in-place BLAS ``dgemm`` over ``P`` (no I x I
        temporary)."""
        from scipy.linalg.blas import dgemm

        t0 = time.perf_counter()
        rank = int(u.shape[1])
        self._b = None
        if rank == 0:
            return {"rank": 0, "path": "none", "seconds": 0.0}
        if rank > self.refresh_share * self.n_items:
            self.p = _inverse(self.gram, self.lam)
            return {"rank": rank, "path": "inverse", "seconds": round(time.perf_counter() - t0, 4)}
        pu = self.p @ u if idx is None else self.p[idx].T @ u  # (I, r) = P U
        w = np.linalg.solve(s_inv + u.T @ (pu if idx is None else pu[idx]), pu.T)  # (r, I)
        # P -= P U w, written into P through its transpose (the same symmetric matrix, F-ordered)
        out = dgemm(-1.0, pu, w, beta=1.0, c=self.p.T, overwrite_c=True)
        if not np.shares_memory(out, self.p):  # a BLAS that copied: keep its result
            self.p = np.ascontiguousarray(out.T)
        return {"rank": rank, "path": "woodbury", "seconds": round(time.perf_counter() - t0, 4)}

    def _gram_block_update(self, old: sp.csr_matrix, new: sp.csr_matrix) -> np.ndarray:
        """``G += new^T new - old^T old`` on the block of the items these rows touch (exact
        integer counts); returns those items."""
        idx = np.unique(old.indices)
        o, n = old[:, idx], new[:, idx]
        self.gram[np.ix_(idx, idx)] += (n.T @ n - o.T @ o).toarray()
        return idx

    @property
    def n_train(self) -> int:
        """Training interactions the model holds."""
        return int(self.x.nnz)

    def forget_users(self, keys: np.ndarray) -> dict[str, Any]:
        """Remove users entirely: their rows leave ``G``, ``P`` and the model's keys."""
        rows = self.held_rows(keys)
        xu = self.x[rows]
        idx = self._gram_block_update(xu, sp.csr_matrix(xu.shape, dtype=xu.dtype))
        stats = self._update(idx, xu[:, idx].T.toarray().astype(np.float64), -np.eye(len(rows)))
        self.user_keys, self.x = drop_rows(self.user_keys, self.x, rows)
        return {**stats, "users_removed": int(len(rows))}

    def forget_pairs(self, user_rows: np.ndarray, items: np.ndarray) -> dict[str, Any]:
        """Remove single interactions (user row, item); pairs the model does not hold are
        ignored."""
        rows, old, new = without_pairs(self.x, user_rows, items)
        d = (old - new).tocsr()
        idx = self._gram_block_update(old, new)
        # two columns per user, [x_u, d_u], with S = [[0, -1], [-1, 1]]
        # and S^-1 = [[-1, -1], [-1, 0]]
        m = len(rows)
        u = np.empty((len(idx), 2 * m))
        u[:, 0::2], u[:, 1::2] = old[:, idx].T.toarray(), d[:, idx].T.toarray()
        s_inv = np.kron(np.eye(m), np.array([[-1.0, -1.0], [-1.0, 0.0]]))
        stats = self._update(idx, u, s_inv)
        self.x = replace_rows(self.x, rows, new)
        return {**stats, "pairs_removed": int(d.nnz)}

    def forget_items(self, items: np.ndarray) -> dict[str, Any]:
        """Remove every interaction with ``items``: their rows and columns of ``G`` go to 0."""
        items = np.unique(np.asarray(items, np.int64))
        items = items[self.gram[items, items] > 0]
        t = len(items)
        g_t = self.gram[:, items].copy()
        g_tt = g_t[items]
        e_t = np.zeros((self.n_items, t))
        e_t[items, np.arange(t)] = 1.0
        self.gram[items, :] = 0.0
        self.gram[:, items] = 0.0
        # U = [e_T, G_T], S = [[G_TT, -I], [-I, 0]], S^-1 = [[0, -I], [-I, -G_TT]]
        s_inv = np.block([[np.zeros((t, t)), -np.eye(t)], [-np.eye(t), -g_tt]])
        stats = self._update(None, np.hstack([e_t, g_t]), s_inv)
        # what the update gives to round-off, exactly: with their rows and columns of G at 0,
        # the items' block of G + lambda I is lambda I, decoupled from the rest
        self.p[items, :] = 0.0
        self.p[:, items] = 0.0
        self.p[items, items] = 1.0 / self.lam
        n_before = self.x.nnz
        self.x = without_columns(self.x, items)
        return {**stats, "items_removed": int(t), "pairs_removed": int(n_before - self.x.nnz)}

    # ---- the Recommender interface
    def score_history(self, history: sp.csr_matrix) -> torch.Tensor:
        b = self.weights().numpy()
        return torch.from_numpy(np.ascontiguousarray(binary_csr(history) @ b, dtype=np.float32))

    def score(self, rows: np.ndarray) -> torch.Tensor:
        return self.score_history(self.x[np.asarray(rows)])

    def state(self) -> dict[str, Any]:
        return {
            "kind": "ease",
            "user_keys": self.user_keys.tolist(),
            "lam": self.lam,
            "max_items": self.max_items,
            "refresh_share": self.refresh_share,
            **csr_state(self.x),
            "p": torch.from_numpy(self.p),
            "meta": self.meta,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EASE:
        return cls(
            np.asarray(state["user_keys"], dtype=str),
            csr_from_state(state),
            lam=state["lam"],
            max_items=state["max_items"],
            refresh_share=state["refresh_share"],
            p=state["p"].numpy(),
            meta=state.get("meta"),
        )


def fit_ease(
    user_keys: np.ndarray, x: sp.csr_matrix, *, lam: float, max_items: int = 20000
) -> tuple[EASE, dict[str, Any]]:
    t0 = time.perf_counter()
    model = EASE(user_keys, x, lam=lam, max_items=max_items)
    return model, {"fit_seconds": time.perf_counter() - t0}


def fit(
    data: InteractionData,
    cfg: EASESettings,
    *,
    seed: int,
    init: Any = None,
    max_epochs: int | None = None,
) -> tuple[EASE, dict[str, Any]]:
    """``recunlearn.models.MODELS``' entry: the closed form from ``model.ease_*`` (no seed, no
    warm start: a function of the data alone)."""
    return fit_ease(data.user_keys, data.train, lam=cfg.ease_lambda, max_items=cfg.ease_max_items)
