"""``hdrunet-train``: compose the Hydra config, build data, model and trainer, train, summarise.

hdrunet-train                              # the paper's network on synthetic data
hdrunet-train experiment=demo              # a few minutes on a CPU (make train)
hdrunet-train -m loss=l1,tanh_l1 trainer.max_steps=20
hdrunet-train -m experiment=ablation_loss +scale=smoke
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from hdrunet_pl.data.datasets import check_patch_size
from hdrunet_pl.errors import HDRUNetError
from hdrunet_pl.loggers import finish_loggers, instantiate_loggers
from hdrunet_pl.reliability import (
    LAST_CHECKPOINT,
    LastCheckpoint,
    check_output_dir,
    check_resume_checkpoint,
)
from hdrunet_pl.resolvers import dirname
from hdrunet_pl.runtime import keep_freed_memory

METRICS_FILE = "metrics.json"
"""Written into the run directory when training ends (read by ``hdrunet-report``)."""
_DDP_RUN_DIR = "HDRUNET_DDP_RUN_DIR"
_DDP_OVERRIDES = "HDRUNET_DDP_OVERRIDES"


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

    def lines(self) -> list[str]:
        def db(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.2f} dB"

        out = [
            f"steps trained        {self.steps} in {self.seconds:.0f} s",
            f"val PSNR-mu before   {db(self.psnr_mu_before)}",
            f"val PSNR-mu after    {db(self.psnr_mu_after)}",
            f"val PSNR-L after     {db(self.psnr_l_after)}",
            f"LDR identity         {db(self.psnr_mu_identity)}",
        ]
        if self.psnr_mu_after is not None and self.psnr_mu_identity is not None:
            out.append(f"gain over identity   {self.psnr_mu_after - self.psnr_mu_identity:+.2f} dB")
        out += [
            f"best checkpoint      {self.best_checkpoint or 'none'}",
            f"last checkpoint      {self.last_checkpoint or 'none'}",
            f"run directory        {self.output_dir}",
        ]
        return out


def _metric(metrics: dict, key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None else float(value)


def _sweep_info() -> dict[str, str]:
    """Name and group of this job for loggers: a multirun's jobs share one group."""
    if not HydraConfig.initialized():
        return {}
    hydra_cfg = HydraConfig.get()
    name = dirname(hydra_cfg.job.override_dirname) or None
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return {"name": name, "group": Path(hydra_cfg.sweep.dir).name}
    return {"name": name}


def _share_job_with_ddp_children(output_dir: Path) -> None:
    """Let DDP worker processes (started by Lightning with this argv) rerun this one job."""
    if HydraConfig.initialized():
        os.environ[_DDP_RUN_DIR] = str(output_dir.resolve())
        os.environ[_DDP_OVERRIDES] = json.dumps(list(HydraConfig.get().overrides.task))


def resume_path(cfg: DictConfig, output_dir: Path) -> str | None:
    """The checkpoint to resume from: ``ckpt_path`` (a file, or ``last``), or with
    ``resume=auto`` the run folder's ``checkpoints/last.ckpt`` when there is one."""
    last = output_dir / "checkpoints" / LAST_CHECKPOINT
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path == "last":
        if not last.is_file():
            raise HDRUNetError(f"ckpt_path=last: no {last}; give the checkpoint's path")
        ckpt_path = str(last)
    elif ckpt_path is None and cfg.get("resume") == "auto" and last.is_file():
        ckpt_path = str(last)
    if ckpt_path is not None:
        check_resume_checkpoint(ckpt_path)
    return ckpt_path


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


def train(cfg: DictConfig) -> TrainSummary:
    """Train as ``cfg`` says; ``cfg`` is the composed ``train.yaml`` (resolvable)."""
    output_dir = Path(cfg.paths.output_dir)
    if os.environ.get("LOCAL_RANK", "0") == "0":
        check_output_dir(output_dir, cfg.paths.get("min_free_gb", 1.0))
    ckpt_path = resume_path(cfg, output_dir)
    launch_env = {key: os.environ.get(key) for key in _LAUNCH_ENV}
    L.seed_everything(cfg.seed, workers=True)
    _share_job_with_ddp_children(output_dir)

    keep_freed_memory()  # CPU tensors: no page faults on every large allocation
    if "patch_size" in cfg.data:  # before the data sets that are sized by it
        check_patch_size(cfg.data.patch_size)
    datamodule: L.LightningDataModule = _build(cfg.data, "data")
    model: L.LightningModule = _build(cfg.model, "model")
    callbacks = [_build(c, "callbacks") for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = instantiate_loggers(
        cfg.get("logger"), **_sweep_info(), resuming=ckpt_path is not None
    )
    trainer: L.Trainer = _build(
        cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False
    )
    if trainer.is_global_zero:
        OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)
    try:
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

        before = None
        if cfg.get("validate_first") and ckpt_path is None:
            before = trainer.validate(model, datamodule=datamodule, verbose=False)[0]
        start = time.perf_counter()
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        except SIGTERMException:
            _end_process_group(launch_env)
            if trainer.is_global_zero:
                print(f"stopped at step {trainer.global_step} on request; exiting", flush=True)
            sys.exit(0)
        seconds = time.perf_counter() - start
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        checkpoint = trainer.checkpoint_callback
        summary = TrainSummary(
            steps=trainer.global_step,
            seconds=seconds,
            psnr_mu_before=_metric(before or {}, "val/psnr_mu"),
            psnr_mu_after=_metric(metrics, "val/psnr_mu"),
            psnr_l_after=_metric(metrics, "val/psnr_l"),
            psnr_mu_identity=_metric(metrics, "val/psnr_mu_identity"),
            psnr_l_identity=_metric(metrics, "val/psnr_l_identity"),
            best_checkpoint=getattr(checkpoint, "best_model_path", None) or None,
            last_checkpoint=next(
                (c.last_model_path for c in trainer.callbacks if isinstance(c, LastCheckpoint)),
                None,
            ),
            output_dir=str(output_dir),
        )
    finally:
        finish_loggers(loggers)
        _end_process_group(launch_env)
    if trainer.is_global_zero:
        (output_dir / METRICS_FILE).write_text(json.dumps(asdict(summary), indent=2))
        print("\n".join(["", "== hdrunet-train summary ==", *summary.lines()]), flush=True)
    return summary


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


def _argv_for_ddp_child(argv: list[str]) -> list[str]:
    """The command line of a DDP worker: exactly the job rank 0 runs, in rank 0's folder.

    Lightning starts workers with rank 0's command line, which for a multirun would start
    the whole sweep again, in new folders. Rank 0 leaves its job's overrides and folder in
    the environment; a worker (``LOCAL_RANK`` > 0) runs that single job instead.
    """
    if os.environ.get("LOCAL_RANK", "0") == "0" or _DDP_OVERRIDES not in os.environ:
        return argv
    overrides = json.loads(os.environ[_DDP_OVERRIDES])
    run_dir = os.environ[_DDP_RUN_DIR]
    quoted = "'" + run_dir.replace("\\", "\\\\").replace("'", "\\'") + "'"  # may hold = and ,
    return [argv[0], *overrides, f"hydra.run.dir={quoted}", "hydra.output_subdir=null"]


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        return train(cfg).psnr_mu_after
    except (HDRUNetError, ValueError) as err:
        print(f"hdrunet-train: error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)


def main() -> float | None:
    """Console entry point; returns the final val PSNR-mu (for Hydra sweepers)."""
    sys.argv = _argv_for_ddp_child(sys.argv)
    return _hydra_main()


if __name__ == "__main__":
    main()
