"""Inference on images of any size: devices, precision and overlapping tiles.

HDRUNet's receptive field is about 190 pixels wide (radius ``RECEPTIVE_RADIUS``): an output
pixel depends on the input up to ~95 pixels away. Tiles therefore overlap by
``DEFAULT_OVERLAP`` pixels; each tile's contribution is zero within ``RECEPTIVE_RADIUS`` of
an inner edge and ramps linearly across a ``BLEND`` band in the middle of the overlap, so
the stitched result equals whole-image inference up to rounding. A network with image-wide
features (ExpandNet's global branch, HDRUNet's channel modulation: a ``global_features``
method and a ``global_features=`` argument of ``forward``) computes them once from the
whole image and gives them to every tile, so that its tiles also stitch to the whole-image
result.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from hdrunet_pl.errors import HDRUNetError
from hdrunet_pl.models.fusion import fuse_conv_activations, fused_conv_available
from hdrunet_pl.models.hdrunet import SCALE_FACTOR, HDRUNet
from hdrunet_pl.runtime import keep_freed_memory

log = logging.getLogger(__name__)

RECEPTIVE_RADIUS = 96
"""Pixels beyond which an input change cannot reach an output pixel (measured: 92-93)."""
BLEND = 32
"""Width of the linear cross-fade between neighbouring tiles."""
DEFAULT_OVERLAP = 2 * RECEPTIVE_RADIUS + BLEND
BYTES_PER_PIXEL = {torch.float32: (140, 36), torch.bfloat16: (140, 19), torch.float16: (140, 19)}
"""Peak inference memory per pixel, ``(fixed, per feature channel)``: ``fixed + nf *
per_channel`` bytes, measured on CPU (channels_last, whole images, a fresh process's first
call). fp32: 4.64 GB above the process's start for a 1060x1900 frame at nf 64 (2,300 bytes
a pixel; 2,200-2,700 at 1-3 megapixels), and 360-376, 712-729 and 1,177-1,304 bytes a pixel
at nf 8, 16 and 32 (1-6 megapixels): a part that does not scale with nf (the 3-channel
images and the allocator's fragmentation). bf16 (AVX-512 bf16 machines, nf 64): 2.6 GB for
that frame, 4.15 GB for 1748-pixel tiles of a 24-megapixel photo (1,356 bytes a pixel). A
GPU needs less."""
MEMORY_VS_HDRUNET = {"expandnet": 1.35}
"""Peak inference memory of a network (by its config's ``arch``) relative to HDRUNet's at
the same nf (ExpandNet: 1.2-1.35x, measured on CPU in fp32 at 0.25 and 1 megapixel)."""
PRECISIONS = ("auto", "32", "bf16", "16")
IMAGE_BUFFERS = 11
"""Whole-image float32 RGB buffers alive besides the activations (counted in the budget):
measured with hdrunet-predict on a 24-megapixel JPEG written as EXR in 512-pixel tiles,
3.12 GB above the start beyond the tiles' activations (decoding, the input, the blended
output, its linear copy and the written file read back)."""


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA if present, else CPU; otherwise any ``torch.device`` string.

    Raises:
        HDRUNetError: an unknown device, or a CUDA device that this machine cannot use.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise HDRUNetError(
            f"device={device}: not a device; use auto, cpu, cuda or cuda:N"
        ) from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            build = "has no CUDA support" if torch.version.cuda is None else "sees no GPU"
            raise HDRUNetError(
                f"device={device}: this torch build ({torch.__version__}) {build}; use "
                "device=cpu, or on a GPU machine install a CUDA build of torch (see README)"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise HDRUNetError(
                f"device={device}: only {torch.cuda.device_count()} GPU(s) are visible"
            )
    elif resolved.type != "cpu":
        raise HDRUNetError(f"device={device}: not supported; use auto, cpu, cuda or cuda:N")
    return resolved


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 convolutions are fast on ``device`` (AVX-512 bf16/AMX CPUs, Ampere+ GPUs)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.cpu._is_avx512_bf16_supported())
    return False


def fp32_channels_last_faster(device: torch.device) -> bool:
    """Whether fp32 convolutions run faster channels_last than NCHW on ``device``.

    True on CPUs whose PyTorch kernels run with AVX-512 (an fp32 training step of batch 4,
    patch 160: 1.52 s channels_last against 2.30 s NCHW on a 2-core Xeon), False on AVX2-only
    CPUs (3.16 s against 2.34 s there, on a 2-core EPYC), on GPUs (fp32 not measured) and
    without oneDNN. Both measured alternately in one process.
    """
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def resolve_dtype(precision: str | int, device: torch.device) -> torch.dtype:
    """``auto`` -> bf16 where supported, else fp32; ``32``, ``bf16``, ``16`` as named."""
    precision = str(precision)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return torch.bfloat16 if bf16_supported(device) else torch.float32
    return {"32": torch.float32, "bf16": torch.bfloat16, "16": torch.float16}[precision]


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets (multiples of 4) of tiles of ``tile`` pixels covering ``size`` pixels.

    Neighbouring tiles overlap by at least ``overlap``; the last tile ends at ``size`` (it
    may be up to 3 pixels longer than ``tile`` to keep its start a multiple of 4).
    """
    if tile >= size:
        return [0]
    step = (tile - overlap) // SCALE_FACTOR * SCALE_FACTOR
    if step <= 0:
        raise ValueError(f"tile ({tile}) must exceed overlap ({overlap}) by at least 4 pixels")
    last = (size - tile) // SCALE_FACTOR * SCALE_FACTOR
    starts = list(range(0, last, step))
    return [*starts, last]


def _ramp(length: int, lead: int, trail: int, blend: int) -> torch.Tensor:
    """1-D tile weights: 0 near an inner edge, a linear ramp across ``blend``, then 1."""
    d = torch.arange(length, dtype=torch.float64) + 0.5
    w = torch.ones(length, dtype=torch.float64)
    if lead:
        start = (lead - blend) / 2
        w = w * ((d - start) / blend).clamp(0, 1)
    if trail:
        start = (trail - blend) / 2
        w = w * (((length - d) - start) / blend).clamp(0, 1)
    return w


@dataclass(frozen=True)
class Tile:
    """One tile: the input window ``[top:bottom, left:right]`` and its blend weights."""

    top: int
    bottom: int
    left: int
    right: int
    weight: torch.Tensor  # (bottom - top, right - left), float64


def plan_tiles(height: int, width: int, tile: int, overlap: int, blend: int = BLEND) -> list[Tile]:
    """Tiles covering a ``height x width`` image; their weights sum to 1 at every pixel."""
    blend = max(1, min(blend, overlap))

    def spans(size: int) -> list[tuple[int, int, torch.Tensor]]:
        starts = tile_starts(size, tile, overlap)
        ends = [size if i == len(starts) - 1 else s + tile for i, s in enumerate(starts)]
        out = []
        for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
            lead = ends[i - 1] - s if i > 0 else 0
            trail = e - starts[i + 1] if i + 1 < len(starts) else 0
            out.append((s, e, _ramp(e - s, lead, trail, blend)))
        return out

    return [
        Tile(top, bottom, left, right, wy[:, None] * wx[None, :])
        for top, bottom, wy in spans(height)
        for left, right, wx in spans(width)
    ]


def fused_network(
    model: nn.Module, memory_format: torch.memory_format = torch.channels_last
) -> nn.Module | None:
    """``model`` (an ``HDRUNet`` in eval mode, on the CPU) with each convolution's ReLU /
    LeakyReLU computed inside the convolution (:mod:`hdrunet_pl.models.fusion`), for its
    forward without ``cond`` or ``global_features``; ``None`` for other networks or where
    this torch build lacks the fused operator.

    The fused network is checked against ``model`` on a small float32 image before use, and
    not used (with a line in the log) unless the two agree bit for bit.
    """
    if not isinstance(model, HDRUNet) or not fused_conv_available():
        return None
    fused = fuse_conv_activations(model, concrete_args={"cond": None, "global_features": None})
    generator = torch.Generator().manual_seed(0)
    # a batch of two: every convolution runs through oneDNN, fused and unfused alike
    probe = torch.rand(2, model.config.in_ch, 20, 28, generator=generator)
    probe = probe.contiguous(memory_format=memory_format)
    with torch.inference_mode():
        fused(probe), model(probe)  # a first call may round differently from later ones
        agree = torch.equal(fused(probe), model(probe))
    if not agree:  # nothing for a user to do: said, not warned
        log.info(
            "torch %s's fused convolution + activation differs from the network as written; "
            "running it unfused",
            torch.__version__,
        )
        return None
    return fused


class NonFiniteOutputError(HDRUNetError):
    """The network's output holds NaN or Inf values."""


class Predictor:
    """Runs an HDRUNet on LDR images of any size, tiling when an image exceeds a budget.

    Args:
        model: the network (``HDRUNet`` or any module mapping LDR to non-linear HDR).
        device: ``auto`` (CUDA if present), ``cpu``, ``cuda``, ``cuda:1``, ...
        precision: ``auto`` (bf16 where fast, else fp32), ``32``, ``bf16`` or ``16``.
        tile: tile side in pixels; ``None`` tiles only images over ``memory_gb``, ``0``
            never tiles.
        overlap: pixels shared by neighbouring tiles (default: exact stitching).
        memory_gb: activation memory budget that decides automatic tiling.
        tile_batch: tiles run together in one batch.
        compile: ``torch.compile`` the model (compiled on the first call).
    """

    def __init__(
        self,
        model: nn.Module,
        device: str = "auto",
        precision: str | int = "auto",
        tile: int | None = None,
        overlap: int = DEFAULT_OVERLAP,
        memory_gb: float = 5.0,
        tile_batch: int = 1,
        compile: bool = False,
    ) -> None:
        if tile is not None and tile < 0:
            raise ValueError(f"tile must be >= 0 (0: never tile), got {tile}")
        if overlap < 0 or tile_batch < 1 or memory_gb <= 0:
            raise ValueError("need overlap >= 0, tile_batch >= 1 and memory_gb > 0")
        if tile and (tile - overlap) // SCALE_FACTOR < 1:  # before any image, not at a large one
            raise ValueError(
                f"tile ({tile}) must exceed overlap ({overlap}) by at least {SCALE_FACTOR} "
                f"pixels: give tile={max(2 * overlap, overlap + SCALE_FACTOR)} or more (smaller "
                "tiles than twice the overlap compute each pixel many times over), or a "
                "smaller overlap"
            )
        if tile and (tile / (tile - overlap)) ** 2 > 4:
            log.warning(
                "tile=%d with overlap=%d computes each pixel of an image larger than a tile "
                "about %.0f times over (that much slower than whole, or more: each tile adds "
                "its own overhead); tile=%d or more computes it at most 4 times",
                tile,
                overlap,
                (tile / ((tile - overlap) // SCALE_FACTOR * SCALE_FACTOR)) ** 2,
                2 * overlap,
            )
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(precision, self.device)
        if self.device.type == "cpu":
            keep_freed_memory()
        # channels_last: oneDNN's fast bf16 path on CPUs; on an H100, NCHW bf16 inference was
        # faster (35 vs 43 ms a 1060x1900 frame, one measurement)
        self.memory_format = (
            torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        )
        self.model = model.eval().to(self.device, memory_format=self.memory_format)
        if isinstance(model, HDRUNet) and overlap < DEFAULT_OVERLAP and tile != 0:
            log.warning(
                "overlap=%d is below the %d pixels that HDRUNet's receptive field and the "
                "blend band need: where an image is tiled, pixels near the seams differ from "
                "the whole-image result",
                overlap,
                DEFAULT_OVERLAP,
            )
        # the network as run: on CPUs with each convolution's activation fused into it
        # (without image-wide features; the same numbers in fp32), else the model itself
        self.fused = None
        if compile:
            self.model.compile()
        elif self.device.type == "cpu":
            self.fused = fused_network(self.model, self.memory_format)
        self.tile = tile
        self.overlap = overlap
        self.memory_gb = memory_gb
        self.tile_batch = tile_batch
        config = getattr(model, "config", None)
        self.nf = getattr(config, "nf", 64)
        self.memory_factor = MEMORY_VS_HDRUNET.get(getattr(config, "arch", "hdrunet"), 1.0)

    @property
    def network(self) -> nn.Module:
        """What runs an image (without image-wide features): ``fused`` where there is one,
        else ``model``."""
        return self.fused if self.fused is not None else self.model

    def bytes_per_pixel(self) -> int:
        """Estimated peak activation memory per input pixel (see :data:`BYTES_PER_PIXEL`)."""
        fixed, per_channel = BYTES_PER_PIXEL[self.dtype]
        return round((fixed + per_channel * self.nf) * self.memory_factor)

    def auto_tile(self, height: int, width: int) -> int:
        """The tile side used for an image: 0 (whole image) if it fits the budget."""
        if self.tile is not None:
            return 0 if self.tile == 0 or self.tile >= max(height, width) else self.tile
        # the whole image's own float32 buffers (input, output, blend weights, file writing)
        # come out of the same budget
        image_bytes = IMAGE_BUFFERS * 3 * 4 * height * width
        activation_bytes = max(self.memory_gb * 2**30 - image_bytes, 0)
        budget_pixels = activation_bytes / self.bytes_per_pixel() / self.tile_batch
        if height * width <= budget_pixels:
            return 0
        side = int(math.sqrt(budget_pixels)) // SCALE_FACTOR * SCALE_FACTOR
        # smaller tiles would compute each pixel more than 4 times over (tile = 2 overlaps)
        smallest = max(2 * self.overlap, self.overlap + 4 * SCALE_FACTOR)
        if side < smallest:
            log.warning(
                "a %dx%d image needs more than memory_gb=%g in %d-pixel tiles (smaller ones "
                "would compute each pixel many times over); give memory_gb=%g or more to "
                "stay within the budget",
                height,
                width,
                self.memory_gb,
                smallest,
                math.ceil(
                    (image_bytes + smallest**2 * self.bytes_per_pixel() * self.tile_batch) / 2**30
                ),
            )
        return max(side, smallest)

    def _autocast(self):
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _run(self, batch: torch.Tensor, **features: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device).contiguous(memory_format=self.memory_format)
        network = self.model if features else self.network
        with self._autocast():
            return network(batch, **features).float()

    @torch.inference_mode()
    def __call__(self, ldr: torch.Tensor) -> torch.Tensor:
        """(3, H, W) or (B, 3, H, W) LDR in [0, 1] -> float32 non-linear HDR on the CPU."""
        single = ldr.ndim == 3
        batch = ldr[None] if single else ldr
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected (3, H, W) or (B, 3, H, W), got {tuple(ldr.shape)}")
        batch = batch.float()
        tile = self.auto_tile(*batch.shape[-2:])
        out = self._run(batch).cpu() if tile == 0 else self._tiled(batch, tile)
        bad = int(out.numel() - torch.isfinite(out).sum())
        if bad:  # no score or file may be made of it (a cast to uint16 would hide it)
            hint = "" if self.dtype == torch.float32 else "; in float32 (precision=32)?"
            raise NonFiniteOutputError(
                f"the network's output has {bad:,} NaN/Inf values of {out.numel():,}: its "
                f"weights are broken (a diverged run?){hint}"
            )
        return out[0] if single else out

    def _tiled(self, batch: torch.Tensor, tile: int) -> torch.Tensor:
        whole_image = getattr(self.model, "global_features", None)
        features = None
        if whole_image is not None:
            with self._autocast():  # (B, C, 1, 1), of the whole image, for each of its tiles
                features = whole_image(
                    batch.to(self.device).contiguous(memory_format=self.memory_format),
                    max_pixels=tile * tile * self.tile_batch,
                )
        if features is None:
            return tiled_forward(
                lambda x: self._run(x).cpu(), batch, tile, self.overlap, self.tile_batch
            )
        images = batch.shape[0]  # tiles come as (tiles * B, 3, h, w), tile by tile

        def run(x: torch.Tensor) -> torch.Tensor:
            repeated = features.repeat(x.shape[0] // images, 1, 1, 1)
            return self._run(x, global_features=repeated).cpu()

        return tiled_forward(run, batch, tile, self.overlap, self.tile_batch)


def tiled_forward(
    run: Callable[[torch.Tensor], torch.Tensor],
    batch: torch.Tensor,
    tile: int,
    overlap: int = DEFAULT_OVERLAP,
    tile_batch: int = 1,
    blend: int = BLEND,
) -> torch.Tensor:
    """``run`` applied to overlapping tiles of ``batch`` and blended back together.

    Args:
        run: maps a (N, 3, h, w) crop to a (N, 3, h, w) output on ``batch``'s device.
        batch: (B, 3, H, W) input; the result has its dtype (float64 stays float64).
        tile: tile side in pixels; ``overlap``: pixels shared by neighbouring tiles.
        tile_batch: tiles of equal size given to ``run`` together (in one batch).

    Returns:
        (B, 3, H, W): equal to ``run(batch)`` up to rounding when ``overlap`` covers the
        receptive field (``DEFAULT_OVERLAP``).
    """
    b, c, h, w = batch.shape
    out = torch.zeros(b, c, h, w, dtype=batch.dtype)
    total = torch.zeros(h, w, dtype=batch.dtype)
    for group in _chunks(plan_tiles(h, w, tile, overlap, blend), tile_batch):
        crops = [batch[:, :, t.top : t.bottom, t.left : t.right] for t in group]
        if len({x.shape for x in crops}) == 1:
            preds = run(torch.cat(crops)).split(b)
        else:
            preds = [run(x) for x in crops]
        for t, pred in zip(group, preds, strict=True):
            weight = t.weight.to(batch.dtype)
            out[:, :, t.top : t.bottom, t.left : t.right] += pred.to(batch.dtype) * weight
            total[t.top : t.bottom, t.left : t.right] += weight
    return out.div_(total)  # in place: one whole-image buffer fewer


def _chunks(items: list[Tile], size: int) -> Iterator[list[Tile]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
