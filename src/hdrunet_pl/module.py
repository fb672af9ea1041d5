"""HDRUNetModule: the LightningModule that trains and validates an HDRUNet."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import lightning as L
import torch
from torch import nn

from hdrunet_pl.losses import HDRLoss
from hdrunet_pl.metrics import PSNRL, PSNRMu
from hdrunet_pl.models.checkpoints import CONFIG_KEY
from hdrunet_pl.models.hdrunet import HDRUNet

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


def paper_optimizer(params) -> torch.optim.Optimizer:
    """Adam(lr 2e-4, betas (0.9, 0.99)), the paper's optimiser."""
    return torch.optim.Adam(params, lr=2e-4, betas=(0.9, 0.99))


class HDRUNetModule(L.LightningModule):
    """Trains ``net`` with ``loss``; validates with PSNR-mu and PSNR-L (per-image means).

    Args:
        net: the network (``HDRUNet``).
        loss: module ``loss(pred, target) -> scalar`` (default Tanh_L1).
        optimizer: ``params -> Optimizer`` (a Hydra ``_partial_``); default the paper's Adam.
        scheduler: ``optimizer -> LRScheduler`` stepped every iteration (e.g. MultiStepLR with
            milestones in iterations); ``None`` keeps the learning rate constant.
        channels_last: run convolutions in channels_last memory format (faster with bf16).
        compile: ``torch.compile`` the network (compiled on the first step).

    Logged: ``train/loss``, ``val/psnr_mu``, ``val/psnr_l`` and, once, the LDR-identity
    baseline ``val/psnr_mu_identity`` and ``val/psnr_l_identity``.
    """

    def __init__(
        self,
        net: HDRUNet,
        loss: nn.Module | None = None,
        optimizer: OptimizerFactory = paper_optimizer,
        scheduler: SchedulerFactory | None = None,
        channels_last: bool = True,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.loss = loss if loss is not None else HDRLoss("tanh_l1")
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.save_hyperparameters(
            {
                "net": asdict(net.config),
                "loss": getattr(self.loss, "name", type(self.loss).__name__),
            }
        )
        self.val_psnr_mu = PSNRMu()
        self.val_psnr_l = PSNRL()
        self.identity_psnr_mu = PSNRMu()
        self.identity_psnr_l = PSNRL()
        self._identity_logged = False
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        if compile:  # in place: parameter names (and checkpoints) stay as they are
            self.net.compile()

    def forward(self, ldr: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) LDR in [0, 1] -> (B, 3, H, W) non-linear HDR."""
        return self.net(ldr.contiguous(memory_format=self.memory_format))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        pred = self(batch["ldr"])
        loss = self.loss(pred, batch["hdr"])
        self.log("train/loss", loss, prog_bar=True, batch_size=pred.shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        ldr, hdr = batch["ldr"], batch["hdr"]
        pred = self(ldr).float()
        self.val_psnr_mu.update(pred, hdr)
        self.val_psnr_l.update(pred, hdr)
        if not self._identity_logged:
            self.identity_psnr_mu.update(ldr, hdr)
            self.identity_psnr_l.update(ldr, hdr)
        return {"pred": pred.detach()}

    def on_validation_epoch_end(self) -> None:
        self.log("val/psnr_mu", self.val_psnr_mu.compute(), prog_bar=True)
        self.log("val/psnr_l", self.val_psnr_l.compute())
        self.val_psnr_mu.reset()
        self.val_psnr_l.reset()
        if self.trainer.sanity_checking:
            self.identity_psnr_mu.reset()
            self.identity_psnr_l.reset()
            return
        # The LDR-identity baseline does not change: compute it on the first real pass only,
        # then keep logging the same value so that every validation row carries it.
        if not self._identity_logged:
            self._identity = (self.identity_psnr_mu.compute(), self.identity_psnr_l.compute())
            self._identity_logged = True
        self.log("val/psnr_mu_identity", self._identity[0])
        self.log("val/psnr_l_identity", self._identity[1])

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(self.net.parameters())
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = asdict(self.net.config)
