"""Engine start-up: a failing start is retried with backoff and then reported as one
recunlearn error (a real Spark start failure injected through JAVA_HOME); Ray's workers run
at the configured priority."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT

from recunlearn.engines import start_with_retries
from recunlearn.errors import EngineStartError


def test_a_start_that_fails_then_succeeds_is_retried_with_cleanup():
    calls, cleaned = [], []

    def start():
        calls.append(1)
        if len(calls) < 3:
            raise OSError("port file not written in time")
        return "up"

    assert (
        start_with_retries(
            "Ray", start, attempts=3, backoff_s=0, checks="x", cleanup=lambda: cleaned.append(1)
        )
        == "up"
    )
    assert len(calls) == 3 and len(cleaned) == 2


def test_a_start_that_keeps_failing_ends_in_one_error_naming_engine_tries_and_cause():
    calls = []

    def start():
        calls.append(1)
        raise RuntimeError("The current node timed out during startup.\nmore detail")

    with pytest.raises(EngineStartError) as exc:
        start_with_retries("Ray", start, attempts=4, backoff_s=0, checks="free memory")
    assert len(calls) == 4
    msg = str(exc.value)
    assert msg.startswith("Ray did not start after 4 tries")
    assert (
        "RuntimeError: The current node timed out during startup." in msg
        and "more detail" not in msg
    )
    assert "check free memory" in msg


def test_spark_that_cannot_start_ends_in_the_recunlearn_error_after_the_retries(tmp_path):
    """A job whose JVM cannot start (JAVA_HOME names no Java): three tries, then one line
    naming Spark and what to check, exit code 1, no traceback."""
    env = {
        **os.environ,
        "JAVA_HOME": str(tmp_path / "no-java-here"),
        "RECUNLEARN_LOG_FORMAT": "text",
        "RECUNLEARN_PSEUDONYM_KEY": "engine-test-secret-0123456789",
    }
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "u.data").write_text("1\t2\t3\t4\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.cli",
            "ingest",
            "--config",
            str(ROOT / "conf" / "test.yaml"),
            "--set",
            f"data_dir={tmp_path / 'data'}",
            "--set",
            "spark.start_backoff_s=0.1",
            "--input",
            str(tmp_path / "raw"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "EngineStartError: Spark did not start after 3 tries" in done.stderr
    assert done.stderr.count("Spark did not start (try") == 2  # the two retries, logged
    assert "java -version" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "data" / "tables" / "interactions").exists()  # nothing was written


@pytest.mark.ray
def test_ray_workers_run_at_the_configured_niceness(ray_local):
    """Ray's default puts workers at nice 15, where they starve next to a nice-0 JVM; the
    local instance is started with ray.worker_niceness (0 by default)."""
    import ray

    from recunlearn.config import RayConfig

    @ray.remote(num_cpus=1)
    def niceness() -> int:
        return os.nice(0)

    assert ray.get(niceness.remote()) == RayConfig().worker_niceness == os.nice(0)
