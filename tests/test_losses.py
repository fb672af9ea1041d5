import math

import numpy as np
import pytest
import torch

from hdrunet_pl import losses
from hdrunet_pl.constants import MU
from hdrunet_pl.metrics import batch_percentile

from .organisers import GAMMA
from .organisers import MU as MU_PINNED

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


def _ntire_tonemap_numpy(nonlinear, reference):
    """The organisers' PSNR-mu tonemap of ``nonlinear`` (numpy, float64) for one image."""
    ref_lin = reference.astype(np.float64) ** GAMMA
    norm = np.percentile(ref_lin, 99)
    return np.log(1 + MU_PINNED * np.tanh(nonlinear.astype(np.float64) ** GAMMA / norm)) / np.log(
        1 + MU_PINNED
    )


def test_ntire_mu_l1_is_l1_where_psnr_mu_compares_each_image():
    gen = torch.Generator().manual_seed(0)
    # two images of very different brightness: each must be normalised by its own percentile
    target = torch.rand(2, 3, 9, 11, generator=gen, dtype=torch.float64) ** 3
    target[1] *= 0.02
    pred = (target + 0.05 * torch.rand(target.shape, generator=gen, dtype=torch.float64)).clamp(0)
    expected = np.mean(
        [
            np.abs(_ntire_tonemap_numpy(p, t) - _ntire_tonemap_numpy(t, t)).mean()
            for p, t in zip(pred.numpy(), target.numpy(), strict=True)
        ]
    )
    assert losses.ntire_mu_l1(pred, target).item() == pytest.approx(expected, rel=1e-9)


def test_ntire_mu_l1_counts_lifted_shadows_that_tanh_l1_barely_sees():
    """A dark frame whose shadows are lifted by 0.02 (non-linear) against the same error on
    its highlights: Tanh_L1 costs them within 1.5x, the PSNR-mu loss the shadows 10x more."""
    target = torch.full((1, 3, 16, 16), 0.05, dtype=torch.float64)
    target[..., :8] = 0.6  # half the frame bright
    shadows, highlights = target.clone(), target.clone()
    shadows[..., 8:] += 0.02
    highlights[..., :8] += 0.02
    assert losses.tanh_l1(shadows, target) < 1.5 * losses.tanh_l1(highlights, target)
    assert losses.ntire_mu_l1(shadows, target) > 10 * losses.ntire_mu_l1(highlights, target)


def test_ntire_mu_l1_gives_negative_predictions_a_gradient_back_to_zero():
    target = torch.rand(1, 3, 4, 4)
    pred = torch.full_like(target, -0.5, requires_grad=True)
    loss = losses.ntire_mu_l1(pred, target)
    assert loss.item() >= 0.5  # the penalty: their size
    loss.backward()
    assert (pred.grad < 0).all()  # every one pushed up
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        losses.ntire_mu_l1(torch.zeros(3, 4, 4), torch.zeros(3, 4, 4))


def test_batch_percentile_is_numpy_percentile_of_each_item():
    x = torch.randn(3, 2, 7, 5, dtype=torch.float64)
    got = batch_percentile(x, 99.0)
    assert got.shape == (3, 1, 1, 1)
    for item, value in zip(x.numpy(), got.flatten().tolist(), strict=True):
        assert value == pytest.approx(np.percentile(item, 99), rel=1e-12)


def test_tanh_l1_ntire_mu_l1_is_the_sum_of_its_parts():
    gen = torch.Generator().manual_seed(3)
    target = torch.rand(2, 3, 8, 8, generator=gen) ** 2 * 4
    pred = target * (0.8 + 0.4 * torch.rand(target.shape, generator=gen))
    both = losses.tanh_l1_ntire_mu_l1(pred, target)
    parts = losses.tanh_l1(pred, target) + losses.ntire_mu_l1(pred, target)
    assert both.item() == pytest.approx(parts.item(), rel=1e-6) and parts > 0


@pytest.mark.parametrize("name", list(losses.LOSSES))
def test_the_loss_module_computes_the_named_function_on_pred_then_target(name):
    """``HDRLoss(name)`` is the function of that name, called as (prediction, target): the
    NTIRE losses normalise by the target's percentile and penalise negative predictions,
    so swapped arguments give other values (and no push back from below zero)."""
    generator = torch.Generator().manual_seed(0)
    pred = torch.rand(2, 3, 8, 8, generator=generator) * 3 - 0.5  # some negative
    target = torch.rand(2, 3, 8, 8, generator=generator) ** 2
    assert losses.LOSSES[name] is getattr(losses, name)
    got = losses.HDRLoss(name)(pred, target)
    assert torch.equal(got, getattr(losses, name)(pred, target))
    if name.startswith("ntire") or name.startswith("tanh_l1_ntire"):
        assert not torch.allclose(got, getattr(losses, name)(target, pred))
    below = torch.full((1, 3, 4, 4), -0.5, requires_grad=True)
    if name in ("ntire_mu_l1", "tanh_l1_ntire_mu_l1"):
        losses.HDRLoss(name)(below, torch.rand(1, 3, 4, 4, generator=generator)).backward()
        assert (below.grad < 0).all()  # pushed up, through the module too
