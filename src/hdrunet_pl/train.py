"""``hdrunet-train``: compose the Hydra config, build data, model and trainer, train, summarise.

hdrunet-train                              # the paper's network on synthetic data
hdrunet-train experiment=demo              # a few minutes on a CPU (make train)
hdrunet-train -m loss=l1,tanh_l1 trainer.max_steps=20
hdrunet-train -m experiment=ablation_loss +scale=smoke
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import lightning as L
import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, WeightAveraging
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from hdrunet_pl.cli import DDP_OVERRIDES, DDP_RUN_DIR
from hdrunet_pl.data.datamodule import check_validation_split
from hdrunet_pl.data.datasets import check_patch_size
from hdrunet_pl.errors import INTERRUPTED_STATUS, HDRUNetError, one_line
from hdrunet_pl.loggers import finish_loggers, instantiate_loggers
from hdrunet_pl.models.checkpoints import load_model, network_name
from hdrunet_pl.reliability import (
    LastCheckpoint,
    RunFolderInUse,
    check_output_dir,
    check_resume_averaging,
    check_resume_checkpoint,
    check_resume_fits,
    check_resume_schedule,
    check_resume_stream,
    run_folder_lock,
)
from hdrunet_pl.resolvers import dirname
from hdrunet_pl.run_files import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    FAILED_FILE,
    LAST_CHECKPOINT,
    LOCK_FILE,
    METRICS_FILE,
    OVERRIDES_FILE,
    absolute_paths,
    check_no_empty_paths,
    is_lock_file,
    is_package_run,
    kept_name,
    override_key,
    override_value,
    read_config,
    resume_command,
    resume_path,
    sweep_resume_command,
)
from hdrunet_pl.runtime import keep_freed_memory, process_start_time
from hdrunet_pl.validation import (
    TRAIN_RULES,
    check_groups_apply,
    check_required,
    check_settings,
)

log = logging.getLogger(__name__)


@dataclass
class TrainSummary:
    """What a run achieved (also printed at its end and saved as ``metrics.json``)."""

    steps: int
    seconds: float
    psnr_mu_before: float | None
    psnr_mu_after: float | None
    psnr_l_after: float | None
    psnr_mu_identity: float | None
    psnr_l_identity: float | None
    best_checkpoint: str | None
    last_checkpoint: str | None
    output_dir: str
    resumed_from: int = 0  # the step of the checkpoint this run continued (0: a new run)

    def lines(self, commands: dict[str, str] | None = None) -> list[str]:
        """The summary as printed; ``commands`` (label -> shell line) are added at the end."""

        def db(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.2f} dB"

        trained = f"{self.steps} in {self.seconds:.0f} s"
        if self.resumed_from:
            trained = (
                f"{self.steps - self.resumed_from} (from step {self.resumed_from} to "
                f"{self.steps}) in {self.seconds:.0f} s"
            )
        out = [
            f"steps trained        {trained}",
            f"val PSNR-mu before   {db(self.psnr_mu_before)}",
            f"val PSNR-mu after    {db(self.psnr_mu_after)}",
            f"val PSNR-L after     {db(self.psnr_l_after)}",
            f"LDR identity         {db(self.psnr_mu_identity)}",
        ]
        if self.psnr_mu_after is not None and self.psnr_mu_identity is not None:
            out.append(f"gain over identity   {self.psnr_mu_after - self.psnr_mu_identity:+.2f} dB")
        if self.psnr_l_after is not None and self.psnr_l_identity is not None:
            # the challenge's second score: a model may gain in one and lose in the other
            out.append(f"gain in PSNR-L       {self.psnr_l_after - self.psnr_l_identity:+.2f} dB")
        out += [
            f"best checkpoint      {self.best_checkpoint or 'none'}",
            f"last checkpoint      {self.last_checkpoint or 'none'}",
            f"run directory        {self.output_dir}",
        ]
        if commands:
            out += ["", "next (paste as they are):"]
            out += [f"  {label:<8} {line}" for label, line in commands.items()]
        return out


def _validates(trainer: L.Trainer) -> bool:
    """Whether the run validates at all (``limit_val_batches`` not 0)."""
    return trainer.limit_val_batches not in (0, 0.0)


def _flat(tree: object, prefix: str = "") -> dict[str, object]:
    """A nested dict's leaves by dotted key (lists are leaves)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, object] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}"))
    return out


