"""Names of the files a training run keeps in its folder (read by eval and report too), and
the command line that resumes a run."""

from __future__ import annotations

import fcntl
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from hdrunet_pl.errors import HDRUNetError

CONFIG_FILE = "config.yaml"
"""The run's resolved config, written into the run directory before training starts."""

METRICS_FILE = "metrics.json"
"""Written into the run directory when training ends (read by ``hdrunet-report``)."""

FAILED_FILE = "failed.txt"
"""Written into the run directory (with the error) when a started run fails."""

CHECKPOINT_DIR = "checkpoints"
"""The run directory's folder of checkpoints."""

LAST_CHECKPOINT = "last.ckpt"
"""The checkpoint a run resumes from, in ``CHECKPOINT_DIR``."""

LOCK_FILE = ".hdrunet.lock"
"""Advisory lock file of a run folder, held by the run's main process while it runs."""

HYDRA_OVERRIDES_FILE = ".hydra/overrides.yaml"
"""Where Hydra records a job's command-line overrides, inside its run directory (written
anew by every start, before the job's checks: it holds the current command's)."""

OVERRIDES_FILE = "overrides.yaml"
"""The command-line overrides of the last start of a run that passed its checks (written
beside ``config.yaml``): what a refused resume advises to run instead."""


def read_config(path: Path) -> dict | None:
    """The mapping a run's recorded config file (``config.yaml``) holds, or None where it is
    missing, unreadable or not a mapping."""
    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    return config if isinstance(config, dict) else None


def is_package_run(folder: Path, crashed_start: bool = False) -> bool:
    """True when ``folder`` holds a run of ``hdrunet-train``: its ``config.yaml`` configures
    one of this package's models; with ``crashed_start``, Hydra's ``.hydra/config.yaml``
    of a start that stopped before writing it counts too (read it before Hydra rewrites it)."""
    files = [folder / CONFIG_FILE] + ([folder / ".hydra" / "config.yaml"] if crashed_start else [])
    for path in files:
        config = read_config(path)
        model = config.get("model") if config is not None else None
        target = model.get("_target_") if isinstance(model, dict) else None
        if isinstance(target, str) and target.startswith("hdrunet_pl."):
            return True
    return False


def kept_name(path: Path) -> Path:
    """Where an earlier part of a run keeps ``path`` (``metrics.csv``, ``config.yaml``) when
    a resumed start writes it anew: ``<stem>-<k><suffix>``, the first free k = 1, 2, ..."""
    k = 1
    while (kept := path.with_name(f"{path.stem}-{k}{path.suffix}")).exists():
        k += 1
    return kept


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
    # and OmegaConf reads \${ as the characters ${, not as a reference to a setting
    return "'" + text.replace("'", "\\'").replace("${", "\\${") + "'"


PATH_SETTINGS = (
    "data.root",
    "data.val_root",
    "data.input_dir",
    "data.cache_dir",
    "init_weights",
)
"""Settings that name files or folders of a run's input (``data.folders.<name>.root`` too)."""


def path_values(cfg: DictConfig) -> Iterator[tuple[str, object]]:
    """``(key, value)`` of each input path setting of ``cfg``: :data:`PATH_SETTINGS` and each
    ``data.folders.<name>.root``; settings that do not resolve are left out (the data set
    says what is missing)."""
    keys = list(PATH_SETTINGS)
    folders = OmegaConf.select(cfg, "data.folders", default=None, throw_on_missing=False)
    if isinstance(folders, DictConfig):
        keys += [f"data.folders.{name}.root" for name in folders]
    for key in keys:
        try:
            value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        except Exception:
            continue
        yield key, value


def check_no_empty_paths(cfg: DictConfig) -> None:
    """Refuse an input path given as ``""`` (``data.root=$ROOT`` with ``$ROOT`` unset, or
    ``HDRUNET_SAMPLES_DIR=""``): a path of nothing names the current folder, whose files
    would be read as the data set."""
    for key, value in path_values(cfg):
        if isinstance(value, str) and not value.strip():
            hint = (
                " (from $HDRUNET_SAMPLES_DIR or paths.samples_dir?)"
                if key.startswith("data.folders.")
                else ""
            )
            raise HDRUNetError(
                f"{key} is empty{hint}: give a folder (an empty path would read the current folder)"
            )


