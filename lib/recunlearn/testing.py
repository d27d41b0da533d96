"""Contract suites for components, shipped with the library.

A new sub-model's test is a subclass naming its kind (``recunlearn.models.MODELS``)::

    class TestPopularity(ForgettableContract):
        kind = "popularity"

The suites run on known-answer data (:func:`checkerboard`: every user likes the items of their
own parity), with plain ``assert``\\ s, under pytest or any runner that collects ``Test*``
classes. ``SubModelContract`` checks what every sub-model keeps: deterministic for a seed,
finite scores of the right shape, a state that round-trips, a fold-in that reads a history and
changes nothing, and (``personalised``) that it learned each user's parity.
``ForgettableContract`` adds that forgetting users, items and single interactions equals a
refit on the retained rows (``tolerance``, relative to the scores' scale) and that the
forgotten users are unknown afterwards. ``AggregatorContract`` checks an aggregator kind over
BPR shards: its weights' shape, that it combines to the mean when its weights are uniform, and
that its state round-trips.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from recunlearn.config import AggregatorConfig, ModelConfig, ModelSettings, model_settings
from recunlearn.data.interactions import InteractionData
from recunlearn.models import fit_model, load_model
from recunlearn.models.base import Forgettable, Recommender


def checkerboard(n_users: int = 48, n_items: int = 24, seed: int = 0) -> InteractionData:
    """Users ``u000``.. like exactly the items of their own parity; per user one liked item is
    held out for validation and one for test."""
    rng = np.random.default_rng(seed)
    users, items, split = [], [], []
    for u in range(n_users):
        liked = [i for i in range(n_items) if i % 2 == u % 2]
        rng.shuffle(liked)
        for pos, i in enumerate(liked):
            users.append(f"u{u:03d}")
            items.append(i)
            split.append("valid" if pos == 0 else "test" if pos == 1 else "train")
    return InteractionData.from_columns(np.array(users), np.array(items), np.array(split), n_items)


def _tensors(model: Recommender) -> list[torch.Tensor]:
    """Every tensor of the model's state but its metadata, in a fixed order."""
    out: list[torch.Tensor] = []

    def walk(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            out.append(x)
        elif isinstance(x, dict):
            for k in sorted(x):
                if k != "meta":
                    walk(x[k])
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)

    walk(model.state())
    return out


def same_state(a: Recommender, b: Recommender) -> bool:
    ta, tb = _tensors(a), _tensors(b)
    return len(ta) == len(tb) and all(
        x.shape == y.shape and torch.equal(x, y) for x, y in zip(ta, tb, strict=True)
    )


