"""Sub-models behind one small interface (see ``base.Recommender``), chosen by
``model.kind`` in the config: fit one, or rebuild one from a checkpoint's state."""

from __future__ import annotations

from typing import Any

from recunlearn.models.base import Recommender


def load_model(state: dict[str, Any]) -> Recommender:
    """The model a checkpoint's state describes (its ``kind``: bpr, wmf or itemknn)."""
    kind = state.get("kind", "bpr")
    if kind == "bpr":
        from recunlearn.models.bpr import BPRMF

        return BPRMF.from_state(state)
    if kind == "wmf":
        from recunlearn.models.wmf import WMF

        return WMF.from_state(state)
    if kind == "itemknn":
        from recunlearn.models.itemknn import ItemKNN

        return ItemKNN.from_state(state)
    raise ValueError(f"unknown model kind {kind!r} in checkpoint")


def fit_model(data: Any, cfg: Any, *, seed: int) -> tuple[Recommender, dict[str, Any]]:
    """Train ``cfg.kind`` on ``data.train`` (an InteractionData; BPR early-stops on
    ``data.valid``). Stats always carry fit_seconds, epochs, best_epoch, valid_ndcg, n_users,
    n_train and curve."""
    import time

    base = {"epochs": 0, "best_epoch": 0, "valid_ndcg": None, "curve": [],
            "n_users": int(data.n_users), "n_train": int(data.train.nnz)}
    if cfg.kind == "bpr":
        from recunlearn.models.bpr import fit_bpr

        return fit_bpr(data, cfg, seed=seed)
    t0 = time.perf_counter()
    if cfg.kind == "wmf":
        from recunlearn.models.wmf import fit_wmf

        model, stats = fit_wmf(data.user_keys, data.train, dim=cfg.dim, alpha=cfg.wmf_alpha,
                               reg=cfg.wmf_reg, tol=cfg.wmf_tol, seed=seed)
        return model, {**base, **stats, "epochs": stats["rounds"]}
    if cfg.kind == "itemknn":
        from recunlearn.models.itemknn import ItemKNN

        model = ItemKNN(data.user_keys, data.train, k=cfg.knn_k, shrink=cfg.knn_shrink)
        return model, {**base, "fit_seconds": time.perf_counter() - t0}
    raise ValueError(f"unknown model kind {cfg.kind!r}")
