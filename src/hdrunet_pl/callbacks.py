"""Lightning callbacks of the package: tonemapped validation previews."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import lightning as L
import torch
import torch.nn.functional as F
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
