"""The audit's disk scans must be able to fail: plant what they look for and find it."""

import pytest

from recunlearn.evidence.scan import delta_log_hits, rows_with_keys
from recunlearn.storage.delta import delete_keys, vacuum_now, write_delta

pytestmark = pytest.mark.spark


def test_predicate_delete_leaks_raw_id_into_log_and_merge_delete_does_not(spark, tmp_path):
    from delta.tables import DeltaTable

    leaky, clean = str(tmp_path / "t" / "leaky"), str(tmp_path / "t" / "clean")
    df = spark.createDataFrame(
        [("u4711", "k1", 1), ("u42", "k2", 2)], "raw string, user_key string, item_idx int"
    )
    write_delta(df, leaky, stats_columns=["item_idx"])
    write_delta(df.drop("raw"), clean, stats_columns=["item_idx"])
    DeltaTable.forPath(spark, leaky).delete("raw = 'u4711'")  # old file kept on disk
    delete_keys(spark, clean, ["k1"])
    hits = delta_log_hits(tmp_path / "t", keys=[], raw_ids=["u4711"])
    assert any("leaky" in f for f in hits)
    assert not any("clean" in f for f in hits)
    assert not delta_log_hits(tmp_path / "t" / "clean", keys=["k1"], raw_ids=[])  # nor the key
    assert spark.read.format("delta").load(clean).count() == 1  # Spark reads delta-rs's commit


def test_rows_survive_delete_until_vacuum(spark, tmp_path):
    path = str(tmp_path / "tables" / "interactions")
    df = spark.createDataFrame([("k1", 1), ("k2", 2)], "user_key string, item_idx int")
    write_delta(df, path, stats_columns=["item_idx"])
    delete_keys(spark, path, ["k1"])
    assert rows_with_keys(tmp_path / "tables", ["k1"]) == {"k1": 1}  # old file still on disk
    vacuum_now(spark, path)
    assert rows_with_keys(tmp_path / "tables", ["k1", "k2"]) == {"k1": 0, "k2": 1}


def test_vacuum_removes_untracked_files_and_checksums_and_spark_keeps_working(spark, tmp_path):
    """A killed writer's output is in no version; VACUUM (delta-rs, full listing) removes it,
    with the checksum files of removed data files, and Spark reads and writes on after."""
    import shutil

    path = tmp_path / "tables" / "interactions"
    df = spark.createDataFrame([("k1", 1), ("k2", 2)], "user_key string, item_idx int")
    write_delta(df, str(path), stats_columns=["item_idx"])
    import pyarrow.parquet as pq

    # the data may be written as one file per row: copy the one that holds k1
    live = next(
        f
        for f in sorted(path.glob("part-*.parquet"))
        if "k1" in pq.read_table(f, columns=["user_key"]).column(0).to_pylist()
    )
    orphan = path / ("part-99999-killed-writer" + live.name[len("part-00000") :])
    shutil.copy(live, orphan)  # untracked: no commit names it
    delete_keys(spark, str(path), ["k1"])
    assert rows_with_keys(tmp_path / "tables", ["k1"])["k1"] >= 2
    removed = vacuum_now(spark, str(path))
    assert any("killed-writer" in f for f in removed) and not orphan.exists()
    assert rows_with_keys(tmp_path / "tables", ["k1", "k2"]) == {"k1": 0, "k2": 1}
    assert not [c for c in path.glob(".*.crc") if not (path / c.name[1:-4]).exists()]
    delete_keys(spark, str(path), ["k2"])
    assert spark.read.format("delta").load(str(path)).count() == 0


def test_stats_on_user_key_would_leak_the_key_into_the_log(spark, tmp_path):
    path = str(tmp_path / "t" / "with_stats")
    df = spark.createDataFrame(
        [("kkkkkkkkkkkkkkkkkkkkkkkkkkkk0001", 1)], "user_key string, item_idx int"
    )
    df.write.format("delta").save(path)  # default stats include user_key min/max
    assert delta_log_hits(tmp_path / "t", keys=["kkkkkkkkkkkkkkkkkkkkkkkkkkkk0001"])
    path2 = str(tmp_path / "u" / "no_stats")
    write_delta(df, path2, stats_columns=["item_idx"])
    assert not delta_log_hits(tmp_path / "u", keys=["kkkkkkkkkkkkkkkkkkkkkkkkkkkk0001"])


def test_numeric_ids_are_found_in_a_predicate_but_not_in_numeric_stats(spark, tmp_path):
    """MovieLens' user ids are small integers: "47" is also an item index, a rating count or
    a file size in the log. A leaked predicate on a numeric raw id is a hit; the same number as
    an item index's statistic is not (the audit failed on that before)."""
    from delta.tables import DeltaTable

    leaky, clean = str(tmp_path / "t" / "leaky"), str(tmp_path / "t" / "clean")
    df = spark.createDataFrame(
        [(47, "k1", 47), (3, "k2", 0)], "raw int, user_key string, item_idx int"
    )
    write_delta(df, leaky, stats_columns=["item_idx"])
    write_delta(df.drop("raw"), clean, stats_columns=["item_idx"])
    DeltaTable.forPath(spark, leaky).delete("raw = 47")
    delete_keys(spark, clean, ["k1"])
    hits = delta_log_hits(tmp_path / "t", keys=[], raw_ids=["47"])
    assert any("leaky" in f for f in hits)  # the predicate names it
    assert not any("clean" in f for f in hits)  # item_idx's max of 47 in the stats does not
