"""Reliability with real training processes: exact resume after SIGKILL, checkpoints that a
kill cannot tear, pre-emption signals, NaN/Inf batches, untrusted files and bad input."""

from __future__ import annotations

import csv
import json
import os
import pickle
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import open_dict

from hdrunet_pl import io
from hdrunet_pl.errors import CheckpointError, HDRUNetError, ImageFileError
from hdrunet_pl.loggers import keep_previous_csv, previous_wandb_run_id
from hdrunet_pl.reliability import (
    AtomicCheckpointIO,
    NonFiniteError,
    check_output_dir,
    check_resume_checkpoint,
    check_resume_schedule,
)
from hdrunet_pl.train import run_job

from .helpers import NaNGradientAt
from .support import (
    FAST,
    SMALL_SYNTHETIC_VAL,
    bare_trainer,
    compose_train,
    noise,
    ok,
    run_tool,
)

REPO = Path(__file__).resolve().parents[1]
MAX_STEPS = 14
MILESTONE = 11
LR = 2e-4
RUN = [
    *FAST,
    *SMALL_SYNTHETIC_VAL,
    # 11 scenes, batches of 2: 5 steps an epoch (each epoch leaves out another scene), so
    # the runs cross epoch boundaries (after steps 5 and 10)
    "data.train_set.num_images=11",
    f"trainer.max_steps={MAX_STEPS}",
    "trainer.val_check_interval=7",
    "data.num_workers=2",
    "trainer.precision=bf16-mixed",
    f"model.optimizer.lr={LR}",
    f"model.scheduler.milestones=[{MILESTONE}]",  # after every kill or stop below
]
"""A 14-step run of a tiny network as a real run trains (two loader processes, bf16
autocast, an uneven data set, a learning-rate step), validated at steps 7 and 14; the
learning rate halves after step 11."""


