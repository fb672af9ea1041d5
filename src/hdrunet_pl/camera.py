"""A camera model that turns linear HDR radiance into the noisy, clipped, quantised LDR input.

It follows the way the NTIRE 2021 LDR images were made from HDR frames: exposure (chosen so
that a share of pixels clips), Poisson-Gaussian sensor noise, clipping, a gamma response and
8-bit quantisation. The training target is the exposed scene in the non-linear domain,
``(exposure * linear) ** (1 / gamma)``, so that well-exposed regions of LDR and target agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hdrunet_pl.constants import GAMMA, LDR_LEVELS
from hdrunet_pl.tonemap import to_nonlinear


def exposure_for_clipping(linear: torch.Tensor, clip_fraction: float) -> torch.Tensor:
    """Exposure that makes ``clip_fraction`` of the pixels of (3, H, W) ``linear`` reach 1.

    A pixel counts as clipped when its brightest channel saturates.
    """
    if not 0 < clip_fraction < 1:
        raise ValueError(f"clip_fraction must be in (0, 1), got {clip_fraction}")
    brightest = linear.amax(dim=0).reshape(-1)
    k = max(1, min(brightest.numel(), round((1 - clip_fraction) * brightest.numel())))
    level = brightest.kthvalue(k).values.clamp_min(1e-8)
    return 1.0 / level


def capture(
    exposed: torch.Tensor,
    shot_noise: float,
    read_noise: float,
    generator: torch.Generator | None = None,
    gamma: float = GAMMA,
    levels: int = LDR_LEVELS,
) -> torch.Tensor:
    """Sensor and pipeline: noise, clipping, gamma response, quantisation.

    Args:
        exposed: (..., H, W) linear radiance already scaled by the exposure (1 = white).
        shot_noise: Poisson gain: the noise variance grows as ``shot_noise * exposed``.
        read_noise: standard deviation of the signal-independent Gaussian noise.
        generator: random source (for reproducible noise).

    Returns:
        LDR image of the same shape in [0, 1], on the grid ``k / levels``.
    """
    std = torch.sqrt(shot_noise * exposed.clamp_min(0) + read_noise**2)
    noise = torch.randn(exposed.shape, generator=generator, dtype=exposed.dtype) * std
    sensor = (exposed + noise).clamp(0.0, 1.0)
    return torch.round(to_nonlinear(sensor, gamma) * levels) / levels


@dataclass(frozen=True)
class CameraModel:
    """Random camera settings per image; ranges are (low, high), drawn uniformly.

    ``clip_fraction``: share of pixels that saturate; ``shot_noise`` and ``read_noise`` as in
    :func:`capture` (drawn log-uniformly).
    """

    clip_fraction: tuple[float, float] = (0.02, 0.12)
    shot_noise: tuple[float, float] = (2e-4, 4e-3)
    read_noise: tuple[float, float] = (5e-4, 4e-3)
    gamma: float = GAMMA

    def __post_init__(self) -> None:
        for name in ("clip_fraction", "shot_noise", "read_noise"):
            object.__setattr__(self, name, tuple(getattr(self, name)))  # lists from configs
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"camera {name} must satisfy 0 < low <= high, got {(low, high)}")
        if self.clip_fraction[1] >= 1:
            raise ValueError(f"camera clip_fraction must stay below 1, got {self.clip_fraction}")

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
        clip = self._uniform(self.clip_fraction, generator)
        shot = self._uniform(self.shot_noise, generator, log=True)
        read = self._uniform(self.read_noise, generator, log=True)
        exposed = linear * exposure_for_clipping(linear, clip)
        ldr = capture(exposed, shot, read, generator, gamma=self.gamma)
        return ldr, to_nonlinear(exposed, self.gamma)
