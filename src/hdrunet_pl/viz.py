"""Pictures of HDR data for people: tonemapped comparison strips (and, later, maps)."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from hdrunet_pl.tonemap import display_mu_law


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) values in [0, 1] -> (H, W, 3) uint8 RGB."""
    return (
        (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255)
        .round()
        .astype(np.uint8)
    )


def _label(image: np.ndarray, text: str) -> np.ndarray:
    image = np.ascontiguousarray(image)
    cv2.rectangle(image, (0, 0), (8 * len(text) + 8, 22), (0, 0, 0), thickness=-1)
    cv2.putText(image, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    return image


def comparison_strip(
    pred: torch.Tensor,
    gt: torch.Tensor,
    ldr: torch.Tensor | None = None,
    title: str | None = None,
    error_gain: float = 4.0,
) -> np.ndarray:
    """LDR | prediction | GT | |error| side by side, as (H, k*W, 3) uint8 RGB.

    ``pred`` and ``gt`` are (3, H, W) non-linear HDR, tonemapped with the PSNR-mu curve on
    the GT's scale; ``ldr`` (3, H, W) in [0, 1] is shown as it is. The error panel is the
    absolute difference of the tonemapped images times ``error_gain``.
    """
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"need (3, H, W) pred and gt of one shape, got {pred.shape}, {gt.shape}")
    shown_pred, shown_gt = display_mu_law(pred, gt), display_mu_law(gt, gt)
    panels = [] if ldr is None else [("LDR", ldr)]
    panels += [("prediction", shown_pred), ("GT", shown_gt)]
    panels += [(f"|error| x{error_gain:g}", (error_gain * (shown_pred - shown_gt).abs()))]
    strip = np.concatenate([_label(to_uint8(p), name) for name, p in panels], axis=1)
    if title:
        banner = _label(np.zeros((22, strip.shape[1], 3), np.uint8), title)
        strip = np.concatenate([banner, strip], axis=0)
    return strip
