"""LightGCN (He et al., 2020) on one shard's user-item graph, trained with the BPR loss.

Layer-0 embeddings E0 (users and items) are the parameters; each of ``layers`` propagation
steps multiplies by the symmetric normalised adjacency D^-1/2 A D^-1/2 of the bipartite
graph (one sparse CSR product, no dense n x n matrix), and the served embeddings are the
mean of the layers. After training the model keeps the propagated embeddings, so it scores
and folds in unseen users exactly like BPR-MF (``BPRMF``, zero item bias), and the attention
and learned aggregators work on it unchanged. The layer-0 embeddings stay beside them
(``base``) for warm starts.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from recunlearn.data.interactions import InteractionData
from recunlearn.models.bpr import BPRMF, FactorModule, fit_bpr

if TYPE_CHECKING:
    from recunlearn.config import LightGCNSettings


def normalised_adjacency(train: sp.csr_matrix) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of the bipartite graph [[0, R], [R^T, 0]] as a torch CSR tensor."""
    n_users, n_items = train.shape
    r = sp.csr_matrix(train, dtype=np.float32)
    a = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)
    deg = np.asarray(a.sum(1)).ravel()
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-12)), 0.0).astype(np.float32)
    a = sp.csr_matrix(sp.diags(inv) @ a @ sp.diags(inv), dtype=np.float32)
    a.sort_indices()
    with warnings.catch_warnings():  # "sparse CSR support is in beta": CSR @ dense is what we use
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(a.indptr.astype(np.int64)),
            torch.from_numpy(a.indices.astype(np.int64)),
            torch.from_numpy(a.data),
            size=a.shape,
        )


class _SymmetricProduct(torch.autograd.Function):
    """y = A x for a symmetric sparse A; the backward is A g (no transpose built)."""

    @staticmethod
    def forward(ctx: Any, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adj = adj
        return adj @ x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, ctx.adj @ grad


class LightGCNModule(FactorModule):
    """Layer-0 embeddings (no item bias: LightGCN has none) propagated over the shard's graph."""

    def __init__(
        self,
        train: sp.csr_matrix,
        dim: int,
        layers: int,
        init_std: float,
        generator: torch.Generator,
    ) -> None:
        self.n_users, n_items = train.shape
        super().__init__(self.n_users, n_items, dim, init_std, generator, train_bias=False)
        self.layers = layers
        self.adj = normalised_adjacency(train)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        e = torch.cat([self.user, self.item])
        total = e
        for _ in range(self.layers):
            e = _SymmetricProduct.apply(self.adj, e)
            total = total + e
        total = total / (self.layers + 1)
        return total[: self.n_users], total[self.n_users :]

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        users, items = self.propagate()
        return users, items, self.bias

    def loss(self, u: torch.Tensor, i: torch.Tensor, j: torch.Tensor, reg: float) -> torch.Tensor:
        users, items = self.propagate()
        pu, qi, qj = users[u], items[i], items[j]
        x = (pu * (qi - qj)).sum(1)
        # L2 on the layer-0 embeddings of the batch, as in the paper
        emb = nn.functional.embedding
        penalty = (
            emb(u, self.user).pow(2).sum()
            + emb(i, self.item).pow(2).sum()
            + emb(j, self.item).pow(2).sum()
        )
        return -nn.functional.logsigmoid(x).mean() + reg * penalty / len(u)

    def model(self, user_keys: np.ndarray) -> LightGCN:
        with torch.no_grad():
            users, items = self.propagate()
        return LightGCN(
            user_keys,
            users,
            items,
            self.bias.detach(),
            base=(
                self.user.detach().clone(),
                self.item.detach().clone(),
                self.bias.detach().clone(),
            ),
            layers=self.layers,
        )


class LightGCN(BPRMF):
    """A trained LightGCN: propagated embeddings served as a factor model (see module doc)."""

    def __init__(
        self,
        user_keys: np.ndarray,
        user: torch.Tensor,
        item: torch.Tensor,
        bias: torch.Tensor,
        meta: dict[str, Any] | None = None,
        fold_in_reg: float = 1.0,
        *,
        base: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
        layers: int = 3,
    ) -> None:
        super().__init__(user_keys, user, item, bias, meta, fold_in_reg)
        self.base = base
        self.layers = layers

    def state(self) -> dict[str, Any]:
        out = {**super().state(), "kind": "lightgcn", "layers": self.layers}
        if self.base is not None:
            out["base"] = {"user": self.base[0], "item": self.base[1], "bias": self.base[2]}
        return out

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LightGCN:
        b = state.get("base")
        return cls(
            np.asarray(state["user_keys"], dtype=str),
            state["user"],
            state["item"],
            state["bias"],
            state.get("meta"),
            base=(b["user"], b["item"], b["bias"]) if b else None,
            layers=int(state.get("layers", 3)),
        )


def fit_lightgcn(
    data: InteractionData,
    cfg: LightGCNSettings,
    *,
    seed: int,
    init: BPRMF | None = None,
    max_epochs: int | None = None,
) -> tuple[LightGCN, dict[str, Any]]:
    """Train LightGCN on ``data.train`` with ``fit_bpr``'s loop (sampling, early stopping on
    ``data.valid``, one seeded generator), the graph being the shard's own training pairs."""

    def build(g: torch.Generator) -> LightGCNModule:
        return LightGCNModule(data.train, cfg.dim, cfg.lightgcn_layers, cfg.init_std, g)

    return fit_bpr(
        data,
        cfg,
        seed=seed,
        module=build,
        init=init,
        max_epochs=max_epochs,
        batch_size=cfg.lightgcn_batch_size,
    )
