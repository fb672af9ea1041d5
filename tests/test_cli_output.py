"""What the tools print: no third-party noise, progress where work takes time, one step
convention in logs and file names, and help texts that describe each tool."""

from __future__ import annotations

import csv
import os
import re
import shlex
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from .support import (
    FAST,
    SMALL_SYNTHETIC_VAL,
    compose_train,
    held_out_eval_args,
    noise,
    ok,
    run_tool,
)


@pytest.fixture(scope="module")
def train_run(tmp_path_factory) -> tuple[object, Path, Path]:
    """One short ``hdrunet-train`` (bf16 autocast, so that the model summary sees it)."""
    logs = tmp_path_factory.mktemp("train_run")
    args = [*FAST, *SMALL_SYNTHETIC_VAL, "trainer.precision=bf16-mixed", f"paths.log_dir={logs}"]
    result = ok(run_tool("hdrunet-train", args, cwd=logs))
    (run_dir,) = (logs / "train" / "runs").iterdir()
    return result, run_dir, logs


# --- A: quiet output --------------------------------------------------------------------


def test_training_prints_no_third_party_noise(train_run):
    result, _, logs = train_run
    assert "== hdrunet-train summary ==" in result.stdout
    offending = noise(result, logs)
    assert not offending, "\n".join(offending)


def test_filters_silence_known_noise_and_keep_real_warnings():
    from lightning.fabric.utilities.warnings import PossibleUserWarning

    from hdrunet_pl.quiet import install_filters

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        install_filters()
        for message, category in (
            ("`isinstance(treespec, LeafSpec)` is deprecated, use ... instead.", FutureWarning),
            ("Precision bf16-mixed is not supported by the model summary. ...", UserWarning),
            (
                "The number of training batches (4) is smaller than the logging interval "
                "Trainer(log_every_n_steps=10). Set a lower value ...",
                PossibleUserWarning,
            ),
            ("something the user must see", UserWarning),
            ("`isinstance(treespec, LeafSpec)` is deprecated (another category)", UserWarning),
        ):
            warnings.warn(message, category, stacklevel=1)
    assert [str(w.message) for w in caught] == [
        "something the user must see",
        "`isinstance(treespec, LeafSpec)` is deprecated (another category)",
    ]


