"""HDRUNet, its blocks, and the ExpandNet baseline."""

from hdrunet_pl.models.blocks import SFT, ChannelModulation, ModulatedResBlock
from hdrunet_pl.models.expandnet import ExpandNet, ExpandNetConfig
from hdrunet_pl.models.hdrunet import ConditionNet, HDRUNet, HDRUNetConfig, WeightingNet

__all__ = [
    "SFT",
    "ChannelModulation",
    "ConditionNet",
    "ExpandNet",
    "ExpandNetConfig",
    "HDRUNet",
    "HDRUNetConfig",
    "ModulatedResBlock",
    "WeightingNet",
]
