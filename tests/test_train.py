"""Training end to end: in process from a composed config, and through the console script."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from hdrunet_pl import load_model
from hdrunet_pl.train import train

from .conftest import CONF_DIR, SMALL_SYNTHETIC_VAL
from .conftest import FAST as FAST_ANY

FAST = [*FAST_ANY, *SMALL_SYNTHETIC_VAL]


def run_cli(args: list[str], cwd: Path, module: bool = False) -> subprocess.CompletedProcess:
    exe = (
        [sys.executable, "-m", "hdrunet_pl.train"]
        if module
        else [str(Path(sys.executable).parent / "hdrunet-train")]
    )
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
    result = subprocess.run(
        exe + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_train_in_process_writes_checkpoints_config_and_summary(tmp_path):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(config_name="train", overrides=[*FAST, f"paths.output_dir={tmp_path}"])
    summary = train(cfg)
    assert summary.steps == 4
    assert summary.psnr_mu_before is not None and summary.psnr_mu_after is not None
    assert summary.psnr_mu_identity is not None
    assert (tmp_path / "config.yaml").is_file()
    last = Path(summary.last_checkpoint)
    assert last.is_file() and last.parent == tmp_path / "checkpoints"
    model = load_model(last)
    assert model.config.nf == 8
    metrics = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]
    for key in ("train/loss", "val/psnr_mu", "val/psnr_l", "val/psnr_mu_identity", "lr-Adam"):
        assert key in metrics


def test_console_script_trains_from_any_directory(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli([*FAST, "loss=mu_l1", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert "hdrunet-train summary" in result.stdout
    assert "steps trained        4" in result.stdout
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert "name: mu_l1" in (run_dir / "config.yaml").read_text()


def test_python_dash_m_entry_point(tmp_path):
    run_cli(
        [*FAST, "trainer.max_steps=2", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        module=True,
    )
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_multirun_sweep_makes_one_run_per_value(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        ["-m", *FAST, "loss=l1,tanh_l1", "trainer.max_steps=2", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
    )
    assert result.stdout.count("hdrunet-train summary") == 2
    runs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name.split("_")[0] for p in runs] == ["0", "1"]  # job number, then overrides
    assert "loss-l1" in runs[0].name and "loss-tanh_l1" in runs[1].name
    assert "debug-fast" in runs[0].name  # a debug run says so in its name
    losses = {
        (run / "config.yaml").read_text().split("loss:\n")[1].split("name: ")[1].split()[0]
        for run in runs
    }
    assert losses == {"l1", "tanh_l1"}
    assert all((run / "checkpoints" / "last.ckpt").is_file() for run in runs)


@pytest.mark.parametrize(
    ("bad", "group"),
    [
        (["loss=ssim"], "loss"),
        (["experiment=paer"], "experiment"),
        (["debug=fsat"], "debug"),
        (["-m", "experiment=ablation_los"], "experiment"),
    ],
)
def test_unknown_group_options_fail_with_hydra_message(tmp_path, bad, group):
    exe = str(Path(sys.executable).parent / "hdrunet-train")
    result = subprocess.run([exe, *bad], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "Could not find" in result.stderr
    assert f"Available options in '{group}'" in result.stderr
    assert not (tmp_path / "logs").exists()  # nothing ran
