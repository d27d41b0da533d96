"""Readers on real Spark: good files parse, malformed rows stop the read with counts."""

import pytest

from recunlearn.config import DatasetConfig
from recunlearn.data.readers import read_interactions, read_log
from recunlearn.errors import DataError

pytestmark = pytest.mark.spark


def test_ml100k_reader_parses_all_fields(spark, tmp_path):
    (tmp_path / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    rows = (
        read_interactions(spark, DatasetConfig(format="ml-100k"), tmp_path)
        .orderBy("raw_user")
        .collect()
    )
    assert [(r.raw_user, r.item_id, r.rating, r.ts) for r in rows] == [
        ("186", "302", 3.0, 891717742),
        ("196", "242", 3.0, 881250949),
    ]


def test_ml1m_reader_uses_double_colon(spark, tmp_path):
    (tmp_path / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n")
    df = read_interactions(spark, DatasetConfig(format="ml-1m"), tmp_path)
    assert sorted(r.item_id for r in df.collect()) == ["1193", "661"]


def test_malformed_rows_are_counted_by_reason_and_nothing_is_read(spark, tmp_path):
    (tmp_path / "u.data").write_text(
        "196\t242\t3\t881250949\n"
        "186\t302\tfive\t891717742\n"  # non-numeric rating
        "22\t377\n"  # wrong field count
        "\t51\t2\t883887\n"
    )  # empty user id
    with pytest.raises(DataError) as exc:
        read_interactions(spark, DatasetConfig(format="ml-100k"), tmp_path)
    msg = str(exc.value)
    assert "3 malformed" in msg
    assert (
        "1 non-numeric rating" in msg and "1 wrong field count" in msg and "1 empty user id" in msg
    )
    assert "186" not in msg  # no row content (raw ids) in the error


def test_generic_csv_log_with_mapping(spark, tmp_path):
    p = tmp_path / "plays.csv"
    p.write_text("listener,artist,plays,when\nalice,a1,12,100\nbob,a2,3,200\n")
    df = read_log(
        spark,
        p,
        columns={"user": "listener", "item": "artist", "weight": "plays", "timestamp": "when"},
    )
    got = sorted((r.raw_user, r.item_id, r.rating, r.ts) for r in df.collect())
    assert got == [("alice", "a1", 12.0, 100), ("bob", "a2", 3.0, 200)]


def test_generic_parquet_log_without_optional_columns(spark, tmp_path):
    p = tmp_path / "log.parquet"
    spark.createDataFrame([("u1", 7), ("u2", 8)], "uid string, iid int").write.parquet(str(p))
    df = read_log(spark, p, columns={"user": "uid", "item": "iid"})
    assert sorted((r.raw_user, r.item_id, r.rating, r.ts) for r in df.collect()) == [
        ("u1", "7", 1.0, 0),
        ("u2", "8", 1.0, 0),
    ]


def test_missing_mapped_column_names_the_column(spark, tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"lacks column\(s\) \['user_id'\]"):
        read_log(spark, p, columns={"user": "user_id", "item": "b"})


def test_parquet_log_with_timestamp_date_and_integer_columns(spark, tmp_path):
    """Typed sources convert as they mean: a timestamp or a date to epoch seconds, integer ids
    to their text, a fractional timestamp down to the second."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    when = [
        dt.datetime(2020, 1, 1, 0, 0, 10, tzinfo=dt.timezone.utc),
        dt.datetime(1970, 1, 2, tzinfo=dt.timezone.utc),
    ]
    for name, column, expected in (
        ("ts.parquet", pa.array(when, pa.timestamp("us", tz="UTC")), [1577836810, 86400]),
        ("date.parquet", pa.array([d.date() for d in when]), [1577836800, 86400]),
        ("float.parquet", pa.array([12.9, 3.0]), [12, 3]),
    ):
        pq.write_table(
            pa.table({"uid": pa.array([7, 8], pa.int64()), "iid": ["a", "b"], "when": column}),
            tmp_path / name,
        )
        df = read_log(
            spark, tmp_path / name, columns={"user": "uid", "item": "iid", "timestamp": "when"}
        )
        assert sorted((r.raw_user, r.ts) for r in df.collect()) == list(
            zip(["7", "8"], expected, strict=True)
        ), name


def test_amazon_and_lfm2b_files_in_their_own_formats(spark, tmp_path):
    """Fixtures written as the real dumps are: Amazon reviews JSON lines (2014, 2018 and 2023
    field names; 2023's item is parent_asin, its timestamp milliseconds), the headerless
    ratings-only CSV, and LFM-2B's listening events and counts (tab-separated, header, bz2)."""
    import bz2
    import gzip

    reviews = [
        '{"reviewerID": "A2SUAM1J3GNN3B", "asin": "0000013714", "reviewerName": "J. McDonald", '
        '"helpful": [2, 3], "reviewText": "I bought this for my husband.", "overall": 5.0, '
        '"summary": "Heavenly Highway Hymns", "unixReviewTime": 1252800000, "reviewTime": "09 13, '
        '2009"}',
        '{"overall": 4.0, "verified": true, "reviewTime": "04 23, 2016", '
        '"reviewerID": "A3478QRKQDOPQ2", '
        '"asin": "B00005NN5Q", "style": {"Format:": " Audio CD"}, "reviewerName": "Ken", '
        '"unixReviewTime": 1461369600}',
        '{"rating": 3.0, "title": "ok", "text": "fine", "images": [], "asin": "B00YQ6X8EO", '
        '"parent_asin": "B00YQ6X8E0", "user_id": "AGKHLEW2SOWHNMFQIJGBECAF7INQ", "timestamp": '
        "1588687728923, "
        '"helpful_vote": 0, "verified_purchase": true}',
    ]
    (tmp_path / "amazon").mkdir()
    (tmp_path / "amazon" / "Digital_Music.jsonl.gz").write_bytes(
        gzip.compress(("\n".join(reviews) + "\n").encode())
    )
    got = read_interactions(
        spark, DatasetConfig(format="amazon-json"), tmp_path / "amazon"
    ).collect()
    assert sorted((r.raw_user, r.item_id, r.rating, r.ts) for r in got) == [
        ("A2SUAM1J3GNN3B", "0000013714", 5.0, 1252800000),
        ("A3478QRKQDOPQ2", "B00005NN5Q", 4.0, 1461369600),
        ("AGKHLEW2SOWHNMFQIJGBECAF7INQ", "B00YQ6X8E0", 3.0, 1588687728),
    ]

    (tmp_path / "ratings").mkdir()
    (tmp_path / "ratings" / "Digital_Music.csv").write_text(
        "0000013714,A2SUAM1J3GNN3B,5.0,1252800000\nB00005NN5Q,A3478QRKQDOPQ2,4.0,1461369600\n"
    )
    got = read_interactions(
        spark, DatasetConfig(format="amazon-ratings"), tmp_path / "ratings"
    ).collect()
    assert sorted((r.raw_user, r.item_id, r.rating, r.ts) for r in got) == [
        ("A2SUAM1J3GNN3B", "0000013714", 5.0, 1252800000),
        ("A3478QRKQDOPQ2", "B00005NN5Q", 4.0, 1461369600),
    ]

    lfm = tmp_path / "lfm2b"
    lfm.mkdir()
    (lfm / "listening-events.tsv.bz2").write_bytes(
        bz2.compress(
            b"user_id\ttrack_id\talbum_id\ttimestamp\n2\t4868\t1130\t2013-01-01 00:00:06\n"
            b"2\t4869\t1130\t2020-03-20 14:40:34\n"
        )
    )
    (lfm / "listening-counts.tsv.bz2").write_bytes(
        bz2.compress(b"user_id\ttrack_id\tcount\n2\t4868\t14\n31\t1\t1\n")
    )
    events = read_interactions(spark, DatasetConfig(format="lfm2b-events"), lfm).collect()
    assert sorted((r.raw_user, r.item_id, r.rating, r.ts) for r in events) == [
        ("2", "4868", 1.0, 1356998406),
        ("2", "4869", 1.0, 1584715234),
    ]
    counts = read_interactions(spark, DatasetConfig(format="lfm2b-counts"), lfm).collect()
    assert sorted((r.raw_user, r.item_id, r.rating, r.ts) for r in counts) == [
        ("2", "4868", 14.0, 0),
        ("31", "1", 1.0, 0),
    ]
