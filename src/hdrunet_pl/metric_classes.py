"""The scores of :mod:`hdrunet_pl.metrics` as torchmetrics ``Metric`` classes: a batch is
scored image by image and averaged per image (synced across processes), never pooled over
pixels. Importable from :mod:`hdrunet_pl.metrics` too."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from hdrunet_pl.metrics import psnr_l, psnr_mu


class _PerImageMean(Metric):
    """Mean of a per-image score over all images seen, synced across processes."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state(
            "total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def score(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Score each image of a (B, C, H, W) batch."""
        if preds.ndim != 4 or preds.shape != target.shape:
            raise ValueError(
                f"expected two (B, C, H, W) batches of one shape, got {tuple(preds.shape)} "
                f"and {tuple(target.shape)}"
            )
        scores = torch.stack([self.score(p, t) for p, t in zip(preds, target, strict=True)])
        # Not in place: states reset under inference mode must not be updated in place later.
        self.total = self.total + scores.sum().to(self.total)
        self.count = self.count + preds.shape[0]

    def compute(self) -> torch.Tensor:
        return (self.total / self.count).float()


class PSNRMu(_PerImageMean):
    """Mean per-image :func:`psnr_mu` (dB)."""

    score = staticmethod(psnr_mu)


class PSNRL(_PerImageMean):
    """Mean per-image :func:`psnr_l` (dB)."""

    score = staticmethod(psnr_l)


class _PerceptualMean(_PerImageMean):
    """Mean per-image score of one of ``cvvdp``'s metrics (built on first use, per device)."""

    metric_name = ""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._scorer = None

    def score(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        from hdrunet_pl.perceptual import PerceptualScorer

        if self._scorer is None or self._scorer.device != pred.device:
            self._scorer = PerceptualScorer(self.metric_name, pred.device)
        return self._scorer(pred, target)


class PU21PSNR(_PerceptualMean):
    """Mean per-image :func:`pu21_psnr` (dB)."""

    metric_name = "pu21_psnr"


class PU21SSIM(_PerceptualMean):
    """Mean per-image :func:`pu21_ssim`."""

    metric_name = "pu21_ssim"


class CVVDP(_PerceptualMean):
    """Mean per-image :func:`cvvdp_jod` (JOD); slow on a CPU."""

    metric_name = "cvvdp"


METRICS: dict[str, type[_PerImageMean]] = {
    "psnr_mu": PSNRMu,
    "psnr_l": PSNRL,
    "pu21_psnr": PU21PSNR,
    "pu21_ssim": PU21SSIM,
    "cvvdp": CVVDP,
}
"""The class of every score of :data:`~hdrunet_pl.metrics.METRIC_NAMES`, by name."""
