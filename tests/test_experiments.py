"""Experiments at scale: ablation sweeps and their report, DDP, clusters, loggers (W&B:
``test_wandb.py``)."""

import csv
import itertools
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from hdrunet_pl.train import train

from .support import (
    CONF_DIR,
    FAST,
    SMALL_SYNTHETIC_VAL,
    compose_train,
    noise,
    run_tool,
    sweep_jobs,
)

REPO = Path(__file__).resolve().parents[1]
LOSSES = ["l1", "l2", "tanh_l1", "tanh_l2", "mu_l1"]


@pytest.fixture(scope="module")
def loss_sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    sweep = root / "ablation_loss"
    args = ["-m", "experiment=ablation_loss", "+scale=smoke", f"hydra.sweep.dir={sweep}"]
    result = run_tool("hdrunet-train", args, root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("hdrunet-train summary") == len(LOSSES)
    return sweep


def test_ablation_sweep_and_report(loss_sweep, tmp_path):
    jobs = sorted(p.name for p in loss_sweep.iterdir() if p.is_dir())
    assert jobs == sorted(f"{i}_loss-{loss}" for i, loss in enumerate(LOSSES))
    result = run_tool("hdrunet-report", [str(loss_sweep)], tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| loss=")]
    assert [row.split(" | ")[0][2:] for row in rows] == [f"loss={loss}" for loss in LOSSES]
    assert all(row.endswith("| 4 | done |") for row in rows)
    # every variant's network: HDRUNet at nf 8 (smoke scale), its parameters and GMAC
    assert all(row.split(" | ")[1:3] == ["27,466", "0.415"] for row in rows)
    for loss in LOSSES:
        metrics = json.loads(next(loss_sweep.glob(f"*_loss-{loss}/metrics.json")).read_text())
        assert f"{metrics['psnr_mu_after']:.2f}" in next(r for r in rows if f"loss={loss} " in r)
    png = loss_sweep / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert (loss_sweep / "report.csv").read_text().count("\n") == len(LOSSES) + 1
    config = (loss_sweep / "0_loss-l1" / "config.yaml").read_text()
    assert "patch_size: 160" in config and "nf: 8" in config  # ablation recipe, smoke scale


def test_report_on_a_partial_sweep_names_missing_runs(loss_sweep, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(loss_sweep, partial)
    shutil.rmtree(partial / "4_loss-mu_l1")
    (partial / "3_loss-tanh_l2" / "metrics.json").unlink()  # as if still running
    result = run_tool("hdrunet-report", [str(partial)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "missing runs: loss=mu_l1" in result.stdout
    assert "| loss=mu_l1 | - | - | - | - | - | - | missing |" in result.stdout
    tanh_l2 = next(line for line in result.stdout.splitlines() if "loss=tanh_l2" in line)
    assert "running or stopped" in tanh_l2 and "-" not in tanh_l2.split("|")[4]  # PSNR-mu


def test_report_without_runs_is_a_clear_error(tmp_path, capsys):
    from hdrunet_pl.report import main as report_main

    assert report_main([str(tmp_path)]) == 2
    assert "not a sweep (no multirun.yaml)" in capsys.readouterr().err
    (tmp_path / "multirun.yaml").write_text("hydra: {}\n")
    assert report_main([str(tmp_path)]) == 2
    assert "no runs" in capsys.readouterr().err


CSV_HEAD = (
    "epoch,lr-Adam,step,train/loss,val/psnr_l,val/psnr_l_identity,val/psnr_mu,val/psnr_mu_identity"
)
"""The header of a job's ``csv/metrics.csv`` (``logger=csv``) as Lightning writes it."""


def val_row(step: int, mu: str, psnr_l: str) -> str:
    """A validation row of the CSV log (identity scores 28.35 / 25.88)."""
    return f"0.0,,{step},,{psnr_l},28.35,{mu},25.88"


def train_row(step: int) -> str:
    return f"0.0,,{step},0.42,,,,"


def fake_sweep(sweep: Path, jobs: dict[str, tuple[list[str], dict | None]]) -> Path:
    """A ``-m loss=...`` sweep folder: per loss, its CSV rows and its ``metrics.json``."""
    losses = ",".join(jobs)
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text(f"hydra:\n  overrides:\n    task:\n    - loss={losses}\n")
    for job, (loss, (rows, summary)) in enumerate(jobs.items()):
        folder = sweep / f"{job}_loss-{loss}"
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text(f"- loss={loss}\n")
        (folder / "csv").mkdir()
        (folder / "csv" / "metrics.csv").write_text("\n".join([CSV_HEAD, *rows]) + "\n")
        if summary is not None:
            (folder / "metrics.json").write_text(json.dumps(summary))
    return sweep


def report_rows(sweep: Path, capsys) -> dict[str, list[str]]:
    """``hdrunet-report``'s table: variant -> its cells."""
    from hdrunet_pl.report import main as report_main

    assert report_main([str(sweep)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| loss=")]
    return {cells[0]: cells[1:] for cells in (line.strip("| ").split(" | ") for line in lines)}


def test_report_shows_a_resumed_run_from_its_log_not_its_older_summary(tmp_path, capsys):
    """A finished 4-step job resumed with a larger trainer.max_steps (README's flow) and
    still going, or killed at step 38: its metrics.json is the 4-step run's; the CSV log's
    step-38 validation is the run's latest score, and the run is not done."""
    summary = {"steps": 4, "psnr_mu_after": 7.11, "psnr_l_after": 13.74, "psnr_mu_identity": 25.88}
    resumed = [val_row(4, "7.11", "13.74"), train_row(5), val_row(38, "11.61", "15.22")]
    sweep = fake_sweep(
        tmp_path / "sweep",
        {"l1": (resumed, summary), "l2": ([val_row(4, "7.36", "11.52"), train_row(4)], summary)},
    )
    rows = report_rows(sweep, capsys)
    # variant, params, GMAC, PSNR-mu, PSNR-L, identity, steps, status
    assert rows["loss=l1"][2:] == [
        "11.61",
        "15.22",
        "25.88",
        "38",
        "running or stopped (resumed after its step-4 summary)",
    ]
    assert rows["loss=l2"][2:] == ["7.11", "13.74", "25.88", "4", "done"]  # the summary's own


def test_report_takes_the_last_validation_row_whole(tmp_path, capsys):
    """Scores never mix rows: a NaN validation (a diverged run) is shown as nan, not the
    step before's score; an infinite PSNR-mu is not paired with the step before's; a job
    killed after a validation names the step its scores are from."""
    early = [val_row(2, "6.93", "13.69"), train_row(3), train_row(4)]
    sweep = fake_sweep(
        tmp_path / "sweep",
        {
            "l1": ([*early, val_row(4, "nan", "nan")], None),
            "l2": ([*early, val_row(4, "inf", "13.74")], None),
            "tanh_l1": ([val_row(2, "6.93", "13.69"), train_row(3)], None),
        },
    )
    rows = report_rows(sweep, capsys)
    assert rows["loss=l1"][2:] == ["nan", "nan", "25.88", "4", "running or stopped"]
    assert rows["loss=l2"][2:] == ["inf", "13.74", "25.88", "4", "running or stopped"]
    assert rows["loss=tanh_l1"][2:] == [
        "6.93",
        "13.69",
        "25.88",
        "3",
        "running or stopped; scores of step 2",
    ]
    table = {r["variant"]: r for r in csv.DictReader((sweep / "report.csv").open())}
    assert [table[f"loss={loss}"]["scored_at_step"] for loss in ("l1", "l2", "tanh_l1")] == [
        "4",
        "4",
        "2",
    ]
    assert (sweep / "report.png").stat().st_size > 5000  # drawn without the nan/inf bars


@pytest.mark.parametrize(
    "task",
    [
        ["experiment=ablation_loss", "+scale=smoke", "loss=l1"],
        ["experiment=ablation_loss", "loss=l2,mu_l1", "trainer.max_steps=40", "resume=auto"],
        ["experiment=ablation_loss", "+scale=smoke", "model.optimizer.lr=1e-3,2e-4"],
    ],
    ids=["one-value", "another-list", "one-more-key"],
)
def test_report_expects_the_variants_hydra_swept(tmp_path, capsys, task):
    """A command-line value replaces the experiment's list for its key, as in Hydra's
    BasicSweeper (`-m experiment=ablation_loss loss=l1` runs one job, none is missing); a
    setting of one value is not a swept key."""
    from hdrunet_pl.report import swept_values

    sweeper = "loss=l1,l2,tanh_l1,tanh_l2,mu_l1"  # ablation_loss's hydra.sweeper.params
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text(
        yaml.safe_dump(
            {
                "hydra": {
                    "sweeper": {"params": {"loss": sweeper.partition("=")[2]}},
                    "overrides": {"task": task},
                }
            }
        )
    )
    params = swept_values(sweep)
    expected = [
        " ".join(o for o in job if o.partition("=")[0] in params)
        for job in sweep_jobs([sweeper, *task])  # Hydra's own expansion
    ]
    got = [
        " ".join(f"{k}={v}" for k, v in zip(params, c, strict=True))
        for c in itertools.product(*params.values())
    ]
    assert got == expected and len(got) == len(sweep_jobs([sweeper, *task]))
    for job, variant in enumerate(got):  # every job Hydra launched has its folder
        folder = sweep / f"{job}_job"
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(variant.split(" ")))
        (folder / "metrics.json").write_text('{"steps": 4, "psnr_mu_after": 7.1}')
    from hdrunet_pl.report import main as report_main

    assert report_main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "missing" not in out and out.count("| done |") == len(got)


def test_sweep_notebook_on_a_sweep_without_scores_says_so(tmp_path):
    """notebooks/sweep_results.ipynb on a sweep that has only its multirun.yaml: it says
    there is nothing to plot yet, no error."""
    import nbformat
    from nbclient import NotebookClient

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra:\n  overrides:\n    task:\n    - loss=l1,l2\n")
    nb = nbformat.read(REPO / "notebooks" / "sweep_results.ipynb", as_version=4)
    (cell,) = [c for c in nb.cells if c.source.startswith("SWEEP_DIR = None")]
    cell.source = cell.source.replace("SWEEP_DIR = None", f"SWEEP_DIR = {str(sweep)!r}", 1)
    NotebookClient(nb, timeout=300, kernel_name="python3").execute()  # raises on an error
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "| loss=l1 | - | - | - | - | - | - | missing |" in text
    assert "no scores yet: nothing to plot" in text and "no validation curves yet" in text


DDP_VAL = ["data.val_set.num_images=3", "data.val_set.height=36", "data.val_set.width=52"]
"""Three validation scenes: they do not split evenly over two processes."""


def ddp_args(ranks: Path) -> list[str]:
    return [
        "trainer=ddp_cpu",
        *FAST,
        *DDP_VAL,
        "+callbacks.rank_dump._target_=tests.helpers.RankMetricsDump",
        f"+callbacks.rank_dump.folder={ranks}",
        "model.val_metrics=[pu21_psnr]",  # a perceptual score, synced like the others
    ]


def run_ddp(args: list[str], cwd: Path):
    """``hdrunet-train`` in two processes, its log folder inside ``cwd``."""
    return run_tool("hdrunet-train", args, cwd, env={"HDRUNET_LOG_DIR": str(cwd / "logs")})


def test_ddp_on_cpu_syncs_metrics_and_a_sweep_writes_one_folder_per_job(tmp_path):
    """Two jobs (``-m loss=l1,tanh_l1``) of two DDP processes each, with the weight EMA:
    every job writes one folder from rank 0, its checkpoints hold the average beside the
    raw weights, and the synced scores are the single-process ones."""
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "loss=l1,tanh_l1",
        "callbacks=[default,ema]",
        *ddp_args(tmp_path / "ranks"),
        f"hydra.sweep.dir={sweep}",
    ]
    result = run_ddp(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    offending = noise(result, tmp_path)  # no third-party advice a user cannot act on
    assert not offending, "\n".join(offending)
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name.split("_")[0] for p in jobs] == ["0", "1"]
    assert not (tmp_path / "logs").exists()  # no stray run folders from the workers
    for job in jobs:  # the worker wrote into rank 0's folder, not a folder of its own
        assert (job / "metrics.json").is_file()
        assert sorted(p.name for p in (job / "checkpoints").iterdir()) == [
            "best-step0000004.ckpt",
            "last.ckpt",
        ]
        saved = torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)
        average, raw = saved["state_dict"], saved["current_model_state"]
        assert average.keys() == raw.keys()
        assert any(not torch.equal(average[k], raw[k]) for k in average)  # 4 steps averaged
    assert result.stdout.count("hdrunet-train summary") == 2  # rank 0 only, once per job
    # the rank files are the last job's (loss=tanh_l1, the default loss)
    rank0, rank1 = (json.loads((tmp_path / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["world_size"] == rank1["world_size"] == 2
    for key in ("val/psnr_mu", "val/psnr_l", "val/psnr_mu_identity", "val/pu21_psnr"):
        assert rank0[key] == rank1[key]
    # the synced scores are the single-process scores of the same images and weights: every
    # image counted once although 3 images do not split over 2 processes
    single_before, single_identity, single_pu21 = single_process_scores([*FAST, *DDP_VAL])
    metrics = json.loads((jobs[1] / "metrics.json").read_text())
    assert metrics["psnr_mu_before"] == pytest.approx(single_before, abs=1e-4)
    assert rank0["val/psnr_mu_identity"] == pytest.approx(single_identity, abs=1e-5)
    assert rank0["val/pu21_psnr_identity"] == pytest.approx(single_pu21, abs=1e-4)


def single_process_scores(overrides: list[str]) -> tuple[float, float, float]:
    """(PSNR-mu of the untrained network, PSNR-mu and PU21-PSNR of the LDR) on the
    validation set, per image in one process, with the weights ``hdrunet-train`` starts
    from."""
    import lightning as L
    import torch
    from hydra.utils import instantiate

    from hdrunet_pl.metrics import PU21PSNR, PSNRMu

    cfg = compose_train(overrides)
    L.seed_everything(cfg.seed, verbose=False)
    datamodule, model = instantiate(cfg.data), instantiate(cfg.model).eval()
    network, identity, identity_pu21 = PSNRMu(), PSNRMu(), PU21PSNR()
    with torch.no_grad():
        for i in range(len(datamodule.val_set)):
            item = datamodule.val_set[i]
            ldr, hdr = item["ldr"][None], item["hdr"][None]
            network.update(model(ldr).float(), hdr)
            identity.update(ldr, hdr)
            identity_pu21.update(ldr, hdr)
    return network.compute().item(), identity.compute().item(), identity_pu21.compute().item()


def test_tensorboard_logger_writes_events_and_previews(tmp_path):
    cfg = compose_train(
        [*FAST, *SMALL_SYNTHETIC_VAL, "logger=tensorboard", f"paths.output_dir={tmp_path}"]
    )
    train(cfg)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars, images = set(), set()
    for events in (tmp_path / "tensorboard").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"images": 0})
        acc.Reload()
        scalars |= set(acc.Tags()["scalars"])
        images |= set(acc.Tags()["images"])
    assert {"val/psnr_mu", "train/loss"} <= scalars
    assert any(tag.startswith("val/preview/") for tag in images)


def test_same_seed_repeats_the_same_metrics_on_cpu(tmp_path):
    summaries = []
    for name in ("a", "b"):
        cfg = compose_train([*FAST, *SMALL_SYNTHETIC_VAL, f"paths.output_dir={tmp_path / name}"])
        summaries.append(train(cfg))
        assert (tmp_path / name / "config.yaml").is_file()
    assert summaries[0].psnr_mu_after == summaries[1].psnr_mu_after
    assert summaries[0].psnr_l_after == summaries[1].psnr_l_after


def test_submitit_slurm_launcher_and_multinode_trainer_compose():
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(
            config_name="train",
            overrides=["hydra/launcher=submitit_slurm", "trainer=multinode", "trainer.num_nodes=4"],
            return_hydra_config=True,
        )
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.trainer.num_nodes == 4 and cfg.trainer.strategy == "ddp"
    assert cfg.trainer.accelerator == "gpu"


def test_the_slurm_launcher_off_a_cluster_is_one_line(monkeypatch, capsys):
    import shutil

    from hdrunet_pl.cli import check_launcher

    monkeypatch.setattr(shutil, "which", lambda name: None)  # no srun, no sbatch
    with pytest.raises(SystemExit) as exit_info:
        check_launcher(["-m", "hydra/launcher=submitit_slurm", "experiment=ablation_loss"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and err[0].startswith("hdrunet-train: error: hydra/launcher=submitit")
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")  # on the cluster
    check_launcher(["-m", "hydra/launcher=submitit_slurm"])
    check_launcher(["-m", "experiment=ablation_loss"])  # another launcher: not checked


def test_report_expands_a_glob_sweep_over_the_groups_options(tmp_path):
    """`-m ... 'loss=glob(tanh_l*)'` ran every loss whose name matches; the report listed a
    missing job named `loss=glob(tanh_l*)` instead of expecting those."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from hdrunet_pl.report import swept_values

    from .support import CONF_DIR

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        options = GlobalHydra.instance().config_loader().get_group_options("loss")
    expected = [name for name in options if name.startswith("tanh_l")]
    assert len(expected) >= 2
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    record = {
        "hydra": {
            "sweeper": {"params": {"loss": "l1,l2,tanh_l1,tanh_l2,mu_l1"}},
            "overrides": {"task": ["experiment=ablation_loss", "loss=glob(tanh_l*)"]},
        }
    }
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(record))
    assert swept_values(sweep) == {"loss": expected}
