"""Reconstruction losses on the non-linear HDR image.

Functional form ``loss(pred, target) -> scalar`` with ``pred`` and ``target`` of the same
shape (typically (B, 3, H, W), non-linear HDR, target >= 0), plus :class:`HDRLoss`, a thin
module that picks one by name (the ``loss`` config group).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from hdrunet_pl.constants import GAMMA, MU, NORM_PERCENTILE
from hdrunet_pl.metrics import batch_percentile
from hdrunet_pl.tonemap import mu_law, tanh_norm_mu_law, to_linear


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")


def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error."""
    _check(pred, target)
    return F.l1_loss(pred, target)


def l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error."""
    _check(pred, target)
    return F.mse_loss(pred, target)


def tanh_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The paper's Tanh_L1: ``mean(|tanh(pred) - tanh(target)|)``; tanh bounds highlights."""
    _check(pred, target)
    return F.l1_loss(torch.tanh(pred), torch.tanh(target))


def tanh_l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean((tanh(pred) - tanh(target)) ** 2)``."""
    _check(pred, target)
    return F.mse_loss(torch.tanh(pred), torch.tanh(target))


def mu_l1(pred: torch.Tensor, target: torch.Tensor, mu: float = MU) -> torch.Tensor:
    """L1 between mu-law tonemapped images, ``mean(|mu_law(pred) - mu_law(target)|)``.

    Negative predictions are clamped to 0 before tonemapping (mu-law is undefined below -1/mu).
    """
    _check(pred, target)
    return F.l1_loss(mu_law(pred.clamp_min(0), mu), mu_law(target.clamp_min(0), mu))


def ntire_mu_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 in the space that PSNR-mu compares images in, plus a penalty on negative values.

    Each (B, 3, H, W) image is linearised (``x ** 2.24``), divided by the 99th percentile of
    its linear target and tonemapped with ``log(1 + mu tanh(x)) / log(1 + mu)``, as the
    challenge's PSNR-mu does, so errors count as much as the score counts them: most in the
    shadows and in dark frames, where Tanh_L1 on the non-linear values barely sees them.
    Negative predictions (which no HDR value can be, and which score as 0) add their size,
    so that they still get a gradient.
    """
    _check(pred, target)
    if pred.ndim != 4:
        raise ValueError(f"expected (B, C, H, W) images, got shape {tuple(pred.shape)}")
    ref = to_linear(target.clamp_min(0), GAMMA)
    norm = batch_percentile(ref.detach(), NORM_PERCENTILE).clamp_min(1e-8)
    res = to_linear(pred.clamp_min(0), GAMMA)
    metric = F.l1_loss(tanh_norm_mu_law(res, norm, MU), tanh_norm_mu_law(ref, norm, MU))
    return metric + F.relu(-pred).mean()


def tanh_l1_ntire_mu_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``tanh_l1 + ntire_mu_l1``: the paper's loss, which keeps the bright regions (and
    PSNR-L) right, plus the PSNR-mu loss, which keeps the shadows right."""
    return tanh_l1(pred, target) + ntire_mu_l1(pred, target)


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "tanh_l1": tanh_l1,
    "l1": l1,
    "l2": l2,
    "tanh_l2": tanh_l2,
    "mu_l1": mu_l1,
    "ntire_mu_l1": ntire_mu_l1,
    "tanh_l1_ntire_mu_l1": tanh_l1_ntire_mu_l1,
}


class HDRLoss(nn.Module):
    """A loss of :data:`LOSSES` chosen by name; ``forward(pred, target) -> scalar``."""

    def __init__(self, name: str = "tanh_l1") -> None:
        super().__init__()
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
        self.name = name
        self.fn = LOSSES[name]

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # Losses are computed in float32 even under bf16 autocast.
        return self.fn(pred.float(), target.float())

    def extra_repr(self) -> str:
        return f"name={self.name!r}"