class SubModelContract:
    kind: ClassVar[str]
    # model.* settings for the checkerboard (small and fast): shared, and per kind its own
    settings: ClassVar[dict[str, Any]] = {
        "dim": 8,
        "lr": 0.05,
        "max_epochs": 30,
        "eval_every": 5,
        "patience": 3,
        "batch_size": 128,
    }
    own_settings: ClassVar[dict[str, dict[str, Any]]] = {
        "wmf": {"wmf_reg": 0.5},
        "itemknn": {"knn_k": 10},
        "lightgcn": {"lightgcn_batch_size": 256},
        "ncf": {"ncf_layers": [8], "ncf_fold_in_steps": 10},
        "ease": {"ease_lambda": 10.0},
    }
    personalised: ClassVar[bool] = True  # scores differ by user (a popularity model's do not)
    seed: ClassVar[int] = 3

    @classmethod
    def settings_for(cls, kind: str) -> dict[str, Any]:
        """``model.*`` of ``kind`` on the checkerboard."""
        return {**cls.settings, **cls.own_settings.get(kind, {}), "kind": kind}

    def model_config(self) -> ModelConfig:
        return model_settings(**self.settings_for(self.kind))

    def data(self) -> InteractionData:
        return checkerboard()

    def fit(self, data: InteractionData | None = None) -> Recommender:
        torch.use_deterministic_algorithms(True)
        model, stats = fit_model(
            self.data() if data is None else data, self.model_config(), seed=self.seed
        )
        assert {"fit_seconds", "epochs", "n_users", "n_train"} <= set(stats)
        return model

    def test_deterministic_for_a_seed(self) -> None:
        assert same_state(self.fit(), self.fit()), "same data and seed must give the same model"

    def test_scores_and_state(self) -> None:
        data = self.data()
        model = self.fit(data)
        rows = np.arange(data.n_users)
        scores = model.score(rows)
        assert scores.shape == (data.n_users, data.n_items) and torch.isfinite(scores).all()
        back = load_model(model.state())
        assert type(back) is type(model) and list(back.user_keys) == list(model.user_keys)
        assert torch.allclose(back.score(rows), scores)

    def test_learns_each_users_parity(self) -> None:
        if not self.personalised:
            return
        data = self.data()
        scores = self.fit(data).score(np.arange(data.n_users))
        parity = np.array([int(k[1:]) % 2 for k in data.user_keys])
        even = torch.arange(data.n_items) % 2 == 0
        own = (scores[:, even].mean(1) > scores[:, ~even].mean(1)).numpy()
        assert (own == (parity == 0)).mean() > 0.9

    def test_fold_in_reads_a_history_and_changes_nothing(self) -> None:
        data = self.data()
        model = self.fit(data)
        before = [t.clone() for t in _tensors(model)]
        folded = model.score_history(data.train[:6])
        assert folded.shape == (6, data.n_items) and torch.isfinite(folded).all()
        assert all(torch.equal(x, y) for x, y in zip(before, _tensors(model), strict=True))
        assert not model.knows(np.array(["nobody"]))[0]
        if self.personalised:
            parity = np.array([int(k[1:]) % 2 for k in data.user_keys[:6]])
            assert (
                (folded[:, 0::2].mean(1) > folded[:, 1::2].mean(1)).numpy() == (parity == 0)
            ).all()


class ForgettableContract(SubModelContract):
    tolerance: ClassVar[float] = 1e-6  # max |forgotten - refit| / max |refit| over the scores

    def _equal_to_refit(self, model: Recommender, retained: InteractionData) -> None:
        refit = self.fit(retained)
        assert list(model.user_keys) == list(refit.user_keys)
        a, b = (
            model.score(np.arange(len(model.user_keys))),
            refit.score(np.arange(len(refit.user_keys))),
        )
        scale = float(b.abs().max()) or 1.0
        assert float((a - b).abs().max()) / scale <= self.tolerance
        assert model.n_train == refit.n_train  # type: ignore[attr-defined]

    def test_is_forgettable(self) -> None:
        assert isinstance(self.fit(), Forgettable)

    def test_forget_users_equals_refit(self) -> None:
        data = self.data()
        model = self.fit(data)
        gone = data.user_keys[[3, 10]]
        model.forget_users(gone)  # type: ignore[attr-defined]
        assert not model.knows(gone).any()
        self._equal_to_refit(model, data.without_users(gone))

    def test_forget_items_equals_refit(self) -> None:
        data = self.data()
        model = self.fit(data)
        model.forget_items(np.array([2, 5]))  # type: ignore[attr-defined]
        self._equal_to_refit(model, data.without_items(np.array([2, 5])))

    def test_forget_pairs_equals_refit(self) -> None:
        data = self.data()
        model = self.fit(data)
        coo = data.train.tocoo()
        pick = np.array([0, 7, 30])
        model.forget_pairs(coo.row[pick], coo.col[pick])  # type: ignore[attr-defined]
        keys = data.user_keys[coo.row[pick]]
        self._equal_to_refit(model, data.without_pairs(keys, coo.col[pick]))