def absolute_paths(cfg: DictConfig, cwd: str | Path) -> dict[str, str]:
    """The input paths of ``cfg`` (:func:`path_values`), absolute (a relative one made so
    against ``cwd``): what a resume command and a run's saved config give, so that both
    work from any directory (``.cache/poly_haven_hdri`` of ``make train`` included) and in
    a shell without the environment variables the run had (``HDRUNET_SAMPLES_DIR``)."""
    found = {}
    for key, value in path_values(cfg):
        if isinstance(value, str) and value not in ("", "???") and "://" not in value:
            path = Path(value).expanduser()
            found[key] = str(path if path.is_absolute() else Path(cwd, path).resolve())
    return found


def override_key(override: str) -> str:
    """The setting a command-line override sets: ``trainer.max_steps`` of
    ``++trainer.max_steps=10``."""
    return override.lstrip("+~").partition("=")[0]


def resume_command(
    overrides: list[str], run_dir: str | Path, paths: dict[str, str] | None = None
) -> str:
    """The shell line that trains the run in ``run_dir`` on from its ``last.ckpt``: the run's
    own command-line ``overrides`` (the experiment, ...), its folder and ``resume=auto``;
    ``paths`` (:func:`absolute_paths`) replace the paths as given. A setting given twice is
    given once, with its last value."""
    own = ("hydra.run.dir=", "resume=", "ckpt_path=")
    kept = [o for o in overrides if not o.lstrip("+~").startswith(own)]
    kept += [f"{key}={override_value(value)}" for key, value in (paths or {}).items()]
    last = {override_key(o): i for i, o in enumerate(kept) if "=" in o}
    kept = [o for i, o in enumerate(kept) if "=" not in o or last[override_key(o)] == i]
    run = f"hydra.run.dir={override_value(run_dir)}"
    return shlex.join(["hdrunet-train", *kept, run, "resume=auto"])


