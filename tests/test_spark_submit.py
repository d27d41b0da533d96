"""The unlearn job runs unchanged under spark-submit (what a cluster scheduler calls): with
``--master local[2]``, and (slow) against a standalone Spark master with one worker started
for the test, against tables and models that the in-process pipeline prepared."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

from pipelines.forget import submit_user_requests
from recunlearn.engines import delta_jars
from recunlearn.storage.ledger import ForgetLedger
from recunlearn.storage.registry import ModelRegistry

pytestmark = [pytest.mark.spark, pytest.mark.ray, pytest.mark.e2e]
SECRET = "test-secret-key-0123456789"
BIN = Path(sys.executable).parent


def _prepare(spark, layout, raw_id: str) -> None:
    """The trained deployment (the ``trained`` fixture) with a request for ``raw_id``."""
    submit_user_requests(spark, layout=layout, secret=SECRET.encode(), raw_ids=[raw_id])


def _env() -> dict[str, str]:
    env = {
        **os.environ,
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "RECUNLEARN_PSEUDONYM_KEY": SECRET,
        "RECUNLEARN_LOG_FORMAT": "json",
    }
    env.pop("RAY_ADDRESS", None)
    return env


def _submit(cfg, master: str, *conf: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(BIN / "spark-submit"),
            "--master",
            master,
            "--jars",
            ",".join(delta_jars()),
            *conf,
            str(ROOT / "jobs" / "unlearn.py"),
            "--config",
            str(ROOT / "conf" / "test.yaml"),
            "--set",
            f"data_dir={cfg.data_dir}",
            "--set",
            "ray.num_cpus=1",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )


def _check(spark, layout, proc: subprocess.CompletedProcess) -> list[dict]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    # spark-submit sends the driver's stderr (the log) to stdout too: the result is the last
    # JSON document, the one that starts on a line of its own
    lines = proc.stdout.splitlines()
    start = max(i for i, x in enumerate(lines) if x == "{")
    result = json.loads("\n".join(lines[start:]))
    assert result["model_version"] == 2 and len(result["requests"]) == 1
    assert result["verification"]["verified"] == 1
    [row] = ForgetLedger(spark, layout.ledger).rows()
    assert row["status"] == "verified" and row["model_version"] == 2
    assert ModelRegistry(layout).current()["version"] == 2
    # the job's own log lines are JSON (not a terminal), with the job and request ids
    ours = [
        json.loads(x) for x in (proc.stdout + proc.stderr).splitlines() if x.startswith('{"ts"')
    ]
    assert any(
        x.get("request_ids") == result["requests"] and x.get("job_id") == result["job_id"]
        for x in ours
    ), proc.stderr[-2000:]
    return ours


def test_unlearn_job_under_spark_submit(spark, cfg, layout, tmp_path, trained):
    _prepare(spark, layout, "11")
    _check(spark, layout, _submit(cfg, "local[2]"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_unlearn_job_against_a_standalone_master(spark, cfg, layout, tmp_path, trained):
    _prepare(spark, layout, "13")
    port = _free_port()
    url = f"spark://127.0.0.1:{port}"
    env = {**_env(), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOG_DIR": str(tmp_path / "spark-logs")}
    master = subprocess.Popen(
        [
            str(BIN / "spark-class"),
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            "0",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "master.log", "w"),
    )
    worker = None
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # the master listens
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        worker = subprocess.Popen(
            [
                str(BIN / "spark-class"),
                "org.apache.spark.deploy.worker.Worker",
                url,
                "--cores",
                "2",
                "--memory",
                "2g",
                "--webui-port",
                "0",
                "--work-dir",
                str(tmp_path / "spark-work"),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "worker.log", "w"),
        )
        while (
            time.time() < deadline
            and "Successfully registered" not in (tmp_path / "worker.log").read_text()
        ):
            time.sleep(0.5)
        proc = _submit(
            cfg,
            url,
            "--conf",
            f"spark.pyspark.python={sys.executable}",
            "--conf",
            "spark.executor.memory=1g",
        )
        _check(spark, layout, proc)
        # the work ran on the standalone worker: it launched an executor for the application
        apps = list((tmp_path / "spark-work").glob("app-*"))
        assert apps, (tmp_path / "worker.log").read_text()[-2000:]
    finally:
        for p in (worker, master):
            if p is not None:
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
