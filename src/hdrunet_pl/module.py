"""HDRUNetModule: the LightningModule that trains and validates an HDRUNet."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from hdrunet_pl.inference import fp32_channels_last_faster
from hdrunet_pl.losses import HDRLoss
from hdrunet_pl.metric_classes import METRICS, PSNRL, PSNRMu
from hdrunet_pl.metrics import CHALLENGE_METRICS, check_metric_names
from hdrunet_pl.models.checkpoints import CONFIG_KEY, STREAM_KEY, Network
from hdrunet_pl.reliability import NonFiniteError

SUMMARY_INPUT_SIZE = (256, 256)
"""The input (height, width) of Lightning's model summary, whose FLOPs column is counted on
it: the size the README's GMAC figures are given for."""

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


def paper_optimizer(params) -> torch.optim.Optimizer:
    """Adam(lr 2e-4, betas (0.9, 0.99)), the paper's optimiser."""
    return torch.optim.Adam(params, lr=2e-4, betas=(0.9, 0.99))


class HDRUNetModule(L.LightningModule):
    """Trains ``net`` with ``loss``; validates with PSNR-mu and PSNR-L (per-image means).

    Args:
        net: the network (``HDRUNet``, or the ``ExpandNet`` baseline).
        loss: module ``loss(pred, target) -> scalar`` (default Tanh_L1).
        optimizer: ``params -> Optimizer`` (a Hydra ``_partial_``); default the paper's Adam.
        scheduler: ``optimizer -> LRScheduler`` stepped every iteration (e.g. MultiStepLR with
            milestones in iterations); ``None`` keeps the learning rate constant.
        channels_last: memory format of the network and its batches: ``True``
            channels_last, ``False`` NCHW, ``"auto"`` channels_last when the trainer runs
            16-bit mixed or true precision (oneDNN's and cuDNN's fast bf16 path) or fp32 on
            a device where that is faster (CPUs with AVX-512: see
            :func:`~hdrunet_pl.inference.fp32_channels_last_faster`), else NCHW.
        compile: ``torch.compile`` the network (compiled on the first step).
        skip_nonfinite: skip a batch whose loss or gradients are NaN/Inf (counted in
            ``train/skipped``) instead of stopping with :class:`NonFiniteError`.
        val_metrics: more validation scores by name (``pu21_psnr``, ``pu21_ssim``,
            ``cvvdp``; see :data:`hdrunet_pl.metrics.METRIC_NAMES`), logged as ``val/<name>``
            with their identity baseline ``val/<name>_identity``.

    Logged: ``train/loss``, ``val/psnr_mu``, ``val/psnr_l`` and, once, the LDR-identity
    baseline ``val/psnr_mu_identity`` and ``val/psnr_l_identity``. Every value is logged at
    step N = after N optimizer steps (``global_step``), as checkpoints and previews are
    named: a training loss at the step its batch completes, validation at the step it
    follows.
    """

    def __init__(
        self,
        net: Network,
        loss: nn.Module | None = None,
        optimizer: OptimizerFactory = paper_optimizer,
        scheduler: SchedulerFactory | None = None,
        channels_last: bool | str = "auto",
        compile: bool = False,
        skip_nonfinite: bool = False,
        val_metrics: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.net = net
        self.loss = loss if loss is not None else HDRLoss("tanh_l1")
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        if channels_last not in (True, False, "auto"):
            raise ValueError(f"channels_last must be true, false or auto, got {channels_last!r}")
        self.channels_last = channels_last
        self.memory_format = torch.contiguous_format
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
        extra = check_metric_names(list(val_metrics), "model.val_metrics")
        extra = [name for name in extra if name not in CHALLENGE_METRICS]
        self.val_extra = nn.ModuleDict({name: METRICS[name]() for name in extra})
        self.identity_extra = nn.ModuleDict({name: METRICS[name]() for name in extra})
        self._identity_logged = False
        self.validated_step: int | None = None  # global_step of the last validation
        if channels_last is True:
            self._use_memory_format(torch.channels_last)
        self.skip_nonfinite = skip_nonfinite
        self.skipped_batches = 0
        self._last_batch: dict[str, Any] = {}
        self._step_losses: list[torch.Tensor] = []
        self._epoch_trained: int | None = None  # the epoch of the last training step
        if compile:  # in place: parameter names (and checkpoints) stay as they are
            self.net.compile()
        else:  # Lightning's model summary counts its FLOPs on it (else it prints 0 FLOPs); a
            # compiled network would compile once more for this shape
            self.example_input_array = torch.zeros(1, 3, *SUMMARY_INPUT_SIZE)

    def _use_memory_format(self, memory_format: torch.memory_format) -> None:
        self.memory_format = memory_format
        self.net.to(memory_format=memory_format)

    def setup(self, stage: str) -> None:
        """``channels_last="auto"``: pick the memory format for the trainer's precision and
        device."""
        if self.channels_last == "auto":
            half = "16" in str(self.trainer.precision)  # bf16-mixed, 16-mixed, bf16-true, ...
            device = self.trainer.strategy.root_device
            faster = half or fp32_channels_last_faster(device)
            self._use_memory_format(torch.channels_last if faster else torch.contiguous_format)

    def forward(self, ldr: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) LDR in [0, 1] -> (B, 3, H, W) non-linear HDR."""
        return self.net(ldr.contiguous(memory_format=self.memory_format))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        pred = self(batch["ldr"])
        loss = self.loss(pred, batch["hdr"])
        self._step_losses.append(loss.detach())  # checked before the optimizer step
        self._epoch_trained = self.current_epoch
        self.log("train/loss", loss, prog_bar=True, batch_size=pred.shape[0])
        self._log_step(self.global_step + 1)  # this batch's optimizer step makes it N + 1
        return loss

    def _log_step(self, step: int) -> None:
        """File this hook's logged values under ``step`` (and the epoch, as Lightning does).

        Lightning's own logger step is the number of batches stepped *before* the current
        one, one less than ``global_step`` while a batch ends and during the validation
        after it; a logged ``step`` value replaces it. The values are the same on every
        process (``sync_dist`` only keeps Lightning from advising to sync them)."""
        sync = not self.trainer.training  # epoch-level values (validation) only
        self.log("step", float(step), batch_size=1, sync_dist=sync)
        # a validation scores the weights of the last step trained, of that step's epoch
        # (once fit has ended at max_steps, Lightning's epoch counter is one further on)
        trained = self._epoch_trained
        epoch = self.current_epoch if self.trainer.training or trained is None else trained
        self.log("epoch", float(epoch), batch_size=1, sync_dist=sync)

    def on_train_batch_start(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._last_batch = batch

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Refuse (or skip, dropping the gradients) a step whose loss or gradients are NaN/Inf.

        One host sync per step. With fp16 mixed precision the gradient scaler handles
        non-finite gradients itself (they are part of its loss scaling); the loss is
        still checked."""
        losses = torch.stack(self._step_losses) if self._step_losses else torch.zeros(0)
        losses, self._step_losses = losses.to(self.device), []
        checks = [losses]
        if getattr(self.trainer.precision_plugin, "scaler", None) is None:
            grads = [p.grad for p in self.parameters() if p.grad is not None]
            if grads:
                checks.append(torch.nn.utils.get_total_norm(grads).reshape(1))
        if bool(torch.isfinite(torch.cat(checks)).all()):
            return
        finite = torch.isfinite(losses)
        what = (
            f"loss is {losses[~finite][0].item()}"
            if not finite.all()
            else "gradients are not finite"
        )
        self._non_finite(what, self._last_batch)
        optimizer.zero_grad(set_to_none=True)  # the optimizer leaves the weights as they are

    def _non_finite(self, what: str, batch: dict[str, Any]) -> None:
        names = ", ".join(map(str, batch.get("name", [])[:8])) or "unnamed"
        message = f"step {self.global_step + 1}: {what} for the batch of {names}"
        if not self.skip_nonfinite:
            raise NonFiniteError(f"{message}; stopped (skip_nonfinite=true skips such batches)")
        self.skipped_batches += 1
        self.log("train/skipped", float(self.skipped_batches), batch_size=1)
        rank_zero_warn(f"{message}; batch skipped")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        ldr, hdr = batch["ldr"], batch["hdr"]
        pred = self(ldr).float()
        self.val_psnr_mu.update(pred, hdr)
        self.val_psnr_l.update(pred, hdr)
        for metric in self.val_extra.values():
            metric.update(pred, hdr)
        if not self._identity_logged:
            self.identity_psnr_mu.update(ldr, hdr)
            self.identity_psnr_l.update(ldr, hdr)
            for metric in self.identity_extra.values():
                metric.update(ldr, hdr)
        return {"pred": pred.detach()}

    def on_validation_epoch_end(self) -> None:
        # torchmetrics objects: Lightning computes them (synced across processes) and resets
        self.log("val/psnr_mu", self.val_psnr_mu, prog_bar=True)
        self.log("val/psnr_l", self.val_psnr_l)
        for name, metric in self.val_extra.items():
            self.log(f"val/{name}", metric)
        self._log_step(self.global_step)
        if not self.trainer.sanity_checking:
            self.validated_step = self.global_step
        if self.trainer.sanity_checking:
            self.identity_psnr_mu.reset()
            self.identity_psnr_l.reset()
            for metric in self.identity_extra.values():
                metric.reset()
            return
        # The LDR-identity baseline does not change: compute it on the first real pass only,
        # then keep logging the same value so that every validation row carries it.
        if not self._identity_logged:
            self._identity = {
                "psnr_mu": self.identity_psnr_mu.compute(),
                "psnr_l": self.identity_psnr_l.compute(),
                **{name: m.compute() for name, m in self.identity_extra.items()},
            }
            self._identity_logged = True
        # computed by torchmetrics, so already equal on every process: syncing is a no-op
        for name, value in self._identity.items():
            self.log(f"val/{name}_identity", value, sync_dist=True)

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
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        if datamodule is not None and hasattr(datamodule, "batch_size"):
            # what the resumed stream of training samples depends on (checked on resume)
            checkpoint[STREAM_KEY] = {
                "batch_size": datamodule.batch_size,
                "processes": self.trainer.world_size,
            }
        average = self._weight_average()
        if average is not None and "current_model_state" not in checkpoint:
            # A weights-only checkpoint (snapshots): Lightning does not run the callbacks'
            # hooks for it, so the weight average would be missing; it gets the average
            # too, as every full checkpoint's state_dict does (the raw weights are only
            # needed to resume, which a weights-only checkpoint cannot).
            state = average.state_dict()
            checkpoint["state_dict"] = {k[7:]: v for k, v in state.items() if k[:7] == "module."}
        _unfinish_stopped_epoch(checkpoint)

    def _weight_average(self) -> nn.Module | None:
        """The averaged model of the run's weight-averaging callback (``callbacks=[...,ema]``),
        once training has made it; else None."""
        if self._trainer is None:
            return None
        for callback in self.trainer.callbacks:
            if isinstance(callback, WeightAveraging):
                return callback._average_model  # Lightning keeps no public handle on it
        return None


def _unfinish_stopped_epoch(checkpoint: dict[str, Any]) -> None:
    """A run that ends at ``trainer.max_steps`` part-way through an epoch: Lightning counts
    that epoch as completed in the checkpoint it saves at the end, so a run resumed from it
    (trained on with a larger ``max_steps``) numbered its epochs one higher than the same
    run trained straight through, and a ``max_epochs`` bound ended it early. The epoch is
    recorded as it is, under way, as in a checkpoint saved mid-epoch (the samples of every
    step follow from the step itself, see :class:`~hdrunet_pl.data.ResumableRandomSampler`)."""
    loops = checkpoint.get("loops", {}).get("fit_loop")
    if not loops:
        return
    epochs = loops.get("epoch_progress", {})
    batches = loops.get("epoch_loop.batch_progress", {})
    total, current = epochs.get("total", {}), epochs.get("current", {})
    if (
        batches.get("is_last_batch", True)
        or not current
        or not batches.get("current", {}).get("completed")
    ):
        return
    if total.get("processed") == total.get("started") == total.get("completed", -1) > 0:
        for progress in (total, current):
            progress["processed"] -= 1
            progress["completed"] -= 1
        checkpoint["epoch"] = current["completed"]
