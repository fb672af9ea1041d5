"""Shared fixtures: small networks, synthetic pairs and the config directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import hdrunet_pl

from .attacks import AttackLog

CONF_DIR = Path(hdrunet_pl.__file__).resolve().parent / "conf"
DATA_DIR = Path(__file__).parent / "data"

os.environ.setdefault("WANDB_MODE", "offline")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two test processes on two cores: one thread each (and in every tool they start), as
    # spinning thread pools that share cores slow tiny networks down many times over.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

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


SAMPLES_DIR = Path(__file__).resolve().parents[1] / ".cache" / "poly_haven_hdri"
"""Where ``make install`` puts the sample HDR photographs (so that tests run offline)."""


@pytest.fixture(scope="session")
def poly_haven() -> list[Path]:
    """The ten CC0 Poly Haven .hdr panoramas from the viser wheel, fetched by ``make install``
    (or, when missing, downloaded here once, with a time limit)."""
    from hdrunet_pl.samples import poly_haven_hdris

    return poly_haven_hdris(SAMPLES_DIR)


NOISE = re.compile(r"warn|\bINFO\b|\btip\b|\.py:\d+[:\]] ", re.IGNORECASE)
"""A warning (Python's or Lightning's ``file.py:line: message``, torch's glog-style
``file.py:line] message``), an INFO log line or a tip."""


def noise(result, folder: Path) -> list[str]:
    """The lines of a finished process's stdout and stderr that look like noise (the test's
    ``folder``, named after the test by pytest, is left out of the match)."""
    text = (result.stdout + result.stderr).replace(str(folder), "<tmp>")
    lines = re.split(r"[\r\n]+", text)
    return [line.strip() for line in lines if NOISE.search(line)]


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


ATTACK_LOG = pytest.StashKey[AttackLog]()


@pytest.fixture
def attacks(request) -> AttackLog:
    """The session's attack log (see ``tests/attacks.py``): tests record their outcomes."""
    return request.config.stash.setdefault(ATTACK_LOG, AttackLog())


def pytest_sessionfinish(session) -> None:
    """In a pytest-xdist worker: hand the attack outcomes to the controlling process."""
    log = session.config.stash.get(ATTACK_LOG, None)
    if log is not None and hasattr(session.config, "workeroutput"):
        session.config.workeroutput["attacks"] = log.to_json()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """pytest-xdist, in the controlling process: collect a worker's attack outcomes."""
    outcomes = getattr(node, "workeroutput", {}).get("attacks")
    if outcomes:
        node.config.stash.setdefault(ATTACK_LOG, AttackLog()).add_json(outcomes)


def pytest_terminal_summary(terminalreporter, config) -> None:
    log = config.stash.get(ATTACK_LOG, None)
    if log is not None and log.outcomes:
        terminalreporter.write_sep("=", "attack suite (tests/test_attacks.py)")
        terminalreporter.write_line(log.table())
