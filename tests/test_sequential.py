"""LASER's bookkeeping (pure logic): the curriculum order, where a request restarts, and which
groups a sequential manifest retrains."""

import numpy as np
import pytest

from pipelines.train import sequential_restart
from recunlearn.sharding.sequential import SequentialModel, curriculum
from recunlearn.storage.versions import Component, ModelVersion


def test_curriculum_puts_the_densest_groups_first_ties_by_id():
    rows = np.array([10, 10, 2, 2, 5, 5, 5, 1])  # training interactions per user
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])  # means: 10, 2, 5, 3
    assert curriculum(rows, labels, 4).tolist() == [0, 2, 3, 1]
    assert curriculum(np.ones(4), np.array([1, 0, 2, 3]), 4).tolist() == [0, 1, 2, 3]
    # an empty group counts as the sparsest
    assert curriculum(np.array([3, 3]), np.array([0, 2]), 3).tolist() == [0, 2, 1]


def test_restart_position_is_the_earliest_group_holding_a_forgotten_user():
    run = SequentialModel(
        stages=[],
        keys=np.array(["a", "b", "c", "d"]),
        labels=np.array([2, 0, 1, 2]),
        order=np.array([1, 2, 0]),
    )
    assert run.restart_position(np.array(["b"])) == 2
    assert run.restart_position(np.array(["b", "d"])) == 1
    assert run.restart_position(np.array(["c", "b"])) == 0
    assert run.restart_position(np.array(["nobody"])) is None


def test_sequential_manifest_restarts_from_the_stage_before_the_earliest_group():
    manifest = ModelVersion(
        version=1,
        n_shards=3,
        n_items=5,
        table_version=0,
        order=[2, 0, 1],
        shards={k: Component(f"p{k}") for k in range(3)},
        aggregator=Component("a"),
        reference=None,
        guarantee="",
        config_fingerprint="",
    )
    assert manifest.groups_from([1]) == [1]
    assert manifest.groups_from([0, 1]) == [0, 1]
    assert manifest.groups_from([2]) == [2, 0, 1]
    assert manifest.groups_from([]) == []
    assert sequential_restart(manifest, [0, 1]) == ([2, 0, 1], 1, "p2")
    assert sequential_restart(manifest, [2, 0, 1]) == ([2, 0, 1], 0, None)
    assert sequential_restart(None, [0, 1, 2]) == (None, 0, None)


def test_sequential_config_refuses_what_it_cannot_serve():
    from conftest import ROOT

    from recunlearn.config import ConfigError, load_config

    conf = ROOT / "conf" / "default.yaml"
    assert load_config(conf, ["train.mode=sequential"]).train.mode == "sequential"
    for bad in (
        "aggregator.kind=attention",
        "sharding.unit=item",
        "unlearn.partition=strict",
        "unlearn.method=scif",
    ):
        with pytest.raises(ConfigError, match="train.mode=sequential"):
            load_config(conf, ["train.mode=sequential", bad])
