"""Console entry points of the Hydra tools (``hdrunet-train``, ``-predict``, ``-eval``,
``-export``).

Hydra composes the config, and answers ``--help`` or a mistyped option, before torch and
Lightning are imported: each tool's work is imported only once its config is known.
"""

from __future__ import annotations

import difflib
import itertools
import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import NoReturn

import hydra
from omegaconf import DictConfig, OmegaConf

from hdrunet_pl.errors import HDRUNetError
from hdrunet_pl.quiet import install_filters
from hdrunet_pl.resolvers import dirname
from hdrunet_pl.run_files import (
    foreign_run_folder,
    in_use_message,
    lock_holder,
    override_key,
    override_value,
    recorded_sweep_overrides,
    resume_path,
)

DDP_RUN_DIR = "HDRUNET_DDP_RUN_DIR"
"""Environment variable: the folder of the job that DDP worker processes join."""
DDP_OVERRIDES = "HDRUNET_DDP_OVERRIDES"
"""Environment variable: that job's overrides (JSON list)."""


def argv_for_ddp_child(argv: list[str]) -> list[str]:
    """The command line of a DDP worker: exactly the job rank 0 runs, in rank 0's folder.

    Lightning starts workers with rank 0's command line, which for a multirun would start
    the whole sweep again, in new folders. Rank 0 leaves its job's overrides and folder in
    the environment; a worker (``LOCAL_RANK`` > 0) runs that single job instead.
    """
    if os.environ.get("LOCAL_RANK", "0") == "0" or DDP_OVERRIDES not in os.environ:
        return argv
    overrides = json.loads(os.environ[DDP_OVERRIDES])
    run_dir = os.environ[DDP_RUN_DIR]
    run = f"hydra.run.dir={override_value(run_dir)}"  # it may hold = and ,
    return [argv[0], *overrides, run, "hydra.output_subdir=null"]


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def _train(cfg: DictConfig) -> float | None:
    from hdrunet_pl.train import run_job

    return run_job(cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def _predict(cfg: DictConfig) -> None:
    from hdrunet_pl.predict import exit_on_error, run

    exit_on_error(run)(cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def _evaluate(cfg: DictConfig) -> None:
    from hdrunet_pl.evaluate import INTERRUPTED, run
    from hdrunet_pl.predict import exit_on_error

    exit_on_error(run, INTERRUPTED)(cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def _export(cfg: DictConfig) -> None:
    from hdrunet_pl.export import INTERRUPTED, run
    from hdrunet_pl.predict import exit_on_error

    exit_on_error(run, INTERRUPTED)(cfg)


def _stop(tool: str, message: str) -> NoReturn:
    """A user error found before Hydra starts: one line on stderr, exit status 2."""
    print(f"{tool}: error: {message}", file=sys.stderr)
    sys.exit(2)


_UNKNOWN_KEY = re.compile(r"Could not override '([^']+)'")


def check_setting_names(tool: str, config_name: str, argv: list[str]) -> None:
    """Exit with one line naming the closest settings when an override names a setting
    the config does not have (Hydra's own answer is six lines that suggest adding it with
    ``+``, which the tool would then refuse). Composes the config once more (about 0.15 s);
    command lines with options (``-m``, ``--help``, ...) are left to Hydra."""
    if any(a.startswith("-") for a in argv):
        return
    from hydra import compose, initialize_config_module
    from hydra.errors import ConfigCompositionException

    overrides = list(argv)
    unknown: list[str] = []
    with initialize_config_module(version_base="1.3", config_module="hdrunet_pl.conf"):
        for _ in range(len(argv) + 1):
            try:
                cfg = compose(config_name=config_name, overrides=overrides)
            except ConfigCompositionException as err:
                match = _UNKNOWN_KEY.match(str(err))
                cause = str(err.__cause__ or "")
                if match is None or "is not in struct" not in cause:
                    return  # another error: Hydra says it in its own words
                key = match.group(1)
                unknown.append(key)
                overrides = [o for o in overrides if override_key(o) != key]
                continue
            except Exception:  # a sweep (a,b), a grammar error: Hydra's to report
                return
            groups = _group_names(config_name, overrides) if unknown else {}
            break
        else:
            return
    if not unknown:
        return
    names = _setting_names(cfg)
    hints = []
    for key in unknown:
        leaf = key.rsplit(".", 1)[-1]
        close = [n for n in names if n.rsplit(".", 1)[-1] == leaf]  # moved elsewhere
        candidates = names if "." in key else [*groups, *names]  # `loger=`: a group
        close = close or difflib.get_close_matches(key, candidates, n=3)
        close = [groups.get(c, c) for c in close]
        hint = f"{key}: no such setting"
        if close:
            hint += f" (did you mean {' or '.join(close[:3])}?)"
        hints.append(hint)
    _stop(tool, f"{'; '.join(hints)}; `{tool} --help` lists the groups")


def _group_names(config_name: str, overrides: list[str]) -> dict[str, str]:
    """The config groups a tool's command line may choose, each with the way to give it:
    those of its defaults list as they are (``logger``), and for ``hdrunet-train`` the
    package's other groups with the ``+`` that adds them (``scale`` -> ``+scale``)."""
    from importlib.resources import files

    from hydra import compose

    try:
        choices = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
        chosen = {g for g in choices.hydra.runtime.choices if not g.startswith("hydra")}
    except Exception:  # composing failed after all: no group hints
        return {}
    groups = {g: g for g in chosen if "/" not in g}
    if config_name == "train":  # the package's config folders are the training groups
        root = files("hdrunet_pl.conf")
        for folder in root.iterdir():
            name = folder.name
            if folder.is_dir() and name not in chosen and name != "hydra" and name[0] != "_":
                groups[name] = f"+{name}"
    return groups


def _setting_names(cfg: DictConfig) -> list[str]:
    """Every leaf setting of ``cfg`` as a dotted key (values are not resolved)."""
    names = []

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, DictConfig):
            for key in node:
                walk(node._get_node(key), f"{prefix}{key}.")
        else:
            names.append(prefix[:-1])

    walk(cfg, "")
    return [n for n in names if not n.endswith(("_target_", "_partial_", "_convert_"))]


_MODES = {
    "--run": "--run",
    "-r": "--run",
    "--multirun": "--multirun",
    "-m": "--multirun",
    "--cfg": "--cfg",
    "-c": "--cfg",
    "--info": "--info",
    "-i": "--info",
    "--shell-completion": "--shell-completion",
    "-sc": "--shell-completion",
}
"""Hydra's options that choose what a command does; at most one may be given."""


def _modes(argv: list[str]) -> set[str]:
    """The Hydra modes ``argv`` asks for (``--multirun``, ``--cfg``, ...), by long name."""
    return {_MODES[a.partition("=")[0]] for a in argv if a.partition("=")[0] in _MODES}


def _hydra_folder(overrides: list[str], key: str) -> tuple[DictConfig, Path] | None:
    """The train config composed with ``overrides`` (Hydra's settings included) and the
    folder its ``key`` (``hydra.run.dir``, ``hydra.sweep.dir``) resolves to, as Hydra will
    resolve it; None when the line does not compose (Hydra reports it in its own words)."""
    from hydra import compose, initialize_config_module

    try:  # the config's resolvers: registered by the import of hdrunet_pl.resolvers above
        with initialize_config_module(version_base="1.3", config_module="hdrunet_pl.conf"):
            cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
        return cfg, Path(str(OmegaConf.select(cfg, key, throw_on_missing=True)))
    except Exception:
        return None


def check_run_folder(argv: list[str]) -> None:
    """Exit with one line, before Hydra writes its ``.hydra/`` files and log into the run
    folder, when the folder is no place for this command: in use by another run, holding
    files but no run of this package (another Hydra program's), or holding a run that this
    command may not start over (a finished run without ``resume=auto``, or ``resume=true``
    with nothing to resume). The folder is ``hydra.run.dir`` as Hydra will resolve it,
    however it is given (``hydra.run.dir=``, ``hydra.run={dir:...}``, an interpolation, an
    experiment's config). Sweeps, DDP workers and lines that do not compose are left alone
    (Hydra reports the latter in its own words)."""
    if os.environ.get("LOCAL_RANK", "0") != "0" or "--multirun" in _modes(argv):
        return
    composed = _hydra_folder(argv, "hydra.run.dir")
    if composed is None:
        return
    cfg, folder = composed
    _check_log_dir(cfg)
    holder = lock_holder(folder)  # as Hydra takes it: a leading ~ is a folder named ~
    if holder is not None:
        _stop("hdrunet-train", in_use_message(folder, holder))
    foreign = foreign_run_folder(folder)
    if foreign:
        more = ", ..." if len(foreign) > 3 else ""
        _stop(
            "hdrunet-train",
            f"{folder} holds files but no run of hdrunet-train "
            f"({', '.join(foreign[:3])}{more}); nothing was written there: give a new "
            "folder, or a run's own",
        )
    if folder.is_dir():
        try:
            resume_path(cfg, folder)
        except HDRUNetError as err:
            _stop("hdrunet-train", f"{err} (nothing was written there)")


def _check_log_dir(cfg: DictConfig) -> None:
    """Exit with one line when ``paths.log_dir`` is empty (``HDRUNET_LOG_DIR=""``): the
    runs would go to ``/train/...`` at the file system's root."""
    log_dir = OmegaConf.select(cfg, "paths.log_dir", default=None)
    if isinstance(log_dir, str) and not log_dir.strip():
        _stop(
            "hdrunet-train",
            "paths.log_dir is empty (from $HDRUNET_LOG_DIR?): give the folder for the runs "
            "(an empty one would put them under /train at the root)",
        )


_CONFIG_OPTIONS = ("-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir")


def check_sweep_folder(argv: list[str]) -> None:
    """Exit with one line, before Hydra writes its ``multirun.yaml``, when a sweep's folder
    (``hydra.sweep.dir`` as Hydra will resolve it) holds files but no sweep of
    ``hdrunet-train`` (a run's folder, a data folder, another program's sweep), or holds a
    sweep of other variants (its report would mix the two). The same sweep again, to go on
    with ``resume=auto`` or to be refused job by job, is let through."""
    if os.environ.get("LOCAL_RANK", "0") != "0" or "--multirun" not in _modes(argv):
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if any(a in _CONFIG_OPTIONS for a in argv):
        return  # another config: the jobs' own checks stand
    try:
        parsed = OverridesParser.create().parse_overrides(
            [a for a in argv if not a.startswith("-")]
        )
    except Exception:  # a grammar error: Hydra's to report
        return
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    composed = _hydra_folder(fixed, "hydra.sweep.dir")
    if composed is None:
        return
    _check_log_dir(composed[0])
    folder = composed[1]
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    earlier = _swept(folder)
    if earlier is None:
        entries = sorted(p.name for p in folder.iterdir())
        more = ", ..." if len(entries) > 3 else ""
        _stop(
            "hdrunet-train",
            f"{folder} holds files but no sweep of hdrunet-train ({', '.join(entries[:3])}"
            f"{more}); nothing was written there: give a new folder (hydra.sweep.dir=...), or "
            "a sweep's own",
        )
    now = [_variant(o) for o in parsed if _defines_variants(o)]
    if earlier != now:
        _stop(
            "hdrunet-train",
            f"{folder} holds another sweep ({' '.join(earlier) or 'no swept settings'}; this "
            f"one: {' '.join(now) or 'none'}): its report would mix the two; nothing was "
            "written there: give a new folder (hydra.sweep.dir=...)",
        )
    exclude = composed[0].hydra.job.config.override_dirname.exclude_keys
    then, given = _named(recorded_sweep_overrides(folder)[1], exclude), _named(parsed, exclude)
    if then != given:
        _stop(
            "hdrunet-train",
            f"{folder} holds this sweep with other settings that name its job folders (its "
            f"jobs' names carry {' '.join(then) or 'none'}; this command's would carry "
            f"{' '.join(given) or 'none'}): each job would start afresh in a new folder beside "
            "its earlier one; nothing was written there: give the sweep's own settings as "
            "written (trainer.max_steps may change, to train on) or a new folder "
            "(hydra.sweep.dir=...)",
        )


def _defines_variants(override) -> bool:  # a hydra.core.override_parser Override
    """A task override that says which variants a sweep runs: a swept setting, the
    experiment (whose config may sweep) or a sweeper parameter."""
    key = override.get_key_element().lstrip("+~")
    if key.startswith("hydra.sweeper.params"):
        return True
    return not key.startswith("hydra") and (override.is_sweep_override() or key == "experiment")


def _variant(override) -> str:  # a hydra.core.override_parser Override
    """``key=values`` of a variant-defining override, however written (``loss=l1,l2`` is
    ``loss=choice(l1, l2)``), its values in their order: the order numbers the jobs, and
    ``loss=l2,l1`` would find each variant in the other's job folder."""
    key = override.get_key_element().lstrip("+~")
    try:
        values = list(override.sweep_string_iterator())
    except Exception:  # not a sweep, or a range/interval: as written
        return override.input_line
    return f"{key}={','.join(values)}"


def _named(overrides, exclude) -> list[str]:
    """The parts of job folder names that the fixed (not swept) task settings of
    ``overrides`` (strings, or parsed Overrides) give, sorted: as Hydra's
    ``override_dirname`` writes them (the setting as given, ``++lr=0.001`` apart from
    ``lr=0.001``; ``exclude`` left out) and ``hdrunet.suffix`` makes them safe."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if overrides and isinstance(overrides[0], str):
        try:
            overrides = OverridesParser.create().parse_overrides(overrides)
        except Exception:  # a damaged record: _swept has refused it already
            return []
    return sorted(
        dirname(o.input_line.replace("=", "-"))
        for o in overrides
        if not _defines_variants(o)
        and not o.key_or_group.startswith("hydra")
        and o.key_or_group not in exclude
    )


def _swept(sweep_dir: Path) -> list[str] | None:
    """The variant-defining overrides of the sweep in ``sweep_dir`` (in their order), or
    None when it holds no record of a sweep of ``hdrunet-train``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    record = recorded_sweep_overrides(sweep_dir)
    if record is None or record[0] != "train":
        return None
    try:
        parsed = OverridesParser.create().parse_overrides(record[1])
    except Exception:  # a damaged record
        return None
    return [_variant(o) for o in parsed if _defines_variants(o)]


def check_launcher_folder(argv: list[str]) -> None:
    """Exit with one line when ``torchrun`` or ``srun`` (several tasks) started this
    process without a run folder: each rank composes its own time-stamped folder, a second
    apart at times, and the ranks other than 0 would leave folders of their own."""
    if _modes(argv) - {"--run"} or "--help" in argv or "-h" in argv:
        return  # a sweep, --cfg, --info, --help: no run folder
    if "TORCHELASTIC_RUN_ID" in os.environ:
        launcher = "torchrun"
    elif "SLURM_PROCID" in os.environ and os.environ.get("SLURM_NTASKS", "1") not in ("", "1"):
        launcher = "srun"
    else:
        return
    if not any(a.lstrip("+").startswith(("hydra.run.dir=", "hydra.run=")) for a in argv):
        _stop(
            "hdrunet-train",
            f"{launcher} starts every rank with its own time-stamped run folder: give them "
            "one with hydra.run.dir=... (e.g. hydra.run.dir=logs/train/runs/my_run)",
        )


def quoted_override(key: str, value: str) -> str:
    """``key=value`` for the shell, its value in Hydra's double quotes, so that it reaches
    the tool as ``value`` (interpolation-like ``${...}`` included): ``'input="a,b.png"'``;
    a value with an apostrophe gets the shell's way of quoting one."""
    # Hydra's quoted strings: a backslash escapes only before a quote (or the closing one);
    # OmegaConf then reads \${ as a literal ${
    text = re.sub(r"(\\+)(?=\"|$)", lambda m: m.group(1) * 2, value)
    text = text.replace('"', '\\"').replace("${", "\\${")
    return shlex.quote(f'{key}="{text}"')


def check_override_syntax(tool: str, argv: list[str]) -> None:
    """Exit with one line when a setting is not one Hydra can read: a value with a
    character its grammar leaves to quotes (``input=café.jpg``, ``IMG (1).jpg``,
    ``a#b.jpg``) says how to quote it; a word without ``=`` (a path given alone) says that
    settings are ``key=value``. Hydra's own answer is a parser exception of several lines
    with exit status 1. Command lines with options other than ``-m`` are left to Hydra."""
    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in argv):
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    sweeping = bool({"-m", "--multirun", "hydra.mode=MULTIRUN"} & set(argv))
    for arg in argv:
        if arg in ("-m", "--multirun"):
            continue
        key, equals, value = arg.partition("=")
        quoted = quoted_override(key, value)
        try:
            (override,) = parser.parse_overrides([arg])
        except OverrideParseException:
            if not equals:
                _stop(
                    tool,
                    f"{arg!r}: not a setting; settings are key=value (input=PATH, ...): "
                    f"`{tool} --help` lists them",
                )
            _stop(
                tool,
                f"{arg}: Hydra cannot read this value unquoted (it reads letters, digits, "
                f"spaces and / . _ - : as they are); quote it for Hydra inside the shell's "
                f"quotes: {quoted}",
            )
        if not override.is_sweep_override() or sweeping or tool == "hdrunet-train":
            continue  # a training sweep may be asked by hydra.mode=MULTIRUN, in a config too
        if "," not in value or value.endswith(")"):  # range(1,3), choice(a,b), glob(*)
            _stop(tool, f"{arg}: several values (a sweep) need -m")
        else:  # Hydra: "Ambiguous value"
            _stop(
                tool,
                f"{arg}: Hydra reads a comma as several values (a sweep, which needs -m); "
                f"for one value with a comma (a path), quote it for Hydra inside the shell's "
                f"quotes: {quoted}",
            )


def check_one_mode(tool: str, argv: list[str]) -> None:
    """Exit with one line when ``argv`` asks for two of Hydra's modes (``-m --cfg job``):
    Hydra's answer is a traceback."""
    given = sorted(_modes(argv))
    if len(given) > 1:
        _stop(tool, f"{' and '.join(given)}: give one of them (Hydra runs one mode at a time)")


def check_cfg_request(argv: list[str]) -> None:
    """``--cfg hydra --resolve``: Hydra resolves its own settings apart from the job's, and
    they name the job's ``paths.log_dir``; say so in one line instead of its traceback."""
    shown = [b for a, b in itertools.pairwise(argv) if a in ("--cfg", "-c")]
    shown += [a.partition("=")[2] for a in argv if a.startswith("--cfg=")]
    if "hydra" in shown and "--resolve" in argv:
        _stop(
            "hdrunet-train",
            "--cfg hydra --resolve: Hydra resolves its settings apart from the job's, which "
            "they use (paths.log_dir); `--cfg all --resolve` shows both, resolved",
        )


def check_launcher(argv: list[str]) -> None:
    """Exit with one line when a sweep asks for the SLURM launcher on a machine without
    SLURM (Hydra would show the launcher's traceback)."""
    if any(a.startswith("hydra/launcher=submitit_slurm") for a in argv) and not (
        shutil.which("srun") and shutil.which("sbatch")
    ):
        _stop(
            "hdrunet-train",
            "hydra/launcher=submitit_slurm submits the jobs with SLURM (sbatch, srun), which "
            "this machine does not have: run the command on the cluster's login node",
        )


def train() -> float | None:
    """``hdrunet-train``; returns the final val PSNR-mu (for Hydra sweepers)."""
    install_filters()
    check_one_mode("hdrunet-train", sys.argv[1:])
    check_override_syntax("hdrunet-train", sys.argv[1:])
    check_cfg_request(sys.argv[1:])
    check_launcher(sys.argv[1:])
    check_launcher_folder(sys.argv[1:])
    check_run_folder(sys.argv[1:])
    check_sweep_folder(sys.argv[1:])
    check_setting_names("hdrunet-train", "train", sys.argv[1:])
    sys.argv = argv_for_ddp_child(sys.argv)
    return _train()


def predict() -> None:
    """``hdrunet-predict``."""
    install_filters()
    check_one_mode("hdrunet-predict", sys.argv[1:])
    check_override_syntax("hdrunet-predict", sys.argv[1:])
    check_setting_names("hdrunet-predict", "predict", sys.argv[1:])
    _predict()


def evaluate() -> None:
    """``hdrunet-eval``."""
    install_filters()
    check_one_mode("hdrunet-eval", sys.argv[1:])
    check_override_syntax("hdrunet-eval", sys.argv[1:])
    check_setting_names("hdrunet-eval", "eval", sys.argv[1:])
    _evaluate()


def export() -> None:
    """``hdrunet-export``."""
    install_filters()
    check_one_mode("hdrunet-export", sys.argv[1:])
    check_override_syntax("hdrunet-export", sys.argv[1:])
    check_setting_names("hdrunet-export", "export", sys.argv[1:])
    _export()
