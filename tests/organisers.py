"""The challenge's scoring, written independently of the package: its constants pinned as
literals and its formulas step by step in numpy (a changed constant in the package must fail
the tests rather than move the reference with it)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from torch import nn

GAMMA = 2.24
MU = 5000.0


def ntire_psnr_mu_numpy(res: np.ndarray, ref: np.ndarray) -> float:
    """The challenge's definition, step by step in numpy (float64)."""
    ref_lin, res_lin = ref.astype(np.float64) ** GAMMA, res.astype(np.float64) ** GAMMA
    norm = np.percentile(ref_lin, 99)

    def tonemap(x):
        return np.log(1 + MU * np.tanh(x / norm)) / np.log(1 + MU)

    return float(-10 * np.log10(np.mean((tonemap(ref_lin) - tonemap(res_lin)) ** 2)))


def ntire_psnr_l_numpy(res: np.ndarray, ref: np.ndarray) -> float:
    """The organisers' ``normalized_psnr(ref, res, max(ref))``: no gamma."""
    peak = ref.astype(np.float64).max()
    return float(-10 * np.log10(np.mean((ref / peak - res / peak) ** 2)))


def organisers_read_png(png: Path) -> np.ndarray:
    """The scoring program's ``imread_uint16_png``: the PNG as float32 over its align ratio."""
    ratio = np.load(png.with_name(png.stem.removesuffix("_gt") + "_alignratio.npy"))
    image = cv2.cvtColor(cv2.imread(str(png), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
    return image.astype(np.float32) / ratio.astype(np.float32)


def organisers_scores(res: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(PSNR-mu, PSNR-L) as the scoring program computes them, in its float32 numpy."""

    def psnr(a, b):
        return float(-10 * np.log10(np.mean(np.power(a - b, 2))))

    def tonemap(x, norm):
        return np.log(1 + MU * np.tanh(x / norm)) / np.log(1 + MU)

    ref_lin, res_lin = ref**GAMMA, res**GAMMA
    norm = np.percentile(ref_lin, 99)
    peak = np.max(ref)
    return psnr(tonemap(ref_lin, norm), tonemap(res_lin, norm)), psnr(ref / peak, res / peak)


def organisers_val_scores(cfg: DictConfig, net: nn.Module | None = None) -> tuple[float, float]:
    """Mean (PSNR-mu, PSNR-L) over ``cfg``'s validation images by the organisers' formulas:
    of ``net``'s predictions, or of the LDR inputs themselves (the identity baseline)."""
    import torch
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data)
    datamodule.setup("validate")
    scores = []
    for batch in datamodule.val_dataloader():  # one whole image at a time
        pred = batch["ldr"]
        if net is not None:
            with torch.no_grad():
                pred = net(batch["ldr"]).clamp_min(0)
        res, ref = pred[0].permute(1, 2, 0).numpy(), batch["hdr"][0].permute(1, 2, 0).numpy()
        scores.append((ntire_psnr_mu_numpy(res, ref), ntire_psnr_l_numpy(res, ref)))
    mu, l_ = zip(*scores, strict=True)
    return sum(mu) / len(mu), sum(l_) / len(l_)
