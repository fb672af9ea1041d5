"""Tonemapping curves shared by the metrics, the mu-law loss and display code.

All functions are element-wise on tensors of any shape.
"""

from __future__ import annotations

import math

import torch

from hdrunet_pl.constants import GAMMA, MU, NORM_PERCENTILE


def to_linear(nonlinear: torch.Tensor, gamma: float = GAMMA) -> torch.Tensor:
    """Non-linear HDR (>= 0) -> linear HDR: ``x ** gamma``. Negative values are clamped to 0."""
    return nonlinear.clamp_min(0) ** gamma


def to_nonlinear(linear: torch.Tensor, gamma: float = GAMMA) -> torch.Tensor:
    """Linear HDR (>= 0) -> non-linear HDR: ``x ** (1 / gamma)``."""
    return linear.clamp_min(0) ** (1.0 / gamma)


def mu_law(x: torch.Tensor, mu: float = MU) -> torch.Tensor:
    """Mu-law compression ``log(1 + mu x) / log(1 + mu)``; maps [0, 1] onto [0, 1]. x >= 0."""
    return torch.log1p(mu * x) / math.log1p(mu)


def tanh_norm_mu_law(
    linear: torch.Tensor, norm: torch.Tensor | float, mu: float = MU
) -> torch.Tensor:
    """The NTIRE 2021 tonemapper: ``mu_law(tanh(linear / norm))``, values in [0, 1)."""
    return mu_law(torch.tanh(linear / norm), mu)


def display_mu_law(
    nonlinear: torch.Tensor, reference: torch.Tensor | None = None, gamma: float = GAMMA
) -> torch.Tensor:
    """Non-linear HDR -> [0, 1) for display, with the PSNR-mu tonemapper.

    Linearises, divides by the 99th percentile of ``reference`` (default: the image itself;
    pass the GT to show several images on one scale) and applies :func:`tanh_norm_mu_law`.
    Any shape; the percentile is over all values.
    """
    from hdrunet_pl.metrics import percentile  # metrics imports this module

    ref = to_linear(reference if reference is not None else nonlinear, gamma)
    norm = percentile(ref.float(), NORM_PERCENTILE).clamp_min(1e-8)
    return tanh_norm_mu_law(to_linear(nonlinear, gamma), norm)
