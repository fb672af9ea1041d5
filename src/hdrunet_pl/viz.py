"""Looking at HDR data and inside HDRUNet: gradients, exposure masks, internal maps, plots.

Functions take (3, H, W) or (B, 3, H, W) tensors: LDR in [0, 1], HDR non-linear (>= 0).
The paper's observation is visible with them: where the LDR clips, its gradients vanish
while the HDR's remain; :func:`capture_internals` shows what the network modulates.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import cv2
import kornia
import numpy as np
import torch
from torch import nn

from hdrunet_pl.constants import GAMMA
from hdrunet_pl.tonemap import display_mu_law, to_linear

LUMA = (0.2126, 0.7152, 0.0722)
"""Rec. 709 luminance weights (linear RGB)."""


def _batched(image: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if image.ndim == 3:
        return image[None], True
    if image.ndim == 4:
        return image, False
    raise ValueError(f"expected (C, H, W) or (B, C, H, W), got shape {tuple(image.shape)}")


def luminance(image: torch.Tensor) -> torch.Tensor:
    """Rec. 709 luminance of RGB: (..., 3, H, W) -> (..., 1, H, W)."""
    if image.shape[-3] != 3:
        raise ValueError(f"need 3 channels, got shape {tuple(image.shape)}")
    weights = torch.tensor(LUMA, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return (image * weights).sum(dim=-3, keepdim=True)


def gradient_magnitude(image: torch.Tensor, per_channel: bool = True) -> torch.Tensor:
    """Sobel gradient magnitude (kornia), per channel or of the luminance.

    (3, H, W) or (B, 3, H, W) -> same batch layout with 3 channels (``per_channel``) or 1.
    """
    batch, single = _batched(image.float())
    if not per_channel:
        batch = luminance(batch)
    gradients = kornia.filters.spatial_gradient(batch, mode="sobel", normalized=True)
    magnitude = gradients.pow(2).sum(dim=2).sqrt()  # (B, C, 2, H, W) -> (B, C, H, W)
    return magnitude[0] if single else magnitude


def reinhard(nonlinear: torch.Tensor, key: float = 0.18, gamma: float = GAMMA) -> torch.Tensor:
    """Global Reinhard tonemapping for display: [0, 1), any shape with channels at dim -3.

    Linearises, scales the log-average luminance to ``key``, applies ``L / (1 + L)`` and
    re-applies the display gamma.
    """
    linear = to_linear(nonlinear.float(), gamma)
    lum = luminance(linear).clamp_min(1e-6)
    log_average = torch.exp(torch.log(lum).mean(dim=(-1, -2, -3), keepdim=True))
    scaled = lum * key / log_average
    mapped = linear * (scaled / (1 + scaled)) / lum
    return mapped.clamp(0, 1) ** (1 / gamma)


def over_exposed(ldr: torch.Tensor, threshold: float = 0.95) -> torch.Tensor:
    """Pixels where any LDR channel is >= ``threshold``: (..., 3, H, W) -> bool (..., H, W)."""
    return (ldr >= threshold).any(dim=-3)


def under_exposed(ldr: torch.Tensor, threshold: float = 0.05) -> torch.Tensor:
    """Pixels where every LDR channel is at or below ``threshold``: bool (..., H, W)."""
    return (ldr <= threshold).all(dim=-3)


def gradient_energy(gradient: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean squared gradient magnitude over the pixels of ``mask`` ((C, H, W) and (H, W))."""
    if mask.shape != gradient.shape[-2:]:
        raise ValueError(f"mask {tuple(mask.shape)} does not fit {tuple(gradient.shape)}")
    if not mask.any():
        raise ValueError("empty mask")
    return float((gradient**2).mean(dim=-3)[mask].mean())


def sft_layers(model: nn.Module) -> list[str]:
    """Names of the model's modulation layers that have ``scale``/``shift`` branches."""
    return [
        name for name, m in model.named_modules() if hasattr(m, "scale") and hasattr(m, "shift")
    ]


