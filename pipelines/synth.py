"""``recunlearn data synth``: a seeded synthetic interaction log in a real log's raw format.

A Spark job writes the log in parallel, in exactly the format its reader reads:

- ``lfm-2b``: ``listening-events.tsv`` (tab-separated, a header line: ``user_id``,
  ``track_id``, ``album_id``, ``timestamp`` as ``yyyy-MM-dd HH:mm:ss`` UTC) and ``users.tsv``
  (``user_id``, ``country``, ``age``, ``gender``, ``creation_time``), LFM-2B's files; read with
  ``dataset.format: lfm2b-events`` and ``attribute.users_file``;
- ``amazon``: ``reviews.json``, JSON lines with the 2014/2018 field names (``reviewerID``,
  ``asin``, ``overall``, ``unixReviewTime``); read with ``dataset.format: amazon-json``.

Each is a folder of part files (Spark's output), optionally gzip- or bzip2-compressed; the
readers take the folder as they take one file.

The statistics are the logs' own kind: user activity is log-normal (a few heavy users, a long
tail of light ones), item popularity is Zipf, each user belongs to one of ``clusters`` taste
groups and draws ``affinity`` of its events from its group's items (so there is something to
learn), timestamps are uniform over the profile's years, Amazon ratings follow the skew of
real reviews (60% five stars).

Every row's values are a function of the seed and the row number alone (a counter-based
Philox stream: row r uses the r-th block), so the log is the same whatever the number of
partitions. Nothing per row or per user is collected: users and items are drawn by closed-form
inverse CDFs (the log-normal's share of activity below a quantile is
Phi(Phi^-1(q) - sigma); Zipf's continuous inverse), with no array of either on the driver.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from recunlearn.errors import ConfigError
from recunlearn.seeding import make_seed

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

ROWS_PER_PARTITION = 2_000_000  # one part file (and one task) per this many rows


@dataclass(frozen=True)
class Profile:
    """The statistics a synthetic log imitates."""

    name: str
    events_per_user: float  # mean activity
    activity_sigma: float  # log-normal sigma of the activity (its log's standard deviation)
    events_per_item: float  # interactions / catalogue size
    zipf: float  # item popularity exponent
    clusters: int  # taste groups
    affinity: float  # share of a user's events drawn from its group's items
    start: int  # first timestamp (epoch seconds)
    end: int  # last timestamp

    def users(self, n: int) -> int:
        return max(10, round(n / self.events_per_user))

    def items(self, n: int) -> int:
        return max(10 * self.clusters, round(n / self.events_per_item))


PROFILES = {
    # LFM-2B: listening events, heavy users (~16K events a user over 120K users at 2B) and a
    # long catalogue; at the sizes one machine trains, 400 events a user keeps enough users
    # to shard (250K at 100M) and the catalogue item-heavy (2.5M tracks at 100M)
    "lfm-2b": Profile(
        "lfm-2b",
        events_per_user=400.0,
        activity_sigma=1.0,
        events_per_item=40.0,
        zipf=1.05,
        clusters=50,
        affinity=0.6,
        start=1104537600,  # 2005-01-01
        end=1584230400,  # 2020-03-15
    ),
    # Amazon reviews: most reviewers write a handful, the catalogue is about as long as the
    # log is wide (k-core filtering is how such logs are trained on)
    "amazon": Profile(
        "amazon",
        events_per_user=8.0,
        activity_sigma=1.1,
        events_per_item=6.0,
        zipf=0.9,
        clusters=50,
        affinity=0.6,
        start=915148800,  # 1999-01-01
        end=1538352000,  # 2018-10-01
    ),
}
AMAZON_STARS = np.cumsum([0.07, 0.05, 0.08, 0.20, 0.60])  # P(rating <= 1..5)
LFM_COUNTRIES = ("US", "RU", "DE", "UK", "PL", "BR", "FI", "NL", "ES", "SE", "JP", "FR", "IT")
LFM_GENDERS = np.cumsum([0.70, 0.25, 0.05])  # m, f, n(ot given)
COMPRESSION = {"none": None, "gzip": "gzip", "bzip2": "bzip2"}


def _uniforms(raw: np.ndarray) -> np.ndarray:
    """Doubles in (0, 1) from 64-bit words (their top 53 bits, centred)."""
    return ((raw >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def _blocks(key: int, first: int, n: int) -> np.ndarray:
    """(n, 4) words of rows first..first+n-1 of the Philox stream ``key``: row r is block r."""
    return np.random.Philox(key=key, counter=first).random_raw(4 * n).reshape(n, 4)


def _zipf_rank(v: np.ndarray, n: int, s: float) -> np.ndarray:
    """Ranks 0..n-1 drawn from ``v`` ~ U(0, 1) with P(rank r) ~ (r + 1)^-s (continuous
    inverse CDF, floored)."""
    if abs(s - 1.0) < 1e-9:
        r = np.power(float(n + 1), v)
    else:
        a = 1.0 - s
        r = np.power(1.0 + v * (float(n + 1) ** a - 1.0), 1.0 / a)
    return np.clip(np.floor(r).astype(np.int64) - 1, 0, n - 1)


def draw_events(
    rows: np.ndarray, *, key: int, profile: Profile, n_users: int, n_items: int
) -> dict[str, np.ndarray]:
    """The events of consecutive row numbers ``rows``: user and item index, epoch seconds and
    a 0..2047 code for the row's discrete extras (rating, ...)."""
    from scipy.special import ndtr, ndtri

    first, n = int(rows[0]), len(rows)
    if n and int(rows[-1]) - first != n - 1:
        raise ValueError("synth: a batch's row numbers must be consecutive")
    w = _blocks(key, first, n)
    u1, u2, u3, u4 = (_uniforms(w[:, j]) for j in range(4))
    # the user: P(user) proportional to its log-normal activity (see the module's note)
    q = ndtr(ndtri(u1) + profile.activity_sigma)
    user = np.minimum((q * n_users).astype(np.int64), n_users - 1)
    # the item: from the user's taste group with probability ``affinity``, else the whole
    # catalogue, Zipf-popular either way (a group's items are every clusters-th index)
    c = profile.clusters
    group = user % c
    in_group = u3 < profile.affinity
    per_group = n_items // c
    local = _zipf_rank(u2, per_group, profile.zipf) * c + group
    item = np.where(in_group, local, _zipf_rank(u2, n_items, profile.zipf))
    ts = profile.start + (u4 * (profile.end - profile.start)).astype(np.int64)
    extra = (w[:, 3] & np.uint64(0x7FF)).astype(np.int64)  # the bits u4 did not use
    return {"user": user, "item": item, "ts": ts, "extra": extra}