def test_default_workers_never_exceed_the_cpus(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    for data, extra in (
        ("synthetic", []),
        ("ntire2021", ["data.root=x"]),
        ("hdr_folder", ["data.root=x"]),
        ("stream", ["data.input_dir=x"]),
    ):
        cfg = compose_train([f"data={data}", *extra])
        assert cfg.data.num_workers <= 2, data
    assert compose_train(["data=ntire2021", "data.root=x"]).data.num_workers == 2
    assert compose_train(["data.num_workers=8"]).data.num_workers == 8  # asked for: kept


def test_wandb_logger_leaves_the_deprecated_anonymous_setting_unset(tmp_path, monkeypatch):
    from hdrunet_pl.loggers import instantiate_loggers

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_train(["logger=wandb", f"paths.output_dir={tmp_path}"])
    (logger,) = instantiate_loggers(cfg.logger)
    assert "anonymous" not in logger._wandb_init  # W&B warns about any value, None too


# --- B: one step convention --------------------------------------------------------------


def _step_of(name: str) -> int:
    return int(re.search(r"step=?(\d+)", name).group(1))


def test_steps_agree_in_csv_checkpoints_and_previews(train_run):
    _, run_dir, _ = train_run
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    val_steps = [int(r["step"]) for r in rows if r["val/psnr_mu"]]
    loss_steps = [int(r["step"]) for r in rows if r["train/loss"]]
    assert val_steps == [0, 2, 4]  # before training, then after every 2 optimizer steps
    assert loss_steps == [1, 2, 3, 4]  # a batch's loss at the step it completes
    checkpoints = {_step_of(p.name) for p in (run_dir / "checkpoints").glob("best-step*.ckpt")}
    previews = {_step_of(p.name) for p in (run_dir / "previews").glob("step*.png")}
    assert checkpoints == {4} and checkpoints <= set(val_steps)
    assert previews == set(val_steps)


def test_the_final_weights_validation_is_filed_under_the_epoch_it_scores(tmp_path):
    """A run ending between validations validates its final weights after fit; Lightning's
    epoch counter has moved on by then, and that row was filed one epoch later than the
    step it scores (a plot by epoch showed the final score alone in a new epoch)."""
    args = [*FAST, *SMALL_SYNTHETIC_VAL, "trainer.max_steps=3", "trainer.log_every_n_steps=1"]
    ok(run_tool("hdrunet-train", [*args, f"paths.log_dir={tmp_path}"], cwd=tmp_path))
    (run_dir,) = (tmp_path / "train" / "runs").iterdir()
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    scored = {int(r["step"]): float(r["epoch"]) for r in rows if r["val/psnr_mu"]}
    trained = {int(r["step"]): float(r["epoch"]) for r in rows if r["train/loss"]}
    assert sorted(scored) == [0, 2, 3]  # the final weights' (step 3) after fit
    assert trained == {1: 0.0, 2: 0.0, 3: 0.0}  # one epoch of the synthetic set
    assert scored == {0: 0.0, 2: 0.0, 3: 0.0}


def _fake_trainer(**kwargs) -> SimpleNamespace:
    base = dict(
        max_steps=1200,
        max_epochs=-1,
        global_step=120,
        current_epoch=0,
        num_training_batches=50000,
        is_global_zero=True,
        loggers=[],
        progress_bar_metrics={},
    )
    return SimpleNamespace(**(base | kwargs))


def _progress_bar(callbacks: str):
    cfg = compose_train([f"callbacks={callbacks}"])
    bar = instantiate(cfg.callbacks.progress_bar)
    bar._trainer = _fake_trainer()
    return bar


def test_tqdm_bar_counts_steps_of_the_run(capsys):
    bar = _progress_bar("default")
    trainer = bar.trainer  # resumed at step 120 in the middle of an epoch: Lightning calls
    bar.on_train_start(trainer, None)  # on_train_start but not on_train_epoch_start
    tqdm_bar = bar.train_progress_bar
    assert tqdm_bar.desc.startswith("step") and (tqdm_bar.n, tqdm_bar.total) == (120, 1200)
    assert tqdm_bar.format_dict["initial"] == 120  # rate and ETA: this session's steps only
    trainer.global_step = 130
    bar.on_train_batch_end(trainer, None, None, None, 9)
    assert tqdm_bar.n == 130
    trainer.current_epoch, trainer.global_step = 1, 140
    bar.on_train_epoch_start(trainer, None)  # a new epoch goes on counting the run's steps
    assert bar.train_progress_bar is tqdm_bar and (tqdm_bar.n, tqdm_bar.total) == (130, 1200)
    assert tqdm_bar.format_dict["initial"] == 120
    bar.train_progress_bar.close()
    assert "Epoch" not in capsys.readouterr().out


def test_tqdm_bar_refreshes_slow_steps_without_waiting_for_refresh_rate(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("hdrunet_pl.callbacks.time.monotonic", lambda: clock[0])
    bar = _progress_bar("default")
    assert bar.refresh_rate == 10  # the configured rate: fast steps refresh every 10
    trainer = bar.trainer
    bar.on_train_start(trainer, None)
    tqdm_bar = bar.train_progress_bar
    shown = []
    for step, seconds in [(121, 0.01), (122, 0.01), (123, 0.01), (124, 1.5), (125, 0.01)]:
        clock[0] += seconds
        trainer.global_step = step
        bar.on_train_batch_end(trainer, None, None, None, step - 120)
        shown.append(tqdm_bar.n)
    # the first end refreshes (nothing shown for a second before); fast steps wait for
    # refresh_rate; a step after 1.5 s is shown at once
    assert shown == [121, 121, 121, 124, 124]
    trainer.global_step = 130  # every refresh_rate steps, however fast
    bar.on_train_batch_end(trainer, None, None, None, 10)
    assert tqdm_bar.n == 130
    tqdm_bar.close()


def test_rich_bar_shows_steps_not_epoch_minus_two():
    bar = _progress_bar("rich")
    description = bar._get_train_description(0)
    assert description.strip() == "step" and "-2" not in description
    assert bar.total_train_batches == 1200
    bar._trainer = _fake_trainer(max_epochs=3, max_steps=-1)  # epoch-limited: Lightning's
    assert bar._get_train_description(0).strip() == "Epoch 0/2"


# --- C: progress of hdrunet-prepare stream -----------------------------------------------


# --- D: help texts -----------------------------------------------------------------------


def test_predict_help_describes_predict_only(tmp_path):
    text = ok(run_tool("hdrunet-predict", ["--help"], tmp_path)).stdout
    for word in ("trainer", "loss", "modulation", "callbacks"):
        assert word not in text, word
    for word in ("input", "output", "ckpt", "format", "tile", "device"):
        assert word in text, word


def test_eval_and_export_help_list_only_their_settings(tmp_path):
    eval_help = ok(run_tool("hdrunet-eval", ["--help"], tmp_path)).stdout
    export_help = ok(run_tool("hdrunet-export", ["--help"], tmp_path)).stdout
    for text in (eval_help, export_help):
        assert "trainer" not in text and "modulation" not in text and "ckpt" in text
    assert "pred_dir" in eval_help and "data" in eval_help and "memory_gb" in eval_help
    assert "opset" in export_help and "check_size" in export_help


def _undocumented_options(help_text: str) -> list[str]:
    """Options of an argparse help text without a description (a bare ``(default: ...)``
    does not count)."""
    lines = help_text.split("options:", 1)[1].splitlines()
    missing = []
    for i, line in enumerate(lines):
        match = re.match(r"^  (-\S.*?)(?:\s{2,}(.*))?$", line)
        if not match:
            continue
        text = match.group(2) or ""
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if not text and re.match(r"^\s{6,}[^\s-]", nxt):
            text = nxt.strip()
        if not re.sub(r"\(default: .*?\)", "", text).strip():
            missing.append(match.group(1))
    return missing


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("hdrunet-bench", ["--help"]),
        ("hdrunet-prepare", ["crop", "--help"]),
        ("hdrunet-prepare", ["stream", "--help"]),
    ],
)
def test_every_option_has_a_help_text(tool, args, tmp_path):
    text = ok(run_tool(tool, args, tmp_path)).stdout
    assert "--workers" in text
    assert not _undocumented_options(text)


