"""Perceptual HDR metrics from their reference implementation, the ``cvvdp`` package.

PU21-PSNR, PU21-SSIM and ColorVideoVDP (JOD) compare *absolute* luminance, so a relative
NTIRE-style image is first put on a display (one convention, the same for prediction and
reference, see :func:`to_display`):

1. linearise: ``linear = hdr ** GAMMA`` (the challenge's gamma; negatives clamped to 0);
2. scale so that the reference's ``NORM_PERCENTILE``-th percentile of linear RGB (the value
   PSNR-mu normalises by) is ``REFERENCE_CD_M2`` cd/m2; the prediction gets the *reference's*
   factor, so a prediction that is too bright is shown too bright;
3. show the result as BT.709 linear RGB on the ``DISPLAY`` model of ``cvvdp`` (30-inch 4K
   HDR monitor at 0.75 m, 1500 cd/m2 peak, 10 lux ambient), which clips each channel at its
   peak: highlights above 1.5 times the reference's percentile are shown alike, so their
   errors do not count in these scores (PSNR-mu and PSNR-L see them).

The metrics themselves are ``cvvdp``'s classes (``pu_psnr_y``, ``ssim_metric`` on PU21-encoded
luma, ``cvvdp``): nothing here re-implements them. ``cvvdp`` imports ``torchvision`` for one
Gaussian blur; where no torchvision is installed (the CPU torch build cannot use PyPI's),
:func:`import_pycvvdp` supplies that class, computed by ``kornia`` (tested against
``scipy.ndimage``), and a placeholder for the MLP of ``cvvdp``'s learned variants, which
this package does not use.

``python -m hdrunet_pl.perceptual [cvvdp options]`` runs ``cvvdp``'s own command line the
same way (``cvvdp --help`` lists the options).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import sys
import types
from collections.abc import Iterator
from typing import Any

import torch
from kornia.filters import gaussian_blur2d
from torch import nn

from hdrunet_pl.constants import GAMMA, NORM_PERCENTILE
from hdrunet_pl.metrics import percentile
from hdrunet_pl.tonemap import to_linear

DISPLAY: str = "standard_hdr_linear"
"""The ``cvvdp`` display model the images are shown on (its ``display_models.json``)."""

REFERENCE_CD_M2: float = 1000.0
"""Luminance (cd/m2) given to the reference's ``NORM_PERCENTILE``-th linear percentile."""

PERCEPTUAL_METRICS: tuple[str, ...] = ("pu21_psnr", "pu21_ssim", "cvvdp")
"""Names of the metrics of this module (as in ``hdrunet-eval metrics=[...]``)."""
MIN_SIZE = {"pu21_ssim": 11, "cvvdp": 2}
"""The smallest image side a metric scores: SSIM's 11-pixel Gaussian window (``cvvdp``
skips the smoothing below it and gives a near-1 SSIM whatever the images); ColorVideoVDP's
pyramid fails on a single pixel."""


class _KorniaGaussianBlur(nn.Module):
    """``torchvision.transforms.GaussianBlur(kernel_size, sigma)`` with a fixed sigma:
    separable Gaussian, reflect padding, any (..., H, W) tensor."""

    def __init__(self, kernel_size: int, sigma: float) -> None:
        super().__init__()
        self.kernel_size = int(kernel_size)
        self.sigma = float(sigma)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        shape = image.shape
        flat = image.reshape(-1, 1, *shape[-2:])
        size = (self.kernel_size, self.kernel_size)
        out = gaussian_blur2d(flat, size, (self.sigma, self.sigma), border_type="reflect")
        return out.reshape(shape)


class _NoMLP(nn.Module):
    """Stands for ``torchvision.ops.MLP``, which only ``cvvdp``'s learned variants use."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise ImportError("cvvdp's learned (cvvdp_ml_*) metrics need torchvision")


@contextlib.contextmanager
def _torchvision_parts() -> Iterator[None]:
    """Let ``import torchvision.transforms`` / ``torchvision.ops`` see the two names cvvdp
    takes from them, for the duration of the import only."""
    parts = {
        "torchvision": {},
        "torchvision.transforms": {"GaussianBlur": _KorniaGaussianBlur},
        "torchvision.ops": {"MLP": _NoMLP},
    }
    added = []
    for name, attributes in parts.items():
        module = types.ModuleType(name, "parts of torchvision for cvvdp (hdrunet_pl.perceptual)")
        module.__dict__.update(attributes)
        sys.modules[name] = module
        added.append(name)
    sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
    sys.modules["torchvision"].ops = sys.modules["torchvision.ops"]
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


def import_pycvvdp() -> types.ModuleType:
    """Import ``pycvvdp`` (the ``cvvdp`` package), supplying torchvision's Gaussian blur by
    kornia when no torchvision is installed.

    Raises:
        ImportError: ``cvvdp`` is not installed (``make install`` installs it).
    """
    if "pycvvdp" in sys.modules:
        return sys.modules["pycvvdp"]
    if importlib.util.find_spec("pycvvdp") is None:
        raise ImportError(
            "the perceptual metrics need the cvvdp package: pip install --no-deps cvvdp "
            "(the version of the Makefile's CVVDP_SPEC; `make install` does it)"
        )
    if importlib.util.find_spec("torchvision") is not None:
        return importlib.import_module("pycvvdp")
    with _torchvision_parts():
        return importlib.import_module("pycvvdp")


def _ssim_class() -> type:
    """``cvvdp``'s SSIM on PU21-encoded luma (``ssim_metric``; not registered in its command
    line in 0.5.7, see :func:`main`)."""
    import_pycvvdp()
    from pycvvdp.ssim_metric import ssim_metric

    return ssim_metric


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 3 or pred.shape[0] != 3:
        raise ValueError(
            "expected two RGB images (3, H, W) of one shape, got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )


def to_display(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both non-linear HDR images (3, H, W), >= 0, as BT.709 linear RGB in cd/m2 on
    :data:`DISPLAY` (float32), scaled by the *target's* factor (see the module docstring)."""
    _check_pair(pred, target)
    ref = to_linear(target.double().clamp_min(0), GAMMA)
    res = to_linear(pred.double().clamp_min(0), GAMMA)
    norm = percentile(ref, NORM_PERCENTILE)
    if not norm > 0:
        raise ValueError(
            f"the reference's {NORM_PERCENTILE:g}th percentile is {float(norm)}: "
            "an all-black image has no luminance scale"
        )
    scale = REFERENCE_CD_M2 / norm
    return (res * scale).float(), (ref * scale).float()


