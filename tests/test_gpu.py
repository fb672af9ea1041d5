"""CUDA: inference on the GPU, bf16 training and NCCL DDP (one GPU).

Every test here is marked ``gpu`` and skipped, with the reason, where torch sees no CUDA
device; ``make test`` runs them on a GPU machine (``pytest -m gpu`` runs only these).
"""

from __future__ import annotations

import csv

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.strategies import DDPStrategy

from hdrunet_pl import HDRUNet
from hdrunet_pl.inference import Predictor
from hdrunet_pl.train import train

from .support import FAST, SMALL_SYNTHETIC_VAL, bare_trainer, compose_train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason=f"no CUDA device (torch {torch.__version__}, CUDA build: {torch.version.cuda})",
    ),
]


def _net(nf: int = 16) -> HDRUNet:
    torch.manual_seed(0)
    net = HDRUNet(nf=nf)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.05)
    return net


def test_cuda_inference_matches_the_cpu():
    ldr = torch.rand(3, 97, 131)
    cpu = Predictor(_net(), device="cpu", precision="32")(ldr)
    torch.backends.cudnn.allow_tf32 = False  # true fp32 on the GPU for the comparison
    try:
        predictor = Predictor(_net(), device="cuda", precision="32")
        assert next(predictor.model.parameters()).is_cuda
        gpu = predictor(ldr)
    finally:
        torch.backends.cudnn.allow_tf32 = True
    assert gpu.device.type == "cpu" and gpu.shape == cpu.shape
    torch.testing.assert_close(gpu, cpu, atol=1e-4, rtol=1e-4)
    # bf16 autocast on the GPU stays close to fp32 (relative to the output's range)
    bf16 = Predictor(_net(), device="cuda", precision="bf16")(ldr)
    assert (bf16 - cpu).abs().max() < 0.05 * cpu.abs().max()


def test_bf16_training_on_cuda(tmp_path):
    cfg = compose_train(
        [
            *FAST,
            *SMALL_SYNTHETIC_VAL,
            "trainer.accelerator=gpu",
            "trainer.precision=bf16-mixed",
            "trainer.max_steps=6",
            f"paths.output_dir={tmp_path}",
        ]
    )
    summary = train(cfg)
    assert summary.steps == 6
    with open(tmp_path / "csv" / "metrics.csv") as f:
        losses = [float(r["train/loss"]) for r in csv.DictReader(f) if r["train/loss"]]
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))
    assert summary.psnr_mu_after is not None and summary.psnr_mu_after > 0
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_nccl_ddp_on_one_gpu(tmp_path):
    if not torch.distributed.is_nccl_available():
        pytest.skip("this torch build has no NCCL")
    cfg = compose_train([*FAST, *SMALL_SYNTHETIC_VAL])
    model, data = instantiate(cfg.model), instantiate(cfg.data)
    trainer = bare_trainer(
        accelerator="gpu",
        devices=1,
        strategy=DDPStrategy(process_group_backend="nccl"),
        max_steps=3,
        limit_val_batches=1,
        use_distributed_sampler=False,
        default_root_dir=tmp_path,
    )
    try:
        trainer.fit(model, datamodule=data)
        assert torch.distributed.is_initialized()
        assert torch.distributed.get_backend() == "nccl"
        assert trainer.world_size == 1 and trainer.global_step == 3
        assert next(model.parameters()).is_cuda
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
