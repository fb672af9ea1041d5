"""Shared fixtures: small networks, synthetic pairs and the config directory."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from .attacks import AttackLog
from .support import CONF_DIR, REPO

os.environ.setdefault("WANDB_MODE", "offline")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two test processes on two cores: one thread each (and in every tool they start), as
    # spinning thread pools that share cores slow tiny networks down many times over.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


LONGEST_FIRST = (
    "test_attacks.py",
    "test_reliability.py",
    "test_prepare.py",
    "test_notebooks.py",
    "test_inference.py",
    "test_experiments.py",
    "test_train.py",
    "test_config.py",
)
"""The test files that take longest (together about 75% of the suite's time on 2 cores,
measured 2026-12-07), in that order. ``make test`` hands whole files to its two workers in
collection order (``--dist loadfile --no-loadscope-reorder``): the long ones go first so
that the short ones fill the gaps and neither worker is left running alone at the end."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _figures_closed():
    """A test that opens matplotlib figures closes them (they hold memory until it does)."""
    yield
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None and pyplot.get_fignums():
        open_figures = len(pyplot.get_fignums())
        pyplot.close("all")
        pytest.fail(f"the test left {open_figures} matplotlib figure(s) open")


@pytest.fixture
def conf_dir() -> Path:
    return CONF_DIR


SAMPLES_DIR = REPO / ".cache" / "poly_haven_hdri"
"""Where ``make install`` puts the sample HDR photographs (so that tests run offline)."""


@pytest.fixture(scope="session")
def poly_haven() -> list[Path]:
    """The ten CC0 Poly Haven .hdr panoramas from the viser wheel, fetched by ``make install``
    (or, when missing, downloaded here once, with a time limit)."""
    from hdrunet_pl.samples import poly_haven_hdris

    return poly_haven_hdris(SAMPLES_DIR)


def _save_tiny(net: torch.nn.Module, path: Path) -> Path:
    """``net`` with its initial weights nudged (non-trivial, reproducible), saved as the
    package saves networks."""
    from hdrunet_pl import save_model

    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return save_model(net, path)


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    """A saved nf-8 HDRUNet with non-trivial weights (load_model reads it)."""
    from hdrunet_pl import HDRUNet

    torch.manual_seed(3)
    return _save_tiny(HDRUNet(nf=8), tmp_path / "tiny.ckpt")


@pytest.fixture
def tiny_expandnet_checkpoint(tmp_path) -> Path:
    """A saved nf-8 ExpandNet (the baseline) with non-trivial weights."""
    from hdrunet_pl import ExpandNet

    torch.manual_seed(3)
    return _save_tiny(ExpandNet(nf=8), tmp_path / "tiny_expandnet.ckpt")


ATTACK_LOG = pytest.StashKey[AttackLog]()


@pytest.fixture
def attacks(request) -> AttackLog:
    """The session's attack log (see ``tests/attacks.py``): tests record their outcomes."""
    return request.config.stash.setdefault(ATTACK_LOG, AttackLog())


SCRATCH = pytest.StashKey[Path]()
PASSED = pytest.StashKey[bool]()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config) -> None:
    """One scratch folder for the whole run (pytest's ``tmp_path`` folders, and what the
    tools and their worker processes put into TMPDIR), removed when the run passes: the
    suite leaves nothing in /tmp. pytest-xdist workers inherit it (TMPDIR, basetemp).
    Its path is short: sockets that tools open in their temp folder have a length limit."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    scratch = Path(tempfile.mkdtemp(prefix="hdrt-"))
    config.stash[SCRATCH] = scratch
    if config.option.basetemp is None:
        config.option.basetemp = str(scratch / "t")
    os.environ["TMPDIR"] = str(scratch)
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again


def pytest_sessionfinish(session, exitstatus) -> None:
    """In a pytest-xdist worker: hand the attack outcomes to the controlling process."""
    session.config.stash[PASSED] = exitstatus == 0
    log = session.config.stash.get(ATTACK_LOG, None)
    if log is not None and hasattr(session.config, "workeroutput"):
        session.config.workeroutput["attacks"] = log.to_json()


def pytest_unconfigure(config) -> None:
    scratch = config.stash.get(SCRATCH, None)
    if scratch is not None and config.stash.get(PASSED, False):
        shutil.rmtree(scratch, ignore_errors=True)


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
    scratch = config.stash.get(SCRATCH, None)
    if scratch is not None and not config.stash.get(PASSED, False):
        terminalreporter.write_line(f"temporary files of this run are kept in {scratch}")
