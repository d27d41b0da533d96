"""Benchmarks.

- ``recunlearn bench attribute --dataset movielens-1m``: attribute unlearning; JSON, a
  Markdown table and a PNG.
- ``recunlearn bench fast [--datasets movielens-100k,movielens-1m] [--methods scif,als,...]
  [--stream scif=1000,...]``: the fast tier on a stream of single-user requests; JSON and a
  Markdown table.
- ``recunlearn bench e2e [--config ...] [--set ...] --ks 10,1``: one forget request through
  the real engines (``recunlearn run`` per K, K=1 the full retrain), job start to publication.
- ``recunlearn bench exact [--datasets ...] [--models bpr,...]
  [--methods sisa,receraser,ultrare,laser] [--ks 5,10,20]``: the exact family against the full
  model; JSON, a Markdown table and a PNG per data set.
- ``recunlearn bench intake [--config ...] [--set ...] [--runs 20]``: ``recunlearn forget --user
  ID`` from a fresh process per run (and ``status``), after the data set is ingested and
  partitioned once; the operator's wait, p50/p90.
- ``recunlearn bench scale --interactions 1M,10M,100M [--like lfm-2b|amazon]``: every step
  (generate, ingest, partition, train, evaluate, forget 1 and 100 users, the fast tier, audit)
  on synthetic logs of each size through the jobs' functions; time, CPU time and peak memory of
  the whole process tree per step, the growth exponents; JSON, Markdown and a log-log PNG.
- ``recunlearn bench quality [--quality conf/bench/quality.yaml] [--datasets ...] [--models ...]
  [--ks 5,10,20] [--fresh]``: recunlearn's sub-models, full and sharded, against popularity,
  EASE and implicit's ALS tuned on validation; JSON, Markdown and a PNG (finished cells kept).
- ``recunlearn bench tune --models wmf [--datasets ...] [--shards K] [--tune FILE]``: a grid
  search of a sub-model's settings on the validation rows (test read once for the
  choice), for the full model or for the shards of the production sharding at K.
- ``recunlearn bench suite [--suite conf/bench/suite.yaml] [--only TEXT]``: the declared
  matrix of methods x models x data sets x forget-set kinds x sizes; one JSON per cell
  (finished cells are skipped), then the HTML report (``recunlearn report`` renders it again).

Outputs go under ``--out`` (default ``<data_dir>/bench``, ``<data_dir>/bench/suite`` for the
suite). Data sets come from ``--data-dir`` or ``RECUNLEARN_DATA_DIR`` (e.g. ../shared/datasets).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jobs._common import add_config_args, setup
from recunlearn.engines import PROJECT_ROOT

BENCHES = ("attribute", "suite", "fast", "exact", "e2e", "intake", "scale", "quality", "tune")
DEFAULT_SUITE = PROJECT_ROOT / "conf" / "bench" / "suite.yaml"
DEFAULT_QUALITY = PROJECT_ROOT / "conf" / "bench" / "quality.yaml"
DEFAULT_TUNE = PROJECT_ROOT / "conf" / "bench" / "tune.yaml"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="recunlearn bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("bench", choices=BENCHES)
    add_config_args(p)
    p.add_argument("--dataset", default="movielens-1m", help="movielens-1m | movielens-100k")
    p.add_argument("--data-dir", help="folder holding the data set (default: RECUNLEARN_DATA_DIR)")
    p.add_argument("--out", type=Path, help="output folder (default: <data_dir>/bench)")
    p.add_argument("--attributes", default="gender,age")
    p.add_argument(
        "--shards",
        type=int,
        help="bench attribute: K of the sharded ensemble (default 5; 1: skip it); bench tune: "
        "tune the production sharding at this K (default: the full model)",
    )
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples per interval")
    p.add_argument("--suite", type=Path, default=DEFAULT_SUITE, help="suite matrix (bench suite)")
    p.add_argument("--only", help="bench suite: run only the cells whose id contains this text")
    p.add_argument(
        "--datasets",
        help="bench fast / exact (default movielens-100k,movielens-1m) / quality: data sets",
    )
    p.add_argument("--methods", help="bench fast / exact: methods (default: all of them)")
    p.add_argument("--ks", help="bench exact / e2e / quality: numbers of shards (exact: 5,10,20)")
    p.add_argument(
        "--kinds", default="random,core,edge", help="bench exact: 1%% forget sets to time"
    )
    p.add_argument(
        "--models", help="bench exact (default bpr) / quality: sub-models (bpr, wmf, ease, ...)"
    )
    p.add_argument("--quality", type=Path, default=DEFAULT_QUALITY, help="bench quality: config")
    p.add_argument("--tune", type=Path, default=DEFAULT_TUNE, help="bench tune: the grids")
    p.add_argument(
        "--fresh", action="store_true", help="bench quality: measure finished cells again"
    )
    p.add_argument("--stream", help="bench fast: requests per method, e.g. scif=200,als=100")
    p.add_argument("--runs", type=int, default=20, help="bench intake: forget requests to time")
    p.add_argument("--interactions", default="1M", help="bench scale: log sizes, e.g. 1M,10M,100M")
    p.add_argument("--like", default="lfm-2b", help="bench scale: lfm-2b | amazon")
    p.add_argument(
        "--many", type=int, default=100, help="bench scale: users in the batch forget step"
    )
    p.add_argument(
        "--fast-requests", type=int, default=5, help="bench scale: single-user fast-tier jobs"
    )
    p.add_argument("--fast-method", default="scif", help="bench scale: the fast tier's method")
    p.add_argument(
        "--keep-state",
        action="store_true",
        help="bench scale: keep each size's tables and models (removed by default)",
    )
    args = p.parse_args(argv)
    cfg, layout = setup(args)
    if args.bench == "fast":
        return _fast(args, cfg, args.out or (layout.root / "bench"))
    if args.bench == "suite":
        return _suite(args, cfg, args.out or (layout.root / "bench" / "suite"))
    if args.bench == "tune":
        return _tune(args, cfg, args.out or (layout.root / "bench" / "tune"))
    if args.bench == "quality":
        return _quality(args, cfg, args.out or (layout.root / "bench" / "quality"))
    if args.bench == "exact":
        return _exact(args, cfg, args.out or (layout.root / "bench" / "exact"))
    if args.bench == "intake":
        return _intake(
            args, cfg, args.out or (layout.root / "bench"), layout.root / "bench" / "intake-state"
        )
    if args.bench == "scale":
        return _scale(args, cfg, args.out or (layout.root / "bench" / "scale"), layout)
    if args.bench == "e2e":
        return _e2e(
            args,
            cfg,
            args.out or (layout.root / "bench" / "e2e"),
            layout.root / "bench" / "e2e-state",
        )
    out = args.out or (layout.root / "bench")
    from pipelines.bench import attribute

    result = attribute.run(
        cfg,
        dataset=args.dataset,
        out_dir=out,
        data_dir=args.data_dir,
        attributes=tuple(a for a in args.attributes.split(",") if a),
        n_shards=args.shards or 5,
        bootstrap=args.bootstrap,
    )
    summary = {
        "outputs": result["outputs"],
        "wall_seconds": result["wall_seconds"],
        "rows": [
            {
                k: r[k]
                for k in ("setting", "method", "attribute", "ndcg_ratio", "worst_balanced_accuracy")
            }
            for r in result["rows"]
        ],
    }
    print(json.dumps(summary, indent=2))
    return 0


def _names(value: str | None, default: str) -> list[str]:
    """A comma-separated option's items, or the bench's default's."""
    return [x for x in (value or default).split(",") if x]