class PerceptualScorer:
    """One of ``cvvdp``'s metrics on :data:`DISPLAY`, built once and reused (building
    ColorVideoVDP loads its tables).

    Args:
        name: ``"pu21_psnr"`` (dB), ``"pu21_ssim"`` (SSIM of PU21-encoded luma, <= 1) or
            ``"cvvdp"`` (ColorVideoVDP, JOD, <= 10).
        device: where ``cvvdp`` computes (CPU by default).
    """

    def __init__(self, name: str, device: str | torch.device = "cpu") -> None:
        if name not in PERCEPTUAL_METRICS:
            raise ValueError(f"unknown perceptual metric {name!r}; one of {PERCEPTUAL_METRICS}")
        pycvvdp = import_pycvvdp()
        self.name = name
        self.device = torch.device(device)
        # built as cvvdp's command line builds them: display models passed in, eval mode
        photometry = pycvvdp.vvdp_display_photometry.load(DISPLAY, config_paths=[])
        if name == "pu21_psnr":
            self.metric = pycvvdp.pu_psnr_y(display_photometry=photometry, device=self.device)
        elif name == "pu21_ssim":
            self.metric = _ssim_class()(display_photometry=photometry, device=self.device)
        else:
            geometry = pycvvdp.vvdp_display_geometry.load(DISPLAY, config_paths=[])
            self.metric = pycvvdp.cvvdp(
                display_photometry=photometry,
                display_geometry=geometry,
                device=self.device,
                quiet=True,
            )
        self.metric.train(False)
        self._source_class = pycvvdp.video_source.video_source_array

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Score one non-linear HDR image (3, H, W) against its reference: a 0-d tensor."""
        smallest = MIN_SIZE.get(self.name, 1)
        if pred.ndim == 3 and min(pred.shape[-2:]) < smallest:
            raise ValueError(
                f"{pred.shape[-2]}x{pred.shape[-1]} pixels is too small for {self.name} (its "
                f"filters need {smallest}x{smallest} or more); score it without {self.name}"
            )
        test, ref = to_display(pred, target)
        # vq_metric.predict would do this, but cvvdp 0.5.7's import order leaves the name
        # out of its module; the same class, reached directly
        source = self._source_class(
            test.to(self.device),
            ref.to(self.device),
            0,
            dim_order="CHW",
            display_photometry=self.metric.display_photometry,
        )
        with _without_units_warning():
            value, _ = self.metric.predict_video_source(source)
        return torch.as_tensor(value, dtype=torch.float64).reshape(())


UNITS_WARNING = "The mean color value is less than 1"
"""cvvdp's guess that an image is not in cd/m2 (its mean is <= 1): here images are put on
the display in cd/m2 by :func:`to_display`, and a dark scene's mean is rightly below 1."""


class _DropUnitsWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(UNITS_WARNING)


@contextlib.contextmanager
def _without_units_warning() -> Iterator[None]:
    """Leave out cvvdp's units warning (logged to the root logger once per image)."""
    drop, root = _DropUnitsWarning(), logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def main(argv: list[str] | None = None) -> int:
    """``cvvdp``'s own command line, importable without torchvision; its ``ssim_metric``
    (PU21-SSIM on HDR input), which 0.5.7 defines but does not list, is added as
    ``-m ssim-metric``."""
    import_pycvvdp()
    from pycvvdp import run_cvvdp
    from pycvvdp.vq_metric import register_metric

    register_metric(_ssim_class())  # offered as `-m ssim-metric`, like its PSNRs
    sys.argv = ["cvvdp", *(sys.argv[1:] if argv is None else argv)]
    try:
        return run_cvvdp.main() or 0
    except (OSError, ValueError, import_pycvvdp().vq_exception) as err:  # a bad file or option
        print(f"cvvdp: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