RESUME_SETTINGS = ("resume", "ckpt_path", "trainer.max_steps", "trainer.max_epochs")
"""What a resume changes by design (how to resume, how far to train on): not a change of
the run's settings. Nor are a logger's ``id`` and ``resume`` (``logger.wandb.id``: the
run a resume continues, set by :func:`hdrunet_pl.loggers.instantiate_loggers`)."""
LOGGER_RESUME_KEYS = ("id", "resume")


def _resume_setting(key: str) -> bool:
    """Whether the flattened config ``key`` says how to resume, not what the run is."""
    if key in RESUME_SETTINGS:
        return True
    parts = key.split(".")
    return len(parts) == 3 and parts[0] == "logger" and parts[2] in LOGGER_RESUME_KEYS


def _keep_changed_config(path: Path, new: DictConfig) -> None:
    """A start in a run's folder whose settings differ from the recorded ``config.yaml``
    (a resume with another loss or seed, say): the earlier file is kept as
    ``config-<k>.yaml`` (k = 1, 2, ..., as the CSV logs' ``metrics-<k>.csv``) and the
    changed settings are named in one line, instead of the earlier part's settings being
    written over."""
    old = read_config(path)
    if old is None:
        return
    before, after = _flat(old), _flat(OmegaConf.to_container(new, resolve=True))
    changed = sorted(
        k
        for k in before.keys() | after.keys()
        if before.get(k) != after.get(k) and not _resume_setting(k)
    )
    if not changed:
        return
    kept = path.rename(kept_name(path))
    shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
    log.info("this start changes %s; the earlier settings are kept in %s", shown, kept.name)


def _run_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def train_on_setting(trainer: L.Trainer) -> tuple[str, int] | None:
    """The setting that trains a finished run on to twice its length, and its value: the
    steps where the run stopped at ``trainer.max_steps``, the epochs where it stopped at
    ``trainer.max_epochs``; None where it stopped otherwise."""
    steps, epochs = trainer.global_step, trainer.current_epoch
    if 0 <= trainer.max_steps <= steps:
        return "trainer.max_steps", max(2 * steps, steps + 1)
    if trainer.max_epochs is not None and 0 <= trainer.max_epochs <= epochs:
        return "trainer.max_epochs", max(2 * epochs, epochs + 1)
    return None