def _tune(args: argparse.Namespace, cfg, out: Path) -> int:  # noqa: ANN001
    from pipelines.bench import tune
    from pipelines.bench.common import write_outputs

    grids = tune.load_grids(args.tune)
    for model in _names(args.models, "wmf"):
        # a grid for the shards' size class may be named <kind>-shards
        name = f"{model}-shards" if args.shards and f"{model}-shards" in grids else model
        if name not in grids:
            raise SystemExit(f"bench tune: {args.tune} has no grid for {model!r}")
        result = tune.run(
            cfg,
            datasets=_names(args.datasets, "movielens-100k"),
            model=model,
            grid=grids[name],
            out_dir=out,
            data_dir=args.data_dir,
            seed=cfg.seed,
            n_shards=args.shards or 1,
        )
        write_outputs(out, "tune", result, tune.markdown(result))
    print(tune.markdown(result))
    return 0


def _quality(args: argparse.Namespace, cfg, out: Path) -> int:  # noqa: ANN001
    import time

    from pipelines.bench import quality
    from pipelines.bench.common import write_outputs

    qc = quality.QualityConfig.load(args.quality)
    if args.datasets:
        qc.datasets = _names(args.datasets, "")
    if args.models:
        qc.models = _names(args.models, "")
    if args.ks:
        qc.n_shards = [int(k) for k in _names(args.ks, "") if int(k) > 1]
    t0 = time.perf_counter()

    def done(result: dict) -> None:  # written after every cell: a long run keeps what it has
        write_outputs(out, "quality", result, quality.markdown(result))

    result = quality.run(cfg, qc, out_dir=out, data_dir=args.data_dir, fresh=args.fresh, done=done)
    done(result)
    pngs = quality.plot(result, out)
    print(quality.markdown(result))
    print(
        json.dumps(
            {"out": str(out), "plots": pngs, "wall_seconds": round(time.perf_counter() - t0, 1)},
            indent=2,
        )
    )
    return 0