def _events_frame(
    spark: SparkSession, n: int, *, key: int, profile: Profile, n_users: int, n_items: int
) -> DataFrame:
    """The log as (user, item, ts, extra) indices, drawn in Python workers batch by batch."""
    parts = max(1, math.ceil(n / ROWS_PER_PARTITION))

    def draw(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd

        for b in batches:
            if len(b):
                yield pd.DataFrame(
                    draw_events(
                        b["id"].to_numpy(),
                        key=key,
                        profile=profile,
                        n_users=n_users,
                        n_items=n_items,
                    )
                )

    return spark.range(0, n, numPartitions=parts).mapInPandas(
        draw, "user long, item long, ts long, extra long"
    )


def _users_frame(spark: SparkSession, n_users: int, *, key: int, profile: Profile) -> DataFrame:
    """LFM-2B's users file: country, age (-1: not given), gender m/f/n, creation time."""
    from pyspark.sql import functions as F

    def draw(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd

        for b in batches:
            rows = b["id"].to_numpy()
            if not len(rows):
                continue
            w = _blocks(key, int(rows[0]), len(rows))
            u = [_uniforms(w[:, j]) for j in range(4)]
            age = np.where(u[1] < 0.15, -1, 14 + np.floor(u[1] * 50).astype(np.int64))
            yield pd.DataFrame(
                {
                    "user": rows,
                    "country": np.floor(u[0] * len(LFM_COUNTRIES)).astype(np.int64),
                    "age": age,
                    "gender": np.searchsorted(LFM_GENDERS, u[2]).clip(0, 2),
                    "created": profile.start
                    + (u[3] * (profile.end - profile.start)).astype(np.int64),
                }
            )

    parts = max(1, math.ceil(n_users / ROWS_PER_PARTITION))
    drawn = spark.range(0, n_users, numPartitions=parts).mapInPandas(
        draw, "user long, country long, age long, gender long, created long"
    )
    countries = F.array(*[F.lit(c) for c in LFM_COUNTRIES])
    return drawn.select(
        F.col("user").alias("user_id"),
        F.get(countries, F.col("country").cast("int")).alias("country"),
        F.col("age"),
        F.get(F.array(F.lit("m"), F.lit("f"), F.lit("n")), F.col("gender").cast("int")).alias(
            "gender"
        ),
        F.date_format(F.timestamp_seconds("created"), "yyyy-MM-dd HH:mm:ss").alias("creation_time"),
    )


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def synthesize(
    spark: SparkSession,
    *,
    like: str,
    interactions: int,
    out: Path,
    seed: int,
    compression: str = "none",
    users: int | None = None,
    items: int | None = None,
) -> dict[str, Any]:
    """Write a synthetic log of ``interactions`` rows like ``like`` (``PROFILES``) under
    ``out`` (replaced if it exists), seeded; returns what was written."""
    from pyspark.sql import functions as F

    if like not in PROFILES:
        raise ConfigError(f"synth --like {like!r}: one of {', '.join(PROFILES)}")
    if interactions < 1:
        raise ConfigError(f"synth --interactions {interactions}: at least 1")
    if compression not in COMPRESSION:
        raise ConfigError(f"synth --compression {compression!r}: one of {', '.join(COMPRESSION)}")
    profile = PROFILES[like]
    n_users = users or profile.users(interactions)
    n_items = items or profile.items(interactions)
    if n_items < profile.clusters:
        raise ConfigError(f"synth: {n_items} items are fewer than {profile.clusters} taste groups")
    t0 = time.perf_counter()
    events = _events_frame(
        spark,
        interactions,
        key=make_seed(seed, "synth", like, "events"),
        profile=profile,
        n_users=n_users,
        n_items=n_items,
    )
    out.mkdir(parents=True, exist_ok=True)
    options = {"compression": COMPRESSION[compression]} if COMPRESSION[compression] else {}
    files: dict[str, str] = {}
    if like == "lfm-2b":
        df = events.select(
            F.col("user").alias("user_id"),
            F.col("item").alias("track_id"),
            F.floor(F.col("item") / 8).alias("album_id"),  # a track's album: 8 tracks an album
            F.date_format(F.timestamp_seconds("ts"), "yyyy-MM-dd HH:mm:ss").alias("timestamp"),
        )
        target = out / "listening-events.tsv"
        df.write.mode("overwrite").options(header="true", sep="\t", **options).csv(str(target))
        files["events"] = target.name
        users_df = _users_frame(
            spark, n_users, key=make_seed(seed, "synth", like, "users"), profile=profile
        )
        users_target = out / "users.tsv"
        users_df.coalesce(max(1, math.ceil(n_users / ROWS_PER_PARTITION))).write.mode(
            "overwrite"
        ).options(header="true", sep="\t", **options).csv(str(users_target))
        files["users"] = users_target.name
    else:
        stars = F.lit(1)
        for p in AMAZON_STARS[:-1]:  # the rating: 1 + the thresholds passed
            stars = stars + F.when(F.col("extra") >= int(p * 2048), 1).otherwise(0)
        df = events.select(
            F.format_string("A%09X", F.col("user")).alias("reviewerID"),
            F.format_string("B%09X", F.col("item")).alias("asin"),
            stars.cast("double").alias("overall"),
            F.col("ts").alias("unixReviewTime"),
        )
        target = out / "reviews.json"
        df.write.mode("overwrite").options(**options).json(str(target))
        files["events"] = target.name
    seconds = time.perf_counter() - t0
    summary = {
        "like": like,
        "interactions": interactions,
        "users": n_users,
        "items": n_items,
        "seed": seed,
        "compression": compression,
        "path": str(out),
        "files": files,
        "bytes": _folder_bytes(out),
        "seconds": round(seconds, 2),
        "profile": asdict(profile),
    }
    log.info(
        "synth %s: %d interactions, %d users, %d items in %.1f s",
        like,
        interactions,
        n_users,
        n_items,
        seconds,
    )
    return summary