@contextmanager
def _hooks(handles: list) -> Iterator[None]:
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def capture_internals(
    model: nn.Module, ldr: torch.Tensor, sft_layer: str | None = None
) -> dict[str, torch.Tensor]:
    """Run ``model`` on ``ldr`` and return its internal maps (hooks are removed afterwards).

    Keys (tensors of the first image, on the CPU): ``output`` (3, H, W); ``weight`` (the
    weighting network's W, 3 channels) if present; ``cond_full``, ``cond_half``,
    ``cond_quarter`` (condition maps at 1, 1/2, 1/4 scale) if present; ``sft_scale`` and
    ``sft_shift`` of ``sft_layer`` (default: the first modulation layer, ``mod_first``).
    """
    batch, _ = _batched(ldr)
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def keep(*names: str):
        def hook(module: nn.Module, inputs: tuple, output) -> None:
            outputs = output if isinstance(output, tuple) else (output,)
            for name, value in zip(names, outputs, strict=True):
                captured[name] = value[0].detach().float().cpu()

        return hook

    modules = dict(model.named_modules())
    layers = sft_layers(model)
    if sft_layer is None and layers:
        sft_layer = layers[0]
    if sft_layer is not None and sft_layer not in layers:
        raise ValueError(f"{sft_layer!r} is not a modulation layer; choose one of {layers}")
    if getattr(model, "weighting", None) is not None:
        handles.append(model.weighting.register_forward_hook(keep("weight")))
    if getattr(model, "condition", None) is not None:
        handles.append(
            model.condition.register_forward_hook(keep("cond_full", "cond_half", "cond_quarter"))
        )
    if sft_layer is not None:
        layer = modules[sft_layer]

        def affine_maps(module: nn.Module, inputs: tuple, output) -> None:
            with torch.no_grad():  # the maps the layer applied, from its condition input
                keep("sft_scale", "sft_shift")(module, inputs, layer.affine(inputs[1]))

        handles.append(layer.register_forward_hook(affine_maps))
    with _hooks(handles):
        captured["output"] = model(batch)[0].detach().float().cpu()
    return captured


def plot_maps(
    maps: Mapping[str, torch.Tensor | np.ndarray],
    ncols: int = 3,
    cmap: str = "magma",
    size: float = 3.2,
    outline: torch.Tensor | None = None,
):
    """Lay out maps in labelled panels with colour bars; returns the matplotlib Figure.

    A (3, H, W) map with values in [0, 1] is shown as RGB; any other map is reduced to one
    channel (mean over channels) and shown with ``cmap`` and a colour bar. ``outline``
    (H, W bool) is drawn as a contour on every panel of its size.
    """
    import matplotlib.pyplot as plt

    n = len(maps)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size * ncols * 1.25, size * nrows), squeeze=False
    )
    for ax, (title, value) in zip(axes.flat, maps.items(), strict=False):
        array = (
            value.detach().float().cpu().numpy()
            if isinstance(value, torch.Tensor)
            else np.asarray(value)
        )
        if array.ndim == 3 and array.shape[0] == 3 and array.min() >= 0 and array.max() <= 1:
            ax.imshow(array.transpose(1, 2, 0))
        else:
            image = ax.imshow(array.mean(axis=0) if array.ndim == 3 else array, cmap=cmap)
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        if outline is not None and tuple(outline.shape) == array.shape[-2:]:
            ax.contour(
                outline.cpu().numpy().astype(float), levels=[0.5], colors="cyan", linewidths=0.8
            )
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_histograms(
    samples: Mapping[str, torch.Tensor], bins: int = 60, log: bool = True, xlabel: str = "value"
):
    """Overlaid histograms (one per named sample of values); returns the Figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    upper = max(float(v.max()) for v in samples.values() if v.numel())
    for label, values in samples.items():
        ax.hist(
            values.flatten().cpu().numpy(),
            bins=bins,
            range=(0, upper),
            alpha=0.5,
            density=True,
            label=label,
            log=log,
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend()
    fig.tight_layout()
    return fig


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) values in [0, 1] -> (H, W, 3) uint8 RGB (values beyond clipped; NaN, which
    the tonemap of a value near float32's limit gives, black)."""
    image = torch.nan_to_num(image.detach().float(), nan=0.0)
    return (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


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
