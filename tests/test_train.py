"""Training end to end: in process from a composed config, and through the console script."""

import json
import re
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from hdrunet_pl import load_model
from hdrunet_pl.errors import HDRUNetError
from hdrunet_pl.train import train

from .organisers import organisers_val_scores
from .support import FAST as FAST_ANY
from .support import SMALL_SYNTHETIC_VAL, compose_train, ok, run_tool

FAST = [*FAST_ANY, *SMALL_SYNTHETIC_VAL]


def test_train_in_process_writes_checkpoints_config_and_summary(tmp_path):
    cfg = compose_train([*FAST, f"paths.output_dir={tmp_path}"])
    summary = train(cfg)
    assert summary.steps == 4
    assert (tmp_path / "config.yaml").is_file()
    last = Path(summary.last_checkpoint)
    assert last.is_file() and last.parent == tmp_path / "checkpoints"
    model = load_model(last).eval()
    assert model.config.nf == 8
    # the summary's scores are the organisers' scores of the validation images: of the LDR
    # inputs (identity) and of the saved network's predictions
    identity_mu, identity_l = organisers_val_scores(cfg)
    assert summary.psnr_mu_identity == pytest.approx(identity_mu, abs=1e-3)
    assert summary.psnr_l_identity == pytest.approx(identity_l, abs=1e-3)
    after_mu, after_l = organisers_val_scores(cfg, model)
    assert summary.psnr_mu_after == pytest.approx(after_mu, abs=1e-3)
    assert summary.psnr_l_after == pytest.approx(after_l, abs=1e-3)
    assert abs(summary.psnr_mu_before - summary.psnr_mu_after) > 1e-3, "4 steps moved it"
    # metrics.json holds the same numbers
    assert json.loads((tmp_path / "metrics.json").read_text()) == asdict(summary)
    metrics = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]
    for key in ("train/loss", "val/psnr_mu", "val/psnr_l", "val/psnr_mu_identity", "lr-Adam"):
        assert key in metrics


def test_the_final_weights_are_validated_when_the_interval_does_not_divide_the_steps(
    tmp_path,
):
    """max_steps=5 with validation every 2 steps: the run validates at steps 2 and 4 and,
    once more, at step 5, so "after" scores the weights the run ends with (a README sweep
    of 2,000 steps with the default interval of 5,000 showed no scores at all)."""
    cfg = compose_train([*FAST, "trainer.max_steps=5", f"paths.output_dir={tmp_path}"])
    summary = train(cfg)
    assert summary.steps == 5
    after_mu, after_l = organisers_val_scores(cfg, load_model(summary.last_checkpoint).eval())
    assert summary.psnr_mu_after == pytest.approx(after_mu, abs=1e-3)
    assert summary.psnr_l_after == pytest.approx(after_l, abs=1e-3)
    rows = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    validated = sorted(
        {
            int(float(values[header.index("step")]))
            for values in (row.split(",") for row in rows[1:])
            if values[header.index("val/psnr_mu")]
        }
    )
    assert validated == [0, 2, 4, 5]  # step 0: validate_first
    # the best checkpoint is the best of all of them: last.ckpt when the final score wins
    scores = {
        int(float(v[header.index("step")])): float(v[header.index("val/psnr_mu")])
        for v in (row.split(",") for row in rows[1:])
        if v[header.index("val/psnr_mu")]
    }
    in_fit = max(scores[2], scores[4])
    expected = summary.last_checkpoint if scores[5] > in_fit else None
    if expected is None:
        assert Path(summary.best_checkpoint).name.startswith("best")
    else:
        assert summary.best_checkpoint == expected


def test_console_script_trains_from_any_directory(tmp_path):
    run_dir = tmp_path / "run"
    args = [*FAST, "loss=mu_l1", f"hydra.run.dir={run_dir}"]
    result = ok(run_tool("hdrunet-train", args, tmp_path, fresh=True))  # the installed script
    assert "hdrunet-train summary" in result.stdout
    # the printed summary shows metrics.json's numbers (rounded to 0.01 dB)
    saved = json.loads((run_dir / "metrics.json").read_text())
    printed = {
        label: float(value)
        for label, value in re.findall(r"^(\S.*?\S)\s{2,}([-+\d.]+) dB$", result.stdout, re.M)
    }
    assert printed == pytest.approx(
        {
            "val PSNR-mu before": saved["psnr_mu_before"],
            "val PSNR-mu after": saved["psnr_mu_after"],
            "val PSNR-L after": saved["psnr_l_after"],
            "LDR identity": saved["psnr_mu_identity"],
            "gain over identity": saved["psnr_mu_after"] - saved["psnr_mu_identity"],
            "gain in PSNR-L": saved["psnr_l_after"] - saved["psnr_l_identity"],
        },
        abs=0.0051,
    )
    assert re.search(r"^steps trained +4 in \d+ s$", result.stdout, re.M)
    assert saved["steps"] == 4
    assert saved["last_checkpoint"] == str(run_dir / "checkpoints" / "last.ckpt")
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert "name: mu_l1" in (run_dir / "config.yaml").read_text()


