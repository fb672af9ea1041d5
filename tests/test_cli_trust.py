"""First-day paths driven through the real console scripts, as a new user would: the
challenge's numbers on the right files, commands that can be pasted, one-line errors."""

from __future__ import annotations

import csv
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from hdrunet_pl.errors import HDRUNetError
from hdrunet_pl.report import main as report_main
from hdrunet_pl.report import swept_values
from hdrunet_pl.run_files import FAILED_FILE

from .ntire_files import random_hdr, write_ntire_frame
from .support import FAST, compose_train, run_tool

INFERENCE = ["device=cpu", "precision=32"]


@pytest.fixture
def ntire_folder(tmp_path) -> Path:
    """An NTIRE-style folder: three frames of ``_medium``, ``_gt`` and align ratio."""
    folder = tmp_path / "ntire"
    for i in range(3):
        write_ntire_frame(folder, f"{i:04d}", random_hdr(40, 56, seed=i))
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _rows(scores_csv: Path) -> dict[str, list[str]]:
    with scores_csv.open() as f:
        return {row[0]: row[1:] for row in csv.reader(f)}


def test_predict_then_eval_scores_what_eval_of_the_checkpoint_scores(
    ntire_folder, tiny_checkpoint, tmp_path
):
    before = _snapshot(ntire_folder)
    results = tmp_path / "results"
    pred = run_tool(
        "hdrunet-predict",
        [f"ckpt={tiny_checkpoint}", f"input={ntire_folder}", f"output={results}", *INFERENCE],
        tmp_path,
    )
    assert pred.returncode == 0, pred.stderr
    # the inputs are the *_medium.png files only: the GT is never converted
    assert sorted(p.name for p in results.iterdir() if not p.name.startswith(".")) == sorted(
        [f"{i:04d}.png" for i in range(3)] + [f"{i:04d}_alignratio.npy" for i in range(3)]
    )
    assert "3 written, 0 skipped" in pred.stdout
    assert _snapshot(ntire_folder) == before  # the data folder is untouched

    from_files = run_tool(
        "hdrunet-eval",
        [
            f"pred_dir={results}",
            f"gt_dir={ntire_folder}",
            f"ldr_dir={ntire_folder}",
            f"output={tmp_path / 'eval_files'}",
        ],
        tmp_path,
    )
    from_ckpt = run_tool(
        "hdrunet-eval",
        [
            f"ckpt={tiny_checkpoint}",
            "data=ntire2021",
            f"data.root={ntire_folder}",
            f"data.val_root={ntire_folder}",
            "data.patch_size=32",
            "data.num_workers=0",
            f"output={tmp_path / 'eval_ckpt'}",
            *INFERENCE,
        ],
        tmp_path,
    )
    assert from_files.returncode == 0, from_files.stderr
    assert from_ckpt.returncode == 0, from_ckpt.stderr
    assert "3/3" in from_files.stderr and "3/3" in from_ckpt.stderr  # bars know their total
    files_rows = _rows(tmp_path / "eval_files" / "scores.csv")
    ckpt_rows = _rows(tmp_path / "eval_ckpt" / "scores.csv")
    assert set(files_rows) == {"name", "0000", "0001", "0002", "mean"}
    assert files_rows == ckpt_rows  # every image, every column, to the 4th decimal
    # the identity columns are the LDR's scores, not placeholders
    mean = dict(zip(files_rows["name"], files_rows["mean"], strict=True))
    ldr_mu = float(mean["identity_psnr_mu"])
    assert 5 < ldr_mu < 60 and ldr_mu != float(mean["psnr_mu"])
    assert float(mean["identity_pu21_psnr"]) != float(mean["pu21_psnr"])


def test_predict_refuses_to_write_into_a_data_or_input_folder(
    ntire_folder, tiny_checkpoint, tmp_path
):
    before = _snapshot(ntire_folder)
    into_data = run_tool(
        "hdrunet-predict",
        [f"ckpt={tiny_checkpoint}", f"input={ntire_folder}", f"output={ntire_folder}"],
        tmp_path,
    )
    assert into_data.returncode == 2
    assert into_data.stderr.startswith("hdrunet-predict: error: ")
    assert "input folder" in into_data.stderr and len(into_data.stderr.splitlines()) == 1
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "0000_medium.png").write_bytes((ntire_folder / "0000_medium.png").read_bytes())
    ldr_to_data = run_tool(
        "hdrunet-predict",
        [f"ckpt={tiny_checkpoint}", f"input={photos}", f"output={ntire_folder}"],
        tmp_path,
    )
    assert ldr_to_data.returncode == 2 and "ground truth" in ldr_to_data.stderr
    assert _snapshot(ntire_folder) == before


