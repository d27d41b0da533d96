"""Attribute inference from user embeddings: the attacker that attribute unlearning is judged by.

The attacker is trained on some users' embeddings with their labels and tested on other users
(disjoint, stratified split). It reports balanced accuracy (chance is 1/classes whatever the
class balance) and AUC (one-vs-rest macro for more than two classes), each with a
percentile-bootstrap interval over the test users. Kinds: ``mlp`` (one hidden layer, early
stopping) and ``gbm`` (histogram gradient boosting), both with balanced class weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

KINDS = ("mlp", "gbm")


def _rs(seed: int) -> int:
    return int(seed) % (2**32 - 1)  # scikit-learn takes 32-bit seeds


def split_users(
    y: np.ndarray, *, test_size: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, disjoint train/test user indices."""
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=test_size, stratify=y, random_state=_rs(seed))
    return np.sort(tr), np.sort(te)


def balanced_weights(y: np.ndarray) -> np.ndarray:
    counts = np.bincount(y)
    return (len(y) / (len(counts) * counts[y])).astype(np.float64)


def fit_attacker(x: np.ndarray, y: np.ndarray, *, kind: str = "mlp", seed: int = 0):  # noqa: ANN201
    """A fitted classifier (a scikit-learn pipeline) predicting ``y`` from embeddings ``x``."""
    if kind == "mlp":
        clf = MLPClassifier(
            hidden_layer_sizes=(64,),
            alpha=1e-3,
            max_iter=400,
            early_stopping=True,
            random_state=_rs(seed),
        )
    elif kind == "gbm":
        clf = HistGradientBoostingClassifier(
            max_iter=200, early_stopping=True, random_state=_rs(seed)
        )
    else:
        raise ValueError(f"attacker kind {kind!r}; known: {KINDS}")
    pipe = make_pipeline(StandardScaler(), clf)
    step = pipe.steps[-1][0]
    pipe.fit(np.asarray(x, dtype=np.float64), y, **{f"{step}__sample_weight": balanced_weights(y)})
    return pipe


def balanced_accuracy(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    recalls = [np.mean(pred[y == c] == c) for c in range(n_classes) if np.any(y == c)]
    return float(np.mean(recalls))


def auc(y: np.ndarray, proba: np.ndarray) -> float:
    present = np.unique(y)
    if len(present) < 2:
        return float("nan")
    if proba.shape[1] == 2:
        return float(roc_auc_score(y, proba[:, 1]))
    if len(present) < proba.shape[1]:
        return float("nan")
    return float(roc_auc_score(y, proba, multi_class="ovr", average="macro"))


def score_attacker(
    clf: Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_classes: int,
    bootstrap: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Balanced accuracy and AUC of a fitted attacker on users ``x`` (labels ``y``), with
    percentile-bootstrap intervals over those users."""
    proba = clf.predict_proba(np.asarray(x, dtype=np.float64))
    full = np.zeros((len(y), n_classes))
    full[:, clf.classes_] = proba
    pred = full.argmax(1)
    out: dict[str, Any] = {
        "n": int(len(y)),
        "balanced_accuracy": balanced_accuracy(y, pred, n_classes),
        "auc": auc(y, full),
        "chance": 1.0 / n_classes,
    }
    rng = np.random.default_rng(seed)
    bas, aucs = [], []
    for _ in range(bootstrap):
        i = rng.integers(0, len(y), len(y))
        bas.append(balanced_accuracy(y[i], pred[i], n_classes))
        aucs.append(auc(y[i], full[i]))
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    if bootstrap:
        out["balanced_accuracy_ci"] = [float(np.percentile(bas, lo)), float(np.percentile(bas, hi))]
        out["auc_ci"] = [float(np.nanpercentile(aucs, lo)), float(np.nanpercentile(aucs, hi))]
    return out


def attack(
    x: np.ndarray,
    y: np.ndarray,
    *,
    kind: str = "mlp",
    n_classes: int | None = None,
    seed: int = 0,
    test_size: float = 0.3,
    bootstrap: int = 200,
) -> dict[str, Any]:
    """Train on some users, report on the others (disjoint, stratified)."""
    n_classes = int(n_classes or (y.max() + 1))
    tr, te = split_users(y, test_size=test_size, seed=seed)
    clf = fit_attacker(x[tr], y[tr], kind=kind, seed=seed)
    return {
        "kind": kind,
        "n_train": int(len(tr)),
        **score_attacker(clf, x[te], y[te], n_classes=n_classes, bootstrap=bootstrap, seed=seed),
    }
