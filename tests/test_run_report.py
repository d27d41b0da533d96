"""The whole pipeline as ``recunlearn run`` runs it (generated data, test settings): the report
carries fairness and storage, the audit passes with per-request evidence, and the run's HTML
report embeds every plot."""

from __future__ import annotations

import base64
import io
import json
import re

import matplotlib.image as mpimg
import pytest
from conftest import write_ml100k

from pipelines.html_report import render_run_report
from pipelines.run import run_all

pytestmark = [pytest.mark.spark, pytest.mark.ray, pytest.mark.e2e]


def test_run_report_json_and_html(spark, ray_local, cfg, layout, tmp_path):
    raw = tmp_path / "raw"
    write_ml100k(raw, n_users=90)
    cfg = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"path": str(raw)})})
    report = run_all(spark, cfg=cfg, layout=layout, n_forget=4)
    assert report["audit"]["passed"] and report["audit"]["n_requests"] == 4
    fair = report["fairness"]
    assert set(fair) == {"before ensemble", "before reference", "after ensemble", "after reference"}
    for f in fair.values():
        assert abs(f["gap"] - (f["active"] - f["inactive"])) < 1e-4 and f["n_active"] >= 1
    assert len(fair["after ensemble"]["shard_spread"]["per_shard"]) == cfg.sharding.n_shards
    storage = report["storage"]
    assert storage["checkpoints"] > 0 and storage["table:interactions"] > 0
    assert report["unlearn_batch"]["membership_mean"]["original"] is not None
    saved = json.loads((layout.reports / "report.json").read_text())
    assert saved["fairness"] == json.loads(json.dumps(fair))

    html = render_run_report(layout.reports).read_text()
    pngs = [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]
    # utility, steps, functional, membership, fairness
    assert len(pngs) == 5 == html.count("<img")
    for png in pngs:
        assert mpimg.imread(io.BytesIO(png), format="png").std() > 0.01
    assert "Membership attack of an unlearn job" in html and "Storage after unlearning" in html


def test_summary_table_without_a_reference_model():
    """train.reference_model=false: no full fit to compare with, and the table says so instead
    of failing at the end of a long run."""
    from pipelines.report import summary_table

    one = {
        "requests": 1,
        "shards_touched": [2],
        "fit_seconds": 1.5,
        "end_to_end_seconds": 20.25,
        "membership_mean": {"original": None, "unlearned": None},
    }
    report = {
        "metrics": {
            p: {
                "ensemble": {"ndcg@20": 0.25, "recall@20": 0.3, "users": 10},
                "ensemble_mean": None,
                "reference": None,
            }
            for p in ("before", "before_retained", "after")
        },
        "timings": {"full_training_fit_seconds": None},
        "ratios": {
            "ensemble_vs_reference_ndcg_before": None,
            "ensemble_vs_reference_ndcg_after": None,
            "unlearn_compute_vs_full_training": None,
            "unlearn_compute_by_shard_vs_full_training": None,
        },
        "unlearn_batch": one,
        "unlearn_single": one,
        "requests": [],
        "audit": {"passed": True},
    }
    table = summary_table(report)
    assert "| full model fit (s)" in table and "20.25" in table
    assert [ln for ln in table.splitlines() if ln.startswith("| full model fit")][0].split("|")[
        2
    ].strip() == "-"


@pytest.mark.parametrize("kind", ["mean", "attention"])
def test_summary_table_shows_each_model_once_named_by_its_aggregator(kind):
    """With the mean as the published aggregator, ``ensemble`` and ``ensemble_mean`` are the
    same model: one row each phase, not the same figures twice under two names."""
    from pipelines.report import summary_table

    one = {
        "requests": 1,
        "shards_touched": [2],
        "fit_seconds": 1.5,
        "end_to_end_seconds": 20.25,
        "membership_mean": {"original": None, "unlearned": None},
    }
    ens = {"ndcg@20": 0.25, "recall@20": 0.3, "users": 10}
    mean = ens if kind == "mean" else {"ndcg@20": 0.2, "recall@20": 0.25, "users": 10}
    report = {
        "metrics": {
            p: {
                "ensemble": ens,
                "ensemble_mean": mean,
                "aggregator": kind,
                "reference": {"ndcg@20": 0.22, "recall@20": 0.28, "users": 10},
            }
            for p in ("before", "before_retained", "after")
        },
        "timings": {"full_training_fit_seconds": 3.0},
        "ratios": {
            "ensemble_vs_reference_ndcg_before": None,
            "ensemble_vs_reference_ndcg_after": None,
            "unlearn_compute_vs_full_training": None,
            "unlearn_compute_by_shard_vs_full_training": None,
        },
        "unlearn_batch": one,
        "unlearn_single": one,
        "requests": [],
        "audit": {"passed": True},
    }
    rows = [
        ln.split("|")[1].strip()
        for ln in summary_table(report).splitlines()
        if ln.startswith("| ") and "[after]" in ln
    ]
    expected = [
        f"ensemble ({kind}) [after]",
        *(["ensemble (mean) [after]"] if kind != "mean" else []),
        "reference (full model) [after]",
    ]
    assert rows == expected
