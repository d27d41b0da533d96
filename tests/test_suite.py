"""``recunlearn bench suite`` and ``recunlearn report`` on a small generated data set: real
training of every method, cells cached and skipped on a re-run, the HTML report with its
plots, and (where Chromium is installed) the report rendered in a headless browser."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from conftest import ROOT, write_ml100k

from pipelines.bench import suite
from pipelines.html_report import render_suite_report
from recunlearn.config import SuiteConfig, load_config

MATRIX = {
    "seed": 7,
    "matrix": [
        {
            "datasets": ["movielens-100k"],
            "methods": ["none", "full", "sisa"],
            "n_shards": [3],
            "kinds": ["random"],
            "sizes": [0.1],
        }
    ],
    "mia": {"bootstrap": 50, "dim": 8, "n_rec": 10},
    "parametric_seeds": 1,
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    data = tmp_path_factory.mktemp("datasets")
    write_ml100k(data / "movielens-100k", n_users=240, n_items=60, n_groups=4, per_user=16, seed=3)
    out = tmp_path_factory.mktemp("suite")
    cfg = load_config(ROOT / "conf" / "test.yaml")
    summary = suite.run(SuiteConfig.model_validate(MATRIX), cfg, out_dir=out, data_dir=str(data))
    return {
        "data": data,
        "out": out,
        "cfg": cfg,
        "summary": summary,
        "cells": {c["spec"]["method"]: c for c in suite.load_cells(out)},
    }


def test_every_cell_is_written_with_the_protocol_fields(finished):
    assert finished["summary"]["ran"] == 3 and finished["summary"]["skipped"] == 0
    for c in finished["cells"].values():
        assert c["forget"]["users"] == 14  # 10% of the 144 target users (240 - 30% - 10%)
        assert c["users"] == {"target": 144, "retained": 130, "never_seen": 24, "shadow": 72}
        assert set(c["utility"]) >= {"original", "unlearned", "retrained", "unlearned_vs_retrained"}
        assert set(c["fairness"]["unlearned"]) >= {"active", "inactive", "gap"}
        for name in ("original", "unlearned", "replay", "retrained"):
            e = c["completeness"]["mia"][f"forgotten_vs_never_seen_{name}"]
            assert (
                e["positives"] == 14
                and e["negatives"] == 24
                and e["ci"][0] <= e["auc"] <= e["ci"][1]
            )


def test_exact_methods_equal_their_replay_and_the_control_does_not(finished):
    for name in ("full", "sisa"):
        c = finished["cells"][name]
        comp = c["completeness"]
        assert comp["functional"]["known_to_unlearned"] == 0
        assert comp["functional"]["known_to_original"] == 14
        assert comp["functional"]["vs_replay"]["max_abs_difference"] == 0.0
        assert comp["parametric"]["distance_to_retrain"] == 0.0
        assert comp["parametric"]["scores"]["distance_to_retrain"] == 0.0
        assert comp["mia"]["unlearned_inside_retrained_ci"]
        assert (
            comp["mia"]["forgotten_vs_never_seen_unlearned"]
            == comp["mia"]["forgotten_vs_never_seen_replay"]
        )
    sisa = finished["cells"]["sisa"]
    assert set(sisa["efficiency"]["shards_touched"]) <= {0, 1, 2}
    assert "shard_spread_unlearned" in sisa["fairness"]
    none = finished["cells"]["none"]["completeness"]
    # nothing was forgotten: the model still holds every forgotten user, its parameters are
    # the original's, so the distance to the retrain is that of a model with other data
    assert none["functional"]["known_to_unlearned"] == 14
    assert (
        none["mia"]["forgotten_vs_never_seen_unlearned"]
        == none["mia"]["forgotten_vs_never_seen_original"]
    )
    assert none["parametric"]["distance_to_retrain"] > 0.0
    assert finished["cells"]["none"]["efficiency"]["speedup_vs_retrain_k1"] is None


def test_finished_cells_are_skipped_and_changed_settings_rerun(finished):
    cfg = SuiteConfig.model_validate(MATRIX)
    again = suite.run(cfg, finished["cfg"], out_dir=finished["out"], data_dir=str(finished["data"]))
    assert again["ran"] == 0 and again["skipped"] == 3
    changed = SuiteConfig.model_validate({**MATRIX, "k": 10})
    one = suite.run(
        changed,
        finished["cfg"],
        out_dir=finished["out"],
        data_dir=str(finished["data"]),
        only="none-K1",
    )
    assert one["ran"] == 1 and one["skipped"] == 0
    # models come from the cache: the original of the control was not trained again
    assert len(list((finished["out"] / "cache" / "movielens-100k").glob("none-K1-*-all-*.pt"))) == 1


def _html_and_pngs(out: Path) -> tuple[str, list[bytes]]:
    html = render_suite_report(out).read_text()
    pngs = [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]
    return html, pngs


def test_report_embeds_every_plot_as_a_png(finished):
    html, pngs = _html_and_pngs(finished["out"])
    assert len(pngs) == 5 == html.count("<img")
    for png in pngs:
        img = mpimg.imread(io.BytesIO(png), format="png")
        assert img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 0.01
    assert "sisa-K3/random-0.1" in html


def test_report_renders_in_headless_chromium(finished):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip(
            "chromium is not installed (apt-get install chromium) so the browser check cannot run"
        )
    page = render_suite_report(finished["out"])
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    with tempfile.TemporaryDirectory() as profile:
        base = [browser, *flags, f"--user-data-dir={profile}"]
        dom = subprocess.run(
            [*base, "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        assert 'data-images-loaded="5/5"' in dom
        shot = Path(profile) / "shot.png"
        subprocess.run(
            [*base, "--window-size=1280,2000", f"--screenshot={shot}", page.as_uri()],
            capture_output=True,
            timeout=120,
            check=True,
        )
        img = mpimg.imread(shot)
        assert img.shape[:2] == (2000, 1280)
        # not a blank page: plots put many distinct colours on it
        assert len(np.unique((img[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50


def test_interaction_and_item_forget_sets(finished, tmp_path):
    matrix = {
        **MATRIX,
        "matrix": [
            {
                "datasets": ["movielens-100k"],
                "methods": ["full", "sisa"],
                "n_shards": [3],
                "kinds": ["interactions", "items"],
                "sizes": [0.05],
            }
        ],
    }
    out = suite.run(
        SuiteConfig.model_validate(matrix),
        finished["cfg"],
        out_dir=tmp_path,
        data_dir=str(finished["data"]),
    )
    assert out["ran"] == 4
    cells = {(c["spec"]["method"], c["spec"]["kind"]): c for c in suite.load_cells(tmp_path)}
    for c in cells.values():
        assert c["users"]["retained"] == c["users"]["target"] == 144  # users stay
        assert c["completeness"]["mia"]["applicable"] is False
        assert c["completeness"]["functional"]["vs_replay"]["max_abs_difference"] == 0.0
        assert c["completeness"]["parametric"]["distance_to_retrain"] == 0.0
        assert c["forget"]["pairs"] > 0 and c["forget"]["users"] > 0
    assert cells[("full", "items")]["forget"]["items"] == 3  # 5% of the 60 items
    # 5% of the training pairs are spread over most users, so every shard is touched
    assert cells[("sisa", "interactions")]["efficiency"]["shards_touched"] == [0, 1, 2]
    html, pngs = _html_and_pngs(tmp_path)
    assert len(pngs) == 5 and "sisa-K3/items-0.05" in html