class AggregatorContract:
    kind: ClassVar[str]
    n_shards: ClassVar[int] = 3

    def shards_and_data(self) -> tuple[list[Recommender], InteractionData]:
        data = checkerboard()
        cfg = ModelSettings(dim=8, lr=0.05, max_epochs=20, eval_every=5, patience=3, batch_size=128)
        rows = np.arange(data.n_users)
        shards = [
            fit_model(data.subset(rows[rows % self.n_shards == k]), cfg, seed=k)[0]
            for k in range(self.n_shards)
        ]
        return shards, data

    def test_fits_combines_and_round_trips(self) -> None:
        from recunlearn.sharding.ensemble import (
            ShardedEnsemble,
            aggregator_kind,
            load_aggregator,
            shard_views,
        )

        kind = aggregator_kind(self.kind)
        shards, data = self.shards_and_data()
        if kind.fit is None:
            agg = kind.load({"kind": kind.name})
        else:
            agg, stats = kind.fit(
                shards,
                data,
                AggregatorConfig(kind=self.kind, max_epochs=2),
                seed=1,
                rng=np.random.default_rng(1),
            )
            assert stats["fit_seconds"] >= 0
        assert agg.kind == self.kind
        keys, hist = data.user_keys[:8], data.train[:8]
        vecs, home = shard_views(shards, keys, hist)
        w = agg.weights(vecs, home)
        assert w.shape == (8, self.n_shards) and torch.isfinite(w).all()
        ens = ShardedEnsemble(shards, agg)
        scores = ens.score(keys, hist)
        assert scores.shape == (8, data.n_items)
        again = ShardedEnsemble(shards, load_aggregator(agg.state())).score(keys, hist)
        assert torch.allclose(scores, again)


class UnlearningMethodContract:
    """An unlearning method (``recunlearn.unlearning.methods.METHODS``) on a sharded
    checkerboard deployment held in memory (``recunlearn.training.LocalDeployment``), through
    the method's own ``update``, the code the unlearn job runs: two users of shard 0 are
    forgotten; only shard 0 changes; nothing of theirs is left in it; an exact method's shard
    equals the shard refit on the retained rows (a retrain bit for bit, with the job's seeds;
    an in-place update to ``tolerance``), an approximate one records what the exact tier still
    owes. Subclass with ``method`` (and ``kind``, the sub-model it runs on)."""

    method: ClassVar[str]
    kind: ClassVar[str] = "bpr"
    n_shards: ClassVar[int] = 3
    tolerance: ClassVar[float] = 0.0  # an in-place exact update: max |scores - refit| / max |refit|
    equals_refit: ClassVar[bool] = True  # False: exact by a convergence test, not by equality

    def deployment(self) -> tuple[Any, Any]:
        from recunlearn.config import RunConfig
        from recunlearn.training import LocalDeployment

        torch.use_deterministic_algorithms(True)
        cfg = RunConfig(
            model=SubModelContract.settings_for(self.kind),
            sharding={"n_shards": self.n_shards},
            unlearn={"method": self.method},
        )
        data = checkerboard()
        return LocalDeployment.train(cfg, data, np.arange(data.n_users) % self.n_shards)

    def test_update_forgets_and_changes_only_the_touched_shard(self) -> None:
        from recunlearn.training import fit_component
        from recunlearn.unlearning.methods import Guarantee, get_method

        method = get_method(self.method)
        dep, version = self.deployment()
        gone = dep.shards[0].user_keys[:2].tolist()
        targets = dep.forget(users=gone)
        assert targets.touched == [0]
        update = method.update(version, targets, dep)
        assert update.changed == [0] and set(update.shards) == {0}
        shard = dep.models[update.shards[0].path]
        assert not shard.knows(np.array(gone)).any()
        assert list(shard.user_keys) == list(dep.shards[0].user_keys)
        if method.guarantee is Guarantee.APPROXIMATE:
            assert update.reference is None  # it held the forgotten rows
            assert update.pending_exact is not None and update.pending_exact["shards"] == [0]
            return
        if update.reference is not None:
            assert not dep.models[update.reference.path].knows(np.array(gone)).any()
        if not self.equals_refit:
            return
        refit, _, _ = fit_component(dep.cfg, dep.shards[0], 0)
        if method.retrains:
            assert same_state(shard, refit), "a retrained shard must equal its replay"
        else:
            rows = np.arange(len(refit.user_keys))
            a, b = shard.score(rows), refit.score(rows)
            scale = float(b.abs().max()) or 1.0
            assert float((a - b).abs().max()) / scale <= self.tolerance