def _fast(args: argparse.Namespace, cfg, out: Path) -> int:  # noqa: ANN001
    from pipelines.bench import fast

    stream = {}
    for part in filter(None, (args.stream or "").split(",")):
        name, _, n = part.partition("=")
        if not n.isdigit():
            raise SystemExit(f"--stream: expected method=count, got {part!r}")
        stream[name.strip()] = int(n)
    methods = [m for m in (args.methods or "").split(",") if m] or None
    summary = fast.run(
        cfg,
        datasets=_names(args.datasets, "movielens-100k,movielens-1m"),
        out_dir=out,
        data_dir=args.data_dir,
        methods=methods,
        stream=stream,
    )
    print(json.dumps(summary, indent=2))
    return 0


def _exact(args: argparse.Namespace, cfg, out: Path) -> int:  # noqa: ANN001
    import time

    from pipelines.bench import exact
    from pipelines.bench.common import write_outputs

    t0 = time.perf_counter()

    def done(result: dict) -> None:  # written after every cell: a long run keeps what it has
        write_outputs(out, "exact", result, exact.markdown(result))

    methods = [m for m in (args.methods or "").split(",") if m] or list(exact.METHODS)
    result = exact.run(
        cfg,
        datasets=_names(args.datasets, "movielens-100k,movielens-1m"),
        methods=methods,
        ks=[int(k) for k in _names(args.ks, "5,10,20")],
        out_dir=out,
        data_dir=args.data_dir,
        kinds=tuple(k for k in args.kinds.split(",") if k),
        done=done,
        models=tuple(_names(args.models, "bpr")),
    )
    done(result)
    pngs = exact.plot(result, out)
    print(
        json.dumps(
            {"out": str(out), "plots": pngs, "wall_seconds": round(time.perf_counter() - t0, 1)},
            indent=2,
        )
    )
    return 0


def _e2e(args: argparse.Namespace, cfg, out: Path, state: Path) -> int:  # noqa: ANN001
    from jobs._common import with_engines
    from pipelines.bench import e2e
    from pipelines.bench.common import write_outputs

    ks = [int(k) for k in _names(args.ks, "5,10,20")]
    result = with_engines(cfg, lambda spark: e2e.run(spark, cfg, ks=ks, state_root=state))
    paths = write_outputs(out, f"e2e-{cfg.dataset.name}", result, e2e.markdown(result))
    print(e2e.markdown(result))
    print(json.dumps(paths, indent=2))
    return 0


def _scale(args: argparse.Namespace, cfg, out: Path, layout) -> int:  # noqa: ANN001
    from jobs._common import with_engines
    from pipelines.bench import scale

    sizes = [scale.parse_size(x) for x in args.interactions.split(",") if x.strip()]
    result = with_engines(
        cfg,
        lambda spark: scale.run(
            spark,
            cfg,
            sizes=sizes,
            like=args.like,
            out_dir=out,
            state_root=layout.root / "bench" / "scale-state",
            seed=cfg.seed,
            keep_state=args.keep_state,
            many=args.many,
            fast_requests=args.fast_requests,
            fast_method=args.fast_method,
        ),
    )
    print(scale.markdown(result))
    print(json.dumps({"out": str(out)}, indent=2))
    return 0


def _intake(args: argparse.Namespace, cfg, out: Path, state: Path) -> int:  # noqa: ANN001
    import time

    from jobs._common import with_engines
    from pipelines.bench import intake
    from pipelines.bench.common import write_outputs
    from recunlearn.storage.layout import Layout

    cfg = cfg.model_copy(update={"data_dir": str(state)})
    t0 = time.perf_counter()
    users = with_engines(
        cfg,
        lambda spark: intake.prepare(spark, cfg, Layout(state), n_users=args.runs),
        ray_needed=False,
    )  # the engines are down again before the timing starts
    result = intake.run(
        cfg,
        users=users,
        prepare_s=time.perf_counter() - t0,
        config=args.config,
        overrides=args.overrides,
        state=state,
    )
    paths = write_outputs(out, f"intake-{cfg.dataset.name}", result, intake.markdown(result))
    print(intake.markdown(result))
    print(json.dumps(paths, indent=2))
    return 0


def _suite(args: argparse.Namespace, cfg, out: Path) -> int:  # noqa: ANN001
    from pipelines.bench import suite
    from pipelines.html_report import render_suite_report
    from recunlearn.config import load_suite_config

    summary = suite.run(
        load_suite_config(args.suite), cfg, out_dir=out, data_dir=args.data_dir, only=args.only
    )
    summary["report"] = str(render_suite_report(out))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