def train_process(
    run_dir: Path, *overrides: str, base: tuple[str, ...] = tuple(RUN), cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """``hdrunet-train`` in its own process, writing to ``run_dir``; ``tests.helpers``
    callbacks are importable through PYTHONPATH."""
    args = [*base, f"hydra.run.dir={run_dir}", *overrides]
    return run_tool("hdrunet-train", args, cwd or run_dir.parent)


def train_in_this_process(
    run_dir: Path, *overrides: str, base: tuple[str, ...] = tuple(RUN)
) -> int:
    """``hdrunet-train``'s job (``run_job``) on the composed config, in this process, as
    Hydra starts it (run folder made, ``HydraConfig`` set): its exit code (it must exit)."""
    cfg = compose_train([*base, f"hydra.run.dir={run_dir}", *overrides], with_hydra=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)  # what ${hydra:runtime.output_dir} gives
    run_dir.mkdir(exist_ok=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # as Hydra hands the job its config
    try:
        with pytest.raises(SystemExit) as exit_info:
            run_job(cfg)
    finally:
        HydraConfig.instance().cfg = None
    return exit_info.value.code


def step_values(path: Path, column: str = "train/loss") -> dict[int, float]:
    """``column`` of a CSV log by step (the step a value was logged at)."""
    with open(path) as f:
        return {int(r["step"]): float(r[column]) for r in csv.DictReader(f) if r[column]}


def step_losses(path: Path) -> dict[int, float]:
    return step_values(path, "train/loss")


def learning_rates(path: Path) -> dict[int, float]:
    """The learning rate of each logged step: ``lr-Adam`` at step N is what the optimizer
    step of batch N + 1 uses (LearningRateMonitor logs it as that batch starts)."""
    return step_values(path, "lr-Adam")


def expected_learning_rates(steps) -> dict[int, float]:
    """MultiStepLR(milestones=[MILESTONE], gamma=0.5): halved once, from step MILESTONE."""
    return {step: LR if step < MILESTONE else LR / 2 for step in steps}


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_training_state(a: Path, b: Path) -> None:
    """Same step, weights, Adam moments and learning-rate schedule, bit for bit."""
    ca, cb = load(a), load(b)
    assert ca["global_step"] == cb["global_step"] == MAX_STEPS
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    for key, value in ca["state_dict"].items():
        assert torch.equal(value, cb["state_dict"][key]), key
    sa, sb = ca["optimizer_states"][0]["state"], cb["optimizer_states"][0]["state"]
    for i in sa:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(sa[i][name], sb[i][name]), (i, name)
    assert ca["lr_schedulers"] == cb["lr_schedulers"]


def assert_resumed_run_matches(reference: Path, run: Path, from_step: int) -> None:
    """The run resumed at ``from_step`` logs the reference's losses, bit for bit (the same
    batches, crops and bf16 arithmetic on the same CPU threads), halves the learning rate
    once, at MILESTONE (from its own scheduler state, not a restarted or re-stepped one),
    and ends in the reference's training state."""
    assert learning_rates(reference / "csv" / "metrics.csv") == expected_learning_rates(
        range(MAX_STEPS)
    )
    assert learning_rates(run / "csv" / "metrics.csv") == expected_learning_rates(
        range(from_step, MAX_STEPS)
    )
    resumed = step_losses(run / "csv" / "metrics.csv")
    expected = step_losses(reference / "csv" / "metrics.csv")
    assert sorted(resumed) == list(range(from_step + 1, MAX_STEPS + 1))  # continued at its step
    assert resumed == {step: expected[step] for step in resumed}
    assert_same_training_state(
        reference / "checkpoints" / "last.ckpt", run / "checkpoints" / "last.ckpt"
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run that interrupted ones must reproduce."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    ok(train_process(run_dir))
    return run_dir


@pytest.mark.parametrize(
    ("every_n", "kill_at", "saved_at"),
    [
        # a periodic save mid-epoch (the torn-save test below kills and resumes the same
        # way; this variant runs with `make test-slow`); the save after validation
        pytest.param(4, 9, 8, id="periodic-save", marks=pytest.mark.slow),
        pytest.param(100, 9, 7, id="after-validation"),
    ],
)
def test_sigkill_mid_epoch_then_ckpt_path_last_continues_step_for_step(
    reference, tmp_path, every_n, kill_at, saved_at
):
    """SIGKILL in the 4th step of the second epoch (with its loader processes), resumed
    from the last save: the same losses as the uninterrupted run, bit for bit, across the
    next epoch boundary and the learning-rate milestone, which is passed once."""
    run_dir = tmp_path / "run"
    every = f"callbacks.last_checkpoint.every_n_train_steps={every_n}"
    killed = train_process(
        run_dir,
        every,
        "+callbacks.kill._target_=tests.helpers.KillAtStep",
        f"+callbacks.kill.step={kill_at}",
    )
    assert killed.returncode == -9
    assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == saved_at

    resumed = ok(train_process(run_dir, every, "ckpt_path=last"))
    assert_resumed_run_matches(reference, run_dir, saved_at)
    assert noise(resumed, tmp_path) == []  # not Lightning's "dataloader is not resumable"
    # the killed run's log is kept beside the resumed one
    killed_log = run_dir / "csv" / "metrics-1.csv"
    killed_losses, reference_losses = (
        step_losses(log) for log in (killed_log, reference / "csv" / "metrics.csv")
    )
    assert sorted(killed_losses) == list(range(1, kill_at))  # step kill_at died unsaved
    assert killed_losses == {step: reference_losses[step] for step in killed_losses}
    assert learning_rates(killed_log) == expected_learning_rates(range(kill_at - 1))


def test_a_resumed_run_has_no_summary_until_it_writes_its_own(reference, tmp_path):
    """A finished run resumed with a larger trainer.max_steps (the README's way to train
    on): while it trains, or once killed, its folder holds no ``metrics.json`` of the
    earlier end, which ``hdrunet-report`` took for the run's final scores ("done", the old
    steps); the resumed run's own summary comes at its end."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    summary = run_dir / "metrics.json"
    assert json.loads(summary.read_text())["steps"] == MAX_STEPS
    seen = tmp_path / "seen.txt"
    resume_in_this_process(
        run_dir,
        f"trainer.max_steps={MAX_STEPS + 2}",
        "+callbacks.note._target_=tests.helpers.NoteFileAtStart",
        f"+callbacks.note.path={summary}",
        f"+callbacks.note.record={seen}",
    )
    assert seen.read_text() == "False"
    assert json.loads(summary.read_text())["steps"] == MAX_STEPS + 2


def resume_in_this_process(run_dir: Path, *overrides: str) -> None:
    """``hdrunet-train ... resume=auto`` on ``run_dir`` in this process, as Hydra starts the
    job; it must succeed."""
    run_dir.mkdir(exist_ok=True)  # as Hydra makes it
    cfg = compose_train(
        [*RUN, f"hydra.run.dir={run_dir}", "resume=auto", *overrides], with_hydra=True
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    try:
        run_job(cfg)
    finally:
        HydraConfig.instance().cfg = None


def test_a_run_ended_mid_epoch_is_resumed_in_that_epoch(tmp_path):
    """A 7-step run (5-step epochs) ends two steps into its second epoch, its last
    checkpoint saved as it ends. Trained on to three epochs (``max_epochs=3``), it
    finishes that epoch and one more: step 15, the steps numbered in the epochs of a run
    trained straight through. Lightning's checkpoint at the end counted the epoch as
    completed: the resumed run went on in the third epoch, logged the wrong epoch and
    stopped at step 10."""
    run_dir = tmp_path / "run"
    every = ("trainer.val_check_interval=5", "data.num_workers=0")
    resume_in_this_process(run_dir, "trainer.max_steps=7", *every)
    assert load(run_dir / "checkpoints" / "last.ckpt")["epoch"] == 1
    resume_in_this_process(run_dir, "trainer.max_steps=-1", "trainer.max_epochs=3", *every)
    assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 15
    epochs = step_values(run_dir / "csv" / "metrics.csv", "epoch")
    # (the last step's row, written as the run ends, carries Lightning's finished count)
    assert {s: epochs[s] for s in range(8, 15)} == {
        8: 1,
        9: 1,
        10: 1,
        **dict.fromkeys(range(11, 15), 2),
    }


def test_resume_refuses_optimizer_or_schedule_settings_it_would_ignore(reference, tmp_path, capsys):
    """The checkpoint's Adam settings and MultiStepLR state are restored over whatever a
    resumed run configures, so a changed learning rate or milestone is refused, not lost."""
    last = reference / "checkpoints" / "last.ckpt"
    point = check_resume_checkpoint(last)
    assert point.optimizer["lr"] == LR and point.scheduler["gamma"] == 0.5
    same = {"lr": LR, "betas": [0.9, 0.99]}
    check_resume_schedule(point, same, {"milestones": [MILESTONE], "gamma": 0.5}, last)
    with pytest.raises(CheckpointError) as raised:
        check_resume_schedule(point, same | {"lr": 1e-3}, {"milestones": [5, 12]}, last)
    message = str(raised.value)
    assert "model.optimizer.lr=0.001 (checkpoint: 0.0002)" in message
    assert f"model.scheduler.milestones=[5, 12] (checkpoint: [{MILESTONE}])" in message
    # the way out: the command line of the run that wrote it, as Hydra recorded it there
    recorded = shlex.split(message.split("as it was set up: ")[1].split(", or start")[0])
    assert recorded[0] == "hdrunet-train" and f"model.optimizer.lr={LR}" in recorded
    assert recorded[-2:] == [f"hydra.run.dir={reference.resolve()}", "resume=auto"]

    run_dir = tmp_path / "run"  # the job hdrunet-train runs, in this process
    shutil.copytree(reference, run_dir)
    before = load(run_dir / "checkpoints" / "last.ckpt")["global_step"]
    overrides = ("trainer.max_steps=20", "model.scheduler.milestones=[16]", "ckpt_path=last")
    assert train_in_this_process(run_dir, *overrides) == 2
    assert "model.scheduler.milestones=[16] (checkpoint: [11])" in capsys.readouterr().err
    assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == before


@pytest.mark.slow  # three two-process runs, ~60 s: `make test-slow`
def test_ddp_run_killed_and_resumed_logs_the_same_losses(tmp_path):
    """Two processes (each with its share of every step, from the package's own sampler)
    killed with SIGKILL after step 5 and resumed from step 4 log the same losses at steps
    5 and 6 as a run that was never interrupted; 4 samples a step and 11 scenes make the
    runs cross epochs (of 2 steps: the 3 scenes left over differ from epoch to epoch)."""
    ddp = ("trainer=ddp_cpu", "trainer.max_steps=6", "trainer.val_check_interval=100")
    ddp += ("validate_first=false",)  # no validation: losses only
    ddp += ("data.num_workers=1", "trainer.precision=32")  # 2 processes on 2 CPUs are enough
    every = "callbacks.last_checkpoint.every_n_train_steps=2"
    reference_run = tmp_path / "reference"
    ok(train_process(reference_run, *ddp))
    run_dir = tmp_path / "run"
    killed = train_process(
        run_dir,
        *ddp,
        every,
        "+callbacks.kill._target_=tests.helpers.KillAtStep",
        "+callbacks.kill.step=5",
    )
    assert killed.returncode == -9
    assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 4
    ok(train_process(run_dir, *ddp, every, "resume=auto"))
    resumed = step_losses(run_dir / "csv" / "metrics.csv")
    expected = step_losses(reference_run / "csv" / "metrics.csv")
    assert sorted(resumed) == [5, 6]
    for step, loss in resumed.items():
        assert loss == pytest.approx(expected[step], abs=1e-6), step


def test_sigterm_in_the_validation_before_training_says_how_to_start_again(tmp_path):
    """Nothing is trained yet, so nothing is saved; the run still says it stopped on
    request and how to go on (it exited 0 without a word before)."""
    base = (*FAST, *SMALL_SYNTHETIC_VAL, "trainer.max_steps=3")
    signal_at = (
        "+callbacks.signal._target_=tests.helpers.SignalAtStep",
        "+callbacks.signal.step=0",
        "+callbacks.signal.signum=SIGTERM",
        "+callbacks.signal.during=validate_first",
    )
    run_dir = tmp_path / "run"
    stopped = ok(train_process(run_dir, *signal_at, base=base))
    assert "stopped before training on request; to start it again:" in stopped.stdout
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()
    ok(train_process(run_dir, "resume=auto", base=base))
    assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 3


@pytest.mark.parametrize(
    ("during", "rank", "saved_at"),
    [
        # one process only, in the middle of a validation: Lightning's handler waited in a
        # broadcast that the other process never made
        pytest.param("validation", 1, 3, id="one-process-in-validation"),
        # every process, mid-step: the first passed the signal on, so the second got it
        # twice (as `timeout` signalling the process group does)
        pytest.param("train", None, 3, id="every-process-mid-step"),
    ],
)
def test_ddp_preemption_saves_and_stops_every_process(tmp_path, during, rank, saved_at):
    """SIGTERM under DDP (two gloo processes) saves last.ckpt and ends both processes with
    exit status 0, instead of leaving them waiting on each other."""
    ddp = ("trainer=ddp_cpu", "trainer.max_steps=8", "trainer.val_check_interval=2")
    ddp += ("validate_first=false", "data.num_workers=1", "trainer.precision=32")
    signal_at = [
        "+callbacks.signal._target_=tests.helpers.SignalAtStep",
        "+callbacks.signal.step=2",
        "+callbacks.signal.signum=SIGTERM",
        f"+callbacks.signal.during={during}",
    ]
    if rank is not None:
        signal_at.append(f"+callbacks.signal.rank={rank}")
    run_dir = tmp_path / "run"
    stopped = ok(train_process(run_dir, *ddp, *signal_at))
    assert f"stopped at step {saved_at} on request; to continue:" in stopped.stdout
    assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == saved_at
    assert sorted(step_losses(run_dir / "csv" / "metrics.csv")) == list(range(1, saved_at + 1))


def test_kill_while_writing_a_checkpoint_leaves_the_previous_one(reference, tmp_path):
    run_dir = tmp_path / "run"
    every = "callbacks.last_checkpoint.every_n_train_steps=4"
    killed = train_process(
        run_dir,
        every,
        "+callbacks.torn._target_=tests.helpers.KillDuringSave",
        "+callbacks.torn.step=9",
    )
    assert killed.returncode == -9
    folder = run_dir / "checkpoints"
    torn = list(folder.glob(".last.tmp-*.ckpt"))
    assert len(torn) == 1  # the save at step 12 died half-way through its temporary file
    with pytest.raises(Exception):  # noqa: B017 - any unpickling error: the half file is junk
        load(torn[0])
    assert load(folder / "last.ckpt")["global_step"] == 8

    ok(train_process(run_dir, every, "ckpt_path=last"))
    assert_resumed_run_matches(reference, run_dir, 8)
    assert not list(folder.glob(".last.tmp-*.ckpt"))  # the dead process's temporary is gone


@pytest.mark.parametrize(
    ("signum", "during", "step", "saved_at"),
    [
        # end to end with `make test-slow`; its handler is checked in-process below, and
        # from the request on it takes SIGTERM's path (Preemption.on_train_batch_end)
        pytest.param("SIGUSR1", "train", 5, 6, id="SIGUSR1", marks=pytest.mark.slow),
        pytest.param("SIGTERM", "validation", 7, 7, id="SIGTERM-in-validation"),
        # during a step, as a scheduler signals every process of the job (SLURM at a time
        # limit, or with --signal): the DataLoader workers get it too and leave it to the run
        pytest.param("SIGTERM", "whole_job", 5, 6, id="SIGTERM-to-the-workers-too"),
    ],
)
def test_preemption_signal_saves_exits_zero_and_requeue_resumes(
    reference, tmp_path, signum, during, step, saved_at
):
    run_dir = tmp_path / "run"
    signal_at = [
        "+callbacks.signal._target_=tests.helpers.SignalAtStep",
        f"+callbacks.signal.step={step}",
        f"+callbacks.signal.signum={signum}",
    ]
    if during == "whole_job":
        signal_at.append("+callbacks.signal.whole_job=true")
    else:
        signal_at.append(f"+callbacks.signal.during={during}")
    stopped = ok(train_process(run_dir, *signal_at))
    assert "pre-empted: saved" in stopped.stdout
    if during == "whole_job":  # the workers ignored it: a later batch would still come
        assert "workers alive after the signal: 2 of 2" in stopped.stdout
    assert f"stopped at step {saved_at} on request; to continue:" in stopped.stdout
    # the whole command, pasteable: the run's own overrides, its folder, resume=auto
    printed = stopped.stdout.split("to continue:")[1].split("\n")[1].strip()
    assert shlex.split(printed) == [
        "hdrunet-train",
        *RUN,
        *signal_at,
        f"hydra.run.dir={run_dir.resolve()}",
        "resume=auto",
    ]
    assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == saved_at
    assert not (run_dir / "metrics.json").exists()  # no summary: the run is not finished
    # the stopped run logged every step it made, the saved one too (the resumed log
    # starts after it)
    assert sorted(step_losses(run_dir / "csv" / "metrics.csv")) == list(range(1, saved_at + 1))

    ok(train_process(run_dir, "resume=auto"))  # the requeued job, same command + resume=auto
    assert_resumed_run_matches(reference, run_dir, saved_at)


def _serve_as_a_worker(ready) -> None:
    from hdrunet_pl.data.workers import init_worker

    init_worker(0)
    ready.set()
    time.sleep(60)


def test_a_worker_leaves_a_jobs_signals_to_the_run_but_ends_when_the_run_asks():
    """Each package DataLoader worker runs init_worker: SIGTERM and SIGUSR1 from elsewhere
    (a scheduler signalling the whole job) leave it running, while its parent's SIGTERM
    (how the DataLoader and multiprocessing end workers) still ends it at once."""
    import multiprocessing
    import signal

    context = multiprocessing.get_context("fork")  # as the DataLoader starts its workers here
    ready = context.Event()
    worker = context.Process(target=_serve_as_a_worker, args=(ready,), daemon=True)
    worker.start()
    try:
        assert ready.wait(30)
        for name in ("USR1", "USR2", "TERM", "INT"):  # INT: Ctrl-C in the terminal
            subprocess.run(["kill", "-s", name, str(worker.pid)], check=True)
        time.sleep(0.5)
        assert worker.is_alive() and worker.exitcode is None
        os.kill(worker.pid, signal.SIGTERM)  # from the parent
        worker.join(10)
        assert worker.exitcode == 0
    finally:
        if worker.is_alive():
            worker.kill()


def test_ctrl_c_saves_after_the_step_and_twice_stops_at_once(tmp_path, caplog, monkeypatch):
    """Ctrl-C during training: the step ends, last.ckpt is saved at it and the run stops
    with exit status 130 and the line that continues it. Ctrl-C twice stops at once
    (Lightning's graceful shutdown; the step may be half done, so nothing is saved then):
    the message names the last checkpoint saved (here the one after the validation at step
    7) and the whole command that continues from it. Ctrl-C in the validation before
    training says to start again."""
    import logging
    import signal

    def ctrl_c(step: int, during: str = "train") -> list[str]:
        return [
            f"+callbacks.ctrl_c{step}._target_=tests.helpers.SignalAtStep",
            f"+callbacks.ctrl_c{step}.step={8 if during == 'train' else 0}",
            f"+callbacks.ctrl_c{step}.signum=SIGINT",
            f"+callbacks.ctrl_c{step}.during={during}",
        ]

    from hdrunet_pl import save_model

    # an input path given relative: the line that continues gives it absolute (it is
    # pasted elsewhere: a requeued job, another shell)
    save_model(instantiate(compose_train(RUN).model.net), tmp_path / "start.ckpt")
    monkeypatch.chdir(tmp_path)
    previous = signal.getsignal(signal.SIGINT)  # Lightning ignores SIGINT while it stops
    try:
        with caplog.at_level(logging.INFO, logger="hdrunet_pl.train"):
            first = train_in_this_process(tmp_path / "once", *ctrl_c(1), "init_weights=start.ckpt")
            assert first == 130
            once = (tmp_path / "once" / "checkpoints" / "last.ckpt").resolve()
            assert load(once)["global_step"] == 9  # step 8 (0-based) ended, then saved
            assert "stopped at step 9 on request; to continue:" in caplog.text
            line = caplog.text.split("to continue:")[1].split("\n")[1].strip()
            assert f"init_weights={tmp_path / 'start.ckpt'}" in shlex.split(line)
            caplog.clear()
            assert train_in_this_process(tmp_path / "twice", *ctrl_c(1), *ctrl_c(2)) == 130
            assert "stopped before training on request" not in caplog.text
            early = ctrl_c(1, "validate_first")
            assert train_in_this_process(tmp_path / "early", *early) == 130
            assert "stopped before training on request; to start it again" in caplog.text
    finally:
        signal.signal(signal.SIGINT, previous)
    run_dir = tmp_path / "twice"
    last = (run_dir / "checkpoints" / "last.ckpt").resolve()
    assert f"interrupted; the last checkpoint saved is {last} (step 7)" in caplog.text
    printed = caplog.text.split("to continue from it:")[1].split("\n")[1].strip()
    assert shlex.split(printed)[-2:] == [f"hydra.run.dir={run_dir.resolve()}", "resume=auto"]
    assert load(last)["global_step"] == 7


POISONED = [
    "data.train_set._target_=tests.helpers.PoisonedSynthetic",
    "+data.train_set.poisoned=3",
    "data.train_set.num_images=10",  # every scene in every epoch
    "trainer.max_steps=8",
]


def test_nan_loss_stops_with_the_step_and_the_batch_files(tmp_path):
    result = train_process(tmp_path / "run", *POISONED)
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("hdrunet-train: error: step 2: loss is nan")
    assert "poisoned_000003" in error and "skip_nonfinite=true" in error
    assert "Traceback" not in result.stderr


def test_skip_nonfinite_skips_poisoned_batches_and_saves_finite_weights(tmp_path):
    run_dir = tmp_path / "run"
    result = ok(train_process(run_dir, *POISONED, "skip_nonfinite=true"))
    assert "poisoned_000003; batch skipped" in result.stderr
    with open(run_dir / "csv" / "metrics.csv") as f:
        skipped = [float(r["train/skipped"]) for r in csv.DictReader(f) if r["train/skipped"]]
    assert max(skipped) == 2  # item 3 is drawn once in each of the two epochs
    last = load(run_dir / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 8
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())


def _gradient_run(skip: bool) -> tuple:
    cfg = compose_train([*FAST, *SMALL_SYNTHETIC_VAL, f"skip_nonfinite={skip}"])
    model = instantiate(cfg.model)
    trainer = bare_trainer(
        max_steps=3,
        limit_val_batches=0,
        callbacks=[NaNGradientAt(1)],
    )
    return model, trainer, instantiate(cfg.data)


def test_nan_gradient_stops_the_run():
    model, trainer, data = _gradient_run(skip=False)
    with pytest.raises(
        NonFiniteError, match=r"step 2: gradients are not finite for the batch of synthetic_"
    ):
        trainer.fit(model, datamodule=data)


def test_nan_gradient_with_skip_leaves_the_weights_untouched():
    model, trainer, data = _gradient_run(skip=True)
    snapshots = []

    class Snapshot(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            snapshots.append([p.detach().clone() for p in pl_module.parameters()])

    trainer.callbacks.append(Snapshot())
    trainer.fit(model, datamodule=data)
    assert model.skipped_batches == 1 and trainer.global_step == 3
    after_0, after_1, after_2 = snapshots
    assert all(torch.equal(a, b) for a, b in zip(after_0, after_1, strict=True))  # skipped
    assert not all(torch.equal(a, b) for a, b in zip(after_1, after_2, strict=True))  # trained
    assert all(torch.isfinite(p).all() for p in after_2)


def test_checkpoint_with_nan_weights_is_not_written_over_a_good_one(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 1}, path)
    with pytest.raises(NonFiniteError, match=r"non-finite weights \(w\.\)"):
        io.save_checkpoint({"state_dict": {"w": torch.tensor([1.0, float("inf"), 0.0])}}, path)
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


class RunsCode:
    """Unpickling this runs ``os.system``: what a booby-trapped checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_would_run_code_is_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"state_dict": RunsCode(marker)}, protocol=2))
    # the job hdrunet-train runs, in this process (the attack suite gives such checkpoints
    # to the console scripts)
    assert train_in_this_process(tmp_path / "run", f"ckpt_path={evil}") == 2
    stderr = capsys.readouterr().err
    assert "hdrunet-train: error:" in stderr and "refused" in stderr
    assert "Traceback" not in stderr
    assert not marker.exists()
    with pytest.raises(HDRUNetError, match="refused"):
        check_resume_checkpoint(evil)
    with pytest.raises(Exception, match="Weights only load failed"):  # Lightning's own loads too
        AtomicCheckpointIO().load_checkpoint(evil)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.patch_size=-5"], "data.patch_size must be a positive multiple of 4, got -5"),
        (["model.loss.name=foo"], "unknown loss 'foo'; choose one of tanh_l1"),
        (["data=ntire2021", "data.root=/nonexistent"], "/nonexistent: no such folder"),
        # an unset variable ($ROOT) gives "": it would read the current folder as the data
        (["data=hdr_folder", "data.root="], "data.root is empty: give a folder"),
        (["ckpt_path=/nonexistent.ckpt"], "no such checkpoint to resume from"),
        (
            ["trainer=ddp_cpu", "data.val_set.num_images=1"],  # Lightning's traceback before
            "1 validation image(s) for 2 processes",
        ),
        (["ckpt_path=last"], "ckpt_path=last: no "),
        (["paths.min_free_gb=1e9"], "below paths.min_free_gb=1000000000.0"),
        (
            # Hydra would start the job in its run folder, where relative paths are wrong
            ["hydra.job.chdir=true"],
            "hydra.job.chdir=true is not supported",
        ),
        (
            ["model=expandnet", "modulation=channel"],
            "modulation=channel does not apply to model=expandnet",
        ),
        (["paths.output_dir=elsewhere"], "choose it with hydra.run.dir=..."),
    ],
    ids=[
        "patch",
        "loss",
        "root",
        "empty-root",
        "ckpt",
        "ddp-val-images",
        "last",
        "disk-full",
        "chdir",
        "ignored-group",
        "output-dir",
    ],
)
def test_bad_input_is_a_one_line_error_before_training(tmp_path, capsys, overrides, message):
    """The console script for four cases (disk-full is caught by a Hydra callback before
    the job; chdir moves the job into its run folder; the run folder Hydra makes is the
    one paths.output_dir is checked against); the job itself, in this process, for the
    others (the same code, without another start-up of torch and Lightning)."""
    run_dir = tmp_path / "run"
    other_data = overrides[0].startswith("data=")  # RUN's overrides are for data=synthetic
    base = tuple(FAST) if other_data else tuple(RUN)
    by_process = ("paths.min_free_gb=1e9", "hydra.job.chdir=true", "model=expandnet")
    if overrides[0] in by_process or overrides[0].startswith("paths.output_dir="):
        result = train_process(run_dir, *overrides, base=base)
        code, stderr = result.returncode, result.stderr
    else:
        code = train_in_this_process(run_dir, *overrides, base=base)
        stderr = capsys.readouterr().err
    assert code == 2
    errors = [line for line in stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("hdrunet-train: error: ")
    assert message in errors[0]
    assert "Traceback" not in stderr
    assert not (run_dir / "checkpoints").exists()
    assert not run_dir.exists()  # failed at start: the run folder is removed


def test_unwritable_run_folder_is_refused_before_anything_starts(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a folder cannot be made under a file, even by root
    result = train_process(blocker / "run", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"hdrunet-train: error: cannot write to the output folder {blocker / 'run'} "
        "(Not a directory); choose another with hydra.run.dir=... or HDRUNET_LOG_DIR=..."
    )
    with pytest.raises(HDRUNetError, match="cannot write to the output folder /proc"):
        check_output_dir("/proc/hdrunet-run")


def test_resume_keeps_earlier_logs_and_finds_the_wandb_run(tmp_path):
    (tmp_path / "metrics.csv").write_text("step\n0\n")
    assert keep_previous_csv(tmp_path) == tmp_path / "metrics-1.csv"
    (tmp_path / "metrics.csv").write_text("step\n5\n")
    assert keep_previous_csv(tmp_path) == tmp_path / "metrics-2.csv"
    assert (tmp_path / "metrics-1.csv").read_text() == "step\n0\n"
    assert keep_previous_csv(tmp_path) is None

    assert previous_wandb_run_id(tmp_path) is None
    run = tmp_path / "wandb" / "offline-run-20261126_073000-k3x9q2ab"
    run.mkdir(parents=True)
    (tmp_path / "wandb" / "latest-run").symlink_to(run.name)
    assert previous_wandb_run_id(tmp_path) == "k3x9q2ab"


READERS = {
    "0000.png": [io.read_ldr, io.png_info],
    "0001_gt.png": [io.read_hdr_png, io.png_info, io.hdr_image_size],
    "0001_alignratio.npy": [io.read_alignratio],
    "0002.exr": [io.read_exr, io.read_linear_hdr, io.hdr_image_size],
    "0003.hdr": [io.read_radiance, io.read_linear_hdr, io.hdr_image_size],
}
"""File name (kind) -> the readers that take it."""


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory) -> Path:
    """A folder with one small valid file of each kind in READERS."""
    folder = tmp_path_factory.mktemp("valid")
    rng = np.random.default_rng(0)
    hdr = (rng.random((8, 12, 3)) * 4).astype(np.float32)
    io.write_ldr(folder / "0000.png", (rng.random((8, 12, 3)) * 255).astype(np.uint8))
    io.write_hdr_png(folder / "0001_gt.png", hdr)
    io.write_exr(folder / "0002.exr", hdr)
    io.write_radiance(folder / "0003.hdr", hdr)
    assert sorted(p.name for p in folder.iterdir()) == sorted(READERS)
    return folder


def damaged(valid: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes; the valid file truncated; one byte changed; its start + junk."""
    n = len(valid)
    return st.one_of(
        st.binary(max_size=400),
        st.integers(0, n - 1).map(lambda k: valid[:k]),
        st.tuples(st.integers(0, n - 1), st.integers(0, 255)).map(
            lambda t: valid[: t[0]] + bytes([t[1]]) + valid[t[0] + 1 :]
        ),
        st.binary(max_size=200).map(lambda junk: valid[: n // 3] + junk),
    )


@pytest.mark.parametrize("kind", list(READERS))
@settings(
    max_examples=int(os.environ.get("HDRUNET_FUZZ_EXAMPLES", 120)),
    deadline=None,
    derandomize=os.environ.get("HDRUNET_FUZZ_EXAMPLES") is None,  # CI: the same cases each run
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data())
def test_readers_raise_only_the_package_error_on_damaged_files(valid_files, kind, data):
    # a folder of its own per kind (a damaged file of one kind never sits beside another
    # kind's test), where the damaged file sits among valid partners (align ratio, PNG)
    fuzz = valid_files.parent / f"fuzz-{valid_files.name}-{kind}"
    if not fuzz.is_dir():
        shutil.copytree(valid_files, fuzz)
    path = fuzz / kind
    path.write_bytes(data.draw(damaged((valid_files / kind).read_bytes()), label="file"))
    for reader in READERS[kind]:
        try:
            out = reader(path)
        except ImageFileError as err:
            assert path.name in str(err)  # the error names the file
            continue
        if isinstance(out, np.ndarray):  # what decodes is a finite RGB image
            assert out.ndim == 3 and out.shape[2] == 3 and np.isfinite(out).all()


def test_sigusr1_requests_the_preemption_save_outside_slurm(tmp_path, monkeypatch):
    import os
    import signal

    from hdrunet_pl.reliability import Preemption

    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    monkeypatch.delenv("SLURM_JOB_NAME", raising=False)
    before = signal.getsignal(signal.SIGUSR1)
    callback = Preemption(str(tmp_path))
    callback.setup(None, None, "fit")  # type: ignore[arg-type]
    assert not callback.requested
    os.kill(os.getpid(), signal.SIGUSR1)
    assert callback.requested  # the next training batch end saves and stops
    callback.teardown(None, None, "fit")  # type: ignore[arg-type]
    assert signal.getsignal(signal.SIGUSR1) == before


def test_sigterm_in_the_final_validation_keeps_the_final_checkpoint(tmp_path):
    """SIGTERM during a validation in fit saves last.ckpt; during hdrunet-train's final
    validation (after fit) it does not: last.ckpt holds the final state already, and with
    callbacks=[...,ema] the module holds the average by then, which the save recorded as
    the run's own weights (a resume then trained on from the average)."""
    from types import SimpleNamespace

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from hdrunet_pl.reliability import Preemption

    saves = []
    for fn in ("validate", "fit"):
        trainer = SimpleNamespace(
            state=SimpleNamespace(fn=fn),
            world_size=1,
            is_global_zero=True,
            global_step=6,
            save_checkpoint=lambda path, weights_only, fn=fn: saves.append((fn, path)),
        )
        Preemption(str(tmp_path)).on_exception(trainer, None, SIGTERMException())
    assert saves == [("fit", tmp_path / "last.ckpt")]


def test_a_nan_score_never_makes_a_best_checkpoint(tmp_path):
    """A diverged run's NaN validation became its first best checkpoint (score -inf)."""
    from types import SimpleNamespace

    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    from hdrunet_pl.reliability import BestCheckpoint

    best = BestCheckpoint(dirpath=str(tmp_path), monitor="val/psnr_mu", mode="max", save_top_k=1)
    trainer = SimpleNamespace(callback_metrics={})
    for score in (float("nan"), float("inf"), float("-inf")):
        assert not best.check_monitor_top_k(trainer, torch.tensor(score))
    assert best.check_monitor_top_k(trainer, torch.tensor(12.5))  # the first finite one
    assert not best.check_monitor_top_k(trainer, None)
    # saved under Lightning's key: runs saved before resume with their best tracked
    plain = ModelCheckpoint(dirpath=str(tmp_path), monitor="val/psnr_mu", mode="max")
    assert best.state_key == plain.state_key


def test_a_refused_resume_suggests_init_weights_that_pastes_with_any_path(tmp_path):
    """The suggested ``init_weights=`` survives the shell and Hydra for a path with a space
    and an ``=`` (shell quoting around Hydra quoting)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hdrunet_pl.models import HDRUNetConfig
    from hdrunet_pl.reliability import ResumePoint, check_resume_stream

    path = tmp_path / "with space" / "epoch=0-step=4.ckpt"
    point = ResumePoint(4, HDRUNetConfig(nf=8), stream={"batch_size": 2, "processes": 1})
    with pytest.raises(CheckpointError) as refused:
        check_resume_stream(point, 3, 1, path)
    pasted = shlex.split(str(refused.value).split("from its weights with ", 1)[1])
    (override,) = OverridesParser.create().parse_overrides(pasted)
    assert (override.key_or_group, override.value()) == ("init_weights", str(path))


def test_process_start_time_is_the_kernels_record_for_a_forked_process_too():
    """A run's "written before this process began" test (another program's files in its
    folder) needs the process's start, not the time a module was imported: a forked
    process (a pre-forking server's, a sweep's) started later than its parent's imports."""
    from hdrunet_pl.runtime import process_start_time

    mine = process_start_time()
    assert mine <= time.time()
    time.sleep(0.3)
    read, write = os.pipe()
    forked_at = time.time()
    pid = os.fork()
    if pid == 0:  # the child: report its start and leave at once
        os.write(write, repr(process_start_time()).encode())
        os._exit(0)
    returned_at = time.time()
    os.close(write)
    os.waitpid(pid, 0)
    child = float(os.read(read, 64))
    os.close(read)
    tick = 0.02  # the kernel's clock tick (10 ms), and rounding
    assert forked_at - tick <= child <= returned_at + tick  # during the fork itself
    assert child - mine > 0.25


def test_a_run_folder_as_ckpt_path_says_which_file_to_give(tmp_path):
    """``ckpt_path=<run folder>`` (a likely slip for its ``checkpoints/last.ckpt``) said
    "no such checkpoint" of a folder that exists."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match=r"a folder, not a checkpoint.*a checkpoint file"):
        check_resume_checkpoint(run)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError) as err:
        check_resume_checkpoint(run)
    assert f"give ckpt_path={run / 'checkpoints' / 'last.ckpt'} (or resume" in str(err.value)
    assert f"hydra.run.dir={run} resume=auto" in str(err.value)


def test_a_resume_on_another_validation_set_chooses_the_best_checkpoint_anew(tmp_path):
    """Resumed on other validation images (another data.root), the run compared their
    scores with the best score of the old images: the summary could name as best a
    checkpoint that scores below last.ckpt on the run's own validation set."""
    run_dir = tmp_path / "run"
    first = [*FAST, "logger=csv", *SMALL_SYNTHETIC_VAL, f"hydra.run.dir={run_dir}"]
    ok(run_tool("hdrunet-train", first, tmp_path))
    other_images = ["data.val_set.height=44", "data.val_set.num_images=3"]
    again = [*first, *other_images, "trainer.max_steps=8", "resume=auto"]
    resumed = ok(run_tool("hdrunet-train", again, tmp_path)).stdout
    assert "the validation set is not the one the best checkpoint was chosen on" in resumed
    assert "chosen anew from step 6 on (best-step0000004.ckpt stays, not compared)" in resumed
    metrics = json.loads((run_dir / "metrics.json").read_text())
    best = Path(metrics["best_checkpoint"]).name
    assert best in ("best-step0000006.ckpt", "best-step0000008.ckpt", "last.ckpt"), best
    # resumed on the same images, the best score of the earlier part stands
    same = ok(
        run_tool("hdrunet-train", [*again[:-2], "trainer.max_steps=10", "resume=auto"], tmp_path)
    )
    assert "chosen anew" not in same.stdout


def test_a_resume_that_changes_settings_keeps_the_earlier_config(tmp_path):
    """A resume with another loss and seed was accepted in silence and wrote its settings
    over the earlier part's ``config.yaml`` (kept nowhere but as a command in train.log)."""
    run_dir = tmp_path / "run"
    first = [*FAST, "logger=csv", *SMALL_SYNTHETIC_VAL, f"hydra.run.dir={run_dir}"]
    ok(run_tool("hdrunet-train", first, tmp_path))
    on = ok(run_tool("hdrunet-train", [*first, "resume=auto", "trainer.max_steps=6"], tmp_path))
    assert "the earlier settings are kept" not in on.stdout + on.stderr  # a plain resume
    assert [p.name for p in run_dir.glob("config*.yaml")] == ["config.yaml"]
    changed = [*first, "ckpt_path=last", "trainer.max_steps=8", "loss=l1", "seed=7"]
    result = ok(run_tool("hdrunet-train", changed, tmp_path))
    note = "this start changes data.seed, model.loss.name, seed; the earlier settings are kept"
    assert f"{note} in config-1.yaml" in result.stdout + result.stderr
    earlier = yaml.safe_load((run_dir / "config-1.yaml").read_text())
    now = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (earlier["model"]["loss"]["name"], earlier["seed"]) == ("tanh_l1", 12345)
    assert (now["model"]["loss"]["name"], now["seed"]) == ("l1", 7)
    assert f"{note} in config-1.yaml" in (run_dir / "train.log").read_text()
