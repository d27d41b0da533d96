"""A published model version as it serves: its ensemble (with the attribute edits in effect)
and its full reference model, loaded from the version's checkpoints."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from recunlearn.attribute.edit import AttributeOverlay
from recunlearn.models import load_model
from recunlearn.sharding.ensemble import ShardedEnsemble, load_aggregator
from recunlearn.storage import checkpoints
from recunlearn.storage.versions import ModelVersion


def load_ensemble(
    version: ModelVersion, *, fold_in_reg: float = 1.0, with_overlay: bool = True
) -> ShardedEnsemble:
    """The ensemble of a model version, with its attribute edits applied: the edited
    users' home vectors are stamped into the shard models and their other views come from the
    overlay. ``with_overlay=False`` gives the unedited ensemble."""
    shards: list[Any] = []
    # sequential training (LASER) serves one model: the last group's stage
    for k in version.serving_shards():
        m: Any = load_model(checkpoints.load_state(version.shards[k].path))
        if hasattr(m, "fold_in_reg"):
            m.fold_in_reg = fold_in_reg
        shards.append(m)
    overlay = None
    if with_overlay and version.attribute_overlay is not None:
        overlay = AttributeOverlay.from_state(
            checkpoints.load_state(version.attribute_overlay.path)
        )
        for k, m in enumerate(shards):
            rows = m.rows_of(overlay.keys)
            hit = np.flatnonzero(rows >= 0)
            if len(hit):
                m.user = m.user.clone()
                m.user[torch.from_numpy(rows[hit])] = overlay.views[torch.from_numpy(hit), k]
    agg = load_aggregator(checkpoints.load_state(version.aggregator.path))
    return ShardedEnsemble(shards, agg, overlay=overlay)


def load_reference(version: ModelVersion, *, fold_in_reg: float = 1.0) -> Any:
    """The version's full reference model (None when it has none)."""
    if version.reference is None:
        return None
    m: Any = load_model(checkpoints.load_state(version.reference.path))
    m.fold_in_reg = fold_in_reg
    return m
