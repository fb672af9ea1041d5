"""Runs that survive crashes: atomic checkpoints, pre-emption, start-up checks.

- :class:`AtomicCheckpointIO`: a checkpoint is written to a temporary file, flushed,
  fsync'd and renamed over the old one; a checkpoint holding NaN/Inf weights is refused.
- :class:`Preemption`: on SIGTERM (any scheduler) or SIGUSR1 (outside SLURM, where
  Lightning handles it) the run saves ``last.ckpt`` after the current step and stops.
- :func:`check_output_dir` and :func:`check_resume_checkpoint`: clear errors before a run
  starts instead of hours into it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shlex
import shutil
import signal
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback as HydraCallback
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from hdrunet_pl.errors import CheckpointError, HDRUNetError
from hdrunet_pl.io import NEW_FILE_MODE, atomic_path, remove_stale_temporaries
from hdrunet_pl.models.checkpoints import (
    CONFIG_KEY,
    STREAM_KEY,
    NetConfig,
    config_from_record,
    network_name,
    read_checkpoint_file,
)
from hdrunet_pl.run_files import (
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    LOCK_FILE,
    in_use_message,
    override_value,
    recorded_resume_command,
)


class NonFiniteError(HDRUNetError, FloatingPointError):
    """A NaN or Inf loss or gradient."""


def _non_finite_tensors(state: Any, prefix: str = "") -> list[str]:
    if isinstance(state, torch.Tensor):
        return [prefix] if state.is_floating_point() and not torch.isfinite(state).all() else []
    if isinstance(state, dict):
        return [n for k, v in state.items() for n in _non_finite_tensors(v, f"{prefix}{k}.")]
    return []


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a temporary file (:func:`~hdrunet_pl.io.atomic_path`), fsyncs it and renames it to
    ``path``: a crash at any moment
    leaves either the old or the new checkpoint, never a torn one. Refuses to write weights
    that are NaN/Inf (the previous checkpoint stays)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        path = Path(path)
        bad = _non_finite_tensors(checkpoint.get("state_dict", {}))
        if bad:
            raise NonFiniteError(
                f"not saving {path}: non-finite weights ({', '.join(bad[:5])}); "
                "the previous checkpoint is kept"
            )
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(path.parent)
        remove_stale_temporaries(path)

    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Load with ``weights_only=True`` always: a checkpoint that would run code is refused."""
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)


class LastCheckpoint(Checkpoint):
    """Keep ``<dirpath>/last.ckpt`` current: every ``every_n_train_steps`` steps, after each
    validation during training and at the end, so that a crash loses at most that many steps.

    A :class:`~lightning.pytorch.callbacks.Checkpoint`, so Lightning runs it after the other
    callbacks, and after the best-checkpoint callback listed before it: ``last.ckpt`` records
    the best checkpoint as it is after the validation, never the one just replaced.

    The file is replaced atomically (with :class:`AtomicCheckpointIO` as the trainer's
    checkpoint plugin); resume with ``ckpt_path=last`` or ``resume=auto``.
    """

    def __init__(self, dirpath: str, every_n_train_steps: int = 1000) -> None:
        if every_n_train_steps < 1:
            raise ValueError(f"every_n_train_steps must be >= 1, got {every_n_train_steps}")
        self.dirpath = Path(dirpath)
        self.every_n_train_steps = every_n_train_steps
        self.last_model_path: str | None = None
        self._saved_step = -1

    def _save(self, trainer: L.Trainer) -> None:
        path = self.dirpath / LAST_CHECKPOINT
        trainer.save_checkpoint(path, weights_only=False)
        self._saved_step = trainer.global_step
        self.last_model_path = str(path)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step % self.every_n_train_steps == 0:
            self._save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._save(trainer)  # again if saved at this step: now with the validation's state

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step != self._saved_step:
            self._save(trainer)


VALIDATION_IDENTITY = "val/psnr_mu_identity"
"""The LDR identity's score on the validation set: it depends on that set alone, so a
change of it tells that a resumed run validates on other images."""