def next_commands(
    summary: TrainSummary,
    overrides: list[str],
    paths: dict[str, str] | None = None,
    train_on: tuple[str, int] | None = None,
) -> dict[str, str]:
    """Ready-to-run command lines for a finished run: resume (train on), predict, eval.

    ``overrides`` are the run's command-line overrides, ``paths`` its relative input paths
    made absolute (:func:`~hdrunet_pl.run_files.absolute_paths`); paths are quoted for Hydra
    and the shell where they need it. ``train_on`` (:func:`train_on_setting`), given last
    in the resume line, trains the run on (``trainer.max_steps=2400``: change it for
    another length).
    """
    run_dir = summary.output_dir
    weights = summary.best_checkpoint or summary.last_checkpoint
    commands = {}
    if (Path(run_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT).is_file():  # what resume=auto reads
        commands["resume"] = resume_command(overrides, run_dir, paths)
        if train_on is not None:  # the run is finished: as it was, the line trains nothing
            key, value = train_on
            others = [o for o in overrides if override_key(o) != key]
            commands["resume"] = resume_command(others, run_dir, paths) + f" {key}={value}"
    if weights:
        ckpt, run = f"ckpt={override_value(weights)}", f"run={override_value(run_dir)}"
        # a folder per checkpoint: after training on, the new line never meets the old
        # results (predict skips the results that exist, and would keep the old ones)
        name = Path(weights).stem
        if name == Path(LAST_CHECKPOINT).stem:  # last.ckpt changes as the run trains on
            name = f"{name}-step{summary.steps:07d}"
        commands["eval"] = shlex.join(
            ["hdrunet-eval", ckpt, run, f"output={override_value(f'{run_dir}/eval/{name}')}"]
        )
        commands["predict"] = (
            shlex.join(["hdrunet-predict", ckpt])
            + " input=YOUR_LDR_IMAGES "
            + shlex.quote(f"output={override_value(f'{run_dir}/predictions/{name}')}")
        )
    return commands


def _report_interrupted(output_dir: Path, paths: dict[str, str] | None = None) -> None:
    """After Ctrl-C: what was saved, and the line that continues from it."""
    last = output_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
    if last.is_file():
        step = torch.load(last, map_location="cpu", weights_only=True).get("global_step")
        log.info(
            "interrupted; the last checkpoint saved is %s (step %s); to continue from it:\n  %s",
            last.resolve(),
            step,
            resume_command(_run_overrides(), output_dir.resolve(), paths),
        )
    else:
        log.info("interrupted before the first checkpoint was saved; nothing to resume from")


def _metric(metrics: dict, key: str) -> float | None:
    value = metrics.get(key)
    # NaN is not JSON (metrics.json) and not a score: reported as n/a
    return None if value is None or not math.isfinite(float(value)) else float(value)


def _sweep_info() -> dict[str, str]:
    """Name and group of this job for loggers: a multirun's jobs share one group, and each
    is named as its folder (job number first: the overrides part is cut at 120
    characters, which can leave a long sweep's jobs with one name otherwise)."""
    if not HydraConfig.initialized():
        return {}
    hydra_cfg = HydraConfig.get()
    name = dirname(hydra_cfg.job.override_dirname) or None
    if hydra_cfg.mode == RunMode.MULTIRUN:
        number = f"{hydra_cfg.job.num}_{name}" if name else str(hydra_cfg.job.num)
        return {"name": number, "group": Path(hydra_cfg.sweep.dir).name}
    return {"name": name}


def _share_job_with_ddp_children(output_dir: Path) -> None:
    """Let DDP worker processes (started by Lightning with this argv) rerun this one job."""
    if HydraConfig.initialized():
        os.environ[DDP_RUN_DIR] = str(output_dir.resolve())
        os.environ[DDP_OVERRIDES] = json.dumps(list(HydraConfig.get().overrides.task))


def _load_initial_weights(model: L.LightningModule, path: str) -> None:
    """Start training from the weights in ``path`` (this package's checkpoint, the public
    HDRUNet or ExpandNet ``.pth``); the network and its variant must match the configured
    one (a plain state_dict, which does not record the modulation and condition input,
    is taken as the configured variant)."""
    net = model.net
    source = load_model(path, assume=net.config)
    if source.config != net.config:
        raise HDRUNetError(
            f"init_weights={path}: holds {network_name(source.config)}({source.config}), but "
            f"the configured network is {network_name(net.config)}({net.config}); choose the "
            "matching model/modulation/condition"
        )
    net.load_state_dict(source.state_dict())


def _build(cfg: DictConfig, name: str, **kwargs):
    """``instantiate`` with the root cause of a failure as a one-line package error."""
    try:
        return instantiate(cfg, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__ or err
        while cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, HDRUNetError):
            raise cause from None
        raise HDRUNetError(f"{name}: {cause}") from None


SYNTHETIC_DATA = "hdrunet_pl.data.HDRDataModule"
"""The ``_target_`` of ``data=synthetic``, the one data config with a ``val_set`` node."""


def _check_synthetic_only(data: DictConfig) -> None:
    """``data.val_set`` (which ``+scale=smoke`` sets) belongs to ``data=synthetic`` only."""
    if "val_set" in data and data.get("_target_") != SYNTHETIC_DATA:
        raise HDRUNetError(
            "data.val_set: only data=synthetic has it, and +scale=smoke sets it: shrink runs "
            "on other data with debug=fast"
        )


def _check_validation_interval(trainer: DictConfig) -> None:
    """A fraction of an epoch as ``val_check_interval`` needs ``check_val_every_n_epoch``
    (Lightning refuses it with a traceback otherwise)."""
    interval = trainer.get("val_check_interval")
    if isinstance(interval, float) and trainer.get("check_val_every_n_epoch") is None:
        raise HDRUNetError(
            f"trainer.val_check_interval={interval} is a fraction of an epoch, which needs "
            "trainer.check_val_every_n_epoch=N too (validation is by steps here); give a "
            "number of steps >= 1"
        )


def _check_gpu_available(trainer: DictConfig) -> None:
    """``trainer=gpu`` (``ddp``, ...) where torch sees no CUDA GPU: say what to do instead of
    Lightning's "No supported gpu backend found!"."""
    if str(trainer.get("accelerator")) in ("gpu", "cuda") and not torch.cuda.is_available():
        build = f"torch {torch.__version__}, CUDA build: {torch.version.cuda}"
        raise HDRUNetError(
            f"trainer.accelerator={trainer.accelerator}: no CUDA GPU here ({build}); use "
            "trainer=cpu (or ddp_cpu), or install a CUDA build of torch (README, Set-up)"
        )


class RunFinished(Exception):
    """The checkpoint to resume from has already reached ``trainer.max_steps``."""


def train(cfg: DictConfig) -> TrainSummary:
    """Train as ``cfg`` says; ``cfg`` is the composed ``train.yaml`` (resolvable).

    Raises:
        HDRUNetError: a problem with the config, data or files (one line).
        RunFinished: resuming a run that has already trained ``trainer.max_steps`` steps.
    """
    if str(cfg.data.get("_target_", "")).endswith(".HeldOutCaptures"):  # before its data.root
        from hdrunet_pl.data.held_out import EVALUATION_ONLY

        raise HDRUNetError(EVALUATION_ONLY)
    check_required(cfg)
    check_settings(cfg, TRAIN_RULES)
    _check_validation_interval(cfg.trainer)
    check_no_empty_paths(cfg)
    _check_gpu_available(cfg.trainer)
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.job.chdir:  # relative input paths would be read from the run folder
            raise HDRUNetError(
                "hydra.job.chdir=true is not supported: input paths given relative are read "
                "from the folder hdrunet-train starts in, and the run writes into its folder "
                "(hydra.run.dir) itself; leave hydra.job.chdir false"
            )
        model_choice = hydra_cfg.runtime.choices.get("model")
        check_groups_apply(cfg, list(hydra_cfg.overrides.task), model_choice)
    output_dir = Path(cfg.paths.output_dir)
    if os.environ.get("LOCAL_RANK", "0") == "0":
        check_output_dir(output_dir, cfg.paths.get("min_free_gb", 1.0))
    ckpt_path = resume_path(cfg, output_dir)
    resume_point = check_resume_checkpoint(ckpt_path) if ckpt_path is not None else None
    if resume_point is not None:
        max_steps = cfg.trainer.get("max_steps", -1)
        if max_steps is not None and 0 <= max_steps <= resume_point.step:
            if max_steps < resume_point.step or _summarised(output_dir, resume_point.step):
                where = "at" if max_steps == resume_point.step else "past"
                raise RunFinished(
                    f"{ckpt_path} is at step {resume_point.step}, {where} trainer.max_steps="
                    f"{max_steps}: the run is finished; add trainer.max_steps=N with N > "
                    f"{resume_point.step} to train on. Nothing was changed."
                )
            # stopped after its last step, before its summary (pre-empted in the final
            # validation): no steps to train, the final validation and summary to make
            log.info(
                "%s is at trainer.max_steps=%d without the run's summary: finishing the run "
                "(its final validation and summary)",
                ckpt_path,
                max_steps,
            )
    if os.environ.get("LOCAL_RANK", "0") == "0":
        (output_dir / FAILED_FILE).unlink(missing_ok=True)  # from an earlier attempt
    launch_env = {key: os.environ.get(key) for key in _LAUNCH_ENV}
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    _share_job_with_ddp_children(output_dir)

    keep_freed_memory()  # CPU tensors: no page faults on every large allocation
    if "patch_size" in cfg.data:  # before the data sets that are sized by it
        check_patch_size(cfg.data.patch_size)
    _check_synthetic_only(cfg.data)
    datamodule: L.LightningDataModule = _build(cfg.data, "data")
    if hasattr(datamodule, "check_split"):  # training on its validation files: refused
        datamodule.check_split()
    if hasattr(datamodule, "check_files"):  # a broken HDR file: refused now, not hours in
        datamodule.check_files()
    model: L.LightningModule = _build(cfg.model, "model")
    if resume_point is not None:
        check_resume_fits(resume_point, model.net.config, ckpt_path)
        model_cfg = cfg.model
        check_resume_schedule(
            resume_point, model_cfg.get("optimizer"), model_cfg.get("scheduler"), ckpt_path
        )
    elif cfg.get("init_weights"):
        _load_initial_weights(model, cfg.init_weights)
    callbacks = [_build(c, "callbacks") for c in (cfg.get("callbacks") or {}).values() if c]
    if resume_point is not None:
        averaging = any(isinstance(c, WeightAveraging) for c in callbacks)
        check_resume_averaging(resume_point, averaging, ckpt_path)
    loggers = instantiate_loggers(
        cfg.get("logger"), **_sweep_info(), resuming=ckpt_path is not None
    )
    trainer: L.Trainer = _build(
        cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False
    )
    if resume_point is not None:
        batch_size = getattr(datamodule, "batch_size", None)
        check_resume_stream(resume_point, batch_size, trainer.world_size, ckpt_path)
    val_set = getattr(datamodule, "val_set", None)
    if val_set is not None:  # before the run's files: a start that fails leaves no folder
        check_validation_split(len(val_set), trainer.world_size)
    input_paths = absolute_paths(cfg, Path.cwd())
    if trainer.is_global_zero:  # with absolute paths: eval run= works from anywhere
        saved = cfg.copy()
        for key, value in input_paths.items():
            OmegaConf.update(saved, key, value)
        _keep_changed_config(output_dir / CONFIG_FILE, saved)
        OmegaConf.save(saved, output_dir / CONFIG_FILE, resolve=True)
        (output_dir / OVERRIDES_FILE).write_text(yaml.safe_dump(_run_overrides()))
        # a resumed run trains on: an earlier end's summary is no longer its result (a
        # report would show it as the run's final scores); it writes its own at its end
        (output_dir / METRICS_FILE).unlink(missing_ok=True)
    try:
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

        before = None
        if cfg.get("validate_first") and ckpt_path is None and _validates(trainer):
            try:
                before = trainer.validate(model, datamodule=datamodule, verbose=False)[0]
            except SIGTERMException:  # nothing trained yet: nothing to save
                _leave_on_request(
                    trainer,
                    launch_env,
                    output_dir,
                    "before training",
                    "start it again",
                    paths=input_paths,
                )
            except SystemExit:  # Ctrl-C (Lightning's shutdown): nothing trained yet either
                if not trainer.interrupted:
                    raise
                _leave_on_request(
                    trainer,
                    launch_env,
                    output_dir,
                    "before training",
                    "start it again",
                    interrupted=True,
                    paths=input_paths,
                )
        start = time.perf_counter()
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        except SIGTERMException:
            _leave_on_request(
                trainer,
                launch_env,
                output_dir,
                f"at step {trainer.global_step}",
                "continue",
                paths=input_paths,
            )
        except SystemExit:  # Lightning's exit after Ctrl-C twice (the step may be half done)
            if not trainer.interrupted:
                raise
            if trainer.is_global_zero:
                _report_interrupted(output_dir, input_paths)
            sys.exit(INTERRUPTED_STATUS)
        seconds = time.perf_counter() - start
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        final_best = False
        if _validates(trainer) and getattr(model, "validated_step", None) != trainer.global_step:
            # the last steps ran after the last validation (val_check_interval does not
            # divide max_steps): the scores "after" are the final weights'
            if trainer.is_global_zero:
                log.info("validating the final weights (step %d)", trainer.global_step)
            try:
                metrics |= trainer.validate(model, datamodule=datamodule, verbose=False)[0]
            except (SIGTERMException, SystemExit) as stop:
                if isinstance(stop, SystemExit) and not trainer.interrupted:
                    raise
                _leave_on_request(
                    trainer,
                    launch_env,
                    output_dir,
                    "in the final validation",
                    f"finish the run (last.ckpt holds the final weights, step "
                    f"{trainer.global_step}; its final validation and summary are to make)",
                    interrupted=isinstance(stop, SystemExit),
                    paths=input_paths,
                )
            final_best = True
        savers = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
        # only a checkpoint chosen by a score is a best one: Lightning's own (callbacks=none)
        # keeps the latest weights, which is what the last checkpoint is
        chooser = next((c for c in savers if c.monitor), None)
        best = chooser.best_model_path if chooser is not None else None
        last = next(
            (c.last_model_path for c in trainer.callbacks if isinstance(c, LastCheckpoint)),
            None,
        ) or next((c.best_model_path for c in savers if not c.monitor and c.best_model_path), None)
        kept = output_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
        if last is None and resume_point is not None and kept.is_file():
            last = str(kept)  # a run finished without training: its last.ckpt is the final one
        if final_best and last and chooser is not None and chooser.monitor == "val/psnr_mu":
            # the final weights (last.ckpt) were validated after the best one was chosen
            final, chosen = metrics.get("val/psnr_mu"), chooser.best_model_score
            if final is not None and (chosen is None or final > float(chosen)):
                best = last
        summary = TrainSummary(
            steps=trainer.global_step,
            seconds=seconds,
            psnr_mu_before=_metric(before or {}, "val/psnr_mu"),
            psnr_mu_after=_metric(metrics, "val/psnr_mu"),
            psnr_l_after=_metric(metrics, "val/psnr_l"),
            # the identity depends on the validation set alone: step 0's when no later one
            psnr_mu_identity=_metric({**(before or {}), **metrics}, "val/psnr_mu_identity"),
            psnr_l_identity=_metric({**(before or {}), **metrics}, "val/psnr_l_identity"),
            best_checkpoint=_absolute(best),
            last_checkpoint=_absolute(last),
            output_dir=str(output_dir.resolve()),
            resumed_from=resume_point.step if resume_point is not None else 0,
        )
    finally:
        finish_loggers(loggers)
        _end_process_group(launch_env)
    if trainer.is_global_zero:
        (output_dir / METRICS_FILE).write_text(json.dumps(asdict(summary), indent=2))
        commands = next_commands(summary, _run_overrides(), input_paths, train_on_setting(trainer))
        lines = summary.lines(commands)
        log.info("\n".join(["", "== hdrunet-train summary ==", *lines]))
    return summary


def _leave_on_request(
    trainer: L.Trainer,
    launch_env: dict,
    output_dir: Path,
    where: str,
    then: str,
    interrupted: bool = False,
    paths: dict[str, str] | None = None,
) -> NoReturn:
    """Exit cleanly after SIGTERM (pre-emption) or Ctrl-C (``interrupted``, or seen by the
    run's :class:`Preemption`) ``where`` the run stopped, printing the line to ``then`` (and,
    in a sweep, the line that goes on with the whole sweep), with the input ``paths`` given
    relative made absolute, as in the summary's lines. Exit status 0 on a scheduler's
    request, ``INTERRUPTED_STATUS`` after Ctrl-C."""
    _end_process_group(launch_env)
    if trainer.is_global_zero:
        log.info(
            "stopped %s on request; to %s:\n  %s%s",
            where,
            then,
            resume_command(_run_overrides(), output_dir.resolve(), paths),
            _sweep_line(),
        )
    interrupted = interrupted or any(getattr(c, "interrupted", False) for c in trainer.callbacks)
    sys.exit(INTERRUPTED_STATUS if interrupted else 0)


def _sweep_line() -> str:
    """In a sweep's job: the line that goes on with the whole sweep (its later jobs did not
    run), to print after the job's own; empty otherwise."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return ""
    command = sweep_resume_command(Path(HydraConfig.get().sweep.dir).resolve())
    if command is None:
        return ""
    return f"\nor the whole sweep (the jobs after this one have not run):\n  {command}"


def _summarised(output_dir: Path, step: int) -> bool:
    """The run in ``output_dir`` wrote its summary (``metrics.json``) at ``step``."""
    try:
        return json.loads((output_dir / METRICS_FILE).read_text()).get("steps") == step
    except (OSError, ValueError, AttributeError):
        return False


def _absolute(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None


FILE_TIME_STEP = 1.0
"""Seconds by which a file's modification time may fall short of the moment it was written
(file systems store times in coarse steps)."""
HYDRA_FILES = (".hydra", "train.log", LOCK_FILE)
"""What Hydra (and the run lock) write into a run folder before the job starts."""


HYDRA_CONFIG_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")
"""What Hydra writes into a job's ``.hydra`` folder."""


def not_this_jobs(output_dir: Path) -> list[str]:
    """What in ``output_dir`` Hydra (and the run lock) did not write for this job: other
    files, files under the names Hydra uses that are older than this process (another
    Hydra program's ``.hydra`` and ``train.log`` look like a fresh run's), ``.hydra``
    files that Hydra does not write. Names relative to the folder."""
    foreign = []
    for path in sorted(output_dir.iterdir()):
        if path.name not in HYDRA_FILES or path.is_symlink():
            foreign.append(path.name)
        elif path.is_dir():
            foreign += [
                f"{path.name}/{p.name}"
                for p in sorted(path.iterdir())
                if p.name not in HYDRA_CONFIG_FILES or not _written_since_start(p)
            ]
        elif path.name == LOCK_FILE:
            if not is_lock_file(path):
                foreign.append(path.name)  # a user's file under the lock's name
        elif path.name == "train.log":
            if not path.is_file() or not _log_started_by_this_job(path):
                foreign.append(path.name)
        elif not _written_since_start(path):
            foreign.append(path.name)
    return foreign


def _started() -> float:
    """A moment before Hydra wrote anything for this process's jobs: the process's start."""
    return process_start_time() - FILE_TIME_STEP


def _written_since_start(path: Path) -> bool:
    return path.is_file() and not path.is_symlink() and path.stat().st_mtime >= _started()


def _log_started_by_this_job(path: Path) -> bool:
    """An empty ``train.log`` (nothing to lose), or one whose first line is stamped after
    this process began (Hydra appends to a log that is there already)."""
    with path.open("rb") as f:
        first = f.readline(64)
    if not first:
        return True
    try:
        stamp = datetime.strptime(first[1:24].decode(), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except (UnicodeDecodeError, ValueError):
        return False
    # stamps are local time, to the millisecond; one from the future is not this job's
    return _started() - FILE_TIME_STEP <= stamp <= time.time() + FILE_TIME_STEP


def is_fresh_run_dir(output_dir: Path) -> bool:
    """True when ``output_dir`` holds nothing but what Hydra wrote for this job."""
    return output_dir.is_dir() and not not_this_jobs(output_dir)


def remove_fresh_run_dir(output_dir: Path) -> None:
    """Remove what Hydra wrote for a job that failed before it started training, and the
    folder itself if that leaves it empty (the folder the command started in is never
    removed)."""
    for name in HYDRA_FILES:
        path = output_dir / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    started_in = HydraConfig.get().runtime.cwd if HydraConfig.initialized() else Path.cwd()
    if output_dir.resolve() != Path(started_in).resolve():
        with contextlib.suppress(OSError):
            output_dir.rmdir()
    _remove_empty_sweep_dir()


def _stamp(path: Path) -> tuple[int, int] | None:
    """(size, modification time in ns) of ``path``, or None when it does not exist."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def _remove_what_hydra_wrote(output_dir: Path) -> None:
    """In a folder refused as a run's (a data folder given as ``hydra.run.dir``): remove the
    ``.hydra`` files and the empty ``train.log`` that Hydra wrote there for this job."""
    hydra_dir = output_dir / ".hydra"
    for name in HYDRA_CONFIG_FILES:
        path = hydra_dir / name
        if _written_since_start(path):
            path.unlink()
    with contextlib.suppress(OSError):  # only while empty
        hydra_dir.rmdir()
    log_file = output_dir / "train.log"
    if log_file.is_file() and log_file.stat().st_size == 0 and _written_since_start(log_file):
        log_file.unlink()


def _remove_empty_sweep_dir() -> None:
    """In a multirun whose folder holds nothing but Hydra's ``multirun.yaml`` (its first job
    failed at start), remove that too: a failed sweep leaves nothing, as a failed run."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    sweep_dir = Path(HydraConfig.get().sweep.dir)
    if sweep_dir.is_dir() and [p.name for p in sweep_dir.iterdir()] == ["multirun.yaml"]:
        (sweep_dir / "multirun.yaml").unlink()
        with contextlib.suppress(OSError):
            sweep_dir.rmdir()


_LAUNCH_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
"""Variables Lightning's DDP launcher sets in the launching process."""


def _end_process_group(launch_env: dict[str, str | None]) -> None:
    """Close DDP's process group and restore the launch variables as they were before the
    job, so that the next job of a multirun starts (and launches) its own workers."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for key, value in launch_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def log_lightning_to_root() -> None:
    """Send Lightning's messages through the root logger (Hydra's console and ``train.log``)
    instead of the stream handler Lightning installs for itself when imported."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "torchmetrics"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
        logger.propagate = True