def test_python_dash_m_entry_point(tmp_path):
    args = [*FAST, "trainer.max_steps=2", f"hydra.run.dir={tmp_path / 'run'}"]
    ok(run_tool("python", ["-m", "hdrunet_pl.train", *args], tmp_path))
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_multirun_sweep_makes_one_run_per_value(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *FAST, "loss=l1,tanh_l1", "trainer.max_steps=2", f"hydra.sweep.dir={sweep}"]
    result = ok(run_tool("hdrunet-train", args, tmp_path))
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
    # trained on with more steps, as the README says: each job in its own folder
    args[args.index("trainer.max_steps=2")] = "trainer.max_steps=3"
    result = ok(run_tool("hdrunet-train", [*args, "resume=auto"], tmp_path))
    assert result.stdout.count("steps trained        1 (from step 2 to 3)") == 2  # not afresh
    assert sorted(p for p in sweep.iterdir() if p.is_dir() and p.name[0] != ".") == runs


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
    result = run_tool("hdrunet-train", bad, tmp_path)
    assert result.returncode != 0
    assert "Could not find" in result.stderr
    assert f"Available options in '{group}'" in result.stderr
    assert not (tmp_path / "logs").exists()  # nothing ran


def test_ema_weights_are_validated_saved_and_resumed_exactly(tmp_path):
    """callbacks=[default,ema]: validation, the checkpoints' state_dict (what load_model,
    hdrunet-predict and hdrunet-eval read) and weights-only snapshots hold the moving
    average; a run stopped at step 3 and resumed ends where an uninterrupted one does."""
    import torch

    ema = [
        *FAST,
        "callbacks=[default,ema]",
        "callbacks.ema.decay=0.5",  # moves visibly in six steps
        "trainer.max_steps=6",
        "+callbacks.snapshot._target_=lightning.pytorch.callbacks.ModelCheckpoint",
        "+callbacks.snapshot.save_weights_only=true",
        "+callbacks.snapshot.every_n_train_steps=6",
        "+callbacks.snapshot.filename=snapshot",
        "+callbacks.snapshot.dirpath=${paths.output_dir}/checkpoints",
    ]
    whole = tmp_path / "whole"
    cfg = compose_train([*ema, f"paths.output_dir={whole}"])
    summary = train(cfg)
    saved = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)
    raw, average = saved["current_model_state"], saved["state_dict"]
    assert raw.keys() == average.keys() and saved["global_step"] == 6
    assert any(not torch.equal(raw[k], average[k]) for k in raw)  # the average is not the raw
    snapshot = torch.load(whole / "checkpoints" / "snapshot.ckpt", weights_only=True)
    assert all(torch.equal(snapshot["state_dict"][k], average[k]) for k in average)
    # the scores in the summary are those of the saved (averaged) network
    after_mu, _ = organisers_val_scores(cfg, load_model(whole / "checkpoints" / "last.ckpt"))
    assert summary.psnr_mu_after == pytest.approx(after_mu, abs=1e-3)

    split = tmp_path / "split"
    train(compose_train([*ema, "trainer.max_steps=3", f"paths.output_dir={split}"]))
    train(compose_train([*ema, "resume=auto", f"paths.output_dir={split}"]))
    resumed = torch.load(split / "checkpoints" / "last.ckpt", weights_only=True)
    for key in ("state_dict", "current_model_state"):
        assert all(torch.equal(resumed[key][k], saved[key][k]) for k in saved[key]), key
    # without the average, training would go on from the averaged weights: refused
    with pytest.raises(HDRUNetError, match=r"was saved with a weight average \(callbacks="):
        train(
            compose_train(
                [*FAST, "trainer.max_steps=9", "resume=auto", f"paths.output_dir={split}"]
            )
        )
    again = torch.load(split / "checkpoints" / "last.ckpt", weights_only=True)
    assert again["global_step"] == 6


def test_a_run_stopped_before_its_summary_is_finished_by_its_resume(tmp_path):
    """Pre-empted in its final validation (last.ckpt saved at max_steps, no metrics.json):
    the resume said "finished" and the run never got its scores. It now validates the final
    weights and writes the summary; once that is written, the run is finished."""
    from hdrunet_pl.train import RunFinished

    run = [*FAST, "trainer.max_steps=4", f"paths.output_dir={tmp_path}"]
    first = train(compose_train(run))
    (tmp_path / "metrics.json").unlink()
    finished = train(compose_train([*run, "resume=auto"]))
    assert finished.steps == 4 and finished.resumed_from == 4
    assert finished.last_checkpoint == str((tmp_path / "checkpoints" / "last.ckpt").resolve())
    assert finished.best_checkpoint is not None  # the printed eval/predict lines need it
    assert finished.psnr_mu_after == pytest.approx(first.psnr_mu_after, abs=1e-6)
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == 4
    with pytest.raises(RunFinished, match=r"at step 4, at trainer\.max_steps=4: the run is"):
        train(compose_train([*run, "resume=auto"]))
    with pytest.raises(RunFinished, match=r"at step 4, past trainer\.max_steps=2"):
        train(compose_train([*run, "resume=auto", "trainer.max_steps=2"]))


def test_without_the_packages_callbacks_no_checkpoint_is_called_best(tmp_path):
    """``callbacks=none``: Lightning's own checkpoint keeps the latest weights; nothing chose
    it by a score, so the summary names it the last checkpoint, not the best one."""
    summary = train(compose_train([*FAST, "callbacks=none", f"paths.output_dir={tmp_path}"]))
    assert summary.best_checkpoint is None
    assert Path(summary.last_checkpoint).name == f"epoch=0-step={summary.steps}.ckpt"
    assert isinstance(load_model(summary.last_checkpoint), torch.nn.Module)
