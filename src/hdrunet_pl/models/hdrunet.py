"""HDRUNet (Chen et al., CVPR 2021 Workshops) and the ablation variants its paper reports.

Shapes: the LDR input is (B, 3, H, W) in [0, 1]; the output is the non-linear HDR image
(B, 3, H, W), >= 0 in principle, unbounded above. Any H, W works: the input is padded to a
multiple of 4 (the two stride-2 stages) and the output cropped back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import kornia
import torch
import torch.nn.functional as F
from torch import fx, nn

from hdrunet_pl.models.blocks import (
    MODULATIONS,
    ModulatedTrunk,
    conv1x1,
    conv3x3,
    make_modulation,
    num_parameters,
    upsample2x,
)

CONDITIONS = ("image", "gradient")
SCALE_FACTOR = 4  # two stride-2 downsamplings
# input rows beyond a band of rows that the band's condition maps depend on: a 1/4
# resolution row k sees input rows 4k-4 .. 4k+4 (a multiple of SCALE_FACTOR keeps the
# strides aligned)
CONDITION_MARGIN = 4
CONDITION_STRIDES = (1, 2, SCALE_FACTOR)  # the condition maps' resolutions: full, 1/2, 1/4


def check_inputs(ldr: torch.Tensor, cond: torch.Tensor | None, in_ch: int) -> None:
    """Refuse an ``ldr`` that is not (B, in_ch, H, W), or a ``cond`` of another shape."""
    if ldr.ndim != 4 or ldr.shape[1] != in_ch:
        raise ValueError(f"expected ldr of shape (B, {in_ch}, H, W), got {tuple(ldr.shape)}")
    if cond is not None and cond.shape != ldr.shape:
        raise ValueError(f"cond shape {tuple(cond.shape)} != ldr shape {tuple(ldr.shape)}")


def sobel_magnitude(image: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude per channel (kornia): (B, C, H, W) -> (B, C, H, W), >= 0."""
    return kornia.filters.sobel(image)


# graph tracing (models.fusion) keeps these two as calls: one checks shapes, the other is
# kornia's, which checks its input's type
fx.wrap("check_inputs")
fx.wrap("sobel_magnitude")


@dataclass(frozen=True)
class HDRUNetConfig:
    """Everything needed to rebuild an :class:`HDRUNet` (stored in checkpoints)."""

    nf: int = 64
    modulation: str = "sft"
    use_condition: bool = True
    use_weighting: bool = True
    condition: str = "image"
    in_ch: int = 3


class WeightingNet(nn.Module):
    """Per-pixel weight map ``W`` of ``Y = W * I + G``: (B, 3, H, W) -> (B, 3, H, W)."""

    def __init__(self, nf: int = 64, in_ch: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(in_ch, nf),
            nn.ReLU(inplace=True),
            conv3x3(nf, nf),
            nn.ReLU(inplace=True),
            conv1x1(nf, nf),
            nn.ReLU(inplace=True),
            conv1x1(nf, in_ch),
        )

    def forward(self, ldr: torch.Tensor) -> torch.Tensor:
        return self.body(ldr)


