"""The synthetic log generator: every row a function of the seed and its number (the same log
whatever the partitioning), the statistics it claims, and files the real readers take whole."""

import numpy as np
import pytest

from pipelines import synth
from recunlearn.config import DatasetConfig
from recunlearn.data.readers import read_interactions


def test_rows_do_not_depend_on_how_they_are_batched():
    p = synth.PROFILES["lfm-2b"]
    whole = synth.draw_events(np.arange(0, 1000), key=7, profile=p, n_users=50, n_items=5000)
    parts = [
        synth.draw_events(np.arange(a, b), key=7, profile=p, n_users=50, n_items=5000)
        for a, b in ((0, 1), (1, 333), (333, 1000))
    ]
    for col in whole:
        assert np.array_equal(whole[col], np.concatenate([x[col] for x in parts]))
    other = synth.draw_events(np.arange(0, 1000), key=8, profile=p, n_users=50, n_items=5000)
    assert not np.array_equal(whole["item"], other["item"])  # the seed matters
    with pytest.raises(ValueError, match="consecutive"):
        synth.draw_events(np.array([0, 2]), key=7, profile=p, n_users=50, n_items=5000)


def test_the_statistics_are_the_profiles():
    p = synth.PROFILES["lfm-2b"]
    n_users, n_items, n = 400, 20_000, 400_000
    ev = synth.draw_events(np.arange(n), key=1, profile=p, n_users=n_users, n_items=n_items)
    activity = np.bincount(ev["user"], minlength=n_users)
    # log-normal activity: the log's spread is sigma (within sampling error)
    assert abs(np.log(activity[activity > 0]).std() - p.activity_sigma) < 0.1
    assert ev["user"].min() >= 0 and ev["user"].max() < n_users
    assert ev["item"].min() >= 0 and ev["item"].max() < n_items
    # Zipf popularity: the count falls with rank at a slope near -zipf
    counts = np.sort(np.bincount(ev["item"], minlength=n_items))[::-1]
    r = np.arange(1, n_items + 1)
    slope = np.polyfit(np.log(r[10:1000]), np.log(counts[10:1000]), 1)[0]
    assert -1.3 < slope < -0.7
    # taste groups: about `affinity` of the events (plus chance) are in the user's group
    share = np.mean(ev["item"] % p.clusters == ev["user"] % p.clusters)
    assert abs(share - (p.affinity + (1 - p.affinity) / p.clusters)) < 0.02
    assert p.start <= ev["ts"].min() and ev["ts"].max() <= p.end


@pytest.mark.spark
def test_synth_writes_what_the_readers_read_and_partitioning_changes_nothing(
    spark, tmp_path, monkeypatch
):
    from recunlearn.attribute.labels import encode, read_user_attributes

    a = synth.synthesize(spark, like="lfm-2b", interactions=20_000, out=tmp_path / "a", seed=5)
    assert a["users"] == 50 and a["items"] == 500 and a["files"]["users"] == "users.tsv"
    monkeypatch.setattr(synth, "ROWS_PER_PARTITION", 3_000)  # 7 part files instead of 1
    synth.synthesize(spark, like="lfm-2b", interactions=20_000, out=tmp_path / "b", seed=5)
    assert len(list((tmp_path / "b" / "listening-events.tsv").glob("part-*"))) == 7
    read = {
        k: read_interactions(spark, DatasetConfig(format="lfm2b-events"), tmp_path / k)
        for k in "ab"
    }
    assert read["a"].count() == 20_000  # every row read, none quarantined
    assert read["a"].exceptAll(read["b"]).count() == 0 == read["b"].exceptAll(read["a"]).count()
    users = read_user_attributes(tmp_path / "a")  # the folder: its users.tsv is found
    assert len(users) == 50 and set(users["gender"]) <= {"M", "F", None}
    labels = encode(users, "gender")
    assert set(labels) <= {-1, 0, 1} and (labels == -1).sum() == users["gender"].isna().sum()

    c = synth.synthesize(
        spark, like="amazon", interactions=5_000, out=tmp_path / "c", seed=5, compression="gzip"
    )
    df = read_interactions(
        spark, DatasetConfig(format="amazon-json"), tmp_path / "c" / "reviews.json"
    )
    ratings = {r.rating: r["count"] for r in df.groupBy("rating").count().collect()}
    assert sum(ratings.values()) == 5_000 and set(ratings) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert ratings[5.0] / 5_000 > 0.5  # the skew of real reviews
    assert all(
        f.name.endswith(".json.gz") for f in (tmp_path / "c" / "reviews.json").glob("part-*")
    )
    assert c["users"] == 625
