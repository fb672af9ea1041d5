"""hdrunet-pl: HDRUNet (single-image HDR reconstruction) with PyTorch Lightning and Hydra.

The network and checkpoint functions are imported on first use, so that the command-line
tools can answer ``--help`` and report a mistyped option without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hdrunet_pl import resolvers as _resolvers  # noqa: F401  (config resolvers)
from hdrunet_pl.errors import CheckpointError, HDRUNetError

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


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hdrunet_pl' has no attribute {name!r}")