def test_eval_refuses_a_results_folder_whose_pairing_is_ambiguous(ntire_folder, tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("0000_gt.png", "0000_alignratio.npy"):
        (mixed / name).write_bytes((ntire_folder / name).read_bytes())
    (mixed / "0000.png").write_bytes((ntire_folder / "0000_gt.png").read_bytes())
    result = run_tool("hdrunet-eval", [f"pred_dir={mixed}", f"gt_dir={ntire_folder}"], tmp_path)
    assert result.returncode == 2
    assert "ambiguous: 0000.png and 0000_gt.png" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # no progress bar before the error
    assert not (tmp_path / "eval").exists()


def _summary_commands(stdout: str) -> dict[str, str]:
    tail = stdout.split("next (paste as they are):")[1]
    commands = {}
    for line in tail.strip().splitlines():
        label, _, command = line.strip().partition(" ")
        commands[label] = command.strip()
    return commands


def test_summary_paths_and_commands_paste_back_into_the_tools(tmp_path):
    """A run's printed paths and commands work verbatim, from another directory too (its
    data folder given relative to where it started): resume, eval, predict."""
    from hdrunet_pl.io import write_radiance

    logs = tmp_path / "logs"
    rng = np.random.default_rng(0)
    (tmp_path / "hdr").mkdir()
    for i in range(3):
        write_radiance(tmp_path / "hdr" / f"s{i}.hdr", (rng.random((40, 48, 3)) * 4 + 0.01))
    args = [*FAST, "data=hdr_folder", "data.root=hdr", "data.val_count=1"]
    first = run_tool("hdrunet-train", [*args, f"paths.log_dir={logs}"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    (run_dir,) = (logs / "train" / "runs").iterdir()
    # what the folder name says is what ran, and the name needs no quoting
    assert "data-hdr_folder" in run_dir.name and "debug-fast" in run_dir.name
    assert "=" not in run_dir.name and "," not in run_dir.name
    config = (run_dir / "config.yaml").read_text()
    assert "patch_size: 32" in config and f"root: {tmp_path / 'hdr'}" in config
    # the run's log file holds the run's log, summary included
    log_text = (run_dir / "train.log").read_text()
    assert "hdrunet-train summary" in log_text and "max_steps=4" in log_text
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert f"run directory        {run_dir}" in first.stdout
    assert f"val PSNR-mu after    {metrics['psnr_mu_after']:.2f} dB" in first.stdout
    assert f"LDR identity         {metrics['psnr_mu_identity']:.2f} dB" in first.stdout
    commands = _summary_commands(first.stdout)
    assert set(commands) == {"resume", "eval", "predict"}
    best = Path(metrics["best_checkpoint"]).stem
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    evaluate = shlex.split(commands["eval"])
    scored = run_tool("hdrunet-eval", [*evaluate[1:], *INFERENCE], elsewhere)
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert (run_dir / "eval" / best / "scores.csv").is_file()
    assert "1 images" in scored.stdout  # the run's own validation set (1 photo)

    photos = tmp_path / "photos"
    photos.mkdir()
    import cv2

    cv2.imwrite(str(photos / "IMG_1.jpg"), rng.integers(0, 255, (30, 44, 3), dtype=np.uint8))
    predict = shlex.split(commands["predict"].replace("YOUR_LDR_IMAGES", str(photos)))
    made = run_tool("hdrunet-predict", [*predict[1:], *INFERENCE], elsewhere)
    assert made.returncode == 0, made.stderr[-2000:]
    assert (run_dir / "predictions" / best / "IMG_1.png").is_file()

    resume = shlex.split(commands["resume"])
    # verbatim it trains on to twice the steps, the setting last (to change the length;
    # a '# append ...' comment there swallowed what a user typed after it)
    assert resume[0] == "hdrunet-train" and resume[-1] == "trainer.max_steps=8"
    assert "#" not in commands["resume"]
    longer = run_tool("hdrunet-train", resume[1:], elsewhere)
    assert longer.returncode == 0, longer.stderr[-2000:]
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 8
    assert len(list((logs / "train" / "runs").iterdir())) == 1  # resumed in place
    # the run's own max_steps (4, from debug=fast; 8, given) is given once, last, doubled
    again = shlex.split(_summary_commands(longer.stdout)["resume"])
    assert [a for a in again if a.startswith("trainer.max_steps=")] == ["trainer.max_steps=16"]
    assert again[-1] == "trainer.max_steps=16"
    # the next predict line names the newer checkpoint's folder: no old results to skip
    newer = Path(json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"]).stem
    assert f"predictions/{newer}" in _summary_commands(longer.stdout)["predict"]


@pytest.mark.parametrize(
    "path",
    [
        "/runs/a",
        "/runs/epoch=0-step=4.ckpt",
        "/my runs/a,b",
        "/x/it's [1]",
        "C:\\w",
        "/a\\'b\\",
        "/runs/${x}/b",
    ],
)
def test_printed_paths_parse_back_through_hydra_unchanged(path):
    """Lightning names checkpoints `epoch=0-step=4.ckpt`, and folders may hold commas or
    spaces: each printed `key=path` reads back, through the shell and Hydra, as the path."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hdrunet_pl.run_files import override_value

    (word,) = shlex.split(shlex.join([f"ckpt={override_value(path)}"]))
    (override,) = OverridesParser.create().parse_overrides([word])
    read = OmegaConf.create({"ckpt": override.value()})  # as the tool's config reads it
    assert OmegaConf.to_container(read, resolve=True)["ckpt"] == path


def test_a_finished_run_without_last_ckpt_is_not_started_over(tmp_path):
    """callbacks without last_checkpoint: no resume line is printed, and resume=auto in the
    finished run's folder is refused instead of training it again over its logs; a run that
    failed before its first checkpoint restarts, its CSV log kept."""

    from hdrunet_pl.loggers import instantiate_loggers
    from hdrunet_pl.train import TrainSummary, next_commands, resume_path

    run = tmp_path / "run"
    run.mkdir()
    summary = TrainSummary(4, 1.0, None, 20.0, 30.0, 18.0, 25.0, None, f"{run}/w.ckpt", str(run))
    assert set(next_commands(summary, ["callbacks=none"])) == {"eval", "predict"}
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert set(next_commands(summary, ["callbacks=none"])) == {"resume", "eval", "predict"}
    # what trains a finished run on: twice the steps, or the epochs of an epoch-limited run
    # (the steps' line trained 0 steps there); as given where it stopped otherwise
    from types import SimpleNamespace

    from hdrunet_pl.train import train_on_setting

    for limits, expected in (
        ((4, 4, -1, 0), ("trainer.max_steps", 8)),
        ((-1, 2, 2, 2), ("trainer.max_epochs", 4)),
        ((-1, 6, 3, 3), ("trainer.max_epochs", 6)),
        ((10, 6, None, 0), None),  # stopped early (a callback)
        ((-1, 6, -1, 5), None),
    ):
        keys = ("max_steps", "global_step", "max_epochs", "current_epoch")
        assert train_on_setting(SimpleNamespace(**dict(zip(keys, limits, strict=True)))) == expected
    given = ["trainer.max_epochs=2", "++trainer.max_steps=-1"]
    for train_on, last_word in (
        (None, "resume=auto"),
        (("trainer.max_epochs", 4), " trainer.max_epochs=4"),
        (("trainer.max_steps", 8), " trainer.max_steps=8"),
    ):
        resume = next_commands(summary, given, train_on=train_on)["resume"]
        assert resume.endswith(last_word)
        assert resume.count("max_steps=") == 1 and resume.count("max_epochs=") == 1
    (run / "checkpoints" / "last.ckpt").unlink()

    # last.ckpt named best: its folders are named by step, or the line printed after
    # training on would meet the earlier results (which predict keeps, as done)
    last = f"{run}/checkpoints/last.ckpt"
    outputs = set()
    for steps in (40, 60):
        commands = next_commands(TrainSummary(steps, 1.0, *[20.0] * 5, last, last, str(run)), [])
        outputs |= {c.rsplit("output=", 1)[1] for k, c in commands.items() if k != "resume"}
    assert outputs == {
        f"{run}/{kind}/last-step{steps:07d}"
        for kind in ("eval", "predictions")
        for steps in (40, 60)
    }

    cfg = OmegaConf.create({"ckpt_path": None, "resume": "auto"})
    assert resume_path(cfg, run) is None  # nothing of a run yet: start
    (run / "metrics.json").write_text("{}")
    with pytest.raises(HDRUNetError, match=r"holds a finished run \(metrics.json\) without"):
        resume_path(cfg, run)
    # another run's checkpoint into this run's folder would write over this run; one of its
    # own checkpoints is this run's history, the user's to go back to
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    other = tmp_path / "other" / "last.ckpt"
    for resume in ("auto", True, False):
        cfg = OmegaConf.create({"ckpt_path": str(other), "resume": resume})
        with pytest.raises(HDRUNetError, match=r"already holds a run, and ckpt_path=.*other"):
            resume_path(cfg, run)
    own = str(run / "checkpoints" / "best.ckpt")
    assert resume_path(OmegaConf.create({"ckpt_path": own, "resume": "auto"}), run) == own
    (run / "checkpoints" / "last.ckpt").unlink()

    csv_dir = tmp_path / "failed" / "csv"
    csv_dir.mkdir(parents=True)
    (csv_dir / "metrics.csv").write_text("step\n0\n")
    node = {"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": str(csv_dir.parent)}
    node |= {"name": "", "version": "csv"}
    instantiate_loggers(OmegaConf.create({"csv": node}), resuming=False)
    assert (csv_dir / "metrics-1.csv").read_text() == "step\n0\n"


def test_the_resume_line_names_photos_found_through_the_environment(tmp_path, monkeypatch):
    """experiment=demo reads its photos from $HDRUNET_SAMPLES_DIR when set: the printed
    resume line names that folder itself, so it works in a shell without the variable."""
    from hdrunet_pl.run_files import absolute_paths, resume_command

    photos = tmp_path / "my photos"
    monkeypatch.setenv("HDRUNET_SAMPLES_DIR", str(photos))
    cfg = compose_train(["experiment=demo"])
    paths = absolute_paths(cfg, tmp_path / "elsewhere")
    assert paths["data.folders.photos.root"] == str(photos)
    line = resume_command(["experiment=demo"], tmp_path / "run", paths)
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(shlex.split(line)[1:])
    values = {o.key_or_group: o.value() for o in parsed}
    assert values["data.folders.photos.root"] == str(photos)
    monkeypatch.delenv("HDRUNET_SAMPLES_DIR")
    rel = compose_train(["experiment=demo", "paths.samples_dir=rel/photos"])
    assert absolute_paths(rel, tmp_path)["data.folders.photos.root"] == str(tmp_path / "rel/photos")


def test_a_run_that_fails_at_start_leaves_nothing(tmp_path):
    """A job that fails before training removes its run folder (single runs: the start-up
    errors of test_reliability); the sweep whose first job fails so removes its multirun
    folder and multirun.yaml too."""
    logs = tmp_path / "logs"
    args = [*FAST, "data=ntire2021", f"data.root={tmp_path / 'nowhere'}", f"paths.log_dir={logs}"]
    result = run_tool("hdrunet-train", ["-m", *args, "trainer.max_steps=3,4"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"hdrunet-train: error: {tmp_path / 'nowhere'}: no such folder (set data.root to the "
        "NTIRE data)"
    )
    assert list((logs / "train" / "multiruns").iterdir()) == []  # the sweep's folder: gone
    assert [p for p in (logs / "train").rglob("*") if p.is_file()] == []


def test_report_refuses_a_folder_that_is_not_a_sweep(tmp_path, capsys):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    assert report_main([str(run)]) == 2
    err = capsys.readouterr().err
    assert "a single run's folder (no multirun.yaml)" in err
    assert sorted(p.name for p in run.iterdir()) == [".hydra"]  # nothing written


def test_report_marks_failed_runs(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for job, loss in enumerate(("l1", "l2")):
        folder = sweep / f"{job}_loss-{loss}"
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text(f"- loss={loss}\n")
    (sweep / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task:\n    - loss=l1,l2\n  sweeper:\n    params: null\n"
    )
    (sweep / "0_loss-l1" / FAILED_FILE).write_text("NonFiniteError: step 3: loss is nan\n")
    (sweep / "1_loss-l2" / "metrics.json").write_text('{"psnr_mu_after": 30.5, "steps": 4')
    assert report_main([str(sweep)]) == 0
    out = capsys.readouterr().out
    # no config.yaml either: parameters and GMAC unknown ("-") too
    failed = "| loss=l1 | - | - | - | - | - | - | failed: NonFiniteError: step 3: loss is nan |"
    assert failed in out
    assert "| loss=l2 | - | - | - | - | - | - | unreadable metrics.json |" in out


def test_report_matches_jobs_to_the_values_hydra_gave_them(tmp_path, capsys):
    """`-m model.optimizer.lr=1e-3,2e-4`: Hydra hands the jobs 0.001 and 0.0002; the report
    shows one row per job and no phantom "missing" row for the values as typed."""
    sweep = tmp_path / "sweep"
    for job, lr in enumerate(("0.001", "0.0002")):
        folder = sweep / f"{job}_lr-{lr}"
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text(f"- model.optimizer.lr={lr}\n")
        (folder / "metrics.json").write_text(f'{{"psnr_mu_after": 3{job}.5, "steps": 4}}')
    (sweep / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task:\n    - model.optimizer.lr=1e-3,2e-4,5e-4\n"
        "  sweeper:\n    params: null\n"
    )
    assert report_main([str(sweep)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "| model.optimizer" in line]
    assert [row.split(" | ")[0] for row in rows] == [
        "| model.optimizer.lr=0.001",
        "| model.optimizer.lr=0.0002",
        "| model.optimizer.lr=0.0005",  # not run yet: missing
    ]
    assert [row.rstrip(" |").rsplit(" | ", 1)[1] for row in rows] == ["done", "done", "missing"]
    assert swept_values(sweep) == {"model.optimizer.lr": ["0.001", "0.0002", "0.0005"]}


def test_report_into_a_closed_pipe_ends_quietly(tmp_path):
    """`hdrunet-report <sweep> | head -1`: no BrokenPipeError traceback."""
    sweep = tmp_path / "sweep"
    for job, loss in enumerate(("l1", "l2")):
        (sweep / f"{job}_loss-{loss}" / ".hydra").mkdir(parents=True)
        (sweep / f"{job}_loss-{loss}" / ".hydra" / "overrides.yaml").write_text(f"- loss={loss}\n")
    (sweep / "multirun.yaml").write_text("hydra:\n  overrides:\n    task:\n    - loss=l1,l2\n")
    exe = Path(sys.executable).parent / "hdrunet-report"
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line (as `head` is after one)
    try:
        result = subprocess.run(
            [str(exe), str(sweep)], stdout=write_end, stderr=subprocess.PIPE, text=True
        )
    finally:
        os.close(write_end)
    assert result.returncode == 0
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
    assert (sweep / "report.md").is_file()  # written before the table is printed


def test_eval_refuses_a_checkpoint_and_result_folders_together(tmp_path, tiny_checkpoint):
    """Before, ckpt= was ignored without a word when pred_dir= and gt_dir= were given."""
    from hdrunet_pl.evaluate import run

    from .support import compose_config

    folders = [f"pred_dir={tmp_path}", f"gt_dir={tmp_path / 'gt'}", f"output={tmp_path / 'o'}"]
    cfg = compose_config("eval", [f"ckpt={tiny_checkpoint}", *folders])
    with pytest.raises(HDRUNetError, match=r"give ckpt= .* or pred_dir= and gt_dir= .*not both"):
        run(cfg)


def test_psnr_l_is_logged_as_the_challenge_defines_it(tmp_path):
    """The training module's val/psnr_l is the non-linear PSNR-L of its predictions."""
    from hdrunet_pl.metrics import PSNRL

    g = torch.Generator().manual_seed(0)
    gt = torch.rand(2, 3, 8, 8, generator=g) * 3
    pred = gt + 0.1
    metric = PSNRL()
    metric.update(pred, gt)
    want = np.mean(
        [-10 * np.log10(np.mean(((gt[i] - pred[i]) / gt[i].max()).numpy() ** 2)) for i in (0, 1)]
    )
    assert metric.compute().item() == pytest.approx(want, abs=1e-4)


def test_a_nan_score_is_reported_as_n_a_and_metrics_json_stays_json():
    from dataclasses import asdict

    from hdrunet_pl.train import TrainSummary, _metric

    metrics = {"val/psnr_mu": torch.tensor(float("nan")), "val/psnr_l": torch.tensor(31.5)}
    after = _metric(metrics, "val/psnr_mu")
    assert after is None and _metric(metrics, "val/psnr_l") == 31.5
    summary = TrainSummary(4, 1.0, None, after, 31.5, 20.0, 25.0, None, None, "/run")
    json.loads(json.dumps(asdict(summary), allow_nan=False))  # strict JSON: no bare NaN
    assert "val PSNR-mu after    n/a" in summary.lines()


def test_a_resumed_runs_summary_counts_the_steps_it_trained():
    from hdrunet_pl.train import TrainSummary

    new = TrainSummary(6, 3.0, None, 20.0, 30.0, 18.0, 25.0, None, None, "/run")
    resumed = TrainSummary(6, 1.0, None, 20.0, 30.0, 18.0, 25.0, None, None, "/run", 4)
    assert "steps trained        6 in 3 s" in new.lines()
    assert "steps trained        2 (from step 4 to 6) in 1 s" in resumed.lines()


def _refusal(check, argv, capsys):
    """The one line on stderr with which ``check(argv)`` stops (exit status 2)."""
    with pytest.raises(SystemExit) as stop:
        check(argv)
    assert stop.value.code == 2
    return capsys.readouterr().err


def _sweep_check(argv, capsys):
    from hdrunet_pl.cli import check_sweep_folder

    return _refusal(check_sweep_folder, argv, capsys)


def test_an_empty_log_dir_is_refused_before_runs_go_to_the_root(monkeypatch, capsys):
    """``HDRUNET_LOG_DIR=""`` made ``${paths.log_dir}/train/runs/...`` a folder under ``/``."""
    from hdrunet_pl.cli import check_run_folder, check_sweep_folder

    monkeypatch.setenv("HDRUNET_LOG_DIR", "")
    for check, argv in (
        (check_run_folder, ["debug=fast"]),
        (check_sweep_folder, ["-m", "loss=l1,l2"]),
    ):
        assert "paths.log_dir is empty (from $HDRUNET_LOG_DIR?)" in _refusal(check, argv, capsys)
    monkeypatch.delenv("HDRUNET_LOG_DIR")
    assert "paths.log_dir is empty" in _refusal(check_run_folder, ["paths.log_dir="], capsys)


def test_a_sweep_folder_that_holds_no_sweep_of_train_or_another_sweep_is_refused(tmp_path, capsys):
    """hydra.sweep.dir had none of hydra.run.dir's checks: a sweep wrote its jobs and
    multirun.yaml into a run's folder, a data folder and over another program's record."""
    from hdrunet_pl.cli import check_sweep_folder

    data = tmp_path / "data"
    data.mkdir()
    (data / "0001_gt.png").write_bytes(b"x")
    err = _sweep_check(["-m", "loss=l1,l2", f"hydra.sweep.dir={data}"], capsys)
    assert f"{data} holds files but no sweep of hdrunet-train (0001_gt.png)" in err
    assert sorted(p.name for p in data.iterdir()) == ["0001_gt.png"]

    other = tmp_path / "other"
    other.mkdir()
    (other / "multirun.yaml").write_text("hydra: {job: {name: my_app}, overrides: {task: []}}")
    err = _sweep_check(["--multirun", "loss=l1,l2", f"hydra.sweep.dir={other}"], capsys)
    assert "holds files but no sweep of hdrunet-train (multirun.yaml)" in err

    ours = tmp_path / "ours"
    (ours / "0_loss-l1").mkdir(parents=True)
    task = ["loss=l1,l2", "trainer.max_steps=6"]
    (ours / "multirun.yaml").write_text(
        yaml.safe_dump({"hydra": {"job": {"name": "train"}, "overrides": {"task": task}}})
    )
    err = _sweep_check(["-m", "loss=l1,l3", f"hydra.sweep.dir={ours}"], capsys)
    assert f"{ours} holds another sweep (loss=l1,l2; this one: loss=l1,l3)" in err
    err = _sweep_check(["-m", "experiment=ablation_loss", f"hydra.sweep.dir={ours}"], capsys)
    assert "this one: experiment=ablation_loss)" in err
    sweeper = ["-m", "hydra.sweeper.params.loss=l1,l3", f"hydra.sweep.dir={ours}"]
    assert "this one: hydra.sweeper.params.loss=l1,l3)" in _sweep_check(sweeper, capsys)
    # the same sweep again (to go on with resume=auto, longer) is the jobs' to judge
    reordered = ["-m", "loss=l2,l1", f"hydra.sweep.dir={ours}"]  # job 0 would be loss=l2
    assert "this one: loss=l2,l1)" in _sweep_check(reordered, capsys)
    same_sweeps = (["loss=l1,l2"], ["loss=choice(l1,l2)", "resume=auto", "trainer.max_steps=12"])
    for same in same_sweeps:
        check_sweep_folder(["-m", *same, f"hydra.sweep.dir={ours}"])
    # another fixed setting that names the job folders: each job would start afresh beside
    # its earlier folder (trainer.max_steps, raised to train on, names none)
    changed = ["-m", "loss=l1,l2", "model.optimizer.lr=0.001", f"hydra.sweep.dir={ours}"]
    err = _sweep_check(changed, capsys)
    assert "its jobs' names carry none; this command's would carry model.optimizer.lr-0.001" in err
    # as Hydra names the folders: ++key= apart from key=; [800, 1000] as [800,1000]
    (ours / "multirun.yaml").write_text(
        yaml.safe_dump(
            {
                "hydra": {
                    "job": {"name": "train"},
                    "overrides": {"task": [*task, "model.scheduler.milestones=[800, 1000]"]},
                }
            }
        )
    )
    check_sweep_folder(
        ["-m", "loss=l1,l2", "model.scheduler.milestones=[800,1000]", f"hydra.sweep.dir={ours}"]
    )
    plus = [
        "-m",
        "loss=l1,l2",
        "++model.scheduler.milestones=[800,1000]",
        f"hydra.sweep.dir={ours}",
    ]
    assert "would carry ++model.scheduler.milestones-_800_1000)" in _sweep_check(plus, capsys)
    check_sweep_folder(["-m", "loss=l1,l2", f"hydra.sweep.dir={tmp_path / 'new'}"])
    check_sweep_folder(["loss=l1", f"hydra.sweep.dir={data}"])  # not a sweep


def test_torchrun_and_srun_ranks_are_given_one_run_folder(monkeypatch, capsys):
    """Each rank that torchrun or srun starts composes its own time-stamped folder: without
    hydra.run.dir= the ranks other than 0 left folders of their own."""
    from hdrunet_pl.cli import check_launcher_folder

    check_launcher_folder(["trainer=ddp"])  # started by hand (or by Lightning): its own
    for env, name in (
        ({"TORCHELASTIC_RUN_ID": "abc"}, "torchrun"),
        ({"SLURM_PROCID": "3", "SLURM_NTASKS": "8"}, "srun"),
    ):
        with monkeypatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            err = _refusal(check_launcher_folder, ["trainer=ddp"], capsys)
            assert f"{name} starts every rank with its own time-stamped run folder" in err
            check_launcher_folder(["trainer=ddp", "hydra.run.dir=runs/a"])
            for harmless in (["--help"], ["--cfg", "job"], ["--info"]):
                check_launcher_folder(harmless)
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "1")  # sbatch with one task: Lightning starts the rest
    check_launcher_folder(["trainer=ddp"])


def test_two_of_hydras_modes_get_one_line(capsys):
    """``-m ... --cfg job`` (or ``--info`` with ``--cfg``) ended in Hydra's traceback."""
    from functools import partial

    from hdrunet_pl.cli import check_one_mode

    check = partial(check_one_mode, "hdrunet-train")
    for argv in (["-m", "loss=l1,l2", "--cfg", "job"], ["--cfg=job", "--info"]):
        assert "give one of them" in _refusal(check, argv, capsys)
    for argv in (["--cfg", "job", "-p", "model"], ["-m", "loss=l1,l2"], ["-cn", "train"]):
        check(argv)


def test_a_stopped_sweep_gets_the_line_that_goes_on_with_all_of_it(tmp_path):
    """A sweep job stopped by SIGTERM printed only its own resume line; the jobs after it
    had not run. The sweep's line comes from its multirun.yaml, folder and resume=auto."""
    from hdrunet_pl.run_files import sweep_resume_command

    sweep = tmp_path / "my sweep"
    sweep.mkdir()
    assert sweep_resume_command(sweep) is None  # no record
    record = {"task": ["experiment=demo", "loss=l1,l2", "resume=false"]}
    record["hydra"] = [
        "hydra.mode=MULTIRUN",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweeper.params.x=1,2",
    ]
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": record}}))
    line = sweep_resume_command(sweep)
    assert shlex.split(line) == [
        "hdrunet-train",
        "-m",
        "experiment=demo",
        "loss=l1,l2",
        "hydra.sweeper.params.x=1,2",
        f"hydra.sweep.dir='{sweep}'",
        "resume=auto",
    ]