class BestCheckpoint(ModelCheckpoint):
    """Lightning's :class:`~lightning.pytorch.callbacks.ModelCheckpoint` that keeps no
    checkpoint for a non-finite score (a diverged run's NaN validation became its first
    "best" checkpoint, score -inf, which the printed eval and predict lines then named), and
    that chooses anew when a resumed run validates on other images than the best score was
    measured on (another ``data.root``): scores of two validation sets do not compare."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._identity: float | None = None  # the validation set's, at the last choice

    @property
    def state_key(self) -> str:
        """``ModelCheckpoint{...}``, as before: checkpoints of earlier runs resume alike."""
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "validation_identity": self._identity}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._identity = state_dict.get("validation_identity")

    def check_monitor_top_k(self, trainer: L.Trainer, current: torch.Tensor | None = None) -> bool:
        if current is not None and not bool(torch.isfinite(torch.as_tensor(current)).all()):
            return False  # the score is synced: every rank decides alike
        identity = trainer.callback_metrics.get(VALIDATION_IDENTITY)
        if identity is not None:
            identity = float(identity)
            if self._identity is not None and abs(identity - self._identity) > 1e-4:
                self._choose_anew(trainer, identity)
            self._identity = identity
        return super().check_monitor_top_k(trainer, current)

    def _choose_anew(self, trainer: L.Trainer, identity: float) -> None:
        if trainer.is_global_zero:
            print(
                f"the validation set is not the one the best checkpoint was chosen on (LDR "
                f"identity {identity:.2f} dB, was {self._identity:.2f} dB): the best "
                f"checkpoint is chosen anew from step {trainer.global_step} on "
                f"({Path(self.best_model_path).name or 'none'} stays, not compared)",
                flush=True,
            )
        self.best_k_models = {}
        self.kth_best_model_path = self.best_model_path = ""
        self.best_model_score = None
        self.kth_value = torch.tensor(-torch.inf if self.mode == "max" else torch.inf)


class Preemption(L.Callback):
    """Save ``<dirpath>/last.ckpt`` and stop cleanly when the job is asked to leave.

    SIGTERM is caught by Lightning in a single process; SIGUSR1 is caught here unless the
    job runs under SLURM, where Lightning saves and requeues by itself. With several
    processes (DDP) SIGTERM is caught here too: Lightning's handler runs a collective
    (a broadcast) inside the signal handler and passes the signal on to the other
    processes, which deadlocks them when the signal comes twice (``timeout`` signals the
    whole process group) or reaches one process during validation. Here a signal only
    sets a flag; after each training step the processes decide together, save
    ``last.ckpt`` and stop as the next step or validation starts, once the step's own
    metrics are logged.

    Ctrl-C (SIGINT) during training does the same: the step ends, ``last.ckpt`` is saved
    and the run stops (``interrupted`` is then true); a second Ctrl-C stops at once,
    without saving, as Ctrl-C does elsewhere.
    """

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.requested = False
        self.interrupted = False
        self.saved: Path | None = None
        self._previous_handler: Any = None
        self._previous_interrupt: Any = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not SLURMEnvironment.detect():
            self._previous_handler = signal.signal(signal.SIGUSR1, self._request)
        if threading.current_thread() is threading.main_thread():
            self._previous_interrupt = signal.signal(signal.SIGINT, self._interrupt)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGUSR1, self._previous_handler)
            self._previous_handler = None
        if self._previous_interrupt is not None:
            signal.signal(signal.SIGINT, self._previous_interrupt)
            self._previous_interrupt = None

    def _request(self, signum: int, frame: Any) -> None:
        self.requested = True

    def _interrupt(self, signum: int, frame: Any) -> None:
        if self.requested or self.saved is not None:  # asked twice: stop now, unsaved
            signal.signal(signal.SIGINT, self._previous_interrupt or signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = self.interrupted = True
        print(
            "\nCtrl-C: saving last.ckpt when this step ends, then stopping (Ctrl-C again "
            "stops at once, without saving)",
            file=sys.stderr,
            flush=True,
        )

    def _catch_sigterm(self, trainer: L.Trainer) -> None:
        # after Lightning has registered its handlers (it restores the earlier ones when
        # the stage ends); signal handlers can only be set from the main thread
        if trainer.world_size > 1 and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._request)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._catch_sigterm(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._catch_sigterm(trainer)
        self._stop_if_saved(trainer)

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._stop_if_saved(trainer)

    def _stop_if_saved(self, trainer: L.Trainer) -> None:
        if self.saved is not None and trainer.state.fn == "fit":
            raise SIGTERMException()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        requested = self.requested or trainer.received_sigterm
        if trainer.world_size > 1:  # every rank must take part in the save
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if requested and self.saved is None:
            # the stop follows (Lightning's after this step in a single process, else
            # this callback's as the next step or validation starts): the step's metrics
            # are logged first, so that a resumed run's log has every step
            self._save(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, err: BaseException):
        # SIGTERM during validation: Lightning stops there, before the next training step.
        # Not after fit (hdrunet-train's final validation): last.ckpt holds the final state
        # already, and the module may hold a weight average by then, not its own weights
        if (
            isinstance(err, SIGTERMException)
            and self.saved is None
            and trainer.world_size == 1
            and trainer.state.fn == "fit"
        ):
            self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        self.saved = self.dirpath / LAST_CHECKPOINT
        trainer.save_checkpoint(self.saved, weights_only=False)
        if trainer.is_global_zero:
            # hdrunet-train then prints the whole command line that resumes the run
            why = "interrupted" if self.interrupted else "pre-empted"
            print(f"\n{why}: saved {self.saved} at step {trainer.global_step}", flush=True)


def check_output_dir(path: str | Path, min_free_gb: float = 1.0) -> Path:
    """Create ``path`` and check that a file can be written there and that the disk has at
    least ``min_free_gb`` free; raises :class:`HDRUNetError` saying what to change (and
    removes the folders it made)."""
    path = Path(path)
    made = [p for p in (path, *path.parents) if not p.exists()]  # deepest first

    def remove_made() -> None:
        for folder in made:
            with contextlib.suppress(OSError):  # only while empty
                folder.rmdir()

    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        remove_made()
        raise HDRUNetError(
            f"cannot write to the output folder {path} ({err.strerror or err}); "
            "choose another with hydra.run.dir=... or HDRUNET_LOG_DIR=..."
        ) from None
    free_gb = shutil.disk_usage(path).free / 2**30
    if free_gb < min_free_gb:
        remove_made()
        raise HDRUNetError(
            f"only {free_gb:.2f} GB free under {path}, below paths.min_free_gb={min_free_gb}; "
            "free space or choose another output folder"
        )
    return path


class OutputFolderCheck(HydraCallback):
    """Hydra callback: refuse to start when the run (or sweep) folder cannot be written or
    its disk is nearly full, with a one-line error instead of a traceback."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        HydraConfig.instance().set_config(config)  # as Hydra's run_job does: ${hydra:...}
        self._check(config, config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, config.hydra.sweep.dir)

    @staticmethod
    def _check(config: DictConfig, folder: str) -> None:
        try:
            check_output_dir(folder, config.get("paths", {}).get("min_free_gb", 1.0))
        except HDRUNetError as err:
            print(f"{Path(sys.argv[0]).name}: error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)


class RunFolderInUse(HDRUNetError):
    """Another process holds the run folder's lock: this one must leave the folder alone."""


@contextlib.contextmanager
def run_folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold ``folder``'s run lock; a second run in the same folder stops with one line
    (:class:`RunFolderInUse`)."""
    path = Path(folder) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # never through a link: the lock's file is truncated to hold this process's id
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, NEW_FILE_MODE)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise HDRUNetError(
                f"{path}: a symbolic link, not a run's lock; nothing written (remove it)"
            ) from None
        raise
    with open(descriptor, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise RunFolderInUse(in_use_message(folder, holder)) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class ResumePoint:
    """What a training checkpoint to resume from holds: its step and network variant."""

    step: int
    config: NetConfig
    optimizer: dict[str, Any] = field(default_factory=dict)
    """The optimizer's settings as saved (first parameter group; ``lr`` is the initial one)."""
    scheduler: dict[str, Any] = field(default_factory=dict)
    """The learning-rate scheduler's saved state (empty without a scheduler)."""
    averaged: bool = False
    """Saved with a weight average (``callbacks=[...,ema]``): its ``state_dict`` is the
    average, the weights it trained are kept beside it (``current_model_state``)."""
    stream: dict[str, Any] = field(default_factory=dict)
    """Batch size and processes of the run's training stream (empty in older checkpoints)."""


def check_resume_checkpoint(path: str | Path) -> ResumePoint:
    """Check that a checkpoint to resume from exists, loads with ``weights_only=True`` and is
    a training checkpoint of this package; returns its step and network variant."""
    path = Path(path)
    if path.is_dir():
        last = path / CHECKPOINT_DIR / LAST_CHECKPOINT
        hint = f"ckpt_path={override_value(last)}" if last.is_file() else "a checkpoint file"
        raise CheckpointError(
            f"{path}: a folder, not a checkpoint to resume from; give {hint} (or resume the "
            f"run in its own folder: hydra.run.dir={override_value(path)} resume=auto)"
        )
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint to resume from")
    state = read_checkpoint_file(path)
    step = state.get("global_step") if isinstance(state, dict) else None
    if not isinstance(step, int) or "loops" not in state or CONFIG_KEY not in state:
        raise CheckpointError(
            f"{path}: not a training checkpoint of hdrunet-train (no training state to resume "
            f"from); to start from its weights, train afresh with {_init_weights(path)}"
        )
    try:
        config = config_from_record(state[CONFIG_KEY])
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    groups = [g for o in state.get("optimizer_states") or [] for g in o.get("param_groups", [])]
    optimizer = {k: v for k, v in groups[0].items() if k != "params"} if groups else {}
    if "initial_lr" in optimizer:  # lr itself is where the schedule has brought it
        optimizer["lr"] = optimizer.pop("initial_lr")
    schedulers = state.get("lr_schedulers") or [{}]
    averaged = "current_model_state" in state
    stream = state.get(STREAM_KEY)
    stream = dict(stream) if isinstance(stream, dict) else {}
    return ResumePoint(step, config, optimizer, dict(schedulers[0]), averaged, stream)


def check_resume_averaging(point: ResumePoint, averaging: bool, path: str | Path) -> None:
    """Refuse to resume a checkpoint saved with a weight average without one: training
    would go on from the average, not from the weights the run trained (with the optimizer
    state of the latter)."""
    if point.averaged and not averaging:
        raise CheckpointError(
            f"{path} was saved with a weight average (callbacks=[default,ema]), whose "
            "weights it holds: resume with the same callbacks, which train on from the run's "
            "own weights"
        )


def _comparable(value: Any) -> Any:
    if isinstance(value, Counter):  # MultiStepLR keeps its milestones as a Counter
        return sorted(value.elements())
    if isinstance(value, (list, tuple)):
        return [_comparable(v) for v in value]
    if isinstance(value, float):
        return round(value, 12)
    return value


def check_resume_schedule(
    point: ResumePoint,
    optimizer_cfg: DictConfig | dict | None,
    scheduler_cfg: DictConfig | dict | None,
    path: str | Path,
) -> None:
    """Refuse to resume with optimizer or scheduler settings other than the checkpoint's.

    A resumed run continues with the optimizer and schedule saved in the checkpoint
    (learning rate, betas, milestones, gamma): changed settings would be ignored silently.
    """
    changed = []
    for group, configured, saved in (
        ("optimizer", optimizer_cfg, point.optimizer),
        ("scheduler", scheduler_cfg, point.scheduler),
    ):
        if isinstance(configured, DictConfig):
            configured = OmegaConf.to_container(configured, resolve=True)
        for key, value in (configured or {}).items():
            if key.startswith("_") or key not in saved:
                continue
            if _comparable(value) != _comparable(saved[key]):
                was = _comparable(saved[key])
                changed.append(f"model.{group}.{key}={_comparable(value)} (checkpoint: {was})")
    if changed:
        raise CheckpointError(
            f"{path}: a resumed run keeps the checkpoint's optimizer and schedule, but this "
            f"run configures {', '.join(changed)}; {_how_to_resume(path, 'those')}, or start a new "
            f"run from its weights with {_init_weights(path)}"
        )


def check_resume_stream(
    point: ResumePoint, batch_size: int | None, processes: int, path: str | Path
) -> None:
    """Refuse to resume with another batch size or number of processes than the checkpoint
    was trained with: the resumed stream of training samples starts at ``step x batch size x
    processes`` of this run's layout, which would skip or repeat samples of the run's own."""
    saved = point.stream
    if not saved or batch_size is None:
        return
    now = {"batch_size": batch_size, "processes": processes}
    if any(saved.get(key) != value for key, value in now.items()):
        raise CheckpointError(
            f"{path} was trained with data.batch_size={saved.get('batch_size')} on "
            f"{saved.get('processes')} process(es), this run has {batch_size} on {processes}: "
            "a resumed run continues its stream of training samples exactly only with the "
            f"same batch size and processes; {_how_to_resume(path, 'those')}, or start a new "
            f"run from its weights with {_init_weights(path)}"
        )


def _init_weights(path: str | Path) -> str:
    """``init_weights=<path>`` as it can be pasted into a shell (Hydra quoting inside)."""
    return shlex.quote(f"init_weights={override_value(path)}")


def _how_to_resume(path: str | Path, kept: str) -> str:
    """Advice for a checkpoint that does not fit this run's ``kept`` settings: the command
    line of the run that wrote it, where Hydra recorded that run's overrides."""
    recorded = recorded_resume_command(path)
    if recorded:
        return (
            f"add your other changes (a larger trainer.max_steps, ...) but not {kept} to the "
            f"command that resumes that run as it was set up: {recorded}"
        )
    return "resume with the settings of the run that wrote it"


def network_differences(checkpoint: NetConfig, configured: NetConfig) -> list[str]:
    """``model.net.<field>: <checkpoint's> in the checkpoint, <configured> here`` for each
    setting in which two networks of one kind differ; the kinds when they differ."""
    if type(checkpoint) is not type(configured):
        return [
            f"the checkpoint holds {network_name(checkpoint)}, this run configures "
            f"{network_name(configured)}"
        ]
    theirs, ours = asdict(checkpoint), asdict(configured)
    return [
        f"model.net.{key}: {theirs[key]!r} in the checkpoint, {ours[key]!r} here"
        for key in theirs
        if theirs[key] != ours[key]
    ]


def check_resume_fits(point: ResumePoint, net_config: NetConfig, path: str | Path) -> None:
    """Refuse to resume a checkpoint of another network (or variant) than the configured one,
    naming each difference."""
    if point.config != net_config:
        differences = "; ".join(network_differences(point.config, net_config))
        raise CheckpointError(
            f"{path}: another network than this run's ({differences}); "
            f"{_how_to_resume(path, 'the network settings')}"
        )
