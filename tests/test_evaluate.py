"""Evaluating a published version: every user up to ``evaluation.max_users``, past it a
seeded sample whose rows alone are read."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.evaluate import evaluate_published, evaluation_users
from recunlearn.storage.registry import ModelRegistry

pytestmark = [pytest.mark.spark, pytest.mark.ray]


def test_past_the_cap_a_seeded_sample_of_users_is_evaluated(spark, cfg, layout, trained):
    version = ModelRegistry(layout).current_version().table_version
    everyone, users, population = evaluation_users(cfg, layout, version, None)
    assert len(users) == population == everyone.n_users > 40
    excluded = list(everyone.user_keys[:5])
    small = cfg.model_copy(
        update={"evaluation": cfg.evaluation.model_copy(update={"max_users": 20})}
    )
    data, users, population = evaluation_users(small, layout, version, excluded)
    assert population == everyone.n_users - 5 and len(users) == data.n_users == 20
    assert not set(excluded) & set(data.user_keys)
    # only the sample's rows were read, and they are those users' full rows
    rows = np.searchsorted(everyone.user_keys, data.user_keys)
    for name in ("train", "valid", "test"):
        assert (getattr(everyone, name)[rows] != getattr(data, name)).nnz == 0
    again, _, _ = evaluation_users(small, layout, version, excluded)
    assert again.user_keys.tolist() == data.user_keys.tolist()  # seeded
    out = evaluate_published(spark, cfg=small, layout=layout)
    assert out["users"] <= 20 and out["users_sampled_from"] == everyone.n_users
    assert 0 < out["ensemble"]["ndcg@20"] < 1
