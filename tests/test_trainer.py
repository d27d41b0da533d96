"""TorchTrainer's epoch loop: best state kept, patience, validation optional; the registry's
factor flag matches the FactorModel base."""

import torch
from torch import nn

from recunlearn.models import MODELS
from recunlearn.models.base import FactorModel
from recunlearn.models.trainer import TorchTrainer


class _Scalar(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))


def _walk(module: _Scalar):
    # one batch per epoch pulling w up by lr: w is epoch * 0.1 after each epoch
    def batches(epoch: int):
        yield -module.w.sum(), 4

    return batches


def test_the_best_validated_state_is_kept_and_patience_stops():
    m = _Scalar()
    # the score peaks at w = 0.3 (epoch 3) and falls after
    trainer = TorchTrainer(lr=0.1, max_epochs=20, patience=2)
    fit = trainer.fit(m, _walk(m), lambda: -abs(float(m.w.detach()) - 0.3))
    assert fit.best_epoch == 3 and fit.epochs == 5  # two worse validations after the best
    assert abs(float(m.w.detach()) - 0.3) < 1e-5  # the best state was loaded back
    assert [c[0] for c in fit.curve] == [1, 2, 3, 4, 5]
    assert fit.curve[0][1] == -0.0  # the mean loss of epoch 1 (w = 0 before its step)


def test_eval_every_and_the_last_epoch_and_no_validation():
    m = _Scalar()
    fit = TorchTrainer(lr=0.1, max_epochs=5, patience=9, eval_every=2).fit(
        m, _walk(m), lambda: float(m.w.detach())
    )
    assert [c[0] for c in fit.curve] == [2, 4, 5] and fit.best_epoch == 5
    m = _Scalar()
    fit = TorchTrainer(lr=0.1, max_epochs=3, patience=1).fit(m, _walk(m), None)
    assert fit.epochs == 3 and fit.curve == [] and abs(float(m.w.detach()) - 0.3) < 1e-5


def test_validate_first_keeps_an_initial_state_nothing_beats():
    m = _Scalar()
    fit = TorchTrainer(lr=0.1, max_epochs=10, patience=2, validate_first=True).fit(
        m, _walk(m), lambda: -float(m.w.detach())
    )
    assert fit.best_epoch == 0 and fit.epochs == 2 and float(m.w.detach()) == 0.0
    assert fit.curve[0] == (0, None, -0.0)


def test_factor_kinds_are_factor_models():
    for name, kind in MODELS.items():
        assert kind.factor == issubclass(kind.model_class(), FactorModel), name
