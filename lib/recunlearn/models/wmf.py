"""Weighted matrix factorisation (implicit ALS; Hu, Koren and Volinsky, 2008) with an exact
unlearning update (the model-specific exact family of Li et al.'s survey of recommendation
unlearning, after "Netflix and Forget").

Objective, over every user-item cell: sum c_ui (p_ui - x_u . y_i)^2 + reg (|X|^2 + |Y|^2), with
p_ui = 1 and c_ui = 1 + alpha on observed pairs, p_ui = 0 and c_ui = 1 elsewhere. A user's
normal equations, the items fixed, are

    A_u x_u = b_u,  A_u = Y^T Y + alpha sum_{i in I_u} y_i y_i^T + reg I,
                    b_u = (1 + alpha) sum_{i in I_u} y_i

and symmetrically for items. *Converged* means one thing everywhere in this module: every row,
on both sides, satisfies its normal equations to a relative residual |A x - b| / |b| <= tol (a
row without interactions has b = 0 and its solution is exactly 0).

Training and unlearning are the same procedure. The solver keeps, for every row, its residual
and its right-hand side b, and updates both incrementally when rows of the other side move
(a Gram-matrix term for every row, the observed terms only for rows that share an interaction
with the moved rows). It then re-solves, with conjugate gradient started at the current
vector, only the rows whose relative residual exceeds tol, side after side, until none does.
Training starts from random factors with every row above tol. Unlearning deletes the
forgotten pairs from the matrix (zeroing their confidence), applies their exact effect on the
two rows of each pair, and runs the same loop from the current factors: the result satisfies
the same convergence test on the retained data as a retrain from scratch, which is what
``tests/test_wmf.py`` checks, along with agreement of the two models' scores.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch

from recunlearn.data.interactions import binary_csr, has_pairs
from recunlearn.models.base import Recommender

if TYPE_CHECKING:
    from recunlearn.config import WMFSettings
    from recunlearn.data.interactions import InteractionData


warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


@dataclass
class _Side:
    """One side of the factorisation: its factors, its rows of the binary matrix, and the
    residual r = A f - b and right-hand side b of every row."""

    f: np.ndarray  # (n, d) float64 factors
    m: sp.csr_matrix  # (n, n_other) binary, this side's rows
    # set by the solver before any use
    res: np.ndarray = field(default=None)  # type: ignore[arg-type]  # (n, d)
    b: np.ndarray = field(default=None)  # type: ignore[arg-type]  # (n, d)
    gram: np.ndarray = field(default=None)  # type: ignore[arg-type]  # (d, d) f^T f, kept current


class WMF(Recommender):
    """Implicit-ALS factors for the users in ``user_keys`` and every item."""

    def __init__(
        self,
        user_keys: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        r: sp.csr_matrix,
        *,
        alpha: float = 10.0,
        reg: float = 0.1,
        tol: float = 1e-3,
        cg_steps: int = 12,
        max_rounds: int = 500,
        meta: dict[str, Any] | None = None,
        fresh: bool = False,
    ) -> None:
        self.user_keys = np.asarray(user_keys).astype(str)
        self.n_items = int(y.shape[0])
        self.alpha, self.reg, self.tol = float(alpha), float(reg), float(tol)
        self.cg_steps, self.max_rounds = int(cg_steps), int(max_rounds)
        self.meta = dict(meta or {})
        r = _bin(r)
        self.users = _Side(np.array(x, dtype=np.float64), r)
        self.items = _Side(np.array(y, dtype=np.float64), r.T.tocsr())
        self._exact_residuals()
        self.rounds = 0
        if fresh:
            self.rounds = self._converge()
        self._fold = None

    # A re-solved row goes to a relative residual of tol * INNER, well below tol: its
    # neighbours' later moves then rarely push it back over tol. On ML-1M (8-30 single-user
    # requests from one model) this took the update's p50 from 1.08 s (INNER 0.25, 6 CG steps)
    # to 0.61 s (0.05, 12 steps); 0.01 with 20 steps was slower (1.02 s), and over-relaxation
    # (1.3, 1.6) made some requests run 2-4x longer.
    INNER = 0.05

    # ------------------------------------------------------------------ the solver
    def _gram(self, side: _Side) -> np.ndarray:
        return side.f.T @ side.f

    def _apply(
        self, m: sp.csr_matrix, v: np.ndarray, other: np.ndarray, gram: np.ndarray
    ) -> np.ndarray:
        """A v for the rows of ``m`` (one vector per row): v (G + reg I) + alpha sum y (y . v)."""
        return v @ gram + self.reg * v + _spmm(m, self.alpha * _sddmm(m, v, other), other)

    def _cg(
        self,
        m: sp.csr_matrix,
        other: np.ndarray,
        gram: np.ndarray,
        x: np.ndarray,
        r: np.ndarray,
        goal: np.ndarray,
        steps: int,
    ) -> np.ndarray:
        """Conjugate gradient, one system per row of ``m`` (vectorised), from ``x`` with
        residual ``r`` = b - A x; a row stops once its squared residual is <= ``goal``."""
        p, rr = r.copy(), (r * r).sum(1)
        for _ in range(steps):
            live = rr > goal
            if not live.any():
                break
            ap = self._apply(m, p, other, gram)
            pap = (p * ap).sum(1)
            a = np.where(live & (pap > 0), rr / np.where(pap > 0, pap, 1.0), 0.0)
            x += a[:, None] * p
            r -= a[:, None] * ap
            rr_new = (r * r).sum(1)
            p = r + np.where(rr > 0, rr_new / np.where(rr > 0, rr, 1.0), 0.0)[:, None] * p
            rr = rr_new
        return x

    def _exact_residuals(self) -> None:
        for side, other in ((self.users, self.items), (self.items, self.users)):
            side.b = (1.0 + self.alpha) * (side.m @ other.f)
            side.res = self._apply(side.m, side.f, other.f, self._gram(other)) - side.b

    def _active(self, side: _Side) -> np.ndarray:
        rn = np.linalg.norm(side.res, axis=1)
        bn = np.linalg.norm(side.b, axis=1)
        return np.flatnonzero(np.where(bn > 0, rn > self.tol * bn, rn > 0))

    def _solve(self, side: _Side, other: _Side, rows: np.ndarray) -> None:
        """Re-solve ``rows`` of ``side`` (CG from the current vectors, to tol * INNER), then update
        the other side's residuals and right-hand sides for the move."""
        m = side.m[rows]
        gram = other.gram
        b = side.b[rows]
        x = side.f[rows].copy()
        r = -side.res[rows]  # b - A x, from the tracked residual
        empty = np.diff(m.indptr) == 0
        x[empty], r[empty] = 0.0, 0.0  # no interactions: the solution is exactly 0
        x = self._cg(
            m, other.f, gram, x, r, (self.tol * self.INNER) ** 2 * (b * b).sum(1), self.cg_steps
        )
        old = side.f[rows].copy()
        side.f[rows] = x
        b[empty] = 0.0  # exactly, not the rounding left by incremental updates
        side.b[rows] = b
        side.res[rows] = self._apply(m, x, other.f, gram) - b  # exact, not CG's running residual
        self._moved(side, other, rows, old, x)

    def _moved(
        self, side: _Side, other: _Side, rows: np.ndarray, old: np.ndarray, new: np.ndarray
    ) -> None:
        """Rows of ``side`` moved from ``old`` to ``new``: update the other side's r and b.

        Every row of the other side sees the Gram change; the rows sharing an interaction with
        a moved row also see its observed term: alpha (f'(f'.g) - f(f.g)) - (1 + alpha)(f' - f).
        """
        d_gram = new.T @ new - old.T @ old
        side.gram = side.gram + d_gram
        other.res += other.f @ d_gram
        mt = side.m[rows].T.tocsr()  # (n_other, len(rows))
        if mt.nnz == 0:
            return
        nz = np.flatnonzero(np.diff(mt.indptr))
        sub = mt[nz]
        g = other.f[nz]
        s_new = _sddmm(sub, g, new)
        s_old = _sddmm(sub, g, old)
        d_b = (1.0 + self.alpha) * (sub @ (new - old))
        other.res[nz] += (
            _spmm(sub, self.alpha * s_new, new) - _spmm(sub, self.alpha * s_old, old) - d_b
        )
        other.b[nz] += d_b

    def _converge(self) -> int:
        """Alternate sides, re-solving the rows above tol, until no row is. Returns rounds."""
        for side in (self.users, self.items):
            side.gram = self._gram(side)  # exact at the start; updated with every move
        for rounds in range(1, self.max_rounds + 1):
            moved = False
            for side, other in ((self.users, self.items), (self.items, self.users)):
                rows = self._active(side)
                if len(rows):
                    self._solve(side, other, rows)
                    moved = True
            if not moved:
                return rounds - 1
        raise RuntimeError(f"WMF did not converge to tol={self.tol} in {self.max_rounds} rounds")

    def max_residual(self) -> float:
        """The largest relative residual over all rows, recomputed from scratch (not from the
        tracked residuals): the convergence test, for checks."""
        worst = 0.0
        for side, other in ((self.users, self.items), (self.items, self.users)):
            b = (1.0 + self.alpha) * (side.m @ other.f)
            res = self._apply(side.m, side.f, other.f, self._gram(other)) - b
            rn, bn = np.linalg.norm(res, axis=1), np.linalg.norm(b, axis=1)
            rel = np.where(bn > 0, rn / np.where(bn > 0, bn, 1.0), np.where(rn > 0, np.inf, 0.0))
            worst = max(worst, float(rel.max(initial=0.0)))
        return worst

    # ------------------------------------------------------------------ unlearning
    def forget_pairs(self, user_rows: np.ndarray, items: np.ndarray) -> dict[str, Any]:
        """Delete interactions (user row, item) and re-converge from the current factors."""
        t0 = time.perf_counter()
        user_rows = np.asarray(user_rows, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        hit = has_pairs(self.users.m, user_rows, items)
        user_rows, items = user_rows[hit], items[hit]
        if len(user_rows):
            x, y = self.users.f[user_rows], self.items.f[items]
            # the exact change of each pair's two rows: alpha f(f.g) - (1 + alpha) g leaves r,
            # (1 + alpha) g leaves b
            s = np.einsum("ij,ij->i", x, y)
            np.add.at(
                self.users.res, user_rows, -(self.alpha * s[:, None] * y - (1 + self.alpha) * y)
            )
            np.add.at(self.users.b, user_rows, -(1 + self.alpha) * y)
            np.add.at(self.items.res, items, -(self.alpha * s[:, None] * x - (1 + self.alpha) * x))
            np.add.at(self.items.b, items, -(1 + self.alpha) * x)
            gone = sp.csr_matrix(
                (np.ones(len(user_rows)), (user_rows, items)), shape=self.users.m.shape
            )
            self.users.m = _bin(self.users.m - gone.multiply(self.users.m))
            self.items.m = self.users.m.T.tocsr()
        rounds = self._converge()
        self._fold = None
        return {"pairs": int(len(user_rows)), "rounds": rounds, "seconds": time.perf_counter() - t0}

    @property
    def n_train(self) -> int:
        """Training interactions the model holds."""
        return int(self.users.m.nnz)

    def forget_users(self, keys: np.ndarray) -> dict[str, Any]:
        """Delete every interaction of the users, re-converge, then drop their rows."""
        rows = self.held_rows(keys)
        sub = self.users.m[rows].tocoo()
        out = self.forget_pairs(rows[sub.row], sub.col)
        # Their rows now have no interactions, so their vectors are exactly 0 and add nothing
        # to the Gram matrix: removing them changes no other row.
        keep = np.ones(len(self.user_keys), dtype=bool)
        keep[rows] = False
        self.user_keys = self.user_keys[keep]
        self.users = _Side(
            self.users.f[keep], self.users.m[keep], self.users.res[keep], self.users.b[keep]
        )
        self.items.m = self.users.m.T.tocsr()
        out["users"] = int(len(rows))
        return out

    def forget_items(self, items: np.ndarray) -> dict[str, Any]:
        """Delete every interaction with the items (they stay in the catalogue, unobserved)."""
        items = np.asarray(items, dtype=np.int64)
        sub = self.items.m[items].tocoo()
        return self.forget_pairs(sub.col, items[sub.row])

    # ------------------------------------------------------------------ serving
    @property
    def x(self) -> torch.Tensor:
        return torch.from_numpy(self.users.f).float()

    @property
    def y(self) -> torch.Tensor:
        return torch.from_numpy(self.items.f).float()

    def score(self, rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.users.f[np.asarray(rows)] @ self.items.f.T).float()

    def fold_in(self, history: sp.csr_matrix) -> np.ndarray:
        """User vectors solved from the normal equations of their history rows, items fixed:
        the same equations (and tolerance) as a trained user. Never changes the model."""
        m = _bin(sp.csr_matrix(history))
        gram = self._gram(self.items)
        b = (1.0 + self.alpha) * (m @ self.items.f)
        return self._cg(
            m,
            self.items.f,
            gram,
            np.zeros_like(b),
            b.copy(),
            (self.tol / 4) ** 2 * (b * b).sum(1),
            4 * self.cg_steps,
        )

    def score_history(self, history: sp.csr_matrix) -> torch.Tensor:
        return torch.from_numpy(self.fold_in(history) @ self.items.f.T).float()

    def state(self) -> dict[str, Any]:
        m = self.users.m
        return {
            "kind": "wmf",
            "user_keys": self.user_keys.tolist(),
            "x": torch.from_numpy(self.users.f),
            "y": torch.from_numpy(self.items.f),
            "indptr": torch.from_numpy(m.indptr.astype(np.int64)),
            "indices": torch.from_numpy(m.indices.astype(np.int64)),
            "alpha": self.alpha,
            "reg": self.reg,
            "tol": self.tol,
            "cg_steps": self.cg_steps,
            "meta": self.meta,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> WMF:
        x, y = state["x"].numpy(), state["y"].numpy()
        indptr, indices = state["indptr"].numpy(), state["indices"].numpy()
        r = sp.csr_matrix((np.ones(len(indices)), indices, indptr), shape=(x.shape[0], y.shape[0]))
        return cls(
            np.asarray(state["user_keys"], dtype=str),
            x,
            y,
            r,
            alpha=state["alpha"],
            reg=state["reg"],
            tol=state["tol"],
            cg_steps=state["cg_steps"],
            meta=state.get("meta"),
        )


def fit_wmf(
    user_keys: np.ndarray,
    train: sp.csr_matrix,
    *,
    dim: int = 64,
    alpha: float = 10.0,
    reg: float = 0.1,
    tol: float = 1e-3,
    cg_steps: int = 12,
    seed: int = 0,
    init_std: float = 0.01,
    init: WMF | None = None,
) -> tuple[WMF, dict[str, Any]]:
    """Train from seeded random factors until converged (see the module docstring); ``init``
    warm-starts every item and the users it knows from its factors (sequential training)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    n_users, n_items = train.shape
    x = rng.normal(0.0, init_std, (n_users, dim))
    y = rng.normal(0.0, init_std, (n_items, dim))
    if init is not None:
        y = init.items.f.copy()
        rows = init.rows_of(user_keys)
        x[rows >= 0] = init.users.f[rows[rows >= 0]]
    model = WMF(
        user_keys, x, y, train, alpha=alpha, reg=reg, tol=tol, cg_steps=cg_steps, fresh=True
    )
    stats = {
        "fit_seconds": time.perf_counter() - t0,
        "rounds": model.rounds,
        "n_users": n_users,
        "n_train": int(train.nnz),
    }
    model.meta.update(stats)
    return model, stats


def _csr(m: sp.csr_matrix, values: np.ndarray) -> torch.Tensor:
    """A torch CSR view of ``m``'s structure with ``values`` (no copy of the arrays)."""
    indptr, indices = m.indptr, m.indices
    if indptr.dtype != indices.dtype:
        indptr, indices = indptr.astype(np.int64), indices.astype(np.int64)
    return torch.sparse_csr_tensor(
        torch.from_numpy(indptr),
        torch.from_numpy(indices),
        torch.from_numpy(values),
        size=m.shape,
        check_invariants=False,
    )


def _sddmm(m: sp.csr_matrix, f: np.ndarray, g: np.ndarray) -> np.ndarray:
    """f[row] . g[col] for every stored entry of ``m`` (a sampled dense-dense product: torch's
    kernel, about 5x faster than gathering both sides in numpy, and no (nnz, d) temporaries)."""
    if m.nnz == 0:
        return np.zeros(0)
    out = torch.sparse.sampled_addmm(
        _csr(m, np.zeros(m.nnz)),
        torch.from_numpy(np.ascontiguousarray(f)),
        torch.from_numpy(np.ascontiguousarray(g)).T,
        beta=0.0,
    )
    return out.values().numpy()


def _spmm(m: sp.csr_matrix, values: np.ndarray, g: np.ndarray) -> np.ndarray:
    """(m with ``values``) @ g."""
    if m.nnz == 0:
        return np.zeros((m.shape[0], g.shape[1]))
    return (
        _csr(m, np.ascontiguousarray(values, dtype=np.float64))
        @ torch.from_numpy(np.ascontiguousarray(g))
    ).numpy()


def _bin(m: sp.spmatrix) -> sp.csr_matrix:
    return binary_csr(m, np.float64)


def fit(
    data: InteractionData,
    cfg: WMFSettings,
    *,
    seed: int,
    init: WMF | None = None,
    max_epochs: int | None = None,
) -> tuple[WMF, dict[str, Any]]:
    """``recunlearn.models.MODELS``' entry: WMF from ``model.*`` (converges to its tolerance;
    ``max_epochs`` does not apply)."""
    model, stats = fit_wmf(
        data.user_keys,
        data.train,
        dim=cfg.dim,
        alpha=cfg.wmf_alpha,
        reg=cfg.wmf_reg,
        tol=cfg.wmf_tol,
        seed=seed,
        init=init,
    )
    return model, {**stats, "epochs": stats["rounds"]}
