"""W&B offline run files from ``hdrunet-train``: a sweep's jobs, a resumed job, a machine
without an API key, and what a run holds."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import open_dict

from hdrunet_pl.train import _sweep_info, train

from .support import FAST, SMALL_SYNTHETIC_VAL, compose_train, ok, run_tool
from .wandb_records import finished_records, history_keys, records_when_written, step_values

WANDB_FAST = [o for o in FAST if not o.startswith("logger=")] + ["logger=wandb"]
SWEEP = ["-m", "loss=l1,tanh_l1", *WANDB_FAST, *SMALL_SYNTHETIC_VAL, "trainer.max_steps=2"]
"""Two jobs of two steps each (validated before training and at step 2)."""
NO_KEY_MESSAGE = "[wandb] no W&B API key found: logging offline; upload later with `wandb sync`"


@dataclass
class Job:
    """A job's run folder and its W&B runs (``wandb/offline-run-<time>-<id>``, oldest
    first), each with the records of its run file once the run has finished."""

    folder: Path
    runs: dict[Path, list]

    def records(self, index: int = 0) -> list:
        return list(self.runs.values())[index]

    def run(self, index: int = 0):
        """The run record (id, name, group, ...) of W&B run ``index``."""
        return next(r.run for r in self.records(index) if r.WhichOneof("record_type") == "run")


def job(folder: Path) -> Job:
    runs = sorted((folder / "wandb").glob("*run-*"), key=lambda p: p.name)  # by start time
    return Job(folder, {run: finished_records(run) for run in runs})


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, list[Job]]:
    """``hdrunet-train -m loss=l1,tanh_l1 logger=wandb`` (WANDB_MODE=offline): the sweep
    folder, the finished process and its two jobs as they were right after the sweep."""
    root = tmp_path_factory.mktemp("wandb-sweep")
    sweep_dir = root / "loss-sweep"
    args = [*SWEEP, f"hydra.sweep.dir={sweep_dir}"]
    result = ok(run_tool("hdrunet-train", args, root, timeout=240))
    jobs = [job(folder) for folder in sorted(p for p in sweep_dir.iterdir() if p.is_dir())]
    assert len(jobs) == 2
    return sweep_dir, result, jobs


def test_sweep_jobs_are_named_as_their_folders(sweep):
    _, _, jobs = sweep
    for number, (each, loss) in enumerate(zip(jobs, ("l1", "tanh_l1"), strict=True)):
        assert each.run().display_name == each.folder.name  # <job number>_<override_dirname>
        overrides = each.folder.name.removeprefix(f"{number}_")
        assert re.search(rf"(^|_)loss-{loss}(_|$)", overrides) and "debug-fast" in overrides


def _info_of_job(sweep_dir: Path, overrides: list[str], number: int) -> dict[str, str]:
    """What ``hdrunet-train`` gives W&B for job ``number`` of a sweep in ``sweep_dir``."""
    cfg = compose_train([*overrides, f"hydra.sweep.dir={sweep_dir}"], with_hydra=True)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.job.num = number
    HydraConfig.instance().set_config(cfg)
    try:
        return _sweep_info()
    finally:
        HydraConfig.instance().cfg = None


def test_jobs_whose_names_are_cut_alike_keep_apart_by_job_number(tmp_path):
    """Hydra sorts the overrides: ``model.net.nf=16`` and long settings before ``model=...``
    push the swept model past the 120-character cut of names."""
    common = [
        "data.val_set.height=36",
        "data.val_set.num_images=2",
        "data.val_set.width=52",
        "data.num_workers=0",
        "data.batch_size=2",
        "model.net.nf=16",
    ]
    names = [
        _info_of_job(tmp_path / "sweep", [*common, f"model={variant}"], number)["name"]
        for number, variant in enumerate(("base", "full"))
    ]
    assert names[0].removeprefix("0_") == names[1].removeprefix("1_")  # the cut part alike
    assert names[0].startswith("0_") and names[1].startswith("1_")


def test_sweep_jobs_share_one_group_named_after_the_sweep(sweep):
    sweep_dir, _, jobs = sweep
    assert [each.run().run_group for each in jobs] == [sweep_dir.name] * 2


def test_two_sweeps_get_two_groups(tmp_path):
    """Sweeps in their default folders (named by start time) get groups of their own; the
    jobs of one sweep share one."""
    multiruns = tmp_path / "logs" / "train" / "multiruns"
    first = _info_of_job(multiruns / "2026-11-29_15-11-19", ["loss=l1"], 0)["group"]
    assert _info_of_job(multiruns / "2026-11-29_15-11-19", ["loss=tanh_l1"], 1)["group"] == first
    assert _info_of_job(multiruns / "2026-11-29_15-11-20", ["loss=l1"], 0)["group"] != first


def test_each_sweep_job_has_its_own_finished_run(sweep):
    _, _, jobs = sweep
    for each in jobs:  # one run in each job's folder: no job logged into another job's run
        assert len(each.runs) == 1, f"{each.folder.name}: W&B runs {[p.name for p in each.runs]}"
    ids = [each.run().run_id for each in jobs]
    assert len(set(ids)) == 2, ids
    for each, run_id in zip(jobs, ids, strict=True):
        assert next(iter(each.runs)).name.endswith(f"-{run_id}")
        records = each.records()
        kinds = [r.WhichOneof("record_type") for r in records]
        assert kinds[-1] == "exit", kinds[-8:]  # the run was finished, nothing after it
        assert records[-1].exit.exit_code == 0
        assert kinds.count("run") == 1
        assert step_values(records, "train/loss") == [1, 2]  # its own steps only


@pytest.fixture(scope="module")
def resumed(sweep, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Job, Job, bool]:
    """Job 0 of ``sweep`` trained on to step 4 with the resume command it printed, by a
    user without a W&B API key: WANDB_MODE and WANDB_API_KEY unset, an empty home (no
    ``~/.netrc``), W&B's folders in it, and every HTTP(S) request sent to a local socket
    that only listens. Returns the process, job 0 before and after, and whether anything
    connected to the socket."""
    _, result, jobs = sweep
    printed = [line.split(None, 1) for line in result.stdout.splitlines()]
    resume_lines = [line[1] for line in printed if line and line[0] == "resume"]
    assert len(resume_lines) == 2
    command = shlex.split(resume_lines[0])  # job 0's: on to twice its steps, given last
    assert command[-2:] == ["resume=auto", "trainer.max_steps=4"]
    assert f"hydra.run.dir={jobs[0].folder}" in command

    home = tmp_path_factory.mktemp("home")
    trap = socket.socket()
    trap.bind(("127.0.0.1", 0))
    trap.listen(8)
    trap.setblocking(False)
    url = f"http://127.0.0.1:{trap.getsockname()[1]}"
    env = {key: None for key in os.environ if key.startswith("WANDB_") or "proxy" in key.lower()}
    env |= {"HOME": str(home), "WANDB_DIR": str(home / "wandb")}
    env |= {f"WANDB_{k}_DIR": str(home / k.lower()) for k in ("CONFIG", "CACHE", "DATA")}
    env |= {"WANDB_BASE_URL": url, "HTTP_PROXY": url, "HTTPS_PROXY": url, "ALL_PROXY": url}
    env |= {key.lower(): url for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")}
    args = command[1:]  # as printed
    try:
        process = run_tool(command[0], args, jobs[0].folder, env=env, timeout=180)
        try:
            trap.accept()[0].close()
            connected = True
        except BlockingIOError:
            connected = False
    finally:
        trap.close()
    ok(process)
    return process, jobs[0], job(jobs[0].folder), connected


def test_resumed_sweep_job_continues_its_wandb_run(resumed):
    _, before, after, _ = resumed
    assert len(before.runs) == 1 and len(after.runs) == 2  # the sweep's run, the resumed one
    assert next(iter(after.runs)) in before.runs
    run_id = before.run().run_id
    assert after.run(1).run_id == run_id  # `wandb sync` appends it to the job's run
    assert list(after.runs)[1].name.endswith(f"-{run_id}")
    assert step_values(after.records(1), "train/loss") == [3, 4]  # continued at its step
    assert after.records(1)[-1].WhichOneof("record_type") == "exit"
    # resumed by the single-run command it printed, the job's run keeps its sweep labels
    assert after.run(1).display_name == before.run().display_name == before.folder.name
    assert after.run(1).run_group == before.run().run_group != ""
    # the W&B run id the resume continues is how to resume, not a changed setting
    process = resumed[0]
    assert "the earlier settings are kept" not in process.stdout + process.stderr
    assert [p.name for p in after.folder.glob("config*.yaml")] == ["config.yaml"]


def test_without_an_api_key_wandb_logs_offline_and_says_so(resumed):
    """No key: offline, one line saying so, no login prompt or error, no connection."""
    process, _, after, connected = resumed
    assert not connected, "W&B tried to reach the network"
    said = process.stderr.count(NO_KEY_MESSAGE)
    assert said == 1, f"said {said} times that it logs offline; stderr:\n{process.stderr[-3000:]}"
    assert all(run.name.startswith("offline-run-") for run in after.runs)
    output = process.stdout + process.stderr
    for prompt in ("API key configured", "wandb login", "W&B account", "api_key"):
        assert prompt not in output


def test_wandb_offline_run_holds_metrics_and_previews(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = compose_train(
        [*FAST, *SMALL_SYNTHETIC_VAL, "logger=wandb", f"paths.output_dir={tmp_path}"]
    )
    train(cfg)
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    expected = {"train/loss", "val/psnr_mu", "val/psnr_l", "val/psnr_mu_identity", "lr-Adam"}
    records = records_when_written(run_dir, expected)
    keys = history_keys(records)
    for key in expected:
        assert key in keys
    assert "val/preview/filenames" in keys
    config = {
        u.key for r in records if r.WhichOneof("record_type") == "config" for u in r.config.update
    }
    assert {"model", "data", "trainer", "seed"} <= config
    previews = list((run_dir / "files" / "media" / "images" / "val").glob("preview_*.png"))
    assert len(previews) >= 2 * 3  # two images at each of 3 validations (before, 2, 4)