class ConditionNet(nn.Module):
    """Condition maps at full, 1/2 and 1/4 resolution from the condition image.

    (B, 3, H, W) -> three maps (B, nf/2, H, W), (B, nf/2, H/2, W/2), (B, nf/2, H/4, W/4).
    """

    def __init__(self, nf: int = 64, in_ch: int = 3) -> None:
        super().__init__()
        cond_nf = nf // 2

        def lrelu() -> nn.LeakyReLU:
            return nn.LeakyReLU(0.1, inplace=True)

        self.stem = nn.Sequential(
            conv3x3(in_ch, nf), lrelu(), conv1x1(nf, nf), lrelu(), conv1x1(nf, nf), lrelu()
        )
        self.head_full = nn.Sequential(conv1x1(nf, nf), lrelu(), conv1x1(nf, cond_nf))
        self.head_half = nn.Sequential(conv3x3(nf, nf, stride=2), lrelu(), conv1x1(nf, cond_nf))
        self.head_quarter = nn.Sequential(
            conv3x3(nf, nf, stride=2), lrelu(), conv3x3(nf, cond_nf, stride=2)
        )

    def forward(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feat = self.stem(cond)
        return self.head_full(feat), self.head_half(feat), self.head_quarter(feat)


class HDRUNet(nn.Module):
    """Single-image HDR reconstruction with denoising and dequantization.

    Args:
        nf: feature width (64 in the paper; 1,651,494 parameters).
        modulation: ``"sft"`` (spatial feature transform, the paper's), ``"channel"``
            (global channel-wise scale and shift) or ``"none"``.
        use_condition: build the condition network. Without it (or with
            ``modulation="none"``) the base network runs unmodulated.
        use_weighting: build the weighting network; without it ``Y = I + G``.
        condition: what the condition network sees: the LDR ``"image"`` or its Sobel
            ``"gradient"`` magnitude (computed on the fly with kornia).
        in_ch: image channels.
    """

    def __init__(
        self,
        nf: int = 64,
        modulation: str = "sft",
        use_condition: bool = True,
        use_weighting: bool = True,
        condition: str = "image",
        in_ch: int = 3,
    ) -> None:
        super().__init__()
        if modulation not in MODULATIONS:
            raise ValueError(f"unknown modulation {modulation!r}; choose one of {MODULATIONS}")
        if condition not in CONDITIONS:
            raise ValueError(f"unknown condition {condition!r}; choose one of {CONDITIONS}")
        if nf < 2 or nf % 2:
            raise ValueError(f"nf must be an even number >= 2, got {nf}")
        self.config = HDRUNetConfig(nf, modulation, use_condition, use_weighting, condition, in_ch)
        modulated = use_condition and modulation != "none"
        mod = modulation if modulated else "none"
        cond_nf = nf // 2

        self.weighting = WeightingNet(nf, in_ch) if use_weighting else None
        self.condition = ConditionNet(nf, in_ch) if modulated else None

        self.conv_first = conv3x3(in_ch, nf)
        self.mod_first = make_modulation(mod, nf, cond_nf)
        self.hr_conv1 = conv3x3(nf, nf)
        self.down1 = conv3x3(nf, nf, stride=2)
        self.trunk_half1 = ModulatedTrunk(2, nf, cond_nf, mod)
        self.down2 = conv3x3(nf, nf, stride=2)
        self.trunk_quarter = ModulatedTrunk(8, nf, cond_nf, mod)
        self.up1 = upsample2x(nf)
        self.trunk_half2 = ModulatedTrunk(2, nf, cond_nf, mod)
        self.up2 = upsample2x(nf)
        self.mod_last = make_modulation(mod, nf, cond_nf)
        self.hr_conv2 = conv3x3(nf, nf)
        self.conv_last = conv3x3(nf, in_ch)
        self.act = nn.ReLU(inplace=True)

    @property
    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return num_parameters(self)

    def condition_input(self, ldr: torch.Tensor) -> torch.Tensor:
        """The image the condition network sees for ``ldr``: (B, 3, H, W) -> (B, 3, H, W)."""
        if self.config.condition == "gradient":
            return sobel_magnitude(ldr)
        return ldr

    @property
    def _channel_modulated(self) -> bool:
        """Channel modulation: the output depends on image-wide means of the condition."""
        return self.condition is not None and self.config.modulation == "channel"

    def global_features(
        self, ldr: torch.Tensor, max_pixels: int | None = None
    ) -> torch.Tensor | None:
        """What the network takes from the whole image, for tiled inference.

        Channel modulation scales and shifts by the condition maps' means over the whole
        image: (B, 3, H, W) -> (B, 3 * nf/2, 1, 1), the means of the full, 1/2 and 1/4
        resolution maps side by side. ``None`` for the other variants, whose output at a
        pixel depends only on the input around it.

        Args:
            ldr: (B, 3, H, W) LDR image in [0, 1].
            max_pixels: the condition network runs on bands of rows of about this many
                pixels (with margins that make the means exact), not on the whole image at
                once; ``None``: the whole image.
        """
        if not self._channel_modulated:
            return None
        cond = self._pad(self.condition_input(ldr))
        height, width = cond.shape[-2:]
        rows = height if max_pixels is None else max_pixels // width
        rows = max(rows // SCALE_FACTOR * SCALE_FACTOR, SCALE_FACTOR)
        sums = None
        for top in range(0, height, rows):
            bottom = min(top + rows, height)
            # rows a band's own maps depend on (a multiple of 4 keeps the strides aligned)
            lo, hi = max(top - CONDITION_MARGIN, 0), min(bottom + CONDITION_MARGIN, height)
            maps = self.condition(cond[..., lo:hi, :])
            band = [  # summed in float32 at least (bf16 sums of a large image drift)
                m[..., (top - lo) // step : (bottom - lo) // step, :].sum(
                    dim=(2, 3), keepdim=True, dtype=torch.promote_types(m.dtype, torch.float32)
                )
                for m, step in zip(maps, CONDITION_STRIDES, strict=True)
            ]
            sums = band if sums is None else [a + b for a, b in zip(sums, band, strict=True)]
        pixels = [height * width // step**2 for step in CONDITION_STRIDES]
        means = [total / n for total, n in zip(sums, pixels, strict=True)]
        return torch.cat(means, dim=1)

    def forward(
        self,
        ldr: torch.Tensor,
        cond: torch.Tensor | None = None,
        global_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Reconstruct the non-linear HDR image.

        Args:
            ldr: (B, 3, H, W) LDR image in [0, 1].
            cond: optional (B, 3, H, W) input of the condition network, used as given;
                by default :meth:`condition_input` of ``ldr``.
            global_features: optional (B, 3 * nf/2, 1, 1) output of :meth:`global_features`
                for channel modulation, used instead of this input's own means (tiled
                inference computes it once on the whole image).

        Returns:
            (B, 3, H, W) non-linear HDR prediction.
        """
        check_inputs(ldr, cond, self.config.in_ch)
        h, w = ldr.shape[-2:]
        if global_features is not None:
            cond_maps = self._split_global_features(global_features, ldr.shape[0])
        elif self.condition is None:
            cond_maps = None
        else:
            cond = self.condition_input(ldr) if cond is None else cond
            cond_maps = self.condition(self._pad(cond))
        out = self._forward_padded(self._pad(ldr), cond_maps)
        return out[..., :h, :w]

    @staticmethod
    def _pad(image: torch.Tensor) -> torch.Tensor:
        """Replicate-pad (B, C, H, W) to a multiple of 4. Always pads (possibly by 0): no
        shape-dependent branch, so export keeps H, W dynamic."""
        h, w = image.shape[-2:]
        return F.pad(image, (0, (-w) % SCALE_FACTOR, 0, (-h) % SCALE_FACTOR), mode="replicate")

    def _split_global_features(
        self, features: torch.Tensor, batch: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cond_nf = self.config.nf // 2
        expected = (batch, 3 * cond_nf, 1, 1)
        if not self._channel_modulated:
            raise ValueError("global_features apply to channel modulation only")
        if tuple(features.shape) != expected:
            raise ValueError(
                f"global_features of shape {tuple(features.shape)}, expected {expected}"
            )
        full, half, quarter = features.split(cond_nf, dim=1)
        return full, half, quarter

    def _forward_padded(
        self,
        ldr: torch.Tensor,
        cond_maps: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        c_full, c_half, c_quarter = cond_maps if cond_maps is not None else (None, None, None)

        f0 = self.act(self.conv_first(ldr))
        f0 = self.act(self.hr_conv1(self.mod_first(f0, c_full)))
        f1 = self.trunk_half1(self.act(self.down1(f0)), c_half)
        f2 = self.act(self.down2(f1))
        out = self.trunk_quarter(f2, c_quarter) + f2
        out = self.trunk_half2(self.act(self.up1(out)) + f1, c_half)
        out = self.act(self.up2(out)) + f0
        out = self.act(self.hr_conv2(self.mod_last(out, c_full)))
        out = self.conv_last(out)
        weight = self.weighting(ldr) if self.weighting is not None else 1.0
        return weight * ldr + out

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in asdict(self.config).items())
