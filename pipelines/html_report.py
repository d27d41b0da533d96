"""Self-contained HTML reports with PNG plots, for a benchmark suite or a pipeline run.

Each plot is written as a PNG next to the report and embedded in the HTML as a data URI, so
the one file can be mailed or archived on its own. A short script stamps the number of
images that decoded on ``<body data-images-loaded>``: a headless browser dumping the DOM
shows at once whether every plot rendered.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from recunlearn.evidence.mia import has_power  # noqa: E402

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.85em;margin:1em 0}
td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}.bad{color:#b00;font-weight:bold}.good{color:#070}
figure{margin:1em 0}img{max-width:100%;border:1px solid #ddd}figcaption{font-size:.85em;color:#555}
"""
SCRIPT = """<script>
window.addEventListener('load', function () {
  var ok = Array.prototype.filter.call(document.images, function (i) {
    return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-loaded', ok + '/' + document.images.length);
});
</script>"""


class Page:
    def __init__(self, title: str, folder: Path) -> None:
        self.title, self.folder = title, folder
        self.parts: list[str] = []
        self.pngs: list[Path] = []
        folder.mkdir(parents=True, exist_ok=True)

    def h(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def p(self, text: str) -> None:
        self.parts.append(f"<p>{text}</p>")

    def table(self, header: list[str], rows: list[list[Any]]) -> None:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in r) + "</tr>" for r in rows)
        self.parts.append(f"<table><tr>{head}</tr>{body}</table>")

    def figure(self, fig: plt.Figure, name: str, caption: str) -> None:
        path = self.folder / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        self.pngs.append(path)
        data = base64.b64encode(path.read_bytes()).decode()
        self.parts.append(
            f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def write(self, name: str = "report.html") -> Path:
        out = self.folder / name
        out.write_text(
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}"
            f"</title><style>{STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>"
            + "\n".join(self.parts)
            + SCRIPT
            + "</body></html>"
        )
        return out


def _cell(c: Any) -> str:
    if isinstance(c, bool):
        return '<span class="good">yes</span>' if c else '<span class="bad">no</span>'
    return html.escape(_cell_text(c))


def _bars(
    ax: plt.Axes,
    labels: list[str],
    series: dict[str, list[float | None]],
    errors: dict[str, list[tuple[float, ...] | None]] | None = None,
) -> None:
    """Grouped bars, one group per label; a missing value (None) draws no bar."""
    x = np.arange(len(labels))
    width = 0.8 / max(len(series), 1)
    for i, (name, vals) in enumerate(series.items()):
        v = np.array([np.nan if a is None else a for a in vals], dtype=float)
        yerr = None
        if errors and name in errors:
            lo = [a - e[0] if e else 0 for a, e in zip(v, errors[name], strict=True)]
            hi = [e[1] - a if e else 0 for a, e in zip(v, errors[name], strict=True)]
            yerr = np.array([lo, hi])
        ax.bar(x + (i - (len(series) - 1) / 2) * width, v, width, label=name, yerr=yerr, capsize=2)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)


# ---------------------------------------------------------------- benchmark suite


