"""hdrunet-pl: HDRUNet (single-image HDR reconstruction) with PyTorch Lightning and Hydra.

The network and checkpoint functions are imported on first use, so that the command-line
tools can answer ``--help`` and report a mistyped option without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hdrunet_pl import resolvers as _resolvers  # noqa: F401  (config resolvers)
from hdrunet_pl.errors import CheckpointError, HDRUNetError
from hdrunet_pl.lazy import lazy_getattr

if TYPE_CHECKING:
    from hdrunet_pl.models.checkpoints import load_model, save_model
    from hdrunet_pl.models.expandnet import ExpandNet
    from hdrunet_pl.models.hdrunet import HDRUNet

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ExpandNet",
    "HDRUNet",
    "HDRUNetError",
    "__version__",
    "load_model",
    "save_model",
]

_LAZY = {
    "ExpandNet": "hdrunet_pl.models.expandnet",
    "HDRUNet": "hdrunet_pl.models.hdrunet",
    "load_model": "hdrunet_pl.models.checkpoints",
    "save_model": "hdrunet_pl.models.checkpoints",
}


__getattr__ = lazy_getattr(__name__, _LAZY)
