"""``hdrunet-train``: compose the Hydra config, build data, model and trainer, train, summarise.

hdrunet-train                              # the paper's network on synthetic data
hdrunet-train experiment=demo              # a few minutes on a CPU (make train)
hdrunet-train -m loss=l1,tanh_l1 trainer.max_steps=20
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hdrunet_pl.loggers import finish_loggers, instantiate_loggers


@dataclass
class TrainSummary:
    """What a run achieved (also printed at its end)."""

    steps: int
    seconds: float
    psnr_mu_before: float | None
    psnr_mu_after: float | None
    psnr_mu_identity: float | None
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


def train(cfg: DictConfig) -> TrainSummary:
    """Train as ``cfg`` says; ``cfg`` is the composed ``train.yaml`` (resolvable)."""
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)
    L.seed_everything(cfg.seed, workers=True)

    datamodule: L.LightningDataModule = instantiate(cfg.data)
    model: L.LightningModule = instantiate(cfg.model)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    try:
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

        before = None
        if cfg.get("validate_first") and cfg.get("ckpt_path") is None:
            before = trainer.validate(model, datamodule=datamodule, verbose=False)[0]
        start = time.perf_counter()
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        seconds = time.perf_counter() - start
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        checkpoint = trainer.checkpoint_callback
        summary = TrainSummary(
            steps=trainer.global_step,
            seconds=seconds,
            psnr_mu_before=_metric(before or {}, "val/psnr_mu"),
            psnr_mu_after=_metric(metrics, "val/psnr_mu"),
            psnr_mu_identity=_metric(metrics, "val/psnr_mu_identity"),
            best_checkpoint=getattr(checkpoint, "best_model_path", None) or None,
            last_checkpoint=getattr(checkpoint, "last_model_path", None) or None,
            output_dir=str(output_dir),
        )
    finally:
        finish_loggers(loggers)
    if trainer.is_global_zero:
        print("\n".join(["", "== hdrunet-train summary ==", *summary.lines()]), flush=True)
    return summary


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Console entry point; returns the final val PSNR-mu (for Hydra sweepers)."""
    return train(cfg).psnr_mu_after


if __name__ == "__main__":
    main()
