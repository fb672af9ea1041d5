"""ExpandNet (Marnerides et al., Eurographics 2018), the classic single-image HDR baseline.

Three convolutional branches see the LDR image at once and are fused per pixel by 1x1
convolutions; every hidden layer is followed by SELU. With ``nf = 64`` (the published width)
the network has 456,899 parameters:

- local branch, full resolution: conv3x3(3 -> nf), conv3x3(nf -> 2 nf);
- dilated branch, full resolution: four conv3x3 with dilation 2 (3 -> nf, then nf -> nf),
  no activation after the last;
- global branch: the image resized (bilinear) to 256x256, six stride-2 conv3x3 down to 4x4
  (3 -> nf, then nf -> nf) and a 4x4 convolution to one (B, nf, 1, 1) vector, no activation
  after it, copied to every pixel;
- fusion: the 4 nf concatenated channels, conv1x1(4 nf -> nf), SELU, conv1x1(nf -> 3), then
  the output map (see :data:`OUTPUTS`).

Shapes: the LDR input is (B, 3, H, W) in [0, 1], any H, W >= 1 (the global branch always
sees the image at 256x256); the output is (B, 3, H, W). The published network ends in a
sigmoid because its training targets were HDR images scaled to [0, 1]; this package's
targets are non-linear HDR, >= 0 and above 1 in highlights, hence the default ``softplus``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hdrunet_pl.models.blocks import num_parameters

ARCH = "expandnet"
"""The ``arch`` value that checkpoints record for this network."""
GLOBAL_SIZE = 256
"""Side of the square image the global branch sees, whatever the input's size."""
OUTPUTS = ("softplus", "sigmoid", "identity")
"""Output maps: ``softplus`` (>= 0, unbounded above, like this package's HDR targets;
the default), ``sigmoid`` (the published one, (0, 1): for targets scaled to [0, 1]) and
``identity`` (unbounded, as HDRUNet's output). None has parameters."""


@dataclass(frozen=True)
class ExpandNetConfig:
    """Everything needed to rebuild an :class:`ExpandNet` (stored in checkpoints).

    ``arch`` tells an ExpandNet record from an HDRUNet one (whose records have no ``arch``).
    """

    arch: str = ARCH
    nf: int = 64
    output: str = "softplus"


def conv_selu(
    in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, dilation: int = 1
) -> list[nn.Module]:
    """Convolution ("same" padding for stride 1, halving for stride 2) followed by SELU."""
    padding = dilation * (kernel - 1) // 2
    return [nn.Conv2d(in_ch, out_ch, kernel, stride, padding, dilation), nn.SELU(inplace=True)]


class GlobalBranch(nn.Module):
    """Image-wide features: (B, 3, H, W) -> (B, nf, 1, 1) from the image resized to 256x256."""

    def __init__(self, nf: int) -> None:
        super().__init__()
        layers = conv_selu(3, nf, stride=2)
        for _ in range(5):  # 128 -> 4 pixels
            layers += conv_selu(nf, nf, stride=2)
        self.body = nn.Sequential(*layers, nn.Conv2d(nf, nf, 4))  # 4x4 -> 1x1

    def forward(self, ldr: torch.Tensor) -> torch.Tensor:
        resized = F.interpolate(
            ldr, size=(GLOBAL_SIZE, GLOBAL_SIZE), mode="bilinear", align_corners=False
        )
        return self.body(resized)


class ExpandNet(nn.Module):
    """LDR -> HDR expansion by local, dilated and global branches fused per pixel.

    Args:
        nf: feature width (64 published; 456,899 parameters). The local branch's second
            layer has ``2 nf`` channels, the fusion input ``4 nf``.
        output: the map applied to the last convolution, one of :data:`OUTPUTS`.
    """

    def __init__(self, nf: int = 64, output: str = "softplus") -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"unknown output {output!r}; choose one of {OUTPUTS}")
        if nf < 1:
            raise ValueError(f"nf must be >= 1, got {nf}")
        self.config = ExpandNetConfig(nf=nf, output=output)
        self.local_branch = nn.Sequential(*conv_selu(3, nf), *conv_selu(nf, 2 * nf))
        dilated = conv_selu(3, nf, dilation=2)
        for _ in range(2):
            dilated += conv_selu(nf, nf, dilation=2)
        self.dilated_branch = nn.Sequential(*dilated, nn.Conv2d(nf, nf, 3, padding=2, dilation=2))
        self.global_branch = GlobalBranch(nf)
        self.fusion = nn.Sequential(*conv_selu(4 * nf, nf, kernel=1), nn.Conv2d(nf, 3, 1))

    @property
    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return num_parameters(self)

    def global_features(self, ldr: torch.Tensor, max_pixels: int | None = None) -> torch.Tensor:
        """The global branch's vector of the whole image: (B, 3, H, W) -> (B, nf, 1, 1).

        ``max_pixels`` is ignored: the branch sees the image resized to 256x256.
        """
        return self.global_branch(ldr)

    def forward(
        self, ldr: torch.Tensor, global_features: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Expand ``ldr`` to HDR.

        Args:
            ldr: (B, 3, H, W) LDR image in [0, 1].
            global_features: optional (B, nf, 1, 1) output of :meth:`global_features`, used
                as given (tiled inference computes it once on the whole image); by default
                computed from ``ldr``.

        Returns:
            (B, 3, H, W) HDR prediction in the domain of ``config.output``.
        """
        if ldr.ndim != 4 or ldr.shape[1] != 3:
            raise ValueError(f"expected ldr of shape (B, 3, H, W), got {tuple(ldr.shape)}")
        if global_features is None:
            global_features = self.global_features(ldr)
        local = self.local_branch(ldr)
        everywhere = global_features.expand(-1, -1, local.shape[-2], local.shape[-1])
        fused = torch.cat((local, self.dilated_branch(ldr), everywhere), dim=1)
        out = self.fusion(fused)
        if self.config.output == "softplus":
            return F.softplus(out)
        if self.config.output == "sigmoid":
            return torch.sigmoid(out)
        return out

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in asdict(self.config).items() if k != "arch")
