"""Shard training runs as named Ray tasks: the name is what Ray's dashboard lists."""

from __future__ import annotations

import sys

import pytest

from pipelines.train import run_tasks

pytestmark = [pytest.mark.ray]


def _my_name(x: int) -> dict:
    import ray

    return {"x": x, "name": ray.get_runtime_context().get_task_name()}


def test_tasks_carry_the_names_given_and_results_keep_the_call_order(ray_local, cfg):
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import tests
    names = [f"train shard {k} (table v3, job j1)" for k in range(3)]
    got = run_tasks(cfg, [(_my_name, (k,)) for k in range(3)], label="t", names=names)
    assert [g["x"] for g in got] == [0, 1, 2]
    assert [g["name"] for g in got] == names
