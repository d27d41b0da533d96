"""``recunlearn bench scale --interactions 1M,10M,100M [--like lfm-2b]``: every step of the
product on synthetic logs of growing size, through the jobs' own functions.

Per size, in a state folder of its own, on one Spark session and one Ray instance:
generate (``recunlearn data synth``), ingest (reader, k-core filter, split, Delta), partition,
train (the K shard models, the aggregator and the full reference model), evaluate, forget one
user end to end (intake, then the unlearn job to the new version's publication), forget 100
users end to end, the fast tier (``--fast-requests`` single-user requests answered by
``--fast-method``, one job each), and the audit. Per step: wall time, CPU time and peak memory
of the whole process tree (``pipelines.bench.proctree``: driver, JVM, Ray), and the bytes the
state folder grew by; per delete, the bytes of the interactions table it rewrote.

Across sizes: each step's growth exponent (least squares of log time on log size), a JSON, a
Markdown table and a log-log PNG of time against size per step. Results are merged by size
with an earlier run's in the same ``--out`` (a long run keeps what it has).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pyspark.sql import SparkSession

from pipelines.bench.proctree import Monitor
from recunlearn.config import RunConfig
from recunlearn.errors import ConfigError
from recunlearn.evidence.scan import folder_bytes
from recunlearn.hashing import fingerprint
from recunlearn.storage.layout import Layout

log = logging.getLogger(__name__)

STEPS = (
    "generate",
    "ingest",
    "partition",
    "train",
    "evaluate",
    "forget_one",
    "forget_many",
    "fast_tier",
    "audit",
)
FORMATS = {"lfm-2b": "lfm2b-events", "amazon": "amazon-json"}
_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9}


def parse_size(text: str) -> int:
    """``1M`` -> 1_000_000; ``2.5K``, ``100M``, ``1B``, plain integers."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMBG]?)\s*", text.upper())
    if not m:
        raise ConfigError(f"size {text!r}: a number with an optional K, M or B")
    n = int(float(m.group(1)) * _SUFFIX[m.group(2)])
    if n < 1:
        raise ConfigError(f"size {text!r}: at least 1")
    return n


