"""hdrunet-pl: HDRUNet (single-image HDR reconstruction) with PyTorch Lightning and Hydra."""

from hdrunet_pl import resolvers as _resolvers  # noqa: F401  (config resolvers)
from hdrunet_pl.errors import CheckpointError, HDRUNetError
from hdrunet_pl.models.checkpoints import load_model, save_model
from hdrunet_pl.models.hdrunet import HDRUNet

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "HDRUNet",
    "HDRUNetError",
    "__version__",
    "load_model",
    "save_model",
]
