"""HDRUNet and its blocks."""

from hdrunet_pl.models.blocks import SFT, ChannelModulation, ModulatedResBlock
from hdrunet_pl.models.hdrunet import ConditionNet, HDRUNet, HDRUNetConfig, WeightingNet

__all__ = [
    "SFT",
    "ChannelModulation",
    "ConditionNet",
    "HDRUNet",
    "HDRUNetConfig",
    "ModulatedResBlock",
    "WeightingNet",
]