def label(n: int) -> str:
    for suffix, unit in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= unit and n % (unit // 10) == 0:
            return f"{n / unit:g}{suffix}"
    return str(n)


class Steps:
    """Runs the steps of one size, each under a process-tree monitor."""

    def __init__(self, state: Path, interval: float) -> None:
        self.state, self.interval = state, interval
        self.out: dict[str, Any] = {}

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        before = folder_bytes(self.state)
        with Monitor(interval=self.interval) as usage:
            result = fn()
        self.out[name] = {**usage.as_dict(), "bytes_written": folder_bytes(self.state) - before}
        log.info(
            "bench scale: %s %.1f s wall, %.1f s CPU, peak %.2f GB",
            name,
            usage.wall_seconds,
            usage.cpu_seconds,
            usage.peak_bytes / 2**30,
        )
        return result


def _size_config(cfg: RunConfig, state: Path, raw: Path, like: str, n: int) -> RunConfig:
    """The run's config on this size's data. The unlearn job does not retrain the full
    reference beside the touched shards (``unlearn.retrain_reference``, a benchmark aid): it
    would put a full retrain inside the one-user figure it is compared with. The full
    retrain's cost is the training step's reference task."""
    return cfg.model_copy(
        update={
            "data_dir": str(state),
            "unlearn": cfg.unlearn.model_copy(update={"retrain_reference": False}),
            "dataset": cfg.dataset.model_copy(
                update={
                    "name": f"synthetic-{like}-{label(n)}",
                    "format": FORMATS[like],
                    "path": str(raw),
                }
            ),
        }
    )


def run_size(
    spark: SparkSession,
    cfg: RunConfig,
    *,
    n: int,
    like: str,
    state_root: Path,
    seed: int,
    many: int = 100,
    fast_requests: int = 5,
    fast_method: str = "scif",
    interval: float = 0.5,
) -> dict[str, Any]:
    """Every step on a synthetic log of ``n`` rows; the per-step usage and the figures the
    issue asks for (speed-up of one user's unlearning over the full retrain, the fast tier's
    p50, bytes rewritten per delete, NDCG of the ensemble and the reference)."""
    from pipelines.audit import audit
    from pipelines.evaluate import evaluate_published
    from pipelines.forget import submit_user_requests
    from pipelines.ingest import ingest
    from pipelines.partition import partition_users
    from pipelines.synth import synthesize
    from pipelines.train import train_all
    from pipelines.unlearn import unlearn
    from recunlearn.data.pseudonym import secret_from_config

    state = state_root / label(n)
    raw = state / "raw"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    cfg_n = _size_config(cfg, state, raw, like, n)
    layout = Layout(state)
    step = Steps(state, interval)
    secret = secret_from_config(cfg_n.pseudonym, layout.root)
    res: dict[str, Any] = {}

    res["generate"] = step(
        "generate", lambda: synthesize(spark, like=like, interactions=n, out=raw, seed=seed)
    )
    res["ingest"] = step(
        "ingest",
        lambda: ingest(spark, cfg=cfg_n, layout=layout, raw_path=raw, secret=secret),
    )
    res["partition"] = step("partition", lambda: partition_users(spark, cfg=cfg_n, layout=layout))
    res["train"] = step(
        "train",
        lambda: train_all(spark, cfg=cfg_n, layout=layout, partition=res["partition"]),
    )
    res["evaluate"] = step("evaluate", lambda: evaluate_published(spark, cfg=cfg_n, layout=layout))
    # raw ids of users the tables hold (not timed: a Spark scan of the raw log); never written
    ids = _forget_ids(spark, cfg_n, layout, raw, secret, 1 + many + fast_requests)
    one, batch, fast = ids[:1], ids[1 : 1 + many], ids[1 + many :]

    def forget(raw_ids: list[str], method: str | None = None) -> dict[str, Any]:
        outcomes = submit_user_requests(spark, layout=layout, secret=secret, raw_ids=raw_ids)
        job = unlearn(spark, cfg=cfg_n, layout=layout, method=method)
        return {"accepted": sum(o["outcome"] == "accepted" for o in outcomes), "job": job}

    res["forget_one"] = step("forget_one", lambda: forget(one))
    res["forget_many"] = step("forget_many", lambda: forget(batch))

    def fast_tier() -> list[dict[str, Any]]:
        return [forget([raw_id], fast_method) for raw_id in fast]

    res["fast_tier"] = step("fast_tier", fast_tier)
    res["audit"] = step(
        "audit",
        lambda: audit(spark, layout=layout, secret=secret, raw_ids=one + batch + fast),
    )
    return {"steps": step.out, "figures": figures(res), "details": _details(res)}


def _forget_ids(
    spark: SparkSession, cfg: RunConfig, layout: Layout, raw: Path, secret: bytes, n: int
) -> list[str]:
    """``n`` raw user ids, drawn with the run's seed among the users the shard map holds (a
    k-core filter may have dropped some of the log's users; a request for one would be
    rejected, and the step would time nothing)."""
    from pipelines.train import shard_map_keys
    from recunlearn.data.pseudonym import user_key
    from recunlearn.data.readers import read_interactions
    from recunlearn.seeding import numpy_rng

    held = set(shard_map_keys(layout).tolist())
    users = read_interactions(spark, cfg.dataset, raw).select("raw_user").distinct()
    ids = sorted(r["raw_user"] for r in users.collect())
    kept = np.array([x for x in ids if user_key(secret, x) in held])
    if len(kept) < n:
        raise ConfigError(f"bench scale: {len(kept)} users in the tables, {n} requests asked")
    return [str(x) for x in np.sort(numpy_rng(cfg.seed, "forget-set").choice(kept, n, False))]


def figures(res: dict[str, Any]) -> dict[str, Any]:
    """The figures the scale issue asks for, from one size's step results."""
    train = res["train"]
    one = res["forget_one"]["job"]
    # the full retrain: the reference model's task (read, fit, save), a lower bound on a
    # full-retrain job, which would also delete and publish
    ref_fit = train.get("reference_task_seconds")
    fast = [r["job"]["to_publish_seconds"] for r in res["fast_tier"]]
    ev = res["evaluate"]

    def ndcg(part: str) -> float | None:
        got = (ev.get(part) or {}).get("ndcg@20")
        return None if got is None else round(float(got), 5)

    def rewrite(job: dict[str, Any]) -> float | None:
        rw = job.get("delete_rewrite") or {}
        return round(rw["removed_bytes"] / rw["table_bytes"], 5) if rw.get("table_bytes") else None

    return {
        "one_user_to_publish_seconds": one["to_publish_seconds"],
        "full_retrain_seconds": ref_fit,
        "shard_read_seconds_mean": _mean(train.get("shard_read_seconds")),
        "shard_fit_seconds_mean": _mean(train.get("shard_fit_seconds")),
        "reference_read_seconds": train.get("reference_read_seconds"),
        "speedup_vs_full_retrain": (
            round(ref_fit / one["to_publish_seconds"], 2) if ref_fit else None
        ),
        "many_users_to_publish_seconds": res["forget_many"]["job"]["to_publish_seconds"],
        "fast_tier_p50_seconds": round(float(np.median(fast)), 3) if fast else None,
        "fast_tier_seconds": fast,
        "one_user_rewrite_share": rewrite(one),
        "many_users_rewrite_share": rewrite(res["forget_many"]["job"]),
        "ndcg@20_ensemble": ndcg("ensemble"),
        "ndcg@20_reference": ndcg("reference"),
        "evaluated_users": ev.get("users"),
        "audit_passed": res["audit"].get("passed"),
        "users": res["ingest"].get("users"),
        "items": res["ingest"].get("items"),
        "rows_after_filter": res["ingest"].get("rows"),
    }


def _mean(per_shard: dict[str, float | None] | None) -> float | None:
    vals = [v for v in (per_shard or {}).values() if v is not None]
    return round(float(np.mean(vals)), 3) if vals else None


def _details(res: dict[str, Any]) -> dict[str, Any]:
    """The step results worth keeping (the jobs' own stats, trimmed of per-request lists)."""
    keep = ("generate", "ingest", "partition", "train")
    out = {k: res[k] for k in keep}
    out["forget_one"] = {k: v for k, v in res["forget_one"]["job"].items() if k != "functional"}
    out["forget_many"] = {
        k: v for k, v in res["forget_many"]["job"].items() if k not in ("functional", "requests")
    }
    return json.loads(json.dumps(out, default=str))


def exponents(sizes: dict[str, Any]) -> dict[str, float | None]:
    """Per step, the slope of log(wall seconds) on log(interactions) over the sizes run."""
    out: dict[str, float | None] = {}
    for name in STEPS:
        pts = [
            (r["interactions"], r["steps"][name]["wall_seconds"])
            for r in sizes.values()
            if name in r.get("steps", {}) and r["steps"][name]["wall_seconds"] > 0
        ]
        if len({n for n, _ in pts}) < 2:
            out[name] = None
            continue
        x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
        out[name] = round(float(np.polyfit(x, y, 1)[0]), 3)
    return out


def run(
    spark: SparkSession,
    cfg: RunConfig,
    *,
    sizes: list[int],
    like: str,
    out_dir: Path,
    state_root: Path,
    seed: int,
    keep_state: bool = False,
    **kw: Any,
) -> dict[str, Any]:
    if like not in FORMATS:
        raise ConfigError(f"bench scale --like {like!r}: one of {', '.join(FORMATS)}")
    path = out_dir / f"scale-{like}.json"
    result: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    result.update({"like": like, "seed": seed, "n_shards": cfg.sharding.n_shards})
    # the settings every size ran with (the data set and data folder are the bench's own)
    result["config"] = cfg.model_dump(mode="json", exclude={"data_dir", "dataset"})
    result["fast_method"] = kw.get("fast_method", "scif")
    result.setdefault("sizes", {})
    for n in sizes:
        t0 = time.perf_counter()
        r = run_size(spark, cfg, n=n, like=like, state_root=state_root, seed=seed, **kw)
        r.update({"interactions": n, "wall_seconds": round(time.perf_counter() - t0, 1)})
        r["machine"] = machine()
        r["config_fingerprint"] = fingerprint(result["config"])
        result["sizes"][label(n)] = r
        result["exponents"] = exponents(result["sizes"])
        write(result, out_dir)
        if not keep_state:
            shutil.rmtree(state_root / label(n), ignore_errors=True)
    return result


def machine() -> dict[str, Any]:
    import os

    mem = 0
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return {"cpus": os.cpu_count(), "memory_bytes": mem}


def write(result: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """The JSON and Markdown (``write_outputs``, as every benchmark) and the log-log PNG."""
    from pipelines.bench.common import write_outputs

    stem = f"scale-{result['like']}"
    paths = write_outputs(out_dir, stem, result, markdown(result))
    plot(result, out_dir / f"{stem}.png")
    return {**paths, "png": str(out_dir / f"{stem}.png")}


def _gb(b: int | None) -> str:
    return "-" if b is None else f"{b / 2**30:.2f}"


def markdown(result: dict[str, Any]) -> str:
    sizes = sorted(result["sizes"].values(), key=lambda r: r["interactions"])
    exps = result.get("exponents", {})
    head = " | ".join(label(r["interactions"]) for r in sizes)
    lines = [
        f"# Scale: synthetic {result['like']}-like logs, K = {result['n_shards']}",
        "",
        _settings_line(result.get("config", {}), result.get("fast_method")),
        "",
        "Wall seconds per step (CPU seconds, peak memory of the whole process tree in GB); the "
        "exponent is the slope of log time on log size.",
        "",
        f"| step | {head} | exponent |",
        "|---|" + "---|" * len(sizes) + "---|",
    ]
    for name in STEPS:
        cells = []
        for r in sizes:
            s = r["steps"].get(name)
            cells.append(
                "-"
                if s is None
                else f"{s['wall_seconds']:.1f} ({s['cpu_seconds']:.0f} CPU, "
                f"{_gb(s['peak_memory_bytes'])} GB)"
            )
        e = exps.get(name)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'-' if e is None else e} |")
    lines += ["", f"| figure | {head} |", "|---|" + "---|" * len(sizes)]
    for key in (
        "users",
        "items",
        "rows_after_filter",
        "one_user_to_publish_seconds",
        "full_retrain_seconds",
        "speedup_vs_full_retrain",
        "shard_read_seconds_mean",
        "shard_fit_seconds_mean",
        "reference_read_seconds",
        "many_users_to_publish_seconds",
        "fast_tier_p50_seconds",
        "one_user_rewrite_share",
        "many_users_rewrite_share",
        "ndcg@20_ensemble",
        "ndcg@20_reference",
        "evaluated_users",
        "audit_passed",
    ):
        lines.append(
            f"| {key} | " + " | ".join(str(r["figures"].get(key, "-")) for r in sizes) + " |"
        )
    peak = max((s["peak_memory_bytes"] for r in sizes for s in r["steps"].values()), default=0)
    lines += ["", f"Peak memory over every step and size: {_gb(peak)} GB.", ""]
    return "\n".join(lines)


def _settings_line(config: dict[str, Any], fast_method: str | None) -> str:
    model, sharding = config.get("model", {}), config.get("sharding", {})
    return (
        f"Settings: model {model.get('kind')} (dim {model.get('dim')}, optimizer "
        f"{model.get('optimizer')}, at most {model.get('max_epochs')} epochs), partition "
        f"{sharding.get('method')} on {sharding.get('embedding')} embeddings, aggregator "
        f"{config.get('aggregator', {}).get('kind')}, fast tier {fast_method} (`config` in the "
        "JSON holds every setting)."
    )


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(result["sizes"].values(), key=lambda r: r["interactions"])
    fig, ax = plt.subplots(figsize=(7, 5))
    for name in STEPS:
        pts = [
            (r["interactions"], r["steps"][name]["wall_seconds"])
            for r in sizes
            if name in r["steps"]
        ]
        if pts:
            e = result.get("exponents", {}).get(name)
            ax.plot(*zip(*pts, strict=True), marker="o", label=f"{name} ({e})" if e else name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("interactions")
    ax.set_ylabel("wall seconds")
    ax.set_title(f"recunlearn bench scale, {result['like']}-like (exponent in brackets)")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
