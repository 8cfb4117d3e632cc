"""vae.train's learning-rate schedules (`lr_schedule`): constant keeps lr, cosine starts at lr
and falls to a small step at the last epoch, and an unknown schedule is named."""

from __future__ import annotations

import math

import pytest

from vae.train import TrainConfig, epoch_lr


def test_cosine_falls_from_lr_to_near_zero_and_constant_keeps_it():
    cosine = TrainConfig(lr=0.002, epochs=10, lr_schedule="cosine")
    lrs = [epoch_lr(cosine, e) for e in range(10)]
    assert lrs[0] == 0.002 and lrs[5] == pytest.approx(0.001)
    assert lrs[9] == pytest.approx(0.002 * (1 + math.cos(0.9 * math.pi)) / 2)  # 0.000049
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    assert {epoch_lr(TrainConfig(lr=0.002, epochs=10), e) for e in range(10)} == {0.002}


def test_an_unknown_schedule_is_named():
    with pytest.raises(ValueError, match="lr_schedule='step' .allowed: constant, cosine"):
        TrainConfig(lr_schedule="step")
