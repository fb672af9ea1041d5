"""What the tests share: override sets, the composed config and one way to run a tool."""

from __future__ import annotations

import atexit
import functools
import json
import locale
import os
import re
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import lightning as L
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

import hdrunet_pl

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = Path(hdrunet_pl.__file__).resolve().parent / "conf"
DATA_DIR = Path(__file__).parent / "data"

FAST = ["debug=fast", "logger=csv"]
"""Overrides for a few-second run of a tiny network (any data source)."""
SMALL_SYNTHETIC_VAL = [
    "data.val_set.num_images=2",
    "data.val_set.height=36",
    "data.val_set.width=52",
]
"""With ``data=synthetic`` (the default): validate on two small scenes."""


def compose_config(name: str, overrides: list[str], with_hydra: bool = False) -> DictConfig:
    """The composed tool config ``name`` (``train``, ``predict``, ``eval``, ``export``) for
    ``overrides``, as the tool would see it (``with_hydra``: with the ``hydra`` node too)."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose(config_name=name, overrides=overrides, return_hydra_config=with_hydra)


def compose_train(overrides: list[str], with_hydra: bool = False) -> DictConfig:
    """The composed ``train.yaml`` for ``overrides``, as ``hdrunet-train`` would see it."""
    return compose_config("train", overrides, with_hydra)


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The jobs Hydra's basic sweeper makes of ``overrides`` (its own code)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def bare_trainer(**settings: object) -> L.Trainer:
    """A Lightning Trainer without logger, checkpoints, progress bar or model summary (for
    in-process loops that a test inspects); ``settings`` add to or override those."""
    quiet = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return L.Trainer(**{**quiet, **settings})


def run_tool(
    tool: str,
    args: list[str],
    cwd: Path,
    *,
    env: dict[str, str] | None = None,
    timeout: int = 300,
    fresh: bool = False,
) -> subprocess.CompletedProcess:
    """Run a console script of the package (``hdrunet-train``, ...) or, with
    ``tool="python"``, this interpreter; returns the CompletedProcess without checking it.

    W&B is offline, ``tests.helpers`` is importable (configs may name its callbacks) and
    ``HYDRA_FULL_ERROR`` is unset, so errors read as a user sees them; ``env`` adds to or
    overrides that environment (a value of ``None`` removes a variable). A console script
    starts in a fork of a warm interpreter (:mod:`tests.warm`: the same run without
    importing torch and Lightning again); ``fresh=True`` starts the interpreter anew, for
    tests of the start itself.
    """
    exe = sys.executable if tool == "python" else str(Path(sys.executable).parent / tool)
    full_env = tool_environment(env)
    if tool != "python" and not fresh:
        return _warm_interpreter().run([exe, *args], cwd, full_env, timeout)
    return subprocess.run(
        [exe, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


TOOL_PYTHONPATH = os.pathsep.join([str(REPO / "src"), str(REPO)])
"""A tool run by the tests imports this checkout's package (not whatever installed copy the
environment has: a clone tested with another checkout's environment) and ``tests.*``."""


def tool_environment(changes: dict[str, str | None] | None = None) -> dict[str, str]:
    """This process's environment as a tool run by the tests gets it (see :func:`run_tool`),
    with ``changes`` (``None`` removes a variable)."""
    full_env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": TOOL_PYTHONPATH}
    full_env.pop("HYDRA_FULL_ERROR", None)
    for key, value in (changes or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    return full_env


class WarmInterpreter:
    """The client of one :mod:`tests.warm` process: runs console scripts as its forks."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.warm"],
            cwd=REPO,
            env=tool_environment(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        atexit.register(self.close)

    def _reply(self, timeout: float | None) -> int:
        """The next reply line (an int), or TimeoutError after ``timeout`` seconds."""
        line = b""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not line.endswith(b"\n"):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.process.stdout], [], [], left)[0]:
                raise TimeoutError
            byte = self.process.stdout.read(1)
            if not byte:
                raise RuntimeError(f"the warm interpreter ended ({self.process.wait()})")
            line += byte
        return int(line)

    def run(
        self, argv: list[str], cwd: Path, env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess:
        """``argv`` (a console script and its arguments) run in ``cwd`` with ``env``, as
        ``subprocess.run(..., capture_output=True, text=True, timeout=timeout)`` runs it."""
        with tempfile.TemporaryDirectory(prefix="warm-") as folder:
            out, err = Path(folder, "stdout"), Path(folder, "stderr")
            request = {"script": argv[0], "args": argv[1:], "cwd": str(cwd), "env": env}
            request.update(stdout=str(out), stderr=str(err))
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            self.process.stdin.flush()
            pid = self._reply(60)
            try:
                code = self._reply(timeout)
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)  # as subprocess.run ends a run past its time
                self._reply(None)
                raise subprocess.TimeoutExpired(argv, timeout) from None
            return subprocess.CompletedProcess(argv, code, _text(out), _text(err))

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait()


def _text(path: Path) -> str:
    """A stream's file as ``subprocess.run(..., text=True)`` decodes a stream (the locale's
    encoding, universal newlines: a progress bar's ``\\r`` reads as a line end)."""
    data = path.read_bytes().decode(locale.getpreferredencoding(False))
    return data.replace("\r\n", "\n").replace("\r", "\n")


@functools.cache
def _warm_interpreter() -> WarmInterpreter:
    """This test process's warm interpreter, started at its first use."""
    return WarmInterpreter()


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """``result``, once it is known to have exited 0 (else the test fails with its output)."""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


NOISE = re.compile(r"warn|\bINFO\b|\btip\b|\.py:\d+[:\]] ", re.IGNORECASE)
"""A warning (Python's or Lightning's ``file.py:line: message``, torch's glog-style
``file.py:line] message``), an INFO log line or a tip."""


def noise(result: subprocess.CompletedProcess, folder: Path) -> list[str]:
    """The lines of a finished process's stdout and stderr that look like noise (the test's
    ``folder``, named after the test by pytest, is left out of the match)."""
    text = (result.stdout + result.stderr).replace(str(folder), "<tmp>")
    lines = re.split(r"[\r\n]+", text)
    return [line.strip() for line in lines if NOISE.search(line)]


def held_out_eval_args(root: Path, output: Path, tmp_path: Path) -> list[str]:
    """``hdrunet-eval`` overrides that score an untrained nf-8 HDRUNet (saved in
    ``tmp_path``) on ``data=held_out`` captures of every HDR file in ``root``, whole."""
    from hdrunet_pl import HDRUNet, save_model

    ckpt = save_model(HDRUNet(nf=8), tmp_path / "net.ckpt")
    return [
        f"ckpt={ckpt}",
        "data=held_out",
        f"data.root={root}",
        "data.rows=null",
        f"output={output}",
    ]


def bomb_png(path: Path, side: int = 40000) -> None:
    """A tiny PNG whose header claims ``side`` x ``side`` RGB pixels (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * (3 * 1024), 9)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )
