"""Ingest on real Spark + Delta: keys instead of ids, a per-user split that does not depend
on the secret, no user_key statistics in the log."""

import numpy as np
import pytest
from conftest import write_ml100k
from deltalake import DeltaTable

from pipelines.ingest import ingest
from recunlearn.data.pseudonym import user_key
from recunlearn.evidence.scan import delta_log_hits

pytestmark = pytest.mark.spark


def splits(layout, secret, raw_users):
    t = DeltaTable(layout.interactions).to_pandas(columns=["user_key", "item_idx", "split"])
    back = {user_key(secret, str(u)): str(u) for u in raw_users}
    assert set(t.user_key) <= set(back)  # every key maps back: no raw id was stored instead
    t["raw"] = t.user_key.map(back)
    return t


def test_split_is_per_user_and_independent_of_the_secret(spark, cfg, layout, tmp_path):
    raw = tmp_path / "raw"
    groups = write_ml100k(raw, n_users=30)
    users = [u for g in groups.values() for u in g]
    a, b = b"first-secret-0123456789", b"second-secret-0123456789"
    stats = ingest(spark, cfg=cfg, layout=layout, raw_path=raw, secret=a)
    assert stats["users"] == 30
    first = splits(layout, a, users)
    ingest(spark, cfg=cfg, layout=layout, raw_path=raw, secret=b)
    second = splits(layout, b, users)
    key = ["raw", "item_idx", "split"]
    assert sorted(map(tuple, first[key].values)) == sorted(map(tuple, second[key].values))
    per_user = first.groupby(["raw", "split"]).size().unstack(fill_value=0)
    assert (per_user["train"] >= 1).all()
    n = per_user.sum(1)
    for part in ("test", "valid"):  # n * 0.1 rounded down or up, and at least one
        assert ((per_user[part] >= np.floor(n * 0.1)) & (per_user[part] <= np.ceil(n * 0.1))).all()
        assert (per_user[part] >= 1).all()
    assert not delta_log_hits(layout.tables, keys=list(first.user_key.unique()), raw_ids=[])


def test_split_holds_out_a_row_of_every_user_with_three_and_keeps_the_shares(spark):
    """Short histories (the median user of a sparse log has a handful of rows): a floor gave
    them no held-out row. Every user with >= 3 rows gets a validation and a test row; the
    shares of longer histories hold in expectation (randomised rounding)."""
    import pandas as pd

    from pipelines.ingest import split_per_user

    rng = np.random.default_rng(5)
    lengths = {f"short{u}": int(rng.integers(1, 10)) for u in range(300)}
    lengths |= {f"long{u}": 15 for u in range(400)}  # 1.5 expected test rows each
    rows = [
        (u, i, int(rng.integers(-(2**62), 2**62))) for u, n in lengths.items() for i in range(n)
    ]
    df = spark.createDataFrame(pd.DataFrame(rows, columns=["user_key", "item_idx", "order"]))
    got = split_per_user(df, valid=0.1, test=0.1).toPandas()
    counts = got.groupby(["user_key", "split"]).size().unstack(fill_value=0)
    n = counts.sum(1)
    assert n.to_dict() == lengths  # nothing lost
    assert (counts["train"] >= 1).all()
    short = counts[n.index.str.startswith("short")]
    n_short = n[short.index]
    assert ((short["test"] >= 1) & (short["valid"] >= 1))[n_short >= 3].all()
    assert ((short["test"] == 0) & (short["valid"] == 0))[n_short < 3].all()
    long = counts[n.index.str.startswith("long")]
    assert set(long["test"]) == {1, 2} and set(long["valid"]) == {1, 2}
    assert abs(long["test"].mean() - 1.5) < 0.12 and abs(long["valid"].mean() - 1.5) < 0.12


