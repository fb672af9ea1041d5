"""NTIRE-2021-style files written as the organisers did (OpenCV BGR, numpy), not by the package."""

from pathlib import Path

import cv2
import numpy as np


def write_ntire_frame(folder: Path, name: str, hdr: np.ndarray, ldr: np.ndarray | None = None):
    """Write ``name_gt.png`` (16-bit BGR), ``name_alignratio.npy`` (65535 / max) and, when
    given or derived, ``name_medium.png`` (8-bit BGR). ``hdr``: (H, W, 3) RGB non-linear.

    Without ``ldr``, the LDR is the GT's top 8 bits, so that LDR and GT crops can be matched
    pixel for pixel after augmentation. Returns (the exact float HDR, the 16-bit GT, ratio).
    """
    folder.mkdir(parents=True, exist_ok=True)
    align_ratio = np.float32((2**16 - 1) / hdr.max())
    gt16 = np.round(hdr * align_ratio).astype(np.uint16)
    cv2.imwrite(str(folder / f"{name}_gt.png"), gt16[..., ::-1])
    np.save(folder / f"{name}_alignratio.npy", align_ratio)
    ldr8 = (gt16 >> 8).astype(np.uint8) if ldr is None else ldr
    cv2.imwrite(str(folder / f"{name}_medium.png"), ldr8[..., ::-1])
    return gt16.astype(np.float32) / align_ratio, gt16, align_ratio


def random_hdr(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((h, w, 3)) ** 2 * rng.uniform(2, 8)).astype(np.float32)