def test_a_files_reader_note_is_shown_once_as_a_plain_line(tmp_path):
    """data=held_out reads each file once per capture setting: the note on its negative
    values (DWAB ringing in real EXRs) comes once, as a plain line, not as ``WARNING:...``
    after a third-party library's ``logging.basicConfig`` (cvvdp logs on the root logger)."""
    import numpy as np
    import OpenEXR

    root = tmp_path / "held"
    root.mkdir()
    image = np.full((24, 32, 3), 0.5, np.float32)
    image[3:5, 4:6] = -0.2  # 4 pixels
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {"RGB": image}) as exr:  # write_exr would clip them
        exr.write(str(root / "scene.exr"))
    args = [*held_out_eval_args(root, tmp_path / "eval", tmp_path), "metrics=[psnr_mu,cvvdp]"]
    result = ok(run_tool("hdrunet-eval", args, tmp_path))
    lines = [x.strip() for x in re.split(r"[\r\n]+", result.stderr) if "negative values" in x]
    assert lines == [f"{root / 'scene.exr'}: 4 pixels with negative values filled from neighbours"]
    assert "3 images" in result.stdout and "WARNING" not in result.stderr


@pytest.mark.parametrize("tool", ["hdrunet-predict", "hdrunet-export"])
def test_the_packages_own_warning_is_a_plain_line(tool, tmp_path):
    """A plain state_dict's assumed variant is a Python warning of the library; the tools
    printed it with its ``file.py:line: UserWarning:`` prefix and the source line under it
    (for export, a code comment of the package)."""
    import cv2
    import numpy as np
    import torch

    from hdrunet_pl import HDRUNet

    weights = tmp_path / "plain.pth"
    torch.save(HDRUNet(nf=8).state_dict(), weights)
    cv2.imwrite(str(tmp_path / "photo.png"), np.full((12, 16, 3), 128, np.uint8))
    if tool == "hdrunet-predict":
        args = [f"ckpt={weights}", f"input={tmp_path / 'photo.png'}", f"output={tmp_path / 'o'}"]
    else:
        args = [f"ckpt={weights}", "format=torchscript", f"output={tmp_path / 'net.pt'}"]
    result = ok(run_tool(tool, args, tmp_path))
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    notes = [x for x in lines if "does not record the modulation" in x]
    assert len(notes) == 1 and notes[0].startswith(f"{weights}: a plain state_dict"), lines
    assert "UserWarning" not in result.stderr and "load_model(" not in result.stderr


