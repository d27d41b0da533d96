"""In-training attribute unlearning: BPR-MF trained against an attacker head.

The head learns to predict the attribute from a user's embedding. Two ways to turn it
against the embeddings (``mode``):
- ``reverse``: a gradient-reversal layer, so the embeddings *maximise* the head's loss. A known
  weakness, measured by ``recunlearn bench attribute``: maximising cross-entropy can be won by
  encoding the attribute inverted, which a retrained attacker reads as well as before.
- ``confusion`` (default): the head is trained on detached embeddings; the embeddings are
  trained to make the (frozen) head's prediction uniform, which removes the signal instead of
  inverting it.
Needs the labels at training time (the post-training edit needs neither retraining nor data).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from recunlearn.config import ModelSettings
from recunlearn.data.interactions import InteractionData
from recunlearn.models.bpr import BPRMF, fit_bpr


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: float) -> torch.Tensor:  # noqa: ANN401
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN401
        return -ctx.weight * grad, None


def grad_reverse(x: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    return _Reverse.apply(x, weight)


def class_weights(cls: np.ndarray, n_classes: int) -> torch.Tensor:
    """Balanced cross-entropy weights from class indices (>= 0)."""
    counts = np.bincount(cls, minlength=n_classes).astype(np.float64)
    return torch.tensor(len(cls) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)


def confusion_loss(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``net``'s prediction on ``x`` against the uniform distribution, with
    ``net`` frozen: its gradient moves ``x`` only (log(classes) at a uniform prediction)."""
    frozen = {k: v.detach() for k, v in net.named_parameters()}
    return -torch.log_softmax(torch.func.functional_call(net, frozen, (x,)), 1).mean()


class AttributeAdversary(nn.Module):
    """An MLP attacker head on user embeddings; its loss reverses into the embeddings."""

    def __init__(
        self,
        labels: np.ndarray,
        dim: int,
        n_classes: int,
        *,
        weight: float,
        hidden: int = 64,
        seed: int = 0,
        mode: str = "confusion",
    ) -> None:
        super().__init__()
        if mode not in ("confusion", "reverse"):
            raise ValueError(f"adversary mode {mode!r}: confusion | reverse")
        self.mode = mode
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.weight = weight
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))
        for p in self.net.parameters():
            nn.init.normal_(p, std=0.1, generator=g)
        self.class_weight = class_weights(labels[labels >= 0], n_classes)

    def loss(self, user: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        uniq = torch.unique(u)
        y = self.labels[uniq]
        keep = y >= 0
        if not keep.any():
            return user.new_zeros(())
        emb = user[uniq[keep]]
        if self.mode == "reverse":
            logits = self.net(grad_reverse(emb, self.weight))
            return nn.functional.cross_entropy(logits, y[keep], weight=self.class_weight)
        head = nn.functional.cross_entropy(
            self.net(emb.detach()), y[keep], weight=self.class_weight
        )
        return head + self.weight * confusion_loss(self.net, emb)


def fit_bpr_adversarial(
    data: InteractionData,
    cfg: ModelSettings,
    labels: np.ndarray,
    *,
    n_classes: int,
    weight: float,
    seed: int,
    mode: str = "confusion",
) -> tuple[BPRMF, dict[str, Any]]:
    """BPR-MF whose user embeddings are trained to hide ``labels`` (aligned with
    ``data.user_keys``; -1 for unknown) from an adversary of strength ``weight``."""
    adversary = AttributeAdversary(labels, cfg.dim, n_classes, weight=weight, seed=seed, mode=mode)
    model, stats = fit_bpr(data, cfg, seed=seed, adversary=adversary)
    stats["adversary"] = {"weight": weight, "mode": mode}
    return model, stats
