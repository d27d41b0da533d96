"""NCF: NeuMF (He et al., 2017), a GMF branch (p_u * q_i) beside an MLP over [p'_u, q'_i],
joined by one output layer; trained with the log loss on each positive and
``ncf_negatives`` sampled negatives, early-stopped on validation like BPR-MF (the loop is
``fit_bpr``'s).

Scoring every item for a user never builds the (users x items x 2d) MLP input: the first
layer is split into its user and item halves, computed once per user and per item and added.
Unseen users are folded in with nothing in the model changing, in one of two ways:

* ``linear`` (default): the MLP user vector is the trained users' mean, which makes the MLP
  branch a fixed per-item term, so the logit is linear in the GMF user vector: ``g . (q_i *
  w) + c_i``. That vector is then folded in like BPR-MF's (least-squares direction, per-user
  logit scale; :func:`recunlearn.models.bpr.linear_fold_in`): one shared solve and a few
  Newton steps, no pass through the network per user.
* ``adam``: both user vectors fit to the history by Adam steps on the class-balanced log
  loss over every item, each user independent of the others in the batch, from the trained
  users' mean (network and items frozen). Every step runs the MLP over (users x items):
  on ML-100K this made one sharded benchmark cell take 13 minutes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from recunlearn.data.interactions import InteractionData
from recunlearn.models.base import Recommender
from recunlearn.models.bpr import fit_bpr, fold_matrix, linear_fold_in

if TYPE_CHECKING:
    from recunlearn.config import NCFSettings


class NCFModule(nn.Module):
    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        layers: list[int],
        init_std: float,
        generator: torch.Generator,
        negatives: int = 4,
    ) -> None:
        super().__init__()
        self.negatives = negatives
        self.gmf_user = nn.Parameter(torch.empty(n_users, dim))
        self.gmf_item = nn.Parameter(torch.empty(n_items, dim))
        self.mlp_user = nn.Parameter(torch.empty(n_users, dim))
        self.mlp_item = nn.Parameter(torch.empty(n_items, dim))
        for p in (self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item):
            nn.init.normal_(p, std=init_std, generator=generator)
        widths = [2 * dim, *layers]
        self.mlp = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.out = nn.Linear(dim + widths[-1], 1)
        for lin in [*self.mlp, self.out]:
            bound = 1.0 / np.sqrt(lin.in_features)
            nn.init.uniform_(lin.weight, -bound, bound, generator=generator)
            nn.init.zeros_(lin.bias)

    def logits(
        self, gu: torch.Tensor, mu: torch.Tensor, items: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (n, m) of n users (their GMF and MLP vectors) against items (all if None)."""
        gi = self.gmf_item if items is None else self.gmf_item[items]
        mi = self.mlp_item if items is None else self.mlp_item[items]
        d = gu.shape[1]
        first: nn.Linear = self.mlp[0]  # type: ignore[assignment]
        h = (mu @ first.weight[:, :d].T)[:, None, :] + (mi @ first.weight[:, d:].T + first.bias)[
            None, :, :
        ]
        h = torch.relu(h)
        for lin in self.mlp[1:]:
            h = torch.relu(lin(h))
        w = self.out.weight[0]
        return gu @ (gi * w[:d]).T + h @ w[d:] + self.out.bias

    def pair_logits(self, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        emb = nn.functional.embedding
        gmf = emb(u, self.gmf_user) * emb(i, self.gmf_item)
        h = torch.cat([emb(u, self.mlp_user), emb(i, self.mlp_item)], 1)
        for lin in self.mlp:
            h = torch.relu(lin(h))
        return self.out(torch.cat([gmf, h], 1))[:, 0]

    def loss(self, u: torch.Tensor, i: torch.Tensor, j: torch.Tensor, reg: float) -> torch.Tensor:
        uj = u.repeat_interleave(self.negatives)
        pos, neg = self.pair_logits(u, i), self.pair_logits(uj, j)
        bce = nn.functional.binary_cross_entropy_with_logits
        data = (
            bce(pos, torch.ones_like(pos), reduction="sum")
            + bce(neg, torch.zeros_like(neg), reduction="sum")
        ) / (len(pos) + len(neg))
        emb = nn.functional.embedding
        penalty = sum(
            emb(x, t).pow(2).sum()
            for x, t in (
                (u, self.gmf_user),
                (u, self.mlp_user),
                (i, self.gmf_item),
                (i, self.mlp_item),
            )
        )
        return data + reg * penalty / len(u)

    def score_rows(self, rows: np.ndarray, chunk: int = 128) -> torch.Tensor:
        r = torch.as_tensor(np.asarray(rows), dtype=torch.long)
        return (
            torch.cat(
                [
                    self.logits(self.gmf_user[r[s : s + chunk]], self.mlp_user[r[s : s + chunk]])
                    for s in range(0, len(r), chunk)
                ]
            )
            if len(r)
            else torch.empty(0, self.gmf_item.shape[0])
        )

    def scorer(self) -> Callable[[np.ndarray], torch.Tensor]:
        return self.score_rows

    def warm_start(self, keys: np.ndarray, init: NCF) -> None:
        src = init.module
        rows = init.rows_of(keys)
        known = torch.from_numpy(np.flatnonzero(rows >= 0))
        at = torch.from_numpy(rows[rows >= 0])
        with torch.no_grad():
            for name in ("gmf_item", "mlp_item"):
                getattr(self, name).copy_(getattr(src, name))
            for name in ("gmf_user", "mlp_user"):
                getattr(self, name)[known] = getattr(src, name)[at]
            for a, b in zip([*self.mlp, self.out], [*src.mlp, src.out], strict=True):
                a.load_state_dict(b.state_dict())

    def model(self, user_keys: np.ndarray) -> NCF:
        return NCF(user_keys, self)


class NCF(Recommender):
    """A trained NeuMF for the users in ``user_keys`` (see module doc)."""

    def __init__(
        self,
        user_keys: np.ndarray,
        module: NCFModule,
        meta: dict[str, Any] | None = None,
        fold_in_steps: int = 30,
        fold_in_lr: float = 0.05,
        fold_in_mode: str = "linear",
        fold_in_reg: float = 1.0,
    ) -> None:
        self.user_keys = np.asarray(user_keys).astype(str)
        self.module = module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.n_items = int(module.gmf_item.shape[0])
        self.meta = dict(meta or {})
        self.fold_in_steps, self.fold_in_lr = fold_in_steps, fold_in_lr
        if fold_in_mode not in ("linear", "adam"):
            raise ValueError(f"NCF fold-in {fold_in_mode!r}: linear or adam")
        self.fold_in_mode, self.fold_in_reg = fold_in_mode, fold_in_reg
        self._linear: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def score(self, rows: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return self.module.score_rows(rows)

    def linear_view(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(item matrix (n_items, d), item term (n_items,), fold matrix) of the logit with the
        MLP user vector at the trained users' mean: ``g . item[i] + term[i]``."""
        if self._linear is None:
            m = self.module
            d = m.gmf_user.shape[1]
            with torch.no_grad():
                item = m.gmf_item * m.out.weight[0, :d]
                term = m.logits(torch.zeros(1, d), m.mlp_user.mean(0, keepdim=True))[0]
            self._linear = (item, term, fold_matrix(item, self.fold_in_reg))
        return self._linear

    def _linear_fold_in(self, history: sp.csr_matrix) -> torch.Tensor:
        item, term, fold = self.linear_view()
        return linear_fold_in(history, item, term, fold)

    def fold_in(
        self, history: sp.csr_matrix, *, chunk: int = 256
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """GMF and MLP user vectors for ``history`` rows, everything else frozen (see the
        module doc for the two modes)."""
        m = self.module
        n = history.shape[0]
        mu0 = m.mlp_user.mean(0)
        if self.fold_in_mode == "linear":
            return self._linear_fold_in(history), mu0.repeat(n, 1)
        out_g, out_m = m.gmf_user.mean(0).repeat(n, 1), mu0.repeat(n, 1)
        for s in range(0, n, chunk):
            x = torch.from_numpy(history[s : s + chunk].toarray() > 0).float()
            n_pos = x.sum(1, keepdim=True)
            w = torch.where(
                x > 0, 1.0 / n_pos.clamp(min=1), 1.0 / (self.n_items - n_pos).clamp(min=1)
            )
            gu = out_g[s : s + chunk].clone().requires_grad_(True)
            mu = out_m[s : s + chunk].clone().requires_grad_(True)
            opt = torch.optim.Adam([gu, mu], lr=self.fold_in_lr)
            with torch.enable_grad():
                for _ in range(self.fold_in_steps):
                    # a sum of per-user losses: each user's vectors move on their own history only
                    loss = (
                        w
                        * nn.functional.binary_cross_entropy_with_logits(
                            m.logits(gu, mu), x, reduction="none"
                        )
                    ).sum()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            out_g[s : s + chunk], out_m[s : s + chunk] = gu.detach(), mu.detach()
        return out_g, out_m

    def score_history(self, history: sp.csr_matrix) -> torch.Tensor:
        if self.fold_in_mode == "linear":  # the MLP term is the same for every folded user
            item, term, _ = self.linear_view()
            return self._linear_fold_in(history) @ item.T + term
        gu, mu = self.fold_in(history)
        with torch.no_grad():
            return (
                torch.cat(
                    [
                        self.module.logits(gu[s : s + 128], mu[s : s + 128])
                        for s in range(0, len(gu), 128)
                    ]
                )
                if len(gu)
                else torch.empty(0, self.n_items)
            )

    def state(self) -> dict[str, Any]:
        m = self.module
        return {
            "kind": "ncf",
            "user_keys": self.user_keys.tolist(),
            "params": m.state_dict(),
            "shape": [m.gmf_user.shape[0], self.n_items, m.gmf_user.shape[1]],
            "layers": [lin.out_features for lin in m.mlp],
            "negatives": m.negatives,
            "meta": self.meta,
            "fold_in": [self.fold_in_steps, self.fold_in_lr],
            "fold_in_mode": self.fold_in_mode,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> NCF:
        n_users, n_items, dim = state["shape"]
        module = NCFModule(
            n_users,
            n_items,
            dim,
            list(state["layers"]),
            0.1,
            torch.Generator().manual_seed(0),
            negatives=int(state["negatives"]),
        )
        module.load_state_dict(state["params"])
        steps, lr = state.get("fold_in", [30, 0.05])
        return cls(
            np.asarray(state["user_keys"], dtype=str),
            module,
            state.get("meta"),
            fold_in_steps=int(steps),
            fold_in_lr=float(lr),
            fold_in_mode=state.get("fold_in_mode", "linear"),
        )


def fit_ncf(
    data: InteractionData,
    cfg: NCFSettings,
    *,
    seed: int,
    init: NCF | None = None,
    max_epochs: int | None = None,
) -> tuple[NCF, dict[str, Any]]:
    """Train NeuMF on ``data.train`` with ``fit_bpr``'s loop (see module doc)."""

    def build(g: torch.Generator) -> NCFModule:
        return NCFModule(
            data.n_users,
            data.n_items,
            cfg.dim,
            list(cfg.ncf_layers),
            cfg.init_std,
            g,
            negatives=cfg.ncf_negatives,
        )

    model, stats = fit_bpr(data, cfg, seed=seed, module=build, init=init, max_epochs=max_epochs)
    model.fold_in_steps, model.fold_in_mode = cfg.ncf_fold_in_steps, cfg.ncf_fold_in
    return model, stats