def test_a_mistyped_setting_names_the_closest_ones_in_one_line(tmp_path):
    """Hydra's own answer is six lines advising ``+model.nf=8``, which the tool then
    refuses; the tools say which settings exist instead, before anything is made."""
    result = run_tool(
        "hdrunet-train", ["model.nf=8", "data.batchsize=2", f"paths.log_dir={tmp_path}"], tmp_path
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == (
        "hdrunet-train: error: model.nf: no such setting (did you mean model.net.nf?); "
        "data.batchsize: no such setting (did you mean data.batch_size or data.patch_size or "
        "data.seed?); `hdrunet-train --help` lists the groups"
    )
    assert list(tmp_path.iterdir()) == []
    result = run_tool("hdrunet-predict", ["ckpt=a", "input=b", "output=c", "tiles=3"], tmp_path)
    assert result.returncode == 2
    assert "tiles: no such setting (did you mean tile?)" in result.stderr
    result = run_tool("hdrunet-train", ["loger=wandb", f"paths.log_dir={tmp_path}"], tmp_path)
    assert result.returncode == 2  # a mistyped group, given a choice
    assert "loger: no such setting (did you mean logger?)" in result.stderr
    result = run_tool("hdrunet-train", ["scal=smoke", f"paths.log_dir={tmp_path}"], tmp_path)
    assert "scal: no such setting (did you mean +scale?)" in result.stderr  # not a default
    result = run_tool("hdrunet-eval", ["loger=wandb"], tmp_path)  # eval has no logger
    assert result.returncode == 2 and "loger: no such setting;" in result.stderr


@pytest.mark.parametrize("tool", ["hdrunet-predict", "hdrunet-train"])
def test_a_value_hydra_cannot_read_says_how_to_quote_it(tool, tmp_path):
    """Phone photos' names (``café.jpg``, ``IMG (1).jpg``) hold characters that Hydra's
    grammar reads only quoted: one line with the quoted form, which Hydra then reads as the
    path (Hydra's own answer: a parser exception of several lines, exit status 1); a path
    given without ``key=``: one line saying what settings look like."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    commas = ["in/a,b.jpg"] if tool != "hdrunet-train" else []  # train may sweep without -m
    # the suggestion is pasteable whatever the name holds: an apostrophe (the hint's own
    # single quotes were broken by it), double quotes, backslashes, a literal ${
    odd = ["in/it's (1).jpg", 'in/"q" (2).jpg', "in/b\\s (3).jpg", "in/x${y} (4).jpg"]
    for path in ("in/café.jpg", "in/IMG (1).jpg", "in/a#b[1].jpg", *commas, *odd):
        result = run_tool(tool, [f"input={path}", "output=out"], tmp_path)
        assert result.returncode == 2 and result.stdout == "", result.stderr
        line = result.stderr.strip()
        assert "\n" not in line and line.startswith(f"{tool}: error: input={path}: Hydra")
        (suggested,) = shlex.split(line.rsplit("quotes: ", 1)[1])
        (override,) = OverridesParser.create().parse_overrides([suggested])
        assert override.key_or_group == "input"
        read = OmegaConf.create({"input": override.value()})  # as the tool's config reads it
        assert OmegaConf.to_container(read, resolve=True)["input"] == path
    if tool == "hdrunet-predict":  # Hydra reads x${y} as a reference: the way to the characters
        result = run_tool(tool, ["ckpt=m.ckpt", "input=in/x${y}.jpg", "output=out"], tmp_path)
        assert result.returncode == 2 and result.stderr.count("\n") == 1
        assert "Interpolation key 'y' not found (in input: a ${...} in a value names" in (
            result.stderr
        )
        assert """write \\${ inside Hydra's quotes: 'input="a\\${b}"')""" in result.stderr
        # a setting that is no path: a mistyped reference, nothing to say of file names
        args = ["ckpt=m.ckpt", "input=in/a.jpg", "output=out", "tile=${tilesize}"]
        result = run_tool(tool, args, tmp_path)
        assert result.returncode == 2
        assert result.stderr.endswith("Interpolation key 'tilesize' not found (in tile)\n")
    result = run_tool(tool, ["photos"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"{tool}: error: 'photos': not a setting; settings")
    assert not any(tmp_path.iterdir())


def test_a_sweep_without_multirun_is_one_line_where_no_sweep_can_be_meant(capsys):
    """predict/eval/export: a sweep without -m (Hydra's "Ambiguous value", several lines,
    status 1) is one line; a training sweep may be asked by ``hydra.mode=MULTIRUN`` (on the
    command line or in an experiment's config), so train's are left to Hydra."""
    from hdrunet_pl.cli import check_override_syntax

    for args, said in (
        (["input=glob(*)"], "input=glob(*): several values (a sweep) need -m"),
        (["input=range(1,3)"], "several values (a sweep) need -m"),
        (["input=a,b.png"], "quote it for Hydra inside the shell's quotes: 'input=\"a,b.png\"'"),
    ):
        with pytest.raises(SystemExit) as stopped:
            check_override_syntax("hdrunet-predict", args)
        error = capsys.readouterr().err
        assert stopped.value.code == 2 and said in error and error.count("\n") == 1
    for tool, args in (
        ("hdrunet-predict", ["-m", "input=a,b"]),
        ("hdrunet-predict", ["hydra.mode=MULTIRUN", "input=a,b"]),
        ("hdrunet-train", ["loss=l1,tanh_l1", "hydra.mode=MULTIRUN"]),
        ("hdrunet-train", ["loss=l1,tanh_l1"]),  # an experiment's config may sweep
        ("hdrunet-train", ["callbacks=[default,ema]", "trainer.devices=[0,1]"]),
    ):
        check_override_syntax(tool, args)  # no exit


def test_cfg_hydra_resolve_says_what_to_use_instead(tmp_path):
    """Hydra cannot resolve its own settings apart from the job's (its traceback named
    paths.log_dir): one line pointing to `--cfg all --resolve`, which works."""
    for args in (["--cfg", "hydra", "--resolve"], ["--resolve", "-c", "hydra"]):
        result = run_tool("hdrunet-train", args, tmp_path)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.strip().endswith("`--cfg all --resolve` shows both, resolved")
    shown = run_tool("hdrunet-train", ["--cfg", "all", "--resolve"], tmp_path)
    assert shown.returncode == 0 and "log_dir: logs" in shown.stdout


@pytest.mark.parametrize(
    ("tool", "entry", "module", "args", "said"),
    [
        ("hdrunet-predict", "predict", "predict", ["input=in.png"], "whole and kept"),
        ("hdrunet-eval", "evaluate", "evaluate", ["pred_dir=p", "gt_dir=g"], "scores.csv is"),
        ("hdrunet-export", "export", "export", ["ckpt=m.ckpt"], "whole or not at all"),
    ],
)
def test_ctrl_c_says_what_each_tool_leaves_behind(
    tool, entry, module, args, said, tmp_path, monkeypatch, capsys
):
    """Ctrl-C: one line, status 130, telling what that tool keeps (eval writes its scores at
    the end and starts anew on a rerun: it must not promise predict's "go on")."""
    import importlib
    import sys

    from hdrunet_pl import cli

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module(f"hdrunet_pl.{module}"), "run", interrupted)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [tool, *args])
    with pytest.raises(SystemExit) as stopped:
        getattr(cli, entry)()
    error = capsys.readouterr().err
    assert stopped.value.code == 130 and error.count("\n") == 1
    assert error.startswith(f"{tool}: interrupted; ") and said in error
    assert "go on" not in error or tool == "hdrunet-predict"
