"""Lightning callbacks of the package: tonemapped validation previews, and progress bars
that count optimizer steps (runs here are limited by steps, not epochs)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EMAWeightAveraging, RichProgressBar, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from hdrunet_pl.viz import comparison_strip


def _shrink(image: torch.Tensor, max_side: int) -> torch.Tensor:
    h, w = image.shape[-2:]
    scale = max_side / max(h, w)
    if scale >= 1:
        return image
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(image[None].float(), size=size, mode="area")[0]


class ImagePreview(L.Callback):
    """Logs LDR | prediction | GT | error strips of the first validation images.

    Every ``every_n_validations``-th validation, the first ``num_images`` images (of rank
    0) are tonemapped (PSNR-mu curve, GT scale) and sent to W&B (``val/preview``) and
    TensorBoard; without either logger they are saved as PNGs under ``<run>/previews``.
    """

    def __init__(self, num_images: int = 4, every_n_validations: int = 1, max_side: int = 512):
        if num_images < 1 or every_n_validations < 1 or max_side < 16:
            raise ValueError("need num_images >= 1, every_n_validations >= 1, max_side >= 16")
        self.num_images = num_images
        self.every = every_n_validations
        self.max_side = max_side
        self._validations = 0
        self._due = False
        self._strips: list[tuple[str, Any]] = []

    def _active(self, trainer: L.Trainer) -> bool:
        return trainer.is_global_zero and not trainer.sanity_checking and self._due

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._due = self._validations % self.every == 0
            self._validations += 1
        self._strips = []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._active(trainer) or not isinstance(outputs, dict) or "pred" not in outputs:
            return
        for i in range(batch["ldr"].shape[0]):
            if len(self._strips) >= self.num_images:
                return
            name = batch["name"][i] if "name" in batch else f"image{len(self._strips)}"
            images = [
                _shrink(x[i].detach().cpu(), self.max_side)
                for x in (outputs["pred"], batch["hdr"], batch["ldr"])
            ]
            self._strips.append((str(name), comparison_strip(*images)))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._strips or not self._active(trainer):
            return
        step = trainer.global_step
        names = [name for name, _ in self._strips]
        images = [image for _, image in self._strips]
        shown = False
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="val/preview", images=images, caption=names, step=step)
                shown = True
            elif isinstance(logger, TensorBoardLogger):
                for name, image in self._strips:
                    logger.experiment.add_image(
                        f"val/preview/{name}", image, step, dataformats="HWC"
                    )
                shown = True
        if not shown:
            folder = Path(trainer.default_root_dir) / "previews"
            folder.mkdir(parents=True, exist_ok=True)
            for name, image in self._strips:
                cv2.imwrite(str(folder / f"step{step:07d}_{name}.png"), image[..., ::-1])
        self._strips = []


STEP_DESCRIPTION = "step"
"""Description of the training bar of a step-limited run (shown as ``step ... 120/1200``)."""


def counts_steps(trainer: L.Trainer) -> bool:
    """True for a run limited by ``max_steps`` alone (``max_epochs`` -1 or unset)."""
    return (
        trainer.max_steps is not None
        and trainer.max_steps > 0
        and trainer.max_epochs
        in (
            None,
            -1,
        )
    )


class StepTQDMProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar; for a step-limited run, the training bar counts optimizer
    steps of the whole run (``step: 10%| 120/1200``) instead of batches of an epoch.

    It refreshes every ``refresh_rate`` steps and, when steps are slow, at least every
    ``max_interval`` seconds (a CPU step of the paper's network takes about a second: a bar
    refreshed every 10 steps looked stuck). A refresh reads the logged loss, a host sync on
    a GPU, so fast steps are not refreshed one by one."""

    def __init__(self, refresh_rate: int = 1, max_interval: float = 1.0, **kwargs: Any) -> None:
        super().__init__(refresh_rate=refresh_rate, **kwargs)
        self.max_interval = max_interval
        self._last_refresh = float("-inf")

    @property
    def total_train_batches(self) -> int | float:
        if counts_steps(self.trainer):
            return self.trainer.max_steps
        return super().total_train_batches

    @property
    def train_description(self) -> str:
        if self._trainer is not None and counts_steps(self.trainer):
            return STEP_DESCRIPTION
        return super().train_description

    def on_train_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_start(trainer, *args)
        if counts_steps(trainer):
            # One bar for the whole run, set up here: Lightning does not call
            # on_train_epoch_start when a run resumes in the middle of an epoch.
            bar = self.train_progress_bar
            bar.reset(total=self.total_train_batches)
            bar.initial = trainer.global_step  # rate and ETA count this session's steps
            _set_n(bar, trainer.global_step)

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if not counts_steps(trainer):
            super().on_train_epoch_start(trainer, *args)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not counts_steps(trainer):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        bar, step = self.train_progress_bar, trainer.global_step
        if bar is None:
            return
        now = time.monotonic()
        due = now - self._last_refresh >= self.max_interval
        if self._should_update(step, bar.total) or (due and self.refresh_rate > 0):
            self._last_refresh = now
            _set_n(bar, step)
            bar.set_postfix(self.get_metrics(trainer, pl_module))


def _set_n(bar: Any, value: int) -> None:
    if not bar.disable:
        bar.n = value
        bar.refresh()


class StepRichProgressBar(RichProgressBar):
    """Lightning's rich bar; for a step-limited run, the training bar reads ``step`` and
    counts optimizer steps of the whole run (``120/1200``) instead of showing ``Epoch 0/-2``."""

    @property
    def total_train_batches(self) -> int | float:
        if counts_steps(self.trainer):
            return self.trainer.max_steps
        return super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:
        if not counts_steps(self.trainer):
            return super()._get_train_description(current_epoch)
        return f"{STEP_DESCRIPTION:{len(self.validation_description)}}"

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        if counts_steps(trainer):
            self._update(self.train_progress_bar_id, trainer.global_step)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not counts_steps(trainer):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        if not self.is_disabled and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()  # resumed mid-epoch
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()


class EMA(EMAWeightAveraging):
    """Lightning's exponential moving average of the weights (BasicSR's ``params_ema``):
    validation runs on the average, and every checkpoint's ``state_dict`` holds it (the raw
    weights, which resuming needs, are kept beside it as ``current_model_state``).

    One change: the average replaces the module's weights after the whole fit
    (``teardown``) instead of in ``on_train_end``, which Lightning calls before the
    checkpoint callbacks' own ``on_train_end``: the last checkpoint saved there would
    otherwise hold the average as the raw weights, and a resumed run would train on from it.
    """

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self._average_model is not None:
            self._copy_average_to_current(pl_module)
        super().teardown(trainer, pl_module, stage)
