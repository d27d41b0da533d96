"""Approximate unlearning of a trained BPR-MF model, in place (the approximate family of Li
et al., "A Survey on Recommendation Unlearning", 2024).

A request is a set of forgotten interactions F (a user's, an item's, or single pairs). The
model was trained on J(theta) = sum over pairs (u, i) and sampled negatives j of
-log sigmoid(p_u . (q_i - q_j) + b_i - b_j) + reg (|p_u|^2 + |q_i|^2 + |q_j|^2). Methods:

- ``influence``: the one-step Newton correction theta + H_r^-1 grad F(theta), with H_r the
  Hessian of the retained loss, solved by conjugate gradient on Hessian-vector products
  (double backward through the loss; H is never formed), damped, negative curvature stops the
  solve. Over every parameter: the reference, slow on large data.
- ``scif``: the same correction restricted to a selected block (SCIF's selective and
  collaborative idea): the embeddings and biases of the forgotten pairs' items, the vectors of
  their users that stay, and of the ``neighbours`` users who share the most of those items. The
  Hessian block is estimated from the retained terms that touch the block (at most
  ``terms_per_row`` positives per selected row, and the negatives that land on the selected
  items, reweighted so the estimate is unbiased), so the solve is small.
- ``finetune``: Adam steps on those retained terms, from the current model.
- ``ascent``: gradient ascent on the forgotten pairs' loss, balanced by the retained terms'
  loss, stopped when the forgotten pairs' loss reaches the loss of held-out (never trained
  on) pairs or after ``ascent_steps``.

A forgotten user's vector is then removed (they are scored, if ever, by fold-in of a history
that no longer exists); the retained interaction matrix is updated, so requests can follow one
another. Every random draw comes from a generator seeded by the request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from recunlearn.data.interactions import has_pairs
from recunlearn.models.bpr import BPRMF

if TYPE_CHECKING:
    from recunlearn.config import FastSettings

METHODS = ("influence", "scif", "finetune", "ascent")


@dataclass
class _Terms:
    u: torch.Tensor
    i: torch.Tensor
    j: torch.Tensor
    w: torch.Tensor


class BPRUnlearner:
    """Applies fast unlearning requests to ``model`` (trained on ``train``, rows = model rows)."""

    def __init__(
        self,
        model: BPRMF,
        train: sp.csr_matrix,
        cfg: FastSettings,
        *,
        reg: float = 1e-4,
        holdout: sp.csr_matrix | None = None,
        seed: int = 0,
    ) -> None:
        if train.shape != (len(model.user_keys), model.n_items):
            raise ValueError(
                f"train {train.shape} does not match the model "
                f"({len(model.user_keys)} users x {model.n_items} items)"
            )
        self.model = model
        self.cfg = cfg
        self.reg = reg  # the model's training L2, per term as in fit_bpr
        self.train = sp.csr_matrix(train, dtype=np.float32)
        self.train.sort_indices()
        self.csc = self.train.tocsc()
        self.holdout = holdout  # held-out pairs of the same users: the ascent's stopping level
        self.seed = seed
        self.requests = 0

    # ------------------------------------------------------------------ requests
    def forget_users(self, keys: np.ndarray, method: str) -> dict[str, Any]:
        rows = self.model.held_rows(keys)
        sub = self.train[rows].tocoo()
        out = self._forget(rows[sub.row], sub.col.astype(np.int64), method, drop=rows)
        out["users"] = int(len(rows))
        return out

    def forget_items(self, items: np.ndarray, method: str) -> dict[str, Any]:
        items = np.asarray(items, dtype=np.int64)
        sub = self.csc[:, items].tocoo()
        return self._forget(sub.row.astype(np.int64), items[sub.col], method)

    def forget_pairs(self, user_rows: np.ndarray, items: np.ndarray, method: str) -> dict[str, Any]:
        user_rows, items = np.asarray(user_rows, dtype=np.int64), np.asarray(items, dtype=np.int64)
        hit = has_pairs(self.train, user_rows, items)
        return self._forget(user_rows[hit], items[hit], method)

    # ------------------------------------------------------------------ the update
    def _forget(
        self, fu: np.ndarray, fi: np.ndarray, method: str, drop: np.ndarray | None = None
    ) -> dict[str, Any]:
        if method not in METHODS:
            raise ValueError(f"unknown fast method {method!r}; one of {METHODS}")
        t0 = time.perf_counter()
        self.requests += 1
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.requests)
        drop = np.asarray(drop if drop is not None else [], dtype=np.int64)
        # the retained matrix first: every estimate below uses retained data only
        gone = sp.csr_matrix((np.ones(len(fu), np.float32), (fu, fi)), shape=self.train.shape)
        self.train = self.train - gone.multiply(self.train)
        self.train.eliminate_zeros()
        self.csc = self.train.tocsc()
        info: dict[str, Any] = {"method": method, "pairs": int(len(fu))}
        if len(fu):
            p_users, p_items = self._block(fu, fi, drop, full=method == "influence")
            forget = self._expand(torch.from_numpy(fu), torch.from_numpy(fi), g)
            local = self._local_terms(p_users, p_items, g, full=method == "influence")
            if method in ("influence", "scif"):
                info.update(self._newton(p_users, p_items, forget, local))
            elif method == "finetune":
                info.update(self._descend(p_users, p_items, local, g, forget=None))
            else:
                info.update(self._descend(p_users, p_items, local, g, forget=forget))
            info.update(
                block_users=int(len(p_users)),
                block_items=int(len(p_items)),
                terms=int(len(local.u)),
            )
        if len(drop):
            self._drop_users(drop)
        info["seconds"] = time.perf_counter() - t0
        return info

    def _block(
        self, fu: np.ndarray, fi: np.ndarray, drop: np.ndarray, *, full: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        n_users = self.train.shape[0]
        if full:
            return np.setdiff1d(np.arange(n_users), drop), np.arange(self.model.n_items)
        items = np.unique(fi)
        users = np.setdiff1d(np.unique(fu), drop)
        if self.cfg.neighbours:
            co = np.asarray(self.csc[:, items].sum(1)).ravel()
            co[drop] = 0
            co[users] = 0
            k = min(self.cfg.neighbours, int((co > 0).sum()))
            if k:
                users = np.union1d(users, np.argpartition(-co, k - 1)[:k])
        return users, items

    def _expand(
        self,
        u: torch.Tensor,
        i: torch.Tensor,
        g: torch.Generator,
        avoid: np.ndarray | None = None,
        weight: torch.Tensor | None = None,
    ) -> _Terms:
        """Each pair with ``negatives`` uniform negatives (outside ``avoid``), weight 1/S each."""
        s = self.cfg.negatives
        n_items = self.model.n_items
        w = (torch.ones(len(u)) if weight is None else weight) / s
        if avoid is not None and len(avoid):
            allowed = np.setdiff1d(np.arange(n_items), avoid)
            j = torch.from_numpy(allowed)[torch.randint(len(allowed), (len(u) * s,), generator=g)]
        else:
            j = torch.randint(n_items, (len(u) * s,), generator=g)
        return _Terms(u.repeat(s), i.repeat(s), j, w.repeat(s))

    def _local_terms(
        self, p_users: np.ndarray, p_items: np.ndarray, g: torch.Generator, *, full: bool
    ) -> _Terms:
        """Retained terms touching the block, reweighted to an unbiased estimate of their sum."""
        cfg, n_items = self.cfg, self.model.n_items
        if full:
            coo = self.train.tocoo()
            return self._expand(
                torch.from_numpy(coo.row.astype(np.int64)),
                torch.from_numpy(coo.col.astype(np.int64)),
                g,
            )
        us, its, ws = [], [], []
        rng = np.random.default_rng(int(torch.randint(2**31, (1,), generator=g)))
        for m, rows, is_user in ((self.train, p_users, True), (self.csc.T.tocsr(), p_items, False)):
            if not len(rows):
                continue
            sub = m[rows]
            deg = np.diff(sub.indptr)
            take = np.minimum(deg, cfg.terms_per_row)
            # a random subset of at most terms_per_row entries per row, weighted deg / taken
            keys = rng.random(sub.nnz)
            order = np.lexsort((keys, np.repeat(np.arange(len(rows)), deg)))
            pos = np.arange(sub.nnz) - np.repeat(sub.indptr[:-1], deg)
            chosen = order[pos < np.repeat(take, deg)]
            r = np.repeat(np.arange(len(rows)), deg)[chosen]
            other = sub.indices[chosen].astype(np.int64)
            weight = (deg / np.maximum(take, 1))[r]
            a, b = (rows[r], other) if is_user else (other, rows[r])
            us.append(a)
            its.append(b)
            ws.append(weight)
        u = np.concatenate(us)
        i = np.concatenate(its)
        w = np.concatenate(ws)
        # a pair sampled from both its user and its item row counts once, at the larger weight
        lin, first = np.unique(u * n_items + i, return_index=True)
        u, i, w = u[first], i[first], w[first]
        pos_terms = self._expand(
            torch.from_numpy(u),
            torch.from_numpy(i),
            g,
            avoid=p_items,
            weight=torch.from_numpy(w).float(),
        )
        # retained terms whose negative lands on a selected item: expected count nnz S |I| / n
        expected = self.train.nnz * cfg.negatives * len(p_items) / n_items
        n_neg = int(min(cfg.negative_terms, max(1, round(expected))))
        pick = torch.randint(self.train.nnz, (n_neg,), generator=g)
        coo_rows = np.repeat(np.arange(self.train.shape[0]), np.diff(self.train.indptr))
        nu = torch.from_numpy(coo_rows[pick.numpy()].astype(np.int64))
        ni = torch.from_numpy(self.train.indices[pick.numpy()].astype(np.int64))
        nj = torch.from_numpy(p_items)[torch.randint(len(p_items), (n_neg,), generator=g)]
        nw = torch.full((n_neg,), expected / n_neg / cfg.negatives)
        return _Terms(
            torch.cat([pos_terms.u, nu]),
            torch.cat([pos_terms.i, ni]),
            torch.cat([pos_terms.j, nj]),
            torch.cat([pos_terms.w, nw]),
        )

    def _loss_fn(self, p_users: np.ndarray, p_items: np.ndarray):  # noqa: ANN202
        m, reg = self.model, self.reg
        pu_idx = torch.from_numpy(p_users)
        pi_idx = torch.from_numpy(p_items)
        n_u, d = len(p_users), m.user.shape[1]
        n_i = len(p_items)

        def loss(theta: torch.Tensor, t: _Terms) -> torch.Tensor:
            pu = theta[: n_u * d].view(n_u, d)
            qi = theta[n_u * d : (n_u + n_i) * d].view(n_i, d)
            bi = theta[(n_u + n_i) * d :]
            user = m.user.index_put((pu_idx,), pu)
            item = m.item.index_put((pi_idx,), qi)
            bias = m.bias.index_put((pi_idx,), bi)
            emb = nn.functional.embedding
            p, q_i, q_j = emb(t.u, user), emb(t.i, item), emb(t.j, item)
            x = (p * (q_i - q_j)).sum(1) + bias[t.i] - bias[t.j]
            pen = p.pow(2).sum(1) + q_i.pow(2).sum(1) + q_j.pow(2).sum(1)
            return (t.w * (-nn.functional.logsigmoid(x) + reg * pen)).sum()

        theta0 = torch.cat([m.user[pu_idx].reshape(-1), m.item[pi_idx].reshape(-1), m.bias[pi_idx]])
        return loss, theta0

    def _write(self, p_users: np.ndarray, p_items: np.ndarray, theta: torch.Tensor) -> None:
        m = self.model
        n_u, n_i, d = len(p_users), len(p_items), m.user.shape[1]
        m.user = m.user.clone()
        m.item = m.item.clone()
        m.bias = m.bias.clone()
        m.user[torch.from_numpy(p_users)] = theta[: n_u * d].view(n_u, d)
        m.item[torch.from_numpy(p_items)] = theta[n_u * d : (n_u + n_i) * d].view(n_i, d)
        m.bias[torch.from_numpy(p_items)] = theta[(n_u + n_i) * d :]
        m._fold = None

    def _newton(
        self, p_users: np.ndarray, p_items: np.ndarray, forget: _Terms, local: _Terms
    ) -> dict[str, Any]:
        """theta + (G_r + damping I)^-1 grad F on the block, G_r the Gauss-Newton Hessian of the
        retained terms (J^T diag(w s (1 - s)) J plus the L2 term): positive definite, unlike
        BPR's full Hessian, whose bilinear cross terms make it indefinite away from an exact
        optimum (an early-stopped model is not at one)."""
        cfg, m = self.cfg, self.model
        lin_r = Linearisation(m, p_users, p_items, local, self.reg)
        lin_f = Linearisation(m, p_users, p_items, forget, self.reg)
        b = lin_f.gradient()
        curv = lin_r.curvature()

        def hvp(v: torch.Tensor) -> torch.Tensor:
            return lin_r.jt(curv * lin_r.j(v)) + (lin_r.reg_diag + cfg.damping) * v

        precond = lin_r.block_jacobi(curv, cfg.damping)
        x = torch.zeros_like(b)
        r = b.clone()
        zr = precond(r)
        p = zr.clone()
        rz = float(r @ zr)
        bb = float(b @ b)
        goal = (cfg.cg_tol**2) * bb
        iters = 0
        rr = bb
        while iters < cfg.cg_iters and rr > goal:  # preconditioned conjugate gradient
            iters += 1
            ap = hvp(p)
            a = rz / float(p @ ap)
            x += a * p
            r -= a * ap
            rr = float(r @ r)
            zr = precond(r)
            rz_new = float(r @ zr)
            p = zr + (rz_new / rz) * p
            rz = rz_new
        theta0 = lin_r.theta0()
        step = self._cap(x, theta0, len(p_users), len(p_items))
        self._write(p_users, p_items, theta0 + step)
        return {
            "cg_iterations": iters,
            "cg_residual": (rr / max(bb, 1e-30)) ** 0.5,
            "step_norm": float(step.norm()),
        }

    def _cap(self, step: torch.Tensor, theta0: torch.Tensor, n_u: int, n_i: int) -> torch.Tensor:
        """Scale each embedding row's step to at most max_step x the row's norm (biases: x1)."""
        d = self.model.user.shape[1]
        emb = (n_u + n_i) * d
        rows_s = step[:emb].view(-1, d)
        rows_t = theta0[:emb].view(-1, d)
        limit = self.cfg.max_step * rows_t.norm(dim=1).clamp(min=1e-3)
        scale = (limit / rows_s.norm(dim=1).clamp(min=1e-12)).clamp(max=1.0)
        out = step.clone()
        out[:emb] = (rows_s * scale[:, None]).reshape(-1)
        return out

    def _descend(
        self,
        p_users: np.ndarray,
        p_items: np.ndarray,
        local: _Terms,
        g: torch.Generator,
        *,
        forget: _Terms | None,
    ) -> dict[str, Any]:
        cfg = self.cfg
        loss, theta0 = self._loss_fn(p_users, p_items)
        theta = theta0.clone().requires_grad_(True)
        opt = torch.optim.Adam([theta], lr=cfg.lr)
        n = len(local.u)
        total_w = float(local.w.sum())
        level = self._holdout_level() if forget is not None else None
        steps = cfg.ascent_steps if forget is not None else cfg.finetune_steps
        forget_w = float(forget.w.sum()) if forget is not None else 1.0
        stopped = "steps"
        done = 0
        for step in range(1, steps + 1):
            done = step
            idx = torch.randint(n, (min(cfg.batch, n),), generator=g)
            batch = _Terms(local.u[idx], local.i[idx], local.j[idx], local.w[idx])
            obj = loss(theta, batch) * (total_w / float(batch.w.sum())) / max(total_w, 1.0)
            if forget is not None:
                f_loss = loss(theta, forget) / forget_w
                if level is not None and float(f_loss.detach()) >= level:
                    stopped = "forget loss reached the held-out level"
                    break
                obj = obj - f_loss
            opt.zero_grad(set_to_none=True)
            obj.backward()
            opt.step()
        self._write(p_users, p_items, theta.detach())
        out: dict[str, Any] = {"steps": done, "stopped": stopped}
        if level is not None:
            out["holdout_loss"] = level
        return out

    def _holdout_level(self) -> float:
        """Mean BPR loss of held-out pairs (the users' validation pairs; random pairs if none):
        what a pair the model never trained on looks like."""
        m = self.model
        g = torch.Generator().manual_seed(self.seed)
        src = self.holdout if self.holdout is not None and self.holdout.nnz else None
        if src is None:
            u = torch.randint(m.user.shape[0], (2048,), generator=g)
            i = torch.randint(m.n_items, (2048,), generator=g)
        else:
            coo = src.tocoo()
            pick = torch.randint(coo.nnz, (min(2048, coo.nnz),), generator=g).numpy()
            u, i = (
                torch.from_numpy(coo.row[pick].astype(np.int64)),
                torch.from_numpy(coo.col[pick].astype(np.int64)),
            )
        t = self._expand(u, i, g)
        with torch.no_grad():
            x = (m.user[t.u] * (m.item[t.i] - m.item[t.j])).sum(1) + m.bias[t.i] - m.bias[t.j]
            return float((-nn.functional.logsigmoid(x)).mean())

    def _drop_users(self, rows: np.ndarray) -> None:
        keep = np.ones(self.train.shape[0], dtype=bool)
        keep[rows] = False
        m = self.model
        m.user = m.user[torch.from_numpy(keep)].contiguous()
        m.user_keys = m.user_keys[keep]
        self.train = self.train[keep]
        self.csc = self.train.tocsc()
        if self.holdout is not None:
            self.holdout = self.holdout[keep]


class Linearisation:
    """The margins x_t = p_u . (q_i - q_j) + b_i - b_j of some terms, linearised in the block
    (p_users' vectors, p_items' vectors and biases) at the current model; vectors of the block
    are flat: users' d-vectors, items' d-vectors, items' biases."""

    def __init__(
        self, m: BPRMF, p_users: np.ndarray, p_items: np.ndarray, t: _Terms, reg: float
    ) -> None:
        self.n_u, self.n_i, self.d = len(p_users), len(p_items), m.user.shape[1]
        self.m, self.p_users, self.p_items, self.t, self.reg = m, p_users, p_items, t, reg
        self.lu = _local(p_users, t.u.numpy(), m.user.shape[0])
        self.li = _local(p_items, t.i.numpy(), m.n_items)
        self.lj = _local(p_items, t.j.numpy(), m.n_items)
        self.pu = m.user[t.u]
        self.qd = m.item[t.i] - m.item[t.j]
        self.x = (self.pu * self.qd).sum(1) + m.bias[t.i] - m.bias[t.j]
        # L2 on the block: 2 reg x (weighted number of terms each row appears in)
        cu = torch.zeros(self.n_u + 1).index_add_(0, self.lu, t.w)[:-1]
        ci = (torch.zeros(self.n_i + 1).index_add_(0, self.li, t.w).index_add_(0, self.lj, t.w))[
            :-1
        ]
        self.counts = (cu, ci)
        self.reg_diag = torch.cat(
            [
                (2 * reg * cu).repeat_interleave(self.d),
                (2 * reg * ci).repeat_interleave(self.d),
                torch.zeros(self.n_i),
            ]
        )
        self._touching()

    def _split(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        nu, ni, d = self.n_u, self.n_i, self.d
        return v[: nu * d].view(nu, d), v[nu * d : (nu + ni) * d].view(ni, d), v[(nu + ni) * d :]

    def _touching(self) -> None:
        """For each role (user, positive item, negative item), the terms whose row in that role
        is in the block: a term usually touches the block in one role only, so J and J^T
        gather a third of what padded full-length gathers would."""
        self.su = torch.nonzero(self.lu < self.n_u).flatten()
        self.si = torch.nonzero(self.li < self.n_i).flatten()
        self.sj = torch.nonzero(self.lj < self.n_i).flatten()
        self.qd_u, self.pu_i, self.pu_j = self.qd[self.su], self.pu[self.si], self.pu[self.sj]
        self.lu_s, self.li_s, self.lj_s = self.lu[self.su], self.li[self.si], self.lj[self.sj]

    def j(self, v: torch.Tensor) -> torch.Tensor:
        dp, dq, db = self._split(v)
        out = torch.zeros(len(self.x))
        out.index_add_(0, self.su, (dp[self.lu_s] * self.qd_u).sum(1))
        out.index_add_(0, self.si, (self.pu_i * dq[self.li_s]).sum(1) + db[self.li_s])
        out.index_add_(0, self.sj, -(self.pu_j * dq[self.lj_s]).sum(1) - db[self.lj_s])
        return out

    def jt(self, z: torch.Tensor) -> torch.Tensor:
        nu, ni, d = self.n_u, self.n_i, self.d
        zu, zi, zj = z[self.su], z[self.si], z[self.sj]
        gp = torch.zeros(nu, d).index_add_(0, self.lu_s, zu[:, None] * self.qd_u)
        gq = (
            torch.zeros(ni, d)
            .index_add_(0, self.li_s, zi[:, None] * self.pu_i)
            .index_add_(0, self.lj_s, -zj[:, None] * self.pu_j)
        )
        gb = torch.zeros(ni).index_add_(0, self.li_s, zi).index_add_(0, self.lj_s, -zj)
        return torch.cat([gp.reshape(-1), gq.reshape(-1), gb])

    def block_jacobi(self, curv: torch.Tensor, damping: float):  # noqa: ANN201
        """The preconditioner: the inverse of each row's own (d x d) block of the Gauss-Newton
        matrix (and of each bias's diagonal entry); rows couple only through shared terms."""
        d = self.d

        def blocks(idx: torch.Tensor, feats: torch.Tensor, c: torch.Tensor, n: int) -> torch.Tensor:
            out = torch.zeros(n + 1, d, d)
            order = torch.argsort(idx, stable=True)
            idx, feats, c = idx[order], feats[order], c[order]
            bounds = torch.searchsorted(idx, torch.arange(n + 2))
            for r in range(n):
                a, e = int(bounds[r]), int(bounds[r + 1])
                if e > a:
                    f = feats[a:e]
                    out[r] = (f * c[a:e, None]).T @ f
            return out[:-1]

        bu = blocks(self.lu, self.qd, curv, self.n_u)
        bi = blocks(
            torch.cat([self.li, self.lj]),
            torch.cat([self.pu, self.pu]),
            torch.cat([curv, curv]),
            self.n_i,
        )
        diag = self.reg_diag + damping
        eye = torch.eye(d)
        nu, ni = self.n_u, self.n_i
        inv_u = torch.linalg.inv(bu + diag[: nu * d].view(nu, d)[:, :, None] * eye)
        inv_i = torch.linalg.inv(bi + diag[nu * d : (nu + ni) * d].view(ni, d)[:, :, None] * eye)
        bias = (torch.zeros(ni + 1).index_add_(0, self.li, curv).index_add_(0, self.lj, curv))[:-1]
        inv_b = 1.0 / (bias + diag[(nu + ni) * d :])

        def apply(v: torch.Tensor) -> torch.Tensor:
            vu = torch.bmm(inv_u, v[: nu * d].view(nu, d, 1)).reshape(-1)
            vi = torch.bmm(inv_i, v[nu * d : (nu + ni) * d].view(ni, d, 1)).reshape(-1)
            return torch.cat([vu, vi, inv_b * v[(nu + ni) * d :]])

        return apply

    def curvature(self) -> torch.Tensor:
        s = torch.sigmoid(self.x)
        return self.t.w * s * (1 - s)

    def theta0(self) -> torch.Tensor:
        m = self.m
        pu, pi = torch.from_numpy(self.p_users), torch.from_numpy(self.p_items)
        return torch.cat([m.user[pu].reshape(-1), m.item[pi].reshape(-1), m.bias[pi]])

    def gradient(self) -> torch.Tensor:
        """Gradient of the terms' weighted loss (with L2) on the block."""
        g = self.jt(self.t.w * (torch.sigmoid(self.x) - 1))
        return g + self.reg_diag * self.theta0()


def _local(block: np.ndarray, idx: np.ndarray, n: int) -> torch.Tensor:
    """Position of each index in ``block`` (sorted), len(block) where absent (a zero pad row)."""
    lookup = np.full(n, len(block), dtype=np.int64)
    lookup[block] = np.arange(len(block))
    return torch.from_numpy(lookup[idx])