def render_suite_report(out_dir: Path) -> Path:
    from pipelines.bench.suite import load_cells

    cells = load_cells(out_dir)
    page = Page("recunlearn benchmark suite", out_dir / "report")
    page.p(
        f"{len(cells)} cells from <code>{html.escape(str(out_dir))}</code>. Protocol: see "
        "<code>pipelines/bench/suite.py</code>; every model trained on the target users, "
        "forgotten users drawn among them, never-seen users held out for membership inference."
    )
    md = [
        "# recunlearn benchmark suite",
        "",
        "MIA: AUC [95% interval] of the forgotten users "
        "against never-seen users; 'members' compares retained members instead. 'inside' says "
        "whether the unlearned model's AUC lies in its replay's interval.",
        "",
    ]
    for ds in sorted({c["spec"]["dataset"] for c in cells}):
        cs = [c for c in cells if c["spec"]["dataset"] == ds]
        cs.sort(
            key=lambda c: (
                c["spec"]["method"],
                c["spec"]["n_shards"],
                c["spec"]["kind"],
                c["spec"]["size"],
            )
        )
        labels = [c["cell"].split("/", 2)[2] for c in cs]
        page.h(ds)
        fig, ax = plt.subplots(figsize=(11, 3.6))
        _bars(
            ax,
            labels,
            {
                m: [_ndcg(c["utility"][m]) for c in cs]
                for m in ("original", "unlearned", "retrained")
            },
        )
        ax.set_ylabel("NDCG@k (retained users)")
        page.figure(
            fig,
            f"{ds}-utility",
            f"{ds}: utility before and after unlearning, and of the K=1 retrain",
        )
        fig, ax = plt.subplots(figsize=(11, 3.6))
        keys = {
            "original": "forgotten_vs_never_seen_original",
            "unlearned": "forgotten_vs_never_seen_unlearned",
            "retrained (replay)": "forgotten_vs_never_seen_replay",
        }
        mia = {
            n: [c["completeness"]["mia"].get(v) or {"auc": None, "ci": None} for c in cs]
            for n, v in keys.items()
        }
        _bars(
            ax,
            labels,
            {n: [e["auc"] for e in v] for n, v in mia.items()},
            {n: [tuple(e["ci"]) if e["ci"] else None for e in v] for n, v in mia.items()},
        )
        ax.axhline(0.5, color="k", lw=0.8, ls="--")
        ax.set_ylabel("MIA AUC, forgotten vs never-seen")
        page.figure(
            fig,
            f"{ds}-mia",
            f"{ds}: membership inference AUC with 95% bootstrap intervals "
            "(user forget sets only: when interactions or items go, the users stay members)",
        )
        fig, ax = plt.subplots(figsize=(11, 3.6))
        func = [c["completeness"]["functional"]["vs_replay"] for c in cs]
        _bars(
            ax,
            labels,
            {n: [_ndcg_of(f, n) for f in func] for n in ("original", "unlearned", "retrained")},
        )
        ax.set_ylabel("NDCG@k of the forget set")
        page.figure(
            fig,
            f"{ds}-functional",
            f"{ds}: functional check: how well each model recovers what was "
            "forgotten (users: their held-out items; interactions and items: the forgotten pairs); "
            "retrained = the method's replay",
        )
        fig, ax = plt.subplots(figsize=(11, 3.6))
        _bars(
            ax,
            labels,
            {
                "unlearn": [max(c["efficiency"]["unlearn_seconds"], 1e-3) for c in cs],
                "retrain K=1": [c["efficiency"]["retrain_k1_fit_seconds"] for c in cs],
            },
        )
        ax.set_yscale("log")
        ax.set_ylim(bottom=1e-3)
        ax.set_ylabel("seconds")
        page.figure(fig, f"{ds}-time", f"{ds}: time to unlearn against retraining the full model")
        fig, ax = plt.subplots(figsize=(11, 3.6))
        _bars(
            ax,
            labels,
            {
                m: [c["fairness"][m]["gap"] for c in cs]
                for m in ("original", "unlearned", "retrained")
            },
        )
        ax.axhline(0, color="k", lw=0.8)
        ax.set_ylabel("A-IGF (active - inactive NDCG)")
        page.figure(
            fig,
            f"{ds}-fairness",
            f"{ds}: fairness gap between the 5% most active users and the rest",
        )
        page.table(SUITE_COLUMNS, [_suite_row(lab, c) for lab, c in zip(labels, cs, strict=True)])
        md += [
            f"## {ds}",
            "",
            "| " + " | ".join(SUITE_COLUMNS) + " |",
            "|" + "---|" * len(SUITE_COLUMNS),
        ]
        md += [
            "| " + " | ".join(_cell_text(x) for x in _suite_row(lab, c)) + " |"
            for lab, c in zip(labels, cs, strict=True)
        ]
        md.append("")
    (out_dir / "report" / "summary.md").write_text("\n".join(md))
    return page.write()


SUITE_COLUMNS = [
    "cell",
    "users",
    "NDCG@k",
    "vs K=1 retrain",
    "MIA members (orig)",
    "MIA forgotten (orig)",
    "MIA unlearned",
    "MIA replay",
    "inside",
    "functional diff",
    "score dist",
    "unlearn s",
    "speed-up",
    "A-IGF",
    "A-IGF retrain",
]


def _suite_row(label: str, c: dict[str, Any]) -> list[Any]:
    m, e = c["completeness"]["mia"], c["efficiency"]
    return [
        label,
        c["forget"]["users"],
        _ndcg(c["utility"]["unlearned"]),
        c["utility"]["unlearned_vs_retrained"],
        *(
            _auc(m.get(f"{w}_vs_never_seen_{n}"))
            for w, n in (
                ("members", "original"),
                ("forgotten", "original"),
                ("forgotten", "unlearned"),
                ("forgotten", "replay"),
            )
        ),
        m.get("unlearned_inside_retrained_ci"),
        c["completeness"]["functional"]["vs_replay"].get("difference"),
        c["completeness"]["parametric"].get("scores", {}).get("distance_to_retrain"),
        e["unlearn_seconds"],
        e["speedup_vs_retrain_k1"],
        c["fairness"]["unlearned"]["gap"],
        c["fairness"]["retrained"]["gap"],
    ]


def _ndcg_of(functional: dict[str, Any], model: str) -> float | None:
    return next(
        (v for k, v in functional.items() if k.startswith("ndcg@") and k.endswith("_" + model)),
        None,
    )


def _ndcg(metrics: dict[str, Any]) -> float:
    """NDCG at the cell's own cut-off (cells of one report may use different k)."""
    return next(v for k, v in metrics.items() if k.startswith("ndcg@"))


def _cell_text(c: Any) -> str:
    if isinstance(c, bool):
        return "yes" if c else "**no**"
    if isinstance(c, float):
        return f"{c:.4g}"
    return "-" if c is None else str(c)


