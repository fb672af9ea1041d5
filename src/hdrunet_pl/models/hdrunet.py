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
from torch import nn

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
            return kornia.filters.sobel(ldr)
        return ldr

    def forward(self, ldr: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruct the non-linear HDR image.

        Args:
            ldr: (B, 3, H, W) LDR image in [0, 1].
            cond: optional (B, 3, H, W) input of the condition network, used as given;
                by default :meth:`condition_input` of ``ldr``.

        Returns:
            (B, 3, H, W) non-linear HDR prediction.
        """
        if ldr.ndim != 4 or ldr.shape[1] != self.config.in_ch:
            raise ValueError(
                f"expected ldr of shape (B, {self.config.in_ch}, H, W), got {tuple(ldr.shape)}"
            )
        if cond is not None and cond.shape != ldr.shape:
            raise ValueError(f"cond shape {tuple(cond.shape)} != ldr shape {tuple(ldr.shape)}")
        h, w = ldr.shape[-2:]
        pad_h, pad_w = (-h) % SCALE_FACTOR, (-w) % SCALE_FACTOR
        if cond is None and self.condition is not None:
            cond = self.condition_input(ldr)
        # always pad (possibly by 0): no shape-dependent branch, so export keeps H, W dynamic
        ldr = F.pad(ldr, (0, pad_w, 0, pad_h), mode="replicate")
        cond = None if cond is None else F.pad(cond, (0, pad_w, 0, pad_h), mode="replicate")
        out = self._forward_padded(ldr, cond)
        return out[..., :h, :w]

    def _forward_padded(self, ldr: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        c_full = c_half = c_quarter = None
        if self.condition is not None:
            c_full, c_half, c_quarter = self.condition(cond)

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
