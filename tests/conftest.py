"""Shared fixtures: small networks, synthetic pairs and the config directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import hdrunet_pl

CONF_DIR = Path(hdrunet_pl.__file__).resolve().parent / "conf"
DATA_DIR = Path(__file__).parent / "data"

os.environ.setdefault("WANDB_MODE", "offline")

FAST = ["debug=fast", "logger=csv"]
"""Overrides for a few-second run of a tiny network (any data source)."""
SMALL_SYNTHETIC_VAL = [
    "data.val_set.num_images=2",
    "data.val_set.height=36",
    "data.val_set.width=52",
]
"""With ``data=synthetic`` (the default): validate on two small scenes."""


def compose_train(overrides: list[str]) -> DictConfig:
    """The composed ``train.yaml`` for ``overrides``, as ``hdrunet-train`` would see it."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose(config_name="train", overrides=overrides)


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture
def conf_dir() -> Path:
    return CONF_DIR


@pytest.fixture(scope="session")
def poly_haven(pytestconfig) -> list[Path]:
    """The ten CC0 Poly Haven .hdr panoramas from the viser wheel (pip, cached per checkout)."""
    from hdrunet_pl.samples import poly_haven_hdris

    return poly_haven_hdris(pytestconfig.cache.mkdir("poly_haven_hdri"))