def test_the_split_rule_gives_the_same_labels_on_spark_columns_and_numpy_arrays(spark):
    """The ingest job and the benchmarks apply one rule; on the same sizes, positions and
    coins its Spark and numpy forms agree row for row (a grid that crosses every rounding
    and clamping edge: n from 1 to 40, coins at 0, just below each share's fraction, 0.999)."""
    import pandas as pd
    from pyspark.sql import functions as F

    from recunlearn.data.split import spark_ops, split_labels

    grid = [
        (n, p, ct, cv)
        for n in range(1, 41)
        for p in range(n)
        for ct, cv in ((0.0, 0.0), (0.49, 0.7), (0.999, 0.999), (0.5, 0.0))
    ]
    df = pd.DataFrame(grid, columns=["n", "pos", "ct", "cv"])
    want = split_labels(
        df.n.values, df.pos.values, df.ct.values, df.cv.values, valid=0.15, test=0.2
    )
    label = split_labels(
        F.col("n"), F.col("pos"), F.col("ct"), F.col("cv"), valid=0.15, test=0.2, ops=spark_ops()
    )
    got = spark.createDataFrame(df).withColumn("split", label).toPandas()
    assert got["split"].tolist() == list(want)
    assert {"train", "valid", "test"} == set(want)


def test_a_reingest_of_a_changed_catalogue_keeps_every_item_index(spark, cfg, layout, tmp_path):
    """Items get their index once: a second log with some of the old items and new ones keeps
    the old indexes, numbers the new ones after the largest, and the table holds each item once."""
    secret = b"items-secret-0123456789"
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "u.data").write_text(
        "".join(f"{u}\t{i}\t4\t88000000{u}\n" for u in range(1, 5) for i in (10, 20, 30))
    )
    (second / "u.data").write_text(
        "".join(f"{u}\t{i}\t4\t88000000{u}\n" for u in range(1, 5) for i in (20, 30, 40, 5))
    )
    s1 = ingest(spark, cfg=cfg, layout=layout, raw_path=first, secret=secret)
    before = dict(DeltaTable(layout.items).to_pandas()[["item_id", "item_idx"]].values)
    assert s1["new_items"] == 3 and sorted(before.values()) == [0, 1, 2]
    s2 = ingest(spark, cfg=cfg, layout=layout, raw_path=second, secret=secret)
    after = DeltaTable(layout.items).to_pandas()
    assert after["item_id"].is_unique and after["item_idx"].is_unique
    got = dict(after[["item_id", "item_idx"]].values)
    assert {k: got[k] for k in before} == before  # nothing renumbered, the dropped item 10 kept
    assert s2["new_items"] == 2 and sorted(got[k] for k in ("40", "5")) == [3, 4]
    assert got["40"] < got["5"]  # new items numbered in item id order (as text: "40" < "5")
    inter = DeltaTable(layout.interactions).to_pandas(columns=["item_idx"])
    assert set(inter["item_idx"]) == {got[k] for k in ("20", "30", "40", "5")}


def test_kcore_filter_runs_to_the_core_and_is_recorded(spark, cfg, layout, tmp_path):
    """min 3 items a user, 2 users an item: dropping the light user 'z' leaves item 'c' with
    one user, whose drop leaves user 'y' with two items; a third round drops nothing. The kept
    rows are the 3-2 core a plain computation finds, and the ingest stats and the commit say
    what the filter did."""
    from recunlearn.storage.delta import commit_metadata

    rows = [("x", i) for i in "abde"] + [("y", i) for i in "abc"] + [("w", i) for i in "abde"]
    rows += [("z", "c"), ("z", "e")]
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "u.data").write_text("".join(f"{u}\t{i}\t4\t{n}\n" for n, (u, i) in enumerate(rows)))

    def core(pairs, mu, mi):
        while True:
            users = {u for u, _ in pairs if sum(1 for v, _ in pairs if v == u) >= mu}
            kept = [(u, i) for u, i in pairs if u in users]
            items = {i for _, i in kept if sum(1 for _, j in kept if j == i) >= mi}
            kept = [(u, i) for u, i in kept if i in items]
            if kept == pairs:
                return kept
            pairs = kept

    expect = core(rows, 3, 2)
    assert sorted({u for u, _ in expect}) == ["w", "x"] and len(expect) == 8
    cfg = cfg.model_copy(
        update={
            "dataset": cfg.dataset.model_copy(
                update={"min_user_interactions": 3, "min_item_interactions": 2}
            )
        }
    )
    stats = ingest(spark, cfg=cfg, layout=layout, raw_path=raw, secret=b"k-core-secret-0123456")
    assert (stats["rows"], stats["users"], stats["items"]) == (8, 2, 4)
    f = stats["filter"]
    assert (f["rows_before"], f["rows_after"], f["rounds"], f["converged"]) == (13, 8, 3, True)
    assert commit_metadata(layout.interactions, "ingest")["filter"] == f