def recorded_sweep_overrides(sweep_dir: str | Path) -> tuple[str | None, list[str]] | None:
    """The job name and overrides a sweep was started with, from its ``multirun.yaml``: the
    task's overrides, then its own ``hydra.*`` ones (sweeper parameters, the folder); None
    when the folder holds no readable record of a sweep."""
    try:
        settings = yaml.safe_load((Path(sweep_dir) / "multirun.yaml").read_text())["hydra"]
        given = settings["overrides"]
        lines = [str(o) for o in [*given["task"], *(given.get("hydra") or [])]]
        return (settings.get("job") or {}).get("name"), lines
    except (OSError, yaml.YAMLError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        return None


def sweep_resume_command(sweep_dir: str | Path) -> str | None:
    """The shell line that goes on with a whole sweep from its ``multirun.yaml``
    (:func:`recorded_sweep_overrides`): its overrides, its folder and ``resume=auto``
    (finished jobs say so, the others train on); None without a record."""
    record = recorded_sweep_overrides(sweep_dir)
    if record is None:
        return None
    own = ("hydra.sweep.dir=", "hydra.mode=", "resume=", "ckpt_path=")
    kept = [o for o in record[1] if not o.lstrip("+~").startswith(own)]
    folder = f"hydra.sweep.dir={override_value(Path(sweep_dir))}"
    return shlex.join(["hdrunet-train", "-m", *kept, folder, "resume=auto"])


def recorded_resume_command(checkpoint: str | Path) -> str | None:
    """:func:`resume_command` of the run that wrote ``checkpoint``
    (``<run>/checkpoints/*.ckpt``), from the overrides Hydra recorded there; None when
    there is no such record."""
    run_dir = Path(checkpoint).resolve().parent.parent
    for name in (OVERRIDES_FILE, HYDRA_OVERRIDES_FILE):  # Hydra's: runs of older versions
        try:
            overrides = yaml.safe_load((run_dir / name).read_text())
            break
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            continue
    else:
        return None
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        return None
    return resume_command(overrides, run_dir)


def is_lock_file(path: Path) -> bool:
    """True when ``path`` reads as a run lock: empty, or the process id its holder wrote."""
    try:
        text = path.read_text() if path.is_file() and not path.is_symlink() else None
    except (OSError, UnicodeDecodeError):
        return False
    return text is not None and (text.strip() == "" or text.strip().isdigit())


def in_use_message(folder: str | Path, holder: str) -> str:
    """What a run says when ``folder``'s lock is held by process ``holder``."""
    return (
        f"{folder} is in use by another run (process {holder}); wait for it to end or choose "
        "another folder"
    )


def lock_holder(folder: Path) -> str | None:
    """The process id written in ``folder``'s run lock while another process holds it
    (``"unknown"`` when it wrote none yet), else None. Takes and releases the lock."""
    path = folder / LOCK_FILE
    if not path.is_file() or path.is_symlink():
        return None
    try:
        with path.open("r") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return handle.read().strip() or "unknown"
            fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        return None
    return None


def foreign_run_folder(folder: Path) -> list[str]:
    """What makes ``folder`` no place for a run of ``hdrunet-train``, read before Hydra
    writes into it: its entries when it holds files but no run of this package (another
    Hydra program's ``.hydra/`` and ``train.log``, a data folder). Empty when the folder is
    missing or empty, holds a run (:func:`is_package_run`, a crashed start included) or only
    an empty ``train.log`` and the run lock."""
    if not folder.is_dir() or is_package_run(folder, crashed_start=True):
        return []
    entries = sorted(folder.iterdir())
    leftovers = all(
        (p.name == LOCK_FILE and is_lock_file(p))
        or (p.name == "train.log" and p.is_file() and p.stat().st_size == 0)
        for p in entries
    )
    return [] if leftovers else [p.name for p in entries]


RESUME_CHOICES = ("auto", True, False)


def resume_path(cfg: DictConfig, output_dir: Path) -> str | None:
    """The checkpoint to resume from, or None to start afresh.

    ``ckpt_path`` (a file, or ``last``) wins; else ``resume`` says: ``auto`` resumes from the
    run folder's ``checkpoints/last.ckpt`` when there is one, ``true`` requires it, ``false``
    starts afresh and refuses a folder that already holds a run's ``last.ckpt``. A
    ``ckpt_path`` from outside a folder that holds a run is refused: it would write over it.
    """
    last = output_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
    ckpt_path = cfg.get("ckpt_path")
    resume = cfg.get("resume")
    if resume not in RESUME_CHOICES:
        raise HDRUNetError(f"resume must be auto, true or false, got {resume!r}")
    if ckpt_path == "last" or (ckpt_path is None and resume is True):
        if not last.is_file():
            raise HDRUNetError(
                f"{'ckpt_path=last' if ckpt_path else 'resume=true'}: no {last}; give the "
                "run's folder with hydra.run.dir=..., or a checkpoint with ckpt_path=..."
            )
        ckpt_path = str(last)
    elif ckpt_path is not None and (last.is_file() or (output_dir / METRICS_FILE).is_file()):
        if not Path(ckpt_path).resolve().is_relative_to(output_dir.resolve()):
            # training on from another run's weights here would write over this run
            raise HDRUNetError(
                f"{output_dir} already holds a run, and ckpt_path={ckpt_path} is not one of "
                "its checkpoints; give another folder (hydra.run.dir=...) to train on from it"
            )
    elif ckpt_path is None and resume == "auto" and last.is_file():
        ckpt_path = str(last)
    elif ckpt_path is None and last.is_file():
        raise HDRUNetError(
            f"{output_dir} already holds a run ({last}); resume=auto continues it, or choose "
            "another folder"
        )
    elif ckpt_path is None and (output_dir / METRICS_FILE).is_file():
        # a finished run that kept no last.ckpt (callbacks without last_checkpoint): starting
        # it over would write over its logs and summary
        raise HDRUNetError(
            f"{output_dir} holds a finished run ({METRICS_FILE}) without {last.name} to "
            "continue from; choose another folder"
        )
    return ckpt_path
