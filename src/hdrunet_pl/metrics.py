"""HDR scores, functional (here) and as torchmetrics ``Metric`` classes
(:mod:`hdrunet_pl.metric_classes`, also importable from here).

The NTIRE 2021 challenge's PSNR-mu and PSNR-L, and the perceptual PU21-PSNR, PU21-SSIM and
ColorVideoVDP (JOD) of ``cvvdp`` (see :mod:`hdrunet_pl.perceptual` for their luminance
convention). Each takes one non-linear HDR image at a time (the functional form) or a batch
that is scored image by image and averaged per image (the classes, synced across
processes), never pooled over pixels. PSNR-mu and PSNR-L compute in float64; predictions
are clamped to >= 0, as in the 16-bit PNG submission format.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from hdrunet_pl.constants import GAMMA, MU, NORM_PERCENTILE
from hdrunet_pl.lazy import lazy_getattr
from hdrunet_pl.tonemap import tanh_norm_mu_law, to_linear

# the torchmetrics classes live in hdrunet_pl.metric_classes (torchmetrics takes about 2 s
# to import, which the scoring functions and hdrunet-eval do not need)
__getattr__ = lazy_getattr(
    __name__,
    dict.fromkeys(
        ("CVVDP", "METRICS", "PSNRL", "PSNRMu", "PU21PSNR", "PU21SSIM"),
        "hdrunet_pl.metric_classes",
    ),
)

METRIC_NAMES: tuple[str, ...] = ("psnr_mu", "psnr_l", "pu21_psnr", "pu21_ssim", "cvvdp")
"""Every score by name (as in ``hdrunet-eval metrics=[...]`` and ``model.val_metrics``)."""


def batch_percentile(x: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q``-th percentile (0-100) of each item of (B, ...) ``x``, shape (B, 1, ..., 1);
    linear interpolation as ``numpy.percentile``.

    Uses ``kthvalue`` so that it works on tensors of any size (``torch.quantile`` is capped).
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    flat = x.reshape(x.shape[0], -1)
    pos = (flat.shape[1] - 1) * q / 100.0
    lo = int(pos)
    frac = pos - lo
    value = flat.kthvalue(lo + 1, dim=1).values
    if frac != 0:
        high = flat.kthvalue(min(lo + 2, flat.shape[1]), dim=1).values
        value = value + (high - value) * frac
    return value.reshape(-1, *([1] * (x.ndim - 1)))


def percentile(x: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q``-th percentile (0-100) of all values of ``x`` (a 0-d tensor), as
    ``numpy.percentile``; see :func:`batch_percentile`."""
    return batch_percentile(x.reshape(1, -1), q).reshape(())


BLACK_GROUND_TRUTH = (
    f"the ground truth is black in {NORM_PERCENTILE:g}% of its values or more, so PSNR-mu "
    "(normalised by that percentile) is undefined"
)
"""Why an image that :func:`is_black` flags cannot be scored."""


def is_black(target: torch.Tensor) -> bool:
    """True where PSNR-mu of non-linear ``target`` (any shape, >= 0) is undefined: its
    99th percentile (the normalisation) is 0."""
    return not float(percentile(target, NORM_PERCENTILE)) > 0


def _check_image(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    if pred.ndim != 3:
        raise ValueError(
            f"expected one image (C, H, W) or (H, W, C), got shape {tuple(pred.shape)}"
        )


def _psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return -10.0 * torch.log10(torch.mean((a - b) ** 2))


def psnr_mu(
    pred: torch.Tensor,
    target: torch.Tensor,
    gamma: float = GAMMA,
    mu: float = MU,
    norm_percentile: float = NORM_PERCENTILE,
) -> torch.Tensor:
    """PSNR-mu (dB), the challenge's main score, of one non-linear image (CHW or HWC).

    Both images are linearised (``x ** gamma``), divided by the 99th percentile of the linear
    target, tonemapped with ``log(1 + mu tanh(x)) / log(1 + mu)`` and compared by PSNR.
    """
    _check_image(pred, target)
    ref = to_linear(target.double(), gamma)
    res = to_linear(pred.double(), gamma)
    norm = percentile(ref, norm_percentile)
    return _psnr(tanh_norm_mu_law(ref, norm, mu), tanh_norm_mu_law(res, norm, mu))


def psnr_l(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR-L (dB) of one non-linear image (CHW or HWC), as the challenge scored it.

    The organisers' ``normalized_psnr(ref, res, max(ref))`` on the images as read from the
    16-bit PNGs: the non-linear values (no gamma), both divided by the target's maximum.
    """
    _check_image(pred, target)
    ref, res = target.double().clamp_min(0), pred.double().clamp_min(0)
    peak = ref.max()
    return _psnr(ref / peak, res / peak)


def pu21_psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PU21-PSNR (dB) of one non-linear HDR image (3, H, W): ``cvvdp``'s ``pu_psnr_y`` on
    the luminance of both images shown as :mod:`hdrunet_pl.perceptual` states."""
    from hdrunet_pl.perceptual import PerceptualScorer

    return PerceptualScorer("pu21_psnr")(pred, target)


def pu21_ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PU21-SSIM (<= 1) of one non-linear HDR image (3, H, W): SSIM of the PU21-encoded
    luminance (``cvvdp``'s ``ssim_metric``)."""
    from hdrunet_pl.perceptual import PerceptualScorer

    return PerceptualScorer("pu21_ssim")(pred, target)


def cvvdp_jod(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """ColorVideoVDP (JOD, 10 = no visible difference) of one non-linear HDR image (3, H, W).
    Loads the metric's tables each call: score many images with :class:`CVVDP`."""
    from hdrunet_pl.perceptual import PerceptualScorer

    return PerceptualScorer("cvvdp")(pred, target)


CHALLENGE_METRICS: tuple[str, ...] = ("psnr_mu", "psnr_l")
"""The NTIRE 2021 scores: always computed by ``hdrunet-eval`` and in validation."""


def check_metric_names(names: list[str] | tuple[str, ...], setting: str) -> list[str]:
    """``names`` as a list, refused in one line if one is not in :data:`METRIC_NAMES`."""
    unknown = [n for n in names if n not in METRIC_NAMES]
    if unknown:
        raise ValueError(
            f"{setting}: unknown metric {unknown[0]!r}; choose from {', '.join(METRIC_NAMES)}"
        )
    return list(dict.fromkeys(names))


def scorer(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A function scoring one image pair (3, H, W) by metric ``name`` (reusing what it loads)."""
    if name == "psnr_mu":
        return psnr_mu
    if name == "psnr_l":
        return psnr_l
    from hdrunet_pl.perceptual import PerceptualScorer

    return PerceptualScorer(check_metric_names([name], "metric")[0])