def _auc(e: dict[str, Any] | None) -> str:
    if e is None:
        return "-"
    return (
        f"{e['auc']:.3f} [{e['ci'][0]:.2f}, {e['ci'][1]:.2f}]" if e.get("ci") else f"{e['auc']:.3f}"
    )


# ---------------------------------------------------------------- pipeline run


def render_run_report(reports: Path) -> Path:
    """The report of a pipeline run from ``report.json`` and ``audit.json`` in ``reports``."""
    run = json.loads((reports / "report.json").read_text())
    audit = (
        json.loads((reports / "audit.json").read_text())
        if (reports / "audit.json").exists()
        else {}
    )
    page = Page(f"recunlearn run: {run['dataset']}", reports / "html")
    page.p(
        f"Created {html.escape(run['created_at'])}; K = {run['n_shards']}; config "
        f"{html.escape(run['config_fingerprint'])}. <b>Guarantee:</b> "
        f"{html.escape(str(run['guarantee']))}."
    )
    m = run["metrics"]
    phases = ["before", "before_retained", "after"]
    fig, ax = plt.subplots(figsize=(8, 3.4))
    _bars(
        ax,
        phases,
        {
            name: [(m[ph][name] or {}).get("ndcg@20") for ph in phases]
            for name in ("ensemble", "ensemble_mean", "reference")
        },
    )
    ax.set_ylabel("NDCG@20")
    page.h("Utility")
    page.figure(
        fig,
        "utility",
        "NDCG@20 of the published ensemble, the mean ensemble and the K=1 "
        "reference, before and after unlearning",
    )
    page.h("Time per step")
    fig, ax = plt.subplots(figsize=(8, 3.4))
    for i, (_name, unl) in enumerate(
        (("batch", run["unlearn_batch"]), ("single request", run["unlearn_single"]))
    ):
        steps = unl["steps_seconds"]
        left = 0.0
        for s, v in steps.items():
            ax.barh(i, v, left=left, label=s if i == 0 else None)
            left += v
    ax.set_yticks([0, 1])
    ax.set_yticklabels(["batch", "single request"])
    ax.set_xlabel("seconds")
    ax.legend(fontsize=7, ncol=4)
    page.figure(fig, "steps", "Wall time per unlearn step")
    page.table(["figure", "value"], [[k, v] for k, v in run["timings"].items()])
    reqs = audit.get("requests", [])
    page.h("Completeness")
    if reqs:
        labels = [r["request_id"][:10] for r in reqs]
        fig, ax = plt.subplots(figsize=(8, 3.4))
        func = [r["details"].get("functional") or {} for r in reqs]
        _bars(
            ax,
            labels,
            {
                w: [f.get(f"ndcg@20_{w}") for f in func]
                for w in ("original", "unlearned", "retrained")
            },
        )
        ax.set_ylabel("held-out NDCG@20 of the user")
        page.figure(
            fig,
            "functional",
            "Functional check per request: the forgotten user's held-out items "
            "ranked by the original, the unlearned and the retrained model",
        )
        mia = [r["details"].get("membership") or {} for r in reqs]
        strengths = sorted(
            {(x["attack_shadow_auc"], tuple(x["attack_shadow_ci"] or ())) for x in mia if x}
        )
        for auc_, ci in strengths:
            power = "power" if has_power(ci) else "no power"
            page.p(
                f"Membership attack of an unlearn job: held-out AUC on its shadow users {auc_} "
                f"[{ci[0] if ci else '-'}, {ci[1] if ci else '-'}] ({power})."
            )
        if any(mia):
            fig, ax = plt.subplots(figsize=(8, 3.4))
            _bars(ax, labels, {w: [x.get(w) for x in mia] for w in ("original", "unlearned")})
            ax.axhline(0.5, color="k", lw=0.8, ls="--")
            ax.set_ylabel("membership probability")
            page.figure(
                fig,
                "membership",
                "Membership inference per request: the attack's probability "
                "that the user was trained on, under the original and the unlearned model",
            )
        page.table(
            [
                "request",
                "passed",
                "rows found",
                "log hits",
                "stale shards",
                "in model",
                "membership orig",
                "membership unlearned",
            ],
            [
                [
                    r["request_id"][:12],
                    r["passed"],
                    r["parquet_rows_found"],
                    r["delta_log_hits"],
                    r["stale_published_shards"],
                    r["key_in_published_model"],
                    x.get("original"),
                    x.get("unlearned"),
                ]
                for r, x in zip(reqs, mia, strict=True)
            ],
        )
    if run.get("storage"):
        page.h("Storage after unlearning")
        page.table(["artifact", "bytes"], [[k, v] for k, v in run["storage"].items()])
    fair = run.get("fairness")
    if fair:
        page.h("Fairness")
        names = list(fair)
        fig, ax = plt.subplots(figsize=(8, 3.4))
        _bars(ax, names, {"A-IGF": [fair[n]["gap"] for n in names]})
        ax.axhline(0, color="k", lw=0.8)
        page.figure(fig, "fairness", "A-IGF (NDCG of the 5% most active users minus the rest)")
    return page.write()
