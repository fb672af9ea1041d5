"""A camera model that turns linear HDR radiance into the noisy, clipped, quantised LDR input.

It follows the way the NTIRE 2021 LDR images were made from HDR frames: exposure (chosen so
that a share of pixels clips), Poisson-Gaussian sensor noise, clipping, a camera response and
8-bit quantisation. The training target is the exposed scene in the non-linear domain,
``(exposure * linear) ** (1 / gamma)``, so that well-exposed regions of LDR and target agree.

Beyond the challenge's gamma response, the model can apply the sRGB curve or a phone-like
S-shaped tone curve, and JPEG compression, for photos that come from phones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real

import numpy as np
import torch

from hdrunet_pl.constants import GAMMA, LDR_LEVELS
from hdrunet_pl.tonemap import to_nonlinear

RESPONSES = ("gamma", "srgb", "s_curve")
"""Camera responses: the challenge's ``x ** (1 / gamma)``, the sRGB transfer curve, and the
sRGB curve followed by an S-shaped contrast curve (as phone pipelines apply)."""
CLIP_SAMPLING = ("uniform", "log")


MIN_LEVEL_RATIO = 1e-30
"""The clipping level is at least this fraction of the brightest pixel: a frame black but
for a few pixels is not multiplied past float32's range (the brightest stays <= 1e30)."""


def exposure_for_clipping(linear: torch.Tensor, clip_fraction: float) -> torch.Tensor:
    """Exposure that makes ``clip_fraction`` of the pixels of (3, H, W) ``linear`` reach 1.

    A pixel counts as clipped when its brightest channel saturates.
    """
    if not 0 < clip_fraction < 1:
        raise ValueError(f"clip_fraction must be in (0, 1), got {clip_fraction}")
    brightest = linear.amax(dim=0).reshape(-1)
    k = max(1, min(brightest.numel(), round((1 - clip_fraction) * brightest.numel())))
    # no fixed floor: a file in tiny units (1e-12) is captured as any other; the floor
    # relative to the brightest pixel keeps a mostly black frame's exposure finite
    level = brightest.kthvalue(k).values
    floor = (brightest.max() * MIN_LEVEL_RATIO).clamp_min(torch.finfo(brightest.dtype).tiny)
    return 1.0 / torch.maximum(level, floor)


def sensor(
    exposed: torch.Tensor,
    shot_noise: float,
    read_noise: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The sensor's linear reading: Poisson-Gaussian noise, then clipping to [0, 1].

    The noise variance is ``shot_noise * exposed + read_noise ** 2`` (the heteroscedastic
    Gaussian approximation of Poisson shot noise plus read noise). Clipping at 0 makes the
    mean of dark pixels biased upwards, as in a real camera's output.

    Args:
        exposed: (..., H, W) linear radiance scaled by the exposure (1 = white).
        shot_noise: Poisson gain (variance per unit of signal).
        read_noise: standard deviation of the signal-independent Gaussian noise.
        generator: random source (for reproducible noise).

    Returns:
        The same shape, linear, in [0, 1].
    """
    std = torch.sqrt(shot_noise * exposed.clamp_min(0) + read_noise**2)
    noise = torch.randn(exposed.shape, generator=generator, dtype=exposed.dtype) * std
    return (exposed + noise).clamp(0.0, 1.0)


def srgb_encode(linear: torch.Tensor) -> torch.Tensor:
    """The sRGB transfer curve (IEC 61966-2-1) on linear values in [0, 1]."""
    return torch.where(
        linear <= 0.0031308,
        12.92 * linear,
        1.055 * linear.clamp_min(0.0031308) ** (1 / 2.4) - 0.055,
    )


def s_curve(x: torch.Tensor, strength: float) -> torch.Tensor:
    """An S-shaped contrast curve on [0, 1] that keeps 0, 1/2 and 1 fixed.

    ``strength`` in [0, 0.5]: 0 is the identity; the slope is ``1 + strength`` at 1/2 and
    ``1 - 2 * strength`` at 0 and 1 (so the curve stays increasing).
    """
    return x + 2 * strength * x * (1 - x) * (2 * x - 1)


def respond(
    linear: torch.Tensor, response: str = "gamma", gamma: float = GAMMA, strength: float = 0.0
) -> torch.Tensor:
    """A camera response (see ``RESPONSES``) applied to linear values in [0, 1]."""
    if response == "gamma":
        return to_nonlinear(linear, gamma)
    if response == "srgb":
        return srgb_encode(linear)
    if response == "s_curve":
        return s_curve(srgb_encode(linear), strength)
    raise ValueError(f"response must be one of {RESPONSES}, got {response!r}")


def quantise(x: torch.Tensor, levels: int = LDR_LEVELS) -> torch.Tensor:
    """Rounds values in [0, 1] to the grid ``k / levels`` (8-bit codes by default)."""
    return torch.round(x.clamp(0.0, 1.0) * levels) / levels


def jpeg(ldr: torch.Tensor, quality: int) -> torch.Tensor:
    """(3, H, W) 8-bit LDR in [0, 1] through a JPEG encoder and decoder (OpenCV's libjpeg)."""
    import cv2

    image = (ldr.permute(1, 2, 0).numpy() * LDR_LEVELS).round().astype(np.uint8)
    ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]
    return torch.from_numpy(decoded.copy()).permute(2, 0, 1).to(ldr.dtype) / LDR_LEVELS


def capture(
    exposed: torch.Tensor,
    shot_noise: float,
    read_noise: float,
    generator: torch.Generator | None = None,
    gamma: float = GAMMA,
    levels: int = LDR_LEVELS,
) -> torch.Tensor:
    """Sensor and pipeline of the challenge: noise, clipping, gamma response, quantisation.

    Args:
        exposed: (..., H, W) linear radiance already scaled by the exposure (1 = white).
        shot_noise, read_noise, generator: as in :func:`sensor`.

    Returns:
        LDR image of the same shape in [0, 1], on the grid ``k / levels``.
    """
    reading = sensor(exposed, shot_noise, read_noise, generator)
    return quantise(to_nonlinear(reading, gamma), levels)


def _is_pair(value: object, kind: type) -> bool:
    """``value`` is two numbers of ``kind`` (a list or tuple, from a config or Python; not a
    string, and no booleans, which Python counts as numbers)."""
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 2
        and all(isinstance(v, kind) and not isinstance(v, bool) for v in value)
    )


