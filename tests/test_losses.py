import math

import pytest
import torch

from hdrunet_pl import losses
from hdrunet_pl.constants import MU

PRED = torch.tensor([0.0, 0.5, 2.0, 4.0])
TARGET = torch.tensor([0.0, 1.0, 1.0, 8.0])


def test_l1_and_l2_by_hand():
    assert losses.l1(PRED, TARGET).item() == pytest.approx((0 + 0.5 + 1 + 4) / 4)
    assert losses.l2(PRED, TARGET).item() == pytest.approx((0 + 0.25 + 1 + 16) / 4)


def test_tanh_losses_by_hand():
    diffs = [
        math.tanh(p) - math.tanh(t) for p, t in zip(PRED.tolist(), TARGET.tolist(), strict=True)
    ]
    assert losses.tanh_l1(PRED, TARGET).item() == pytest.approx(sum(map(abs, diffs)) / 4, rel=1e-6)
    assert losses.tanh_l2(PRED, TARGET).item() == pytest.approx(
        sum(d * d for d in diffs) / 4, rel=1e-6
    )


def test_tanh_l1_bounds_highlight_errors():
    """A 10 vs 20 highlight costs far less than under L1, which is the point of Tanh_L1."""
    pred, target = torch.tensor([10.0]), torch.tensor([20.0])
    assert losses.tanh_l1(pred, target).item() < 1e-8
    assert losses.l1(pred, target).item() == 10.0


def test_mu_l1_by_hand_and_clamps_negatives():
    def mu(x):
        return math.log1p(MU * x) / math.log1p(MU)

    expected = (
        sum(abs(mu(p) - mu(t)) for p, t in zip(PRED.tolist(), TARGET.tolist(), strict=True)) / 4
    )
    assert losses.mu_l1(PRED, TARGET).item() == pytest.approx(expected, rel=1e-6)
    assert losses.mu_l1(torch.tensor([-1.0]), torch.tensor([0.0])).item() == 0.0


@pytest.mark.parametrize("name", list(losses.LOSSES))
def test_each_loss_is_zero_on_equal_inputs_and_differentiable(name):
    module = losses.HDRLoss(name)
    pred = torch.rand(2, 3, 4, 4, requires_grad=True)
    assert module(pred.detach(), pred.detach()).item() == pytest.approx(0.0, abs=1e-7)
    module(pred, pred.detach() + 0.3).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_unknown_loss_and_shape_mismatch_are_refused():
    with pytest.raises(ValueError, match="unknown loss 'ssim'"):
        losses.HDRLoss("ssim")
    with pytest.raises(ValueError, match="pred shape"):
        losses.l1(torch.zeros(2), torch.zeros(3))
