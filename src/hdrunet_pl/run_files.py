"""Names of the files a training run keeps in its folder (read by eval and report too), and
the command line that resumes a run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

CONFIG_FILE = "config.yaml"
"""The run's resolved config, written into the run directory before training starts."""

METRICS_FILE = "metrics.json"
"""Written into the run directory when training ends (read by ``hdrunet-report``)."""

FAILED_FILE = "failed.txt"
"""Written into the run directory (with the error) when a started run fails."""

HYDRA_OVERRIDES_FILE = ".hydra/overrides.yaml"
"""Where Hydra records a run's command-line overrides, inside its run directory."""


def override_value(value: str | Path) -> str:
    """``value`` as it must stand after ``key=`` on a Hydra command line: as it is when it
    holds only characters that Hydra takes literally, else single-quoted for Hydra (a path
    such as ``.../epoch=0-step=4.ckpt`` or one with a comma or space). Shell quoting comes
    on top (``shlex.join``)."""
    text = str(value)
    if re.fullmatch(r"[\w./@:+-]+", text):
        return text
    # Hydra's quoted strings: a backslash escapes only before a quote (or the closing one)
    text = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, text)
    return "'" + text.replace("'", "\\'") + "'"


def resume_command(overrides: list[str], run_dir: str | Path) -> str:
    """The shell line that trains the run in ``run_dir`` on from its ``last.ckpt``: the run's
    own command-line ``overrides`` (the experiment, ...), its folder and ``resume=auto``."""
    own = ("hydra.run.dir=", "resume=", "ckpt_path=")
    kept = [o for o in overrides if not o.lstrip("+~").startswith(own)]
    run = f"hydra.run.dir={override_value(run_dir)}"
    return shlex.join(["hdrunet-train", *kept, run, "resume=auto"])


def recorded_resume_command(checkpoint: str | Path) -> str | None:
    """:func:`resume_command` of the run that wrote ``checkpoint``
    (``<run>/checkpoints/*.ckpt``), from the overrides Hydra recorded there; None when
    there is no such record."""
    run_dir = Path(checkpoint).resolve().parent.parent
    try:
        overrides = yaml.safe_load((run_dir / HYDRA_OVERRIDES_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        return None
    return resume_command(overrides, run_dir)