@dataclass(frozen=True)
class CameraModel:
    """Random camera settings per image; ranges are (low, high).

    ``clip_fraction``: share of pixels that saturate, drawn uniformly (``clip_sampling:
    log``: log-uniformly, to span heavily under- to over-exposed captures evenly);
    ``shot_noise`` and ``read_noise`` as in :func:`sensor` (drawn log-uniformly);
    ``response``: see ``RESPONSES`` (``s_curve_strength``: its range); ``jpeg_quality``:
    ``None`` (no compression) or the range of JPEG qualities (drawn uniformly).
    """

    clip_fraction: tuple[float, float] = (0.02, 0.12)
    shot_noise: tuple[float, float] = (2e-4, 4e-3)
    read_noise: tuple[float, float] = (5e-4, 4e-3)
    gamma: float = GAMMA
    clip_sampling: str = "uniform"
    response: str = "gamma"
    s_curve_strength: tuple[float, float] = (0.1, 0.4)
    jpeg_quality: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        for name in ("clip_fraction", "shot_noise", "read_noise", "s_curve_strength"):
            given = getattr(self, name)
            if not _is_pair(given, Real):
                raise ValueError(f"camera {name} must be a range [low, high], got {given!r}")
            object.__setattr__(self, name, tuple(given))  # lists from configs
            low, high = getattr(self, name)
            if not 0 < low <= high < math.inf:
                raise ValueError(
                    f"camera {name} must satisfy 0 < low <= high < inf, got {(low, high)}"
                )
        if self.clip_fraction[1] >= 1:
            raise ValueError(f"camera clip_fraction must stay below 1, got {self.clip_fraction}")
        if self.s_curve_strength[1] > 0.5:
            raise ValueError(
                f"camera s_curve_strength must stay within 0.5, got {self.s_curve_strength}"
            )
        if self.clip_sampling not in CLIP_SAMPLING:
            raise ValueError(
                f"camera clip_sampling must be one of {CLIP_SAMPLING}, got {self.clip_sampling!r}"
            )
        if self.response not in RESPONSES:
            raise ValueError(f"camera response must be one of {RESPONSES}, got {self.response!r}")
        if self.jpeg_quality is not None:
            quality = tuple(self.jpeg_quality) if _is_pair(self.jpeg_quality, int) else ()
            if len(quality) != 2 or not 1 <= quality[0] <= quality[1] <= 100:
                raise ValueError(
                    f"camera jpeg_quality must be null or [low, high] within 1..100, "
                    f"got {self.jpeg_quality}"
                )
            object.__setattr__(self, "jpeg_quality", quality)

    @staticmethod
    def _uniform(
        bounds: tuple[float, float], generator: torch.Generator, log: bool = False
    ) -> float:
        u = torch.rand((), generator=generator).item()
        low, high = bounds
        if log:
            return float(low * (high / low) ** u)
        return float(low + (high - low) * u)

    def __call__(
        self, linear: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(3, H, W) linear HDR -> (LDR in [0, 1], non-linear HDR target >= 0), both (3, H, W)."""
        clip = self._uniform(self.clip_fraction, generator, log=self.clip_sampling == "log")
        shot = self._uniform(self.shot_noise, generator, log=True)
        read = self._uniform(self.read_noise, generator, log=True)
        exposed = linear * exposure_for_clipping(linear, clip)
        reading = sensor(exposed, shot, read, generator)
        strength = 0.0
        if self.response == "s_curve":
            strength = self._uniform(self.s_curve_strength, generator)
        ldr = quantise(respond(reading, self.response, self.gamma, strength))
        if self.jpeg_quality is not None:
            ldr = jpeg(ldr, round(self._uniform(self.jpeg_quality, generator)))
        return ldr, to_nonlinear(exposed, self.gamma)
