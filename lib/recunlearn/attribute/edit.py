"""Post-training attribute unlearning: edit user embeddings until the attribute groups are
indistinguishable, while keeping each user's recommendations.

The loss, minimised over the edited users' vectors V (the rest of the model is frozen):

    w_dist * sum_c MMD^2(V[targets of class c], pool)          (distribution, anchor-based)
  + w_u2u  * mean_t relu(d_other(t) - d_same(t)) / scale         (user to user)
  + w_adv  * CE(critic(V), uniform)                              (an online attacker)
  + w_reg  * R(V)

- The anchor ``pool`` is the original embeddings of every labelled user. Matching each class's
  edited users to the same anchor makes the classes indistinguishable to *any* classifier once
  the MMD is zero, for two classes or many (age groups), and it works when only a few users
  asked (per-user scope): their edited vectors look like the population, whatever their class.
- User to user: each edited user is pulled towards pool users of other classes and pushed from
  those of its own class, until it is as close to the others as to its own (the hinge stops it).
- Online attacker: a small MLP critic is trained, step by step, to predict the attribute from
  the edited vectors (and from the unedited population, for per-user scope); the edit makes its
  prediction uniform on the edited users. It targets what an MLP attacker sees directly.
- ``R``: ``function`` space keeps each user's original ranking (KL between the softmax of the
  original and the edited scores over all items, temperature T); ``parameter`` space keeps the
  vectors close (squared distance, relative to the vectors' mean squared norm).

No training data is read. The edit is deterministic for a seed. It is reversible because the
unedited model is kept (see :class:`AttributeOverlay`), not reconstructed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from recunlearn.attribute.adversarial import class_weights, confusion_loss
from recunlearn.config import AttributeEditConfig
from recunlearn.models.base import lookup_rows
from recunlearn.models.bpr import BPRMF

if TYPE_CHECKING:
    import scipy.sparse as sp

    from recunlearn.sharding.ensemble import ShardedEnsemble

# (vectors of some edited users, their positions among the targets) -> item scores
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _mmd2(x: torch.Tensor, y: torch.Tensor, bandwidths: list[float]) -> torch.Tensor:
    dxx, dxy = torch.cdist(x, x).pow(2), torch.cdist(x, y).pow(2)
    out = x.new_zeros(())
    for s in bandwidths:
        out = out + torch.exp(-dxx / (2 * s * s)).mean() - 2 * torch.exp(-dxy / (2 * s * s)).mean()
    return out


def edit_embeddings(
    emb: torch.Tensor,
    labels: np.ndarray,
    targets: np.ndarray,
    *,
    cfg: AttributeEditConfig,
    seed: int,
    score_fn: ScoreFn | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """New vectors (len(targets), D) for rows ``targets`` of ``emb`` (n, D).

    ``labels`` (n,) holds class indices, -1 where unknown (such users are in no anchor).
    ``score_fn`` maps vectors to item scores; it is needed for the function-space regulariser.
    """
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    emb = emb.detach().float()
    labels = np.asarray(labels)
    targets = np.asarray(targets, dtype=np.int64)
    t_lab = torch.from_numpy(labels[targets])
    if (t_lab < 0).any():
        raise ValueError("every edited user needs a known attribute value")
    if cfg.space == "function" and score_fn is None:
        raise ValueError("function-space editing needs the model's score function")
    known = np.flatnonzero(labels >= 0)
    pool = emb[torch.from_numpy(known)]
    pool_lab = torch.from_numpy(labels[known])
    classes = sorted(set(labels[known].tolist()))
    v0 = emb[torch.from_numpy(targets)].clone()
    delta = torch.zeros_like(v0, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=cfg.lr)
    sample = pool[torch.randperm(len(pool), generator=g)[:1000]]
    med = float(torch.cdist(sample, sample).median())
    bandwidths = [med * f for f in cfg.bandwidths]
    by_class = {c: torch.nonzero(t_lab == c).flatten() for c in classes}
    by_class = {c: v for c, v in by_class.items() if len(v)}
    pool_by_class = {c: torch.nonzero(pool_lab == c).flatten() for c in classes}
    scale = float(pool.pow(2).sum(1).mean())
    with torch.no_grad():
        ref_scores = None
        if cfg.space == "function":
            assert score_fn is not None  # checked above
            ref_scores = torch.cat(
                [
                    torch.log_softmax(
                        score_fn(v0[s : s + 2048], torch.arange(s, min(s + 2048, len(v0))))
                        / cfg.temperature,
                        1,
                    )
                    for s in range(0, len(v0), 2048)
                ]
            )
    n_t = len(targets)
    critic = None
    if cfg.w_adv > 0:
        critic = torch.nn.Sequential(
            torch.nn.Linear(v0.shape[1], 64), torch.nn.ReLU(), torch.nn.Linear(64, len(classes))
        )
        for p in critic.parameters():
            torch.nn.init.normal_(p, std=0.05, generator=g)
        critic_opt = torch.optim.Adam(critic.parameters(), lr=0.01)
        class_of = {c: i for i, c in enumerate(classes)}
        t_cls = torch.tensor([class_of[int(c)] for c in t_lab.tolist()])
        p_cls = torch.tensor([class_of[int(c)] for c in pool_lab.tolist()])
        cw = class_weights(p_cls.numpy(), len(classes))
    curve = []
    for step in range(cfg.steps):
        v = v0 + delta
        anchor = pool[torch.randint(len(pool), (cfg.pool_sample,), generator=g)]
        l_dist = v.new_zeros(())
        for rows in by_class.values():
            pick = rows[torch.randint(len(rows), (min(len(rows), cfg.batch),), generator=g)]
            # constant term of MMD (anchor vs anchor) is left out: it has no gradient
            l_dist = l_dist + _mmd2(v[pick], anchor, bandwidths)
        batch = torch.randint(n_t, (min(n_t, cfg.batch),), generator=g)
        l_u2u = v.new_zeros(())
        if cfg.w_u2u > 0 and len(classes) > 1:
            # mean squared distance of each batch user to a pool sample of every class
            per_class = torch.stack(
                [
                    torch.cdist(
                        v[batch],
                        pool[
                            pool_by_class[c][
                                torch.randint(len(pool_by_class[c]), (256,), generator=g)
                            ]
                        ],
                    )
                    .pow(2)
                    .mean(1)
                    for c in classes
                ],
                1,
            )
            own = t_lab[batch]
            same = per_class.gather(1, own[:, None]).squeeze(1)
            other = (per_class.sum(1) - same) / (len(classes) - 1)
            l_u2u = torch.relu(other - same).mean() / scale  # closer to its own class: pull across
        if cfg.space == "function":
            assert score_fn is not None and ref_scores is not None
            logp = torch.log_softmax(score_fn(v[batch], batch) / cfg.temperature, 1)
            l_reg = torch.nn.functional.kl_div(
                logp, ref_scores[batch], reduction="batchmean", log_target=True
            )
        else:
            l_reg = delta[batch].pow(2).sum(1).mean() / scale
        l_adv = v.new_zeros(())
        if critic is not None:
            # the critic learns the attribute from the edited users (and, for per-user scope,
            # from the unedited rest); the edit makes its prediction uniform on the edited users
            pick = torch.randint(len(pool), (cfg.pool_sample,), generator=g)
            x = torch.cat([v[batch].detach(), pool[pick]]) if n_t < len(pool) else v[batch].detach()
            yc = torch.cat([t_cls[batch], p_cls[pick]]) if n_t < len(pool) else t_cls[batch]
            critic_loss = torch.nn.functional.cross_entropy(critic(x), yc, weight=cw)
            critic_opt.zero_grad(set_to_none=True)
            critic_loss.backward()
            critic_opt.step()
            l_adv = confusion_loss(critic, v[batch]) - float(np.log(len(classes)))  # 0 when uniform
        loss = cfg.w_dist * l_dist + cfg.w_u2u * l_u2u + cfg.w_adv * l_adv + cfg.w_reg * l_reg
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == cfg.steps - 1:
            curve.append(
                (
                    step,
                    round(float(l_dist.detach()), 5),
                    round(float(l_u2u.detach()), 5),
                    round(float(l_adv.detach()), 5),
                    round(float(l_reg.detach()), 5),
                )
            )
    new = (v0 + delta).detach()
    stats = {
        "seconds": round(time.perf_counter() - t0, 3),
        "edited": int(n_t),
        "space": cfg.space,
        "steps": cfg.steps,
        "curve": curve,
        "mean_shift": float((new - v0).norm(dim=1).mean() / v0.norm(dim=1).mean().clamp(min=1e-12)),
    }
    return new, stats


# --------------------------------------------------------------------------- single models
def edit_model(
    model: BPRMF, labels: np.ndarray, targets: np.ndarray, *, cfg: AttributeEditConfig, seed: int
) -> tuple[BPRMF, dict[str, torch.Tensor], dict[str, Any]]:
    """An edited copy of a BPR-MF model (a full model or one shard) and the undo record.

    Only rows ``targets`` change; every other tensor is the original, bit for bit.
    """
    new_rows, stats = edit_embeddings(
        model.user,
        labels,
        targets,
        cfg=cfg,
        seed=seed,
        score_fn=lambda v, _: v @ model.item.T + model.bias,
    )
    user = model.user.clone()
    idx = torch.from_numpy(np.asarray(targets, dtype=np.int64))
    undo = {"rows": idx.clone(), "original": user[idx].clone()}
    user[idx] = new_rows
    edited = BPRMF(
        model.user_keys,
        user,
        model.item,
        model.bias,
        meta=model.meta,
        fold_in_reg=model.fold_in_reg,
    )
    return edited, undo, stats


def undo_model(model: BPRMF, undo: dict[str, torch.Tensor]) -> BPRMF:
    """The model with the undo record's rows put back exactly."""
    user = model.user.clone()
    user[undo["rows"]] = undo["original"]
    return BPRMF(
        model.user_keys,
        user,
        model.item,
        model.bias,
        meta=model.meta,
        fold_in_reg=model.fold_in_reg,
    )