def check_output_dir_is_hydras(cfg: DictConfig) -> None:
    """Refuse a ``paths.output_dir`` other than the run folder Hydra made for the job."""
    if not HydraConfig.initialized():
        return
    runtime = HydraConfig.get().runtime
    if OmegaConf.is_missing(runtime, "output_dir"):  # a config composed without a run
        return
    if Path(cfg.paths.output_dir).absolute() != Path(runtime.output_dir).absolute():
        raise HDRUNetError(
            "paths.output_dir is the run's folder, which Hydra makes: choose it with "
            "hydra.run.dir=... (a sweep's with hydra.sweep.dir=...), not paths.output_dir"
        )


def run_job(cfg: DictConfig) -> float | None:
    """One ``hdrunet-train`` job in its Hydra run folder (the console script's work): trains,
    prints one-line errors and exits 2 on bad input; returns the final val PSNR-mu."""
    log_lightning_to_root()
    try:
        check_output_dir_is_hydras(cfg)
    except HDRUNetError as err:
        made = Path(HydraConfig.get().runtime.output_dir)
        if is_fresh_run_dir(made):
            remove_fresh_run_dir(made)
        print(f"hdrunet-train: error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    output_dir = Path(cfg.paths.output_dir)
    rank_zero = os.environ.get("LOCAL_RANK", "0") == "0"
    fresh = rank_zero and is_fresh_run_dir(output_dir)
    if rank_zero and not fresh and not is_package_run(output_dir):
        others = not_this_jobs(output_dir)
        _remove_what_hydra_wrote(output_dir)
        more = ", ..." if len(others) > 3 else ""
        print(
            f"hdrunet-train: error: {output_dir} holds files that are not a run's "
            f"({', '.join(others[:3])}{more}); a run needs a new folder or its own",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(2)
    record = _stamp(output_dir / CONFIG_FILE)  # train() rewrites it once its checks pass
    try:
        with run_folder_lock(output_dir) if rank_zero else contextlib.nullcontext():
            return train(cfg).psnr_mu_after
    except RunFolderInUse as err:  # the folder is the other process's: touch nothing
        print(f"hdrunet-train: error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    except RunFinished as done:
        if fresh:
            remove_fresh_run_dir(output_dir)
        print(f"hdrunet-train: {done}", flush=True)
        return None
    except Exception as err:
        if fresh and not (output_dir / CONFIG_FILE).exists():
            remove_fresh_run_dir(output_dir)  # failed at start: leave nothing behind
        elif rank_zero and output_dir.is_dir() and _stamp(output_dir / CONFIG_FILE) != record:
            # this start got past its checks: its failure is the run's (a refused start
            # leaves an earlier run's folder as it was)
            (output_dir / FAILED_FILE).write_text(f"{type(err).__name__}: {one_line(err)}\n")
        if isinstance(err, HDRUNetError | ValueError):
            # a DDP process besides the first says which it is (an error of its own, or the
            # same as the first's)
            where = "" if rank_zero else f" (process {os.environ.get('LOCAL_RANK')})"
            print(f"hdrunet-train: error{where}: {one_line(err)}", file=sys.stderr, flush=True)
            sys.exit(2)
        raise


if __name__ == "__main__":
    from hdrunet_pl.cli import train as _main

    _main()
