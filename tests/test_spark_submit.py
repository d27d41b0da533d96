"""The unlearn job runs unchanged under spark-submit --master local[2] (what a cluster
scheduler calls), against tables and models that the in-process pipeline prepared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recunlearn.engines import delta_jars
from recunlearn.tables import ForgetLedger, ModelRegistry
from pipelines.forget import submit_user_requests
from pipelines.ingest import ingest
from pipelines.partition import partition_users
from pipelines.train import train_all

from conftest import ROOT, write_ml100k

pytestmark = [pytest.mark.spark, pytest.mark.ray, pytest.mark.e2e]
SECRET = "test-secret-key-0123456789"


def test_unlearn_job_under_spark_submit(spark, ray_local, cfg, layout, tmp_path):
    raw = tmp_path / "raw"
    write_ml100k(raw)
    ingest(spark, cfg=cfg, layout=layout, raw_path=raw, secret=SECRET.encode())
    train_all(spark, cfg=cfg, layout=layout, partition=partition_users(spark, cfg=cfg, layout=layout))
    submit_user_requests(spark, layout=layout, secret=SECRET.encode(), raw_ids=["11"])

    submit = Path(sys.executable).with_name("spark-submit")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "RECUNLEARN_PSEUDONYM_KEY": SECRET}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [str(submit), "--master", "local[2]", "--jars", ",".join(delta_jars()),
         str(ROOT / "jobs" / "unlearn.py"), "--config", str(ROOT / "conf" / "test.yaml"),
         "--set", f"data_dir={cfg.data_dir}", "--set", "ray.num_cpus=1"],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert result["model_version"] == 2 and len(result["requests"]) == 1
    [row] = ForgetLedger(spark, layout.ledger).rows()
    assert row["status"] == "verified" and row["model_version"] == 2
    assert ModelRegistry(spark, layout).current()["version"] == 2