# --------------------------------------------------------------------------- the ensemble
@dataclass
class AttributeOverlay:
    """Edited shard views of some users of a sharded ensemble, applied over the unedited shards.

    ``views[i]`` (K, d) replaces user ``keys[i]``'s K shard views (its home shard's trained
    vector and its fold-ins elsewhere). The unedited shard checkpoints stay as trained: they
    are what an undo returns to, exactly, by dropping overlay rows.
    """

    keys: np.ndarray  # sorted
    views: torch.Tensor  # (n, K, d)
    meta: dict[str, Any] = field(default_factory=dict)

    def rows_of(self, keys: np.ndarray) -> np.ndarray:
        return lookup_rows(self.keys, keys)

    def apply(self, keys: np.ndarray, vecs: torch.Tensor) -> torch.Tensor:
        """Views (K, n, d) with the overlay's users replaced."""
        rows = self.rows_of(keys)
        hit = np.flatnonzero(rows >= 0)
        if len(hit):
            vecs = vecs.clone()
            vecs[:, torch.from_numpy(hit)] = self.views[torch.from_numpy(rows[hit])].transpose(0, 1)
        return vecs

    def state(self) -> dict[str, Any]:
        return {
            "kind": "attribute_overlay",
            "keys": self.keys.tolist(),
            "views": self.views,
            "meta": self.meta,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AttributeOverlay:
        return cls(np.asarray(state["keys"], dtype=str), state["views"], state.get("meta", {}))


def ensemble_score_fn(ens, vecs0: torch.Tensor, home0: torch.Tensor) -> ScoreFn:  # noqa: ANN001
    """Scores of flattened views (n, K*d) under the ensemble's aggregator. Aggregator weights
    are those of the unedited views (held fixed while editing)."""
    items = torch.stack([m.item for m in ens.shards])  # (K, I, d)
    bias = torch.stack([m.bias for m in ens.shards])  # (K, I)
    k, d = items.shape[0], items.shape[2]
    weights = ens.aggregator.weights(vecs0, home0)  # (n, K)

    def score(v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        views = v.view(len(v), k, d)
        w = weights[idx]
        return torch.einsum(
            "nk,nki->ni", w, torch.einsum("nkd,kid->nki", views, items) + bias[None]
        )

    return score


def edit_ensemble(
    ens: ShardedEnsemble,
    keys: np.ndarray,
    history: sp.csr_matrix,
    labels: np.ndarray,
    targets: np.ndarray,
    *,  # noqa: ANN001, ANN201
    cfg: AttributeEditConfig,
    seed: int,
) -> tuple[AttributeOverlay, dict[str, Any]]:
    """Edit the aggregated embeddings (the K shard views, concatenated) of users ``targets``
    (rows of ``keys``/``history``/``labels``, which describe the population used as anchor)."""
    from recunlearn.sharding.ensemble import shard_views

    keys = np.asarray(keys).astype(str)
    targets = np.asarray(targets, dtype=np.int64)
    targets = targets[np.argsort(keys[targets])]  # the overlay is kept sorted by key
    with torch.no_grad():
        vecs, home = shard_views(ens.shards, keys, history)  # (K, n, d)
        if ens.overlay is not None:
            vecs = ens.overlay.apply(keys, vecs)
    k, n, d = vecs.shape
    flat = vecs.transpose(0, 1).reshape(n, k * d)
    t_idx = torch.from_numpy(targets)
    new, stats = edit_embeddings(
        flat,
        labels,
        targets,
        cfg=cfg,
        seed=seed,
        score_fn=ensemble_score_fn(ens, vecs[:, t_idx], home[:, t_idx]),
    )
    return AttributeOverlay(keys[targets], new.view(len(targets), k, d)), stats
