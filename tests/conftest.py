"""Shared fixtures: small networks, synthetic pairs and the config directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import hdrunet_pl

CONF_DIR = Path(hdrunet_pl.__file__).resolve().parent / "conf"
DATA_DIR = Path(__file__).parent / "data"

os.environ.setdefault("WANDB_MODE", "offline")


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture
def conf_dir() -> Path:
    return CONF_DIR
