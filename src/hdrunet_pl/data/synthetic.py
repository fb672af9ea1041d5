"""Procedural linear HDR scenes, made on the fly and deterministic by seed.

A scene is textured surfaces with hard-edged objects under uneven light, cast shadows,
a bright sky and a few light sources. Relative to the shadows, the sky is about 100x and
the emitters 1,000-10,000x brighter, so that any exposure clips somewhere or buries
something in noise, as in real HDR frames.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from hdrunet_pl.camera import CameraModel
from hdrunet_pl.data.sampling import SampleKey, split_key


def _rand(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(shape, generator=generator)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def value_noise(
    height: int, width: int, generator: torch.Generator, octaves: int = 5
) -> torch.Tensor:
    """Multi-octave smooth noise, (1, H, W) in [0, 1]."""
    out = torch.zeros(1, 1, height, width)
    total = 0.0
    for octave in range(octaves):
        cells = 2 ** (octave + 1)
        grid = _rand(generator, 1, 1, cells + 1, cells + 1)
        amp = 0.55**octave
        out += amp * F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=True)
        total += amp
    out = out[0] / total
    return (out - out.min()) / (out.max() - out.min()).clamp_min(1e-6)


def _colour(generator: torch.Generator, low: float, high: float) -> torch.Tensor:
    """A random RGB colour, (3, 1, 1), each channel in [low, high]."""
    return (low + (high - low) * _rand(generator, 3)).view(3, 1, 1)


def render_scene(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """Render one linear HDR scene, (3, H, W) float32, > 0, shadows around 0.01-0.05."""
    ys = torch.linspace(0, 1, height).view(height, 1).expand(height, width)
    xs = torch.linspace(0, 1, width).view(1, width).expand(height, width)

    # Reflectance: a textured background and hard-edged objects, some striped.
    albedo = _colour(generator, 0.2, 0.8) * (0.4 + 0.6 * value_noise(height, width, generator))
    for _ in range(int(_uniform(generator, 4, 12))):
        cy, cx = _uniform(generator, 0, 1), _uniform(generator, 0, 1)
        ry, rx = _uniform(generator, 0.04, 0.3), _uniform(generator, 0.04, 0.3)
        if torch.rand((), generator=generator) < 0.5:
            mask = ((ys - cy).abs() < ry) & ((xs - cx).abs() < rx)
        else:
            mask = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 < 1
        colour = _colour(generator, 0.03, 0.95)
        if torch.rand((), generator=generator) < 0.4:
            freq, angle = _uniform(generator, 10, 60), _uniform(generator, 0, math.pi)
            phase = xs * math.cos(angle) + ys * math.sin(angle)
            colour = colour * (0.6 + 0.4 * torch.sign(torch.sin(2 * math.pi * freq * phase)))
        albedo = torch.where(mask, colour.expand(3, height, width), albedo)

    # Illumination: a smooth gradient, darkened by a hard-edged cast shadow.
    light = 0.5 + 1.5 * value_noise(height, width, generator, octaves=2)
    angle = _uniform(generator, 0, 2 * math.pi)
    offset = _uniform(generator, -0.3, 0.3)
    side = (xs - 0.5) * math.cos(angle) + (ys - 0.5) * math.sin(angle) > offset
    light = torch.where(side, light * _uniform(generator, 0.02, 0.1), light)
    radiance = albedo * light

    # Sky above a (tilted) horizon: 4-40x the lit surfaces (about 100-2,000x the shadows).
    if torch.rand((), generator=generator) < 0.7:
        horizon = _uniform(generator, 0.15, 0.5) + _uniform(generator, -0.2, 0.2) * (xs - 0.5)
        sky_level = _uniform(generator, 4, 40)
        sky = (
            _colour(generator, 0.6, 1.0) * sky_level * (0.5 + value_noise(height, width, generator))
        )
        radiance = torch.where(ys < horizon, sky, radiance)

    # Emitters: small lamps 1,000-10,000x the shadows with a soft glow.
    for _ in range(int(_uniform(generator, 1, 5))):
        cy, cx = _uniform(generator, 0, 1), _uniform(generator, 0, 1)
        r = _uniform(generator, 0.01, 0.06)
        dist2 = ((ys - cy) ** 2 + (xs - cx) ** 2) / r**2
        level = 10 ** _uniform(generator, 1.3, 2.5)
        lamp = _colour(generator, 0.7, 1.0) * level
        radiance = radiance + lamp * (torch.exp(-dist2 / 4) * 0.1 + (dist2 < 1).float())
    return radiance.float().clamp_min(1e-6)


def scene_generator(seed: int, index: int) -> torch.Generator:
    """An independent, reproducible random stream for scene ``index`` of data set ``seed``."""
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class SyntheticHDRDataset(Dataset):
    """``num_images`` procedural scenes of ``height x width``, captured by a :class:`CameraModel`.

    Item ``i`` is the same for a given ``seed`` in every process and epoch:
    ``{"ldr": (3, H, W) in [0, 1], "hdr": (3, H, W) non-linear >= 0, "name": str}``.
    """

    def __init__(
        self,
        num_images: int = 1000,
        height: int = 256,
        width: int | None = None,
        seed: int = 0,
        camera: CameraModel | None = None,
    ) -> None:
        if num_images < 1 or height < 4 or (width is not None and width < 4):
            raise ValueError(
                f"need num_images >= 1 and sizes >= 4, got {num_images}, {height}x{width}"
            )
        self.num_images = num_images
        self.height = height
        self.width = width or height
        self.seed = seed
        self.camera = camera or CameraModel()

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, key: SampleKey) -> dict[str, torch.Tensor | str]:
        index, _ = split_key(key)  # the scene is fixed by its index alone
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        generator = scene_generator(self.seed, index)
        linear = render_scene(self.height, self.width, generator)
        ldr, hdr = self.camera(linear, generator)
        return {"ldr": ldr, "hdr": hdr, "name": f"synthetic_{self.seed}_{index:06d}"}
