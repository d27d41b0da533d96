"""``bench scale``: its sizes, its growth exponents, its process-tree monitor (on real child
processes), its outputs; and, in the slow suite, the whole product on a synthetic 1M log
through the real engines."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipelines.bench import scale
from pipelines.bench.proctree import Monitor
from recunlearn.errors import ConfigError


def test_sizes_read_with_suffixes_and_print_back():
    assert [scale.parse_size(x) for x in ("1M", "2.5k", "100m", "1B", "750")] == [
        1_000_000,
        2_500,
        100_000_000,
        1_000_000_000,
        750,
    ]
    assert [scale.label(n) for n in (1_000_000, 2_500, 100_000_000, 750)] == [
        "1M",
        "2.5K",
        "100M",
        "750",
    ]
    for bad in ("", "M", "1X", "-1M", "0"):
        with pytest.raises(ConfigError):
            scale.parse_size(bad)


def _size(n: int, seconds: dict[str, float]) -> dict:
    return {
        "interactions": n,
        "steps": {
            k: {"wall_seconds": v, "cpu_seconds": v, "peak_memory_bytes": 2**30}
            for k, v in seconds.items()
        },
        "figures": {"speedup_vs_full_retrain": 9.5},
    }


def test_growth_exponents_are_the_log_log_slopes():
    sizes = {
        "1M": _size(10**6, {"ingest": 10.0, "train": 5.0, "audit": 3.0}),
        "10M": _size(10**7, {"ingest": 100.0, "train": 5.0 * 10**1.5}),
        "100M": _size(10**8, {"ingest": 1000.0, "train": 5.0 * 10**3}),
    }
    exps = scale.exponents(sizes)
    assert exps["ingest"] == pytest.approx(1.0, abs=1e-3)
    assert exps["train"] == pytest.approx(1.5, abs=1e-3)
    assert exps["audit"] is None  # one size only: no slope
    assert exps["generate"] is None


def test_outputs_are_written_and_name_every_step(tmp_path):
    result = {
        "like": "lfm-2b",
        "n_shards": 10,
        "sizes": {
            "1M": _size(10**6, {s: 1.0 for s in scale.STEPS}),
            "10M": _size(10**7, {s: 10.0 for s in scale.STEPS}),
        },
    }
    result["exponents"] = scale.exponents(result["sizes"])
    paths = scale.write(result, tmp_path)
    md = (tmp_path / "scale-lfm-2b.md").read_text()
    for step in scale.STEPS:
        assert f"| {step} | 1.0 (1 CPU, 1.00 GB) | 10.0 (10 CPU, 1.00 GB) | 1.0 |" in md
    assert "| speedup_vs_full_retrain | 9.5 | 9.5 |" in md
    assert json.loads((tmp_path / "scale-lfm-2b.json").read_text())["exponents"]["train"] == 1.0
    assert (tmp_path / "scale-lfm-2b.png").stat().st_size > 1000
    assert set(paths) == {"json", "markdown", "png"}


def test_the_monitor_counts_memory_and_cpu_of_child_processes():
    """A process whose child holds 200 MB and spins for a second: the tree's peak and CPU
    time see the child (its parent holds far less and waits). The tree is rooted at that
    parent, so the test run's own engines (a JVM, Ray) are not in it."""
    child = (
        "import time\nx = bytearray(200_000_000)\nt = time.time()\n"
        "while time.time() - t < 1.0: x[0] = 1\n"
    )
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"
    proc = subprocess.Popen([sys.executable, "-c", parent])
    with Monitor(root=proc.pid, interval=0.1) as usage:
        assert proc.wait(timeout=60) == 0
    assert usage.peak_bytes > 180_000_000
    assert usage.peak_processes >= 2
    assert 0.5 < usage.cpu_seconds < usage.wall_seconds + 0.5
    assert usage.wall_seconds >= 1.0


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.ray
@pytest.mark.e2e
def test_one_million_events_go_through_every_step(spark, ray_local, cfg, tmp_path):
    """The 1M size end to end through the jobs' functions on the real engines: every step
    measured, the deletes rewrite part of the table only, the audit passes."""
    cfg = cfg.model_copy(
        update={
            "unlearn": cfg.unlearn.model_copy(update={"membership": False}),
            "dataset": cfg.dataset.model_copy(
                update={"min_user_interactions": 5, "min_item_interactions": 5}
            ),
        }
    )
    res = scale.run(
        spark,
        cfg,
        sizes=[1_000_000],
        like="lfm-2b",
        out_dir=tmp_path / "out",
        state_root=tmp_path / "state",
        seed=7,
        many=20,
        fast_requests=2,
    )
    r = res["sizes"]["1M"]
    assert set(r["steps"]) == set(scale.STEPS)
    for step in r["steps"].values():
        assert step["wall_seconds"] > 0 and step["peak_memory_bytes"] > 0
    f = r["figures"]
    assert f["audit_passed"] is True
    assert 0 < f["one_user_rewrite_share"] < 0.5
    assert f["rows_after_filter"] <= 1_000_000 and f["users"] > 100
    assert f["ndcg@20_ensemble"] > 0 and f["ndcg@20_reference"] > 0
    assert len(f["fast_tier_seconds"]) == 2
    assert not (tmp_path / "state" / "1M").exists()  # removed unless kept
