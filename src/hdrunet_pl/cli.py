"""Console entry points of the Hydra tools (``hdrunet-train``, ``-predict``, ``-eval``,
``-export``).

Hydra composes the config, and answers ``--help`` or a mistyped option, before torch and
Lightning are imported: each tool's work is imported only once its config is known.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import hydra
from omegaconf import DictConfig

from hdrunet_pl.quiet import install_filters
from hdrunet_pl.run_files import override_value

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
    from hdrunet_pl.evaluate import run
    from hdrunet_pl.predict import exit_on_error

    exit_on_error(run)(cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def _export(cfg: DictConfig) -> None:
    from hdrunet_pl.export import run
    from hdrunet_pl.predict import exit_on_error

    exit_on_error(run)(cfg)


def check_launcher(argv: list[str]) -> None:
    """Exit with one line when a sweep asks for the SLURM launcher on a machine without
    SLURM (Hydra would show the launcher's traceback)."""
    if any(a.startswith("hydra/launcher=submitit_slurm") for a in argv) and not (
        shutil.which("srun") and shutil.which("sbatch")
    ):
        print(
            "hdrunet-train: error: hydra/launcher=submitit_slurm submits the jobs with SLURM "
            "(sbatch, srun), which this machine does not have: run the command on the "
            "cluster's login node",
            file=sys.stderr,
        )
        sys.exit(2)


def train() -> float | None:
    """``hdrunet-train``; returns the final val PSNR-mu (for Hydra sweepers)."""
    install_filters()
    check_launcher(sys.argv[1:])
    sys.argv = argv_for_ddp_child(sys.argv)
    return _train()


def predict() -> None:
    """``hdrunet-predict``."""
    install_filters()
    _predict()


def evaluate() -> None:
    """``hdrunet-eval``."""
    install_filters()
    _evaluate()


def export() -> None:
    """``hdrunet-export``."""
    install_filters()
    _export()
