"""Ray faults (issue 7) on real Ray: a shard-training worker SIGKILLed mid-task is retried and
the shard comes out as if nothing happened; a node lost from a multi-node cluster (Ray's own
``cluster_utils``: one head, two worker raylets) is survived; and the object-spilling folder of
a job's local Ray is the job's own and is gone after it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, write_ml100k

from pipelines.ingest import ingest
from pipelines.partition import partition_users
from pipelines.train import n_items_of, train_models
from recunlearn.storage.delta import delta_version

pytestmark = [pytest.mark.spark, pytest.mark.ray, pytest.mark.slow]
SECRET = b"test-secret-key-0123456789"


def _workers_running(task: str) -> list[int]:
    """Pids of Ray workers now executing ``task`` (Ray titles them ``ray::<task>``)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                title = (
                    (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace").strip()
                )
            except OSError:
                continue
            if title == f"ray::{task}":
                pids.append(int(proc.name))
    return pids


def _long_training(cfg):
    # long enough (several seconds per shard) to be caught mid-task
    return cfg.model_copy(
        update={
            "model": cfg.model.model_copy(
                update={"max_epochs": 1500, "patience": 1500, "eval_every": 500, "batch_size": 64}
            )
        }
    )


@pytest.fixture()
def ingested(spark, cfg, layout, tmp_path):
    raw = tmp_path / "raw"
    write_ml100k(raw)
    ingest(spark, cfg=cfg, layout=layout, raw_path=raw, secret=SECRET)
    partition_users(spark, cfg=cfg, layout=layout)
    return delta_version(spark, layout.interactions)


def _states(metas):
    from recunlearn.storage import checkpoints

    return {k: checkpoints.load_state(m["path"]) for k, m in metas.items()}


def test_a_worker_killed_mid_shard_is_retried_and_the_shard_is_unchanged(
    spark, ray_local, cfg, layout, ingested
):
    import torch

    cfg = _long_training(cfg)
    n_items = n_items_of(layout)
    out: dict = {}

    def train(tag):
        out[tag] = train_models(
            cfg,
            layout,
            version=ingested,
            n_items=n_items,
            shard_ids=[0, 1, 2],
            reference=False,
            job_id=f"faults-{tag}",
        )

    t = threading.Thread(target=train, args=("killed",))
    t.start()
    killed, deadline = None, time.time() + 120
    while killed is None and time.time() < deadline and t.is_alive():
        pids = _workers_running("train_component")
        if pids:
            time.sleep(1.0)  # mid-task: past the data read, in the epochs
            pids = [p for p in pids if p in _workers_running("train_component")]
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed = pids[0]
        time.sleep(0.1)
    t.join(timeout=600)
    assert killed is not None, "no shard-training worker was seen running"
    assert not t.is_alive() and set(out["killed"]["shards"]) == {0, 1, 2}
    train("clean")  # the same shards, nothing killed: the retried shard must equal its clean fit
    killed_states, clean_states = _states(out["killed"]["shards"]), _states(out["clean"]["shards"])
    for k in (0, 1, 2):
        a, b = killed_states[k], clean_states[k]
        assert list(a["user_keys"]) == list(b["user_keys"])
        for name in ("user", "item", "bias"):
            assert torch.equal(torch.as_tensor(a[name]), torch.as_tensor(b[name])), (k, name)


LOST_NODE = r'''
import json, sys, threading, time
import ray
from ray.cluster_utils import Cluster
from recunlearn.config import load_config
from pipelines.train import train_models

cfg_path, data_dir, version, n_items = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
cfg = load_config(cfg_path, [f"data_dir={data_dir}", "model.max_epochs=1500", "model.patience=1500",
                             "model.eval_every=500", "model.batch_size=64"])
from recunlearn.storage.layout import Layout
layout = Layout(__import__("pathlib").Path(data_dir))
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 100 * 2**20})
nodes = [cluster.add_node(num_cpus=1, object_store_memory=100 * 2**20) for _ in range(2)]
ray.init(address=cluster.address)
cluster.wait_for_nodes()
out = {}
def run():
    try:
        out["result"] = train_models(cfg, layout, version=version, n_items=n_items, shard_ids=[0, 1, 2],
                                     reference=False, job_id="lost-node")
    except Exception as exc:
        out["error"] = repr(exc)
t = threading.Thread(target=run); t.start()
def running_on():
    """Indices of the worker nodes whose raylet has a worker running train_component."""
    import os
    from ray._private import ray_constants
    raylets = {n.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid: i for i, n in enumerate(nodes)}
    busy = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            title = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0].decode().strip()
            ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if title == "ray::train_component" and ppid in raylets:
            busy.add(raylets[ppid])
    return busy
deadline = time.time() + 120
busy = set()
while time.time() < deadline and len(busy) < 2:  # both worker nodes busy with a shard each
    busy = running_on()
    time.sleep(0.2)
time.sleep(1.0)
cluster.remove_node(nodes[0], allow_graceful=False)
t.join(timeout=600)
deadline = time.time() + 120
while time.time() < deadline and sum(n["Alive"] for n in ray.nodes()) > 2:
    time.sleep(0.5)
alive = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
print("RESULT " + json.dumps({"shards": sorted((out.get("result") or {}).get("shards", {})), "error": out.get("error"),
                  "busy_nodes_before": len(busy), "alive_nodes_after": len(alive)}))
ray.shutdown(); cluster.shutdown()
'''


def test_a_lost_node_is_survived(spark, ray_local, cfg, layout, ingested, tmp_path):
    script = tmp_path / "lost_node.py"
    script.write_text(LOST_NODE)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            str(ROOT / "conf" / "test.yaml"),
            cfg.data_dir,
            str(ingested),
            str(n_items_of(layout)),
        ],
        env={**env, "RECUNLEARN_PSEUDONYM_KEY": SECRET.decode()},
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))[7:])
    assert got["busy_nodes_before"] == 2, got  # the lost node was running a shard
    assert got["error"] is None and got["shards"] == [0, 1, 2], got
    assert got["alive_nodes_after"] == 2, got  # the head and the surviving worker node


SPILL = r"""
import json, os, sys
import numpy as np
import ray
from recunlearn.config import RayConfig
from recunlearn.engines import connect_ray, disconnect_ray

spill = sys.argv[1]
connect_ray(RayConfig(num_cpus=1, object_store_mb=80), spill_dir=spill)
refs = [ray.put(np.full(30 * 2**20 // 8, i, np.float64)) for i in range(6)]  # 180 MB > 80 MB
spilled = [f for _, _, fs in os.walk(spill) for f in fs]
ok = all(float(ray.get(r)[0]) == i for i, r in enumerate(refs))  # spilled objects restore
del refs
disconnect_ray()
print("RESULT " + json.dumps({"spilled_files": len(spilled), "restored": ok, "exists_after": os.path.exists(spill)}))
"""


def test_spilled_objects_go_to_the_jobs_folder_and_it_is_removed(tmp_path):
    script = tmp_path / "spill.py"
    script.write_text(SPILL)
    spill = tmp_path / "scratch" / "ray-spill" / "job-1"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, str(script), str(spill)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))[7:])
    assert got["spilled_files"] > 0 and got["restored"], (
        got
    )  # objects did spill there, and came back
    assert got["exists_after"] is False, got
