"""Shared fixtures: small networks, synthetic pairs and the config directory."""

from __future__ import annotations

import os
import subprocess
import sys
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


def run_tool(tool: str, args: list[str], cwd: Path, timeout: int = 300):
    """Run a console script of the package; returns the CompletedProcess (no check)."""
    exe = Path(sys.executable).parent / tool
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.run(
        [str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    """A saved nf-8 HDRUNet with non-trivial weights (load_model reads it)."""
    from hdrunet_pl import HDRUNet, save_model

    torch.manual_seed(3)
    net = HDRUNet(nf=8)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return save_model(net, tmp_path / "tiny.ckpt")
