"""``hdrunet-eval``: PSNR-mu and PSNR-L per image, as the NTIRE 2021 challenge scored them,
and on request the perceptual PU21-PSNR, PU21-SSIM and ColorVideoVDP (``metrics=[...]``).

Writes ``scores.csv`` (one row per image, then the means), prints the means next to the
LDR-identity baseline (the LDR itself read as the HDR) and saves tonemapped side-by-side
PNGs (LDR | prediction | GT | error) of the worst and the best image (by PSNR-mu).
"""

from __future__ import annotations

import csv
import importlib.metadata
import logging
import math
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from tqdm import tqdm

from hdrunet_pl.constants import GAMMA, NORM_PERCENTILE
from hdrunet_pl.data.walk import folder_holding
from hdrunet_pl.errors import HDRUNetError
from hdrunet_pl.inference import NonFiniteOutputError
from hdrunet_pl.io import (
    GT_SUFFIX,
    HDR_EXTENSIONS,
    LDR_EXTENSIONS,
    LDR_SUFFIX,
    NEGATIVE,
    as_submitted,
    atomic_path,
    imwrite,
    is_hdr_png,
    ntire_frame_id,
    read_hdr_png,
    read_linear_hdr,
    remove_dead_temporaries,
)
from hdrunet_pl.metrics import (
    BLACK_GROUND_TRUTH,
    CHALLENGE_METRICS,
    check_metric_names,
    is_black,
    scorer,
)
from hdrunet_pl.outputs import OutputFolder
from hdrunet_pl.perceptual import DISPLAY, MIN_SIZE, REFERENCE_CD_M2
from hdrunet_pl.predict import make_predictor, read_input
from hdrunet_pl.run_files import CONFIG_FILE, absolute_paths, check_no_empty_paths
from hdrunet_pl.validation import EVAL_RULES, check_required, check_settings
from hdrunet_pl.viz import comparison_strip

SCORES_FILE = "scores.csv"
MEAN_ROW = "mean"
"""The name of ``scores.csv``'s last row, the means (no image may have that name: a script
reading the row by name would get either)."""
_MEAN_NAMED = (
    f"an image named {MEAN_ROW!r} would look like {SCORES_FILE}'s row of means; rename its "
    "file (and its result's)"
)
INTERRUPTED = (
    f"{SCORES_FILE} is written once every image is scored (one in the output folder now is "
    "an earlier evaluation's): run the same command again to score them all anew"
)
"""What ``hdrunet-eval`` says on Ctrl-C."""
DEFAULT_METRICS = (*CHALLENGE_METRICS, "pu21_psnr", "pu21_ssim")
"""Scored unless ``metrics=`` says otherwise: the challenge's two and the cheap perceptual
ones (ColorVideoVDP takes seconds per image on a CPU: ask for ``cvvdp``)."""

Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

log = logging.getLogger(__name__)


@dataclass
class ImageScore:
    """Scores of one image by metric name; ``identity`` (the LDR's) is None without the LDR."""

    name: str
    values: dict[str, float]
    identity: dict[str, float] | None = None
    group: str = ""  # the capture setting of a held-out image ("" for none)

    @property
    def psnr_mu(self) -> float:
        return self.values["psnr_mu"]

    @property
    def psnr_l(self) -> float:
        return self.values["psnr_l"]

    @property
    def identity_psnr_mu(self) -> float | None:
        return None if self.identity is None else self.identity["psnr_mu"]

    @property
    def identity_psnr_l(self) -> float | None:
        return None if self.identity is None else self.identity["psnr_l"]

    def column(self, column: str) -> float | None:
        """The value of a ``scores.csv`` column (``<metric>`` or ``identity_<metric>``)."""
        if column.startswith("identity_"):
            return None if self.identity is None else self.identity[column[9:]]
        return self.values[column]


@dataclass
class Sample:
    """One image to score: (3, H, W) non-linear tensors; ``ldr`` in [0, 1] or None."""

    name: str
    pred: torch.Tensor
    gt: torch.Tensor
    ldr: torch.Tensor | None
    group: str = ""  # the capture setting of a held-out image ("" for none)


def metric_names(metrics: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """The metrics to score: the challenge's two first (always), then the others asked for."""
    asked = check_metric_names(list(metrics or DEFAULT_METRICS), "metrics")
    return [*CHALLENGE_METRICS, *(m for m in asked if m not in CHALLENGE_METRICS)]


def make_scorers(metrics: list[str] | tuple[str, ...] | None = None) -> dict[str, Scorer]:
    """Name -> image-pair scorer for :func:`metric_names` (perceptual ones loaded once)."""
    return {name: scorer(name) for name in metric_names(metrics)}


def _size(image: torch.Tensor) -> str:
    """``HxW`` (and the channels when not 3) of a (C, H, W) image."""
    size = "x".join(str(n) for n in image.shape[-2:])
    return size if image.ndim == 3 and image.shape[0] == 3 else f"{size} ({tuple(image.shape)})"


def _scorable(metric: str, image: torch.Tensor) -> bool:
    """Whether ``image`` (C, H, W) is large enough for ``metric`` (:data:`MIN_SIZE`)."""
    return min(image.shape[-2:]) >= MIN_SIZE.get(metric, 1)


def unscored(scores: list[ImageScore], metric: str) -> int:
    """How many images were too small for ``metric`` (NaN: left out of its mean)."""
    return sum(math.isnan(s.values[metric]) for s in scores)


def score(sample: Sample, scorers: dict[str, Scorer] | None = None) -> ImageScore:
    """Scores of one sample (and of its LDR, when present); the challenge's two by default."""
    scorers = scorers or make_scorers(CHALLENGE_METRICS)
    if is_black(sample.gt):
        raise HDRUNetError(f"{sample.name}: {BLACK_GROUND_TRUTH}; leave it out")
    for what, image in (("result", sample.pred), ("LDR", sample.ldr)):
        if image is not None and image.shape != sample.gt.shape:
            raise HDRUNetError(
                f"{sample.name}: the {what} is {_size(image)}, its ground truth {_size(sample.gt)}"
            )
    if torch.equal(sample.pred, sample.gt):  # every PSNR infinite, and every mean with it
        raise HDRUNetError(
            f"{sample.name}: the result is its ground truth, value for value (a copy of the GT "
            "among the results?); nothing was scored"
        )

    def scores_of(image: torch.Tensor) -> dict[str, float]:
        # NaN (not scored, left out of the means) where the image is smaller than the
        # metric's filters (PU21-SSIM's 11-pixel window): the other images still count
        return {
            name: float(fn(image, sample.gt)) if _scorable(name, sample.gt) else math.nan
            for name, fn in scorers.items()
        }

    try:
        values = scores_of(sample.pred)
        result = ImageScore(sample.name, values, group=sample.group)
        if sample.ldr is not None:
            result.identity = scores_of(sample.ldr)
    except ValueError as err:  # e.g. a result of another size than its ground truth
        raise HDRUNetError(f"{sample.name}: {err}") from None
    infinite = [name for name, value in values.items() if math.isinf(value)]
    if infinite:  # the result equals the GT wherever the metric looks; every mean infinite
        raise HDRUNetError(
            f"{sample.name}: {infinite[0]} is infinite: the result equals its ground truth "
            "wherever that metric looks (a copy of the GT, changed only where tanh saturates?); "
            "nothing was scored"
        )
    return result


def score_columns(scores: list[ImageScore]) -> list[str]:
    """``scores.csv``'s columns: each metric, then each metric's identity baseline."""
    names = list(scores[0].values) if scores else list(CHALLENGE_METRICS)
    return [*names, *(f"identity_{n}" for n in names)]


def means(scores: list[ImageScore]) -> dict[str, float | None]:
    """Per-image means of every score column (None where a column has no values); images
    a metric could not score (NaN) are left out of its mean."""
    out: dict[str, float | None] = {}
    for column in score_columns(scores):
        values = [s.column(column) for s in scores if s.column(column) is not None]
        values = [v for v in values if not math.isnan(v)]
        out[column] = float(np.mean(values)) if values else None
    return out


TIE_DB = 1e-4
"""Scores closer than this (dB; the printed scores have 4 decimals) are a tie, not below:
the LDR itself scored as a result (written as EXR, say) differs from its identity score by
float rounding only."""


def below_identity(scores: list[ImageScore]) -> tuple[int, int]:
    """How many images score below their LDR identity in PSNR-mu and in PSNR-L (by more than
    :data:`TIE_DB`)."""
    with_ldr = [s for s in scores if s.identity_psnr_mu is not None]
    return (
        sum(s.psnr_mu < s.identity_psnr_mu - TIE_DB for s in with_ldr),
        sum(s.psnr_l < s.identity_psnr_l - TIE_DB for s in with_ldr),
    )


def group_scores(scores: list[ImageScore], groups: tuple[str, ...]) -> dict[str, list[ImageScore]]:
    """The scores of each group's images (in the order of ``groups``), by the group each
    image was captured in (not by its name: ``a_super_dark`` is no ``dark`` capture)."""
    return {g: [s for s in scores if s.group == g] for g in groups}


def _print_means(label: str, scores: list[ImageScore]) -> None:
    mean = means(scores)
    line = f"  {label:<8} PSNR-mu {mean['psnr_mu']:8.4f}"
    if mean["identity_psnr_mu"] is not None:
        below_mu, below_l = below_identity(scores)
        line += f" (LDR {mean['identity_psnr_mu']:8.4f})"
        line += f"   PSNR-L {mean['psnr_l']:8.4f} (LDR {mean['identity_psnr_l']:8.4f})"
        line += f"   below LDR: {below_mu} mu, {below_l} L"
    else:
        line += f"   PSNR-L {mean['psnr_l']:8.4f}"
    print(f"{line}   [{len(scores)} images]")


def _key(path: Path) -> str:
    """The name a result and its GT are matched by: ``0001_gt.png`` and ``0001.png`` are
    ``0001``; ``scene_gt.exr``, ``scene_pred.exr`` and ``scene.png`` are ``scene``."""
    stem = path.stem
    for suffix in (GT_SUFFIX, "_pred"):
        stem = stem.removesuffix(suffix)
    return stem


def _hdr_files(folder: Path, role: str) -> dict[str, Path]:
    """Frame id -> HDR file of ``folder`` (NTIRE PNG pairs, ``.exr``, ``.hdr``).

    Refuses a folder where two files claim one frame (e.g. ``0001.png`` and
    ``0001_gt.png``, which would also share one ``0001_alignratio.npy``).
    """
    if not folder.is_dir():
        raise HDRUNetError(f"{role} {folder}: no such folder")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        # a PNG is HDR with its align ratio beside it, whatever its name (the result of a
        # photo named 0007_medium.jpg), or when named as NTIRE ground truth (a missing
        # ratio is then an error, reported when read); other PNGs are 8-bit images: NTIRE
        # LDR frames (NNNN_medium/_short/_long.png), previews, photos, eval's best_/worst_
        png = path.suffix.lower() == ".png"
        ground_truth = ntire_frame_id(path, GT_SUFFIX) is not None
        if png and not ground_truth and not is_hdr_png(path):
            continue
        if path.suffix.lower() in HDR_EXTENSIONS:
            key = _key(path)
            if key in files:
                raise HDRUNetError(
                    f"{role} {folder}: ambiguous: {files[key].name} and {path.name} are both "
                    f"frame {key} (results written into a data folder?); keep results and "
                    "ground truth in separate folders"
                )
            files[key] = path
    return files


def _ldr_files(folder: Path, stems: dict[str, str]) -> dict[str, Path]:
    """The LDR image each result was made from, in ``folder``, for frame id -> the result
    file's stem: NTIRE's ``<id>_medium.png`` (suffix in any case), else the photo named as
    the result (``holiday.jpg`` for ``holiday.exr``, ``shot_pred.jpg`` for
    ``shot_pred.png``), as ``hdrunet-predict`` names results. Refuses a missing or ambiguous
    one, before any image is read."""
    if not folder.is_dir():
        raise HDRUNetError(f"ldr_dir {folder}: no such folder")
    by_stem: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in LDR_EXTENSIONS and path.is_file() and not is_hdr_png(path):
            by_stem.setdefault(path.stem, []).append(path)
    found: dict[str, Path] = {}
    for name, stem in stems.items():
        ntire = f"{name}{LDR_SUFFIX}"
        candidates = [p for p in by_stem.get(ntire, []) if p.suffix.lower() == ".png"]
        candidates = candidates or by_stem.get(stem, [])
        if not candidates:
            raise HDRUNetError(
                f"ldr_dir {folder}: no LDR image for {name} ({ntire}.png, or {stem} with an "
                f"image suffix: {', '.join(LDR_EXTENSIONS)})"
            )
        if len(candidates) > 1:
            raise HDRUNetError(
                f"ldr_dir {folder}: {' and '.join(p.name for p in candidates)} could each be "
                f"the LDR of {name}; keep one"
            )
        found[name] = candidates[0]
    return found


def read_nonlinear(path: Path, negative: str = "clip") -> torch.Tensor:
    """(3, H, W) non-linear HDR from an NTIRE PNG pair or a linear HDR file (``.exr``, ...);
    ``negative``: what a linear file's negative values become (see ``io.NEGATIVE``)."""
    if path.suffix.lower() == ".png":
        image = read_hdr_png(path)
    else:
        image = read_linear_hdr(path, negative) ** np.float32(1 / GAMMA)
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


@dataclass
class Samples:
    """The samples to score (made lazily) and how many there are."""

    count: int
    items: Iterator[Sample]
    groups: tuple[str, ...] = ()  # name suffixes (``<image>_<group>``) to report means of
    region: str = ""  # what is scored of each image when not all of it, in words


WELL_EXPOSED = (0.1, 0.9)
"""Non-linear values of a reference (the LDR, or the result) whose exposure is compared with
the ground truth's: away from the noise floor and from clipping."""
EXPOSURE_TOLERANCE = 2.0
"""A ground truth whose radiance differs from its reference's by more than this factor
(one stop) gets a warning: PSNR-mu and PSNR-L compare absolute values."""


def exposure_ratio(reference: torch.Tensor, gt: torch.Tensor) -> float | None:
    """How many times brighter ``gt`` is than ``reference`` (both (3, H, W), non-linear):
    the median of their ratio over the pixels where every channel of ``reference`` is
    well exposed (:data:`WELL_EXPOSED`); None when fewer than 1 % of the pixels are."""
    low, high = WELL_EXPOSED
    mask = ((reference >= low) & (reference <= high)).all(dim=0)
    if mask.sum() < max(1, 0.01 * mask.numel()):
        return None
    return float((gt[:, mask] / reference[:, mask]).median())


ROUGH_TOLERANCE = 10.0
"""Factor of mean radiance between a result and its GT beyond which the two are taken to be
in other units where the result has too few well-exposed pixels for
:func:`exposure_ratio` (a result 30 times too bright has none): a rough measure, as noise,
lost highlights or a smoother result move means by a few times, so only a tenfold
difference is warned of."""


def mean_radiance_ratio(reference: torch.Tensor, gt: torch.Tensor) -> float | None:
    """How many times brighter ``gt`` is than ``reference`` in mean linear radiance (both
    (3, H, W), non-linear), as non-linear values compare (the ratio ** (1 / GAMMA), as
    :func:`exposure_ratio` gives it); None for a black ``reference``."""
    mean_reference = float(reference.double().pow(GAMMA).mean())
    if mean_reference <= 0:
        return None
    return (float(gt.double().pow(GAMMA).mean()) / mean_reference) ** (1 / GAMMA)


def _times(factor: float) -> str:
    return f"{factor:,.0f}" if factor >= 100 else f"{factor:.3g}"


def _warn_exposure(
    name: str,
    reference: str,
    ratio: float | None,
    how: str = "median over well-exposed pixels",
    tolerance: float = EXPOSURE_TOLERANCE,
) -> None:
    """Warn when the radiance of the GT (``ratio ** GAMMA``: ``ratio`` compares non-linear
    values, measured ``how``) differs from its reference's by more than ``tolerance``."""
    if ratio is None:
        return
    radiance = ratio**GAMMA
    if 1 / tolerance <= radiance <= tolerance:
        return
    measured = (
        f"the ground truth is {_times(radiance)} times as bright as its {reference} in "
        f"radiance ({_times(ratio)} in the non-linear values; {how})"
    )
    if reference == "result":  # either file may be the one in other units
        log.warning(
            "%s: %s: PSNR-mu and PSNR-L compare absolute values, so one of the two is in "
            "other units (a photograph's own EXR as GT, a result saved with another align "
            "ratio); give ldr_dir= to tell which",
            name,
            measured,
        )
    else:
        log.warning(
            "%s: %s: PSNR-mu and PSNR-L compare absolute values, so a GT in other units than "
            "the LDR (a photograph's own EXR) scores the wrong thing; scale it to the LDR's "
            "exposure, as NTIRE's align ratio does",
            name,
            measured,
        )


def folder_samples(
    pred_dir: str, gt_dir: str, ldr_dir: str | None, negative: str = "fill"
) -> Samples:
    """Samples matched by NTIRE id (``NNNN``) between result, GT and LDR folders.

    The pairing is checked before anything is read: every GT needs exactly one result.
    """
    if negative not in NEGATIVE:
        raise HDRUNetError(f"negative={negative}: choose one of {', '.join(NEGATIVE)}")
    if Path(pred_dir).resolve() == Path(gt_dir).resolve():
        raise HDRUNetError(f"pred_dir and gt_dir are the same folder ({pred_dir})")
    preds, gts = _hdr_files(Path(pred_dir), "pred_dir"), _hdr_files(Path(gt_dir), "gt_dir")
    if not gts:
        raise HDRUNetError(f"gt_dir {gt_dir}: no GT files (NNNN_gt.png pairs, .exr or .hdr)")

    def named_gt(files: dict[str, Path]) -> list[bool]:
        return [ntire_frame_id(path, GT_SUFFIX) is not None for path in files.values()]

    if preds and all(named_gt(preds)) and not any(named_gt(gts)):
        # PSNR-mu normalises by the GT: the two ways round score differently, both "fine"
        raise HDRUNetError(
            f"pred_dir {pred_dir} holds NTIRE ground truth (NNNN_gt.png) and gt_dir {gt_dir} "
            "results (NNNN.png): the two folders are swapped"
        )
    if MEAN_ROW in gts:  # before any image is scored
        raise HDRUNetError(_MEAN_NAMED)
    missing = sorted(gts.keys() - preds.keys())
    if missing:
        bare = [n for n in missing if (Path(pred_dir) / f"{n}.png").is_file()]
        hint = (
            f" ({', '.join(f'{n}.png' for n in bare[:3])} there: a PNG without its align ratio "
            "beside it is no HDR result)"
            if bare
            else ""
        )
        raise HDRUNetError(
            f"{pred_dir}: no result for {len(missing)} GT image(s): {missing[:10]}{hint}"
        )
    unmatched = sorted(preds.keys() - gts.keys())
    if unmatched:  # scored images are the GT's; say which results count for nothing
        log.warning(
            "%s: %d result(s) without ground truth in %s, not scored: %s",
            pred_dir,
            len(unmatched),
            gt_dir,
            unmatched[:10],
        )

    stems = {name: preds[name].stem for name in sorted(gts)}  # shot_pred for shot_pred.png
    ldrs = _ldr_files(Path(ldr_dir), stems) if ldr_dir is not None else {}

    def items() -> Iterator[Sample]:
        for name in sorted(gts):
            ldr = None
            if name in ldrs:  # read as hdrunet-predict reads it (a photo turned upright)
                ldr = read_input(ldrs[name])
            gt = read_nonlinear(gts[name], negative)
            pred = read_nonlinear(preds[name])
            black = not pred.any()
            if black:  # nor has it a pixel to compare exposures on
                log.warning(
                    "%s: the result is black (every value 0): a failed conversion or a "
                    "broken network? it is scored as it is",
                    name,
                )
            if ldr is not None and ldr.shape == gt.shape:  # else score() names the sizes
                _warn_exposure(name, "LDR", exposure_ratio(ldr, gt))
            elif ldr is None and not black and pred.shape == gt.shape:
                ratio = exposure_ratio(pred, gt)
                if ratio is not None:
                    _warn_exposure(name, "result", ratio)
                else:  # too few well-exposed pixels (far too bright or dark): the means
                    how = "ratio of the mean radiance, the result having few well-exposed pixels"
                    _warn_exposure(
                        name, "result", mean_radiance_ratio(pred, gt), how, ROUGH_TOLERANCE
                    )
            yield Sample(name, pred, gt, ldr)

    return Samples(len(gts), items())


DATA_GROUPS = ("data", "camera")
"""Config groups whose classes a run's ``config.yaml`` may name in its data settings."""


def data_targets() -> frozenset[str]:
    """Every ``_target_`` of the package's own ``data`` and ``camera`` configs: the only
    callables that the data settings of a run's ``config.yaml`` may name."""
    root = Path(__file__).parent / "conf"
    found: set[str] = set()
    for group in DATA_GROUPS:
        for path in sorted((root / group).glob("*.yaml")):
            found.update(str(t) for t in _targets(OmegaConf.load(path)))
    return frozenset(found)


def data_config(cfg: DictConfig) -> DictConfig:
    """The data settings to evaluate on: those of the training run ``run=`` (its
    ``config.yaml``, so its validation set), else the ``data`` group of this config.

    A config file is data, but instantiating it calls what it names: a run's data settings
    are resolved first (an interpolation may point anywhere in the file) and may name only
    the package's own data and camera classes (:func:`data_targets`), exactly."""
    if not cfg.get("run"):
        return cfg.data
    path = Path(cfg.run) / CONFIG_FILE
    if not path.is_file():
        raise HDRUNetError(f"run={cfg.run}: no {CONFIG_FILE}; give the folder of a training run")
    try:
        config = OmegaConf.load(path)
        data = config.get("data") if isinstance(config, DictConfig) else None
        if isinstance(data, DictConfig):
            data = OmegaConf.create(OmegaConf.to_container(data, resolve=True))
    except Exception as err:
        raise HDRUNetError(
            f"{path}: unreadable ({type(err).__name__}); not a run's config"
        ) from None
    if not isinstance(data, DictConfig) or "_target_" not in data:
        raise HDRUNetError(f"{path}: no data settings; is it a config of hdrunet-train?")
    allowed = data_targets()
    foreign = [t for t in _targets(data) if t not in allowed]
    if foreign:
        raise HDRUNetError(
            f"{path}: data names {foreign[0]!r}, not one of the package's data classes; "
            "not run (a config of hdrunet-train names only those)"
        )
    return data


def _targets(node: object) -> list[object]:
    """Every ``_target_`` value in a config node, at any depth."""
    if isinstance(node, DictConfig):
        own = [node._get_node("_target_")._value()] if "_target_" in node else []
        return own + [t for key in node if key != "_target_" for t in _targets(node._get_node(key))]
    if isinstance(node, ListConfig):
        return [t for i in range(len(node)) for t in _targets(node._get_node(i))]
    return []


def model_samples(cfg: DictConfig) -> Samples:
    """Samples made by running the checkpoint on the data set's validation images.

    Each prediction is scored as it would read back from its NTIRE 16-bit PNG pair, so the
    scores equal those of ``hdrunet-predict`` followed by ``hdrunet-eval pred_dir=...``.
    """
    data = data_config(cfg).copy()
    if "patch_size" in data:  # training crops play no part here: files of any size are scored
        with open_dict(data):
            data.patch_size = 4  # the smallest the data modules accept
    predictor = make_predictor(cfg)
    # the precision moves the scores (bf16 against fp32: hundredths of a dB), so it is said
    print(f"hdrunet-eval: {cfg.ckpt} on {predictor.device} ({predictor.dtype})")
    try:
        datamodule = instantiate(data)
    except InstantiationException as err:
        cause = err.__cause__ or err
        raise HDRUNetError(f"data: {cause}") from None

    from hdrunet_pl.data.held_out import HeldOutCaptures  # (Lightning: not for pred_dir=)

    if isinstance(datamodule, HeldOutCaptures):  # photographs of the user's: read them first
        datamodule.check_files()
    loader = datamodule.val_dataloader()
    batches = iter(loader)  # loader workers start from this thread

    def items() -> Iterator[Sample]:
        for batch in batches:
            groups = batch.get("setting", [""] * len(batch["name"]))
            for ldr, gt, name, group in zip(
                batch["ldr"], batch["hdr"], batch["name"], groups, strict=True
            ):
                try:
                    pred = predictor(ldr).clamp_min(0).permute(1, 2, 0).numpy()
                except NonFiniteOutputError as err:
                    raise NonFiniteOutputError(f"{name}: {err}") from None
                pred = torch.from_numpy(as_submitted(pred)).permute(2, 0, 1)
                yield Sample(name, pred, gt, ldr, group)

    groups = tuple(getattr(datamodule, "settings", ()))
    region = getattr(datamodule, "rows_note", "")
    return Samples(len(loader.dataset), items(), groups, region)


def read_ahead(items: Iterator[Sample], depth: int = 2) -> Iterator[Sample]:
    """``items`` in order, each made up to ``depth`` items ahead in one worker thread: the
    next images are read (and, for a checkpoint, predicted) while this one is scored. An
    error of the producer is raised where its item would have come."""
    end = object()
    with ThreadPoolExecutor(1, thread_name_prefix="hdrunet-eval-read") as pool:
        pending = deque(pool.submit(next, items, end) for _ in range(depth))
        try:
            while (item := pending.popleft().result()) is not end:
                pending.append(pool.submit(next, items, end))
                yield item
        finally:
            for future in pending:
                future.cancel()


def write_scores(path: Path, scores: list[ImageScore]) -> None:
    """``scores.csv``: one row per image, then a ``mean`` row."""

    def fmt(value: float | None) -> str:
        return "" if value is None or math.isnan(value) else f"{value:.4f}"

    columns = score_columns(scores)
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", *columns])
        for s in scores:
            writer.writerow([s.name, *(fmt(s.column(c)) for c in columns)])
        writer.writerow([MEAN_ROW, *(fmt(v) for v in means(scores).values())])


SIDE_BY_SIDE = ("best_worst", "all")
IMAGES = ("best_*.png", "worst_*.png", "side_by_side/*.png")
"""The images that an evaluation writes (globs in its output folder); those of an earlier
evaluation into the same folder go when a new one has written its own."""
LABELS = {"pu21_psnr": "PU21-PSNR", "pu21_ssim": "PU21-SSIM", "cvvdp": "CVVDP"}
UNITS = {"pu21_psnr": "dB", "pu21_ssim": "", "cvvdp": "JOD"}
PERCEPTUAL_NOTE = (
    "cvvdp {version}; the reference's "
    f"p{NORM_PERCENTILE:g} shown at {REFERENCE_CD_M2:g} cd/m2 on {DISPLAY}"
)


def _write_strip(folder: OutputFolder, path: Path, sample: Sample, title: str) -> Path:
    strip = comparison_strip(sample.pred, sample.gt, sample.ldr, title)
    folder.claim([path])
    with folder.new_file(path) as tmp:
        imwrite(tmp, np.ascontiguousarray(strip[..., ::-1]))
    return path


def evaluate(
    samples: Samples,
    output: Path,
    side_by_side: str = "best_worst",
    metrics: list[str] | tuple[str, ...] | None = None,
) -> list[ImageScore]:
    """Score every sample with ``metrics`` (see :func:`metric_names`); write ``scores.csv``
    and the best/worst PNGs under ``output`` (``side_by_side="all"``: also one PNG per image
    in ``output/side_by_side``). Images that an earlier evaluation wrote there and this one
    did not are deleted (only unchanged files of this package: see :class:`OutputFolder`),
    so that the folder shows this evaluation alone."""
    if side_by_side not in SIDE_BY_SIDE:
        raise HDRUNetError(f"side_by_side={side_by_side}: choose one of {', '.join(SIDE_BY_SIDE)}")
    try:
        scorers = make_scorers(metrics)
    except ValueError as err:
        raise HDRUNetError(str(err)) from None
    folder = OutputFolder(output, "hdrunet-eval")
    with folder.sole_writer():
        folder.claim([output / SCORES_FILE])  # before the work: a refusal costs nothing
        if side_by_side == "all":
            (output / "side_by_side").mkdir(exist_ok=True)
        for place in (output, output / "side_by_side"):
            remove_dead_temporaries(place)  # of a killed evaluation
        scores: list[ImageScore] = []
        images: list[Path] = []
        best: tuple[float, Sample] | None = None
        worst: tuple[float, Sample] | None = None
        for sample in tqdm(read_ahead(samples.items), total=samples.count, unit="image"):
            if sample.name == MEAN_ROW:  # of a data set (folder_samples says so up front)
                raise HDRUNetError(_MEAN_NAMED)
            result = score(sample, scorers)
            scores.append(result)
            if side_by_side == "all":
                title = f"{sample.name}  PSNR-mu {result.psnr_mu:.2f} dB"
                if result.identity_psnr_mu is not None:
                    title += f" (LDR {result.identity_psnr_mu:.2f} dB)"
                path = output / "side_by_side" / f"{sample.name}.png"
                images.append(_write_strip(folder, path, sample, title))
            if best is None or result.psnr_mu > best[0]:
                best = (result.psnr_mu, sample)
            if worst is None or result.psnr_mu < worst[0]:
                worst = (result.psnr_mu, sample)
        if not scores:
            raise HDRUNetError("nothing to evaluate")
        extremes = [
            (label, value, sample, output / f"{label}_{sample.name}.png")
            for label, (value, sample) in (("worst", worst), ("best", best))
        ]
        folder.claim([path for *_, path in extremes])  # refused before the scores are written
        with folder.new_file(output / SCORES_FILE) as tmp:
            write_scores(tmp, scores)
        for label, value, sample, path in extremes:
            title = f"{label}: {sample.name}  PSNR-mu {value:.2f} dB"
            images.append(_write_strip(folder, path, sample, title))
        folder.remove_stale(IMAGES, keep=images)
        return scores


def _check_output_is_not_an_input(output: str, gt_dir: str, ldr_dir: str | None) -> None:
    """Refuse an output folder that holds the ground truth or the LDR inputs: the images
    written there (``best_*.png``, ...) would be taken for frames by the next evaluation.
    (The results' folder may take the scores: files without an align ratio are no results.)"""
    target = Path(output).resolve()
    for name, folder in (("gt_dir", gt_dir), ("ldr_dir", ldr_dir)):
        if folder is not None and Path(folder).resolve() == target:
            raise HDRUNetError(f"output={output} is the {name} folder; give another output folder")


_DATA_FOLDERS = ("root", "val_root", "input_dir")
"""The input paths (:func:`~hdrunet_pl.run_files.absolute_paths`) that are data folders."""


def _check_output_is_no_data_folder(output: str, data: DictConfig) -> None:
    """Refuse an output folder that is, or lies inside, a folder the data set reads
    (``root``, ``val_root``, ``input_dir``, each folder of ``data=mixed``): the images and
    scores written there would be read as data next time (an NTIRE folder then has frames
    ``best_0006`` and ``worst_0005`` without results)."""
    try:
        settings = OmegaConf.create({"data": OmegaConf.to_container(data, resolve=True)})
    except Exception:  # unresolved settings: the data set says what is missing
        return
    target = Path(output).resolve()
    for key, folder in absolute_paths(settings, Path.cwd()).items():
        name = key.rsplit(".", 1)[-1]
        if name not in _DATA_FOLDERS:
            continue
        holder = folder_holding(folder, target)  # through a symlinked subfolder, too
        if holder is not None:
            how = "" if holder == Path(folder) else f", through {holder}, a symbolic link"
            raise HDRUNetError(
                f"output={output} is in the data set's folder ({name}={folder}{how}): what "
                "is written there would be read as data; give another output folder"
            )


def run(cfg: DictConfig) -> list[ImageScore]:
    check_required(cfg)
    check_settings(cfg, EVAL_RULES)
    check_no_empty_paths(cfg)
    if cfg.pred_dir is not None or cfg.gt_dir is not None:
        if cfg.pred_dir is None or cfg.gt_dir is None:
            raise HDRUNetError("give both pred_dir= and gt_dir= (or ckpt= and data=)")
        if cfg.ckpt is not None or cfg.get("run"):
            raise HDRUNetError(
                "give ckpt= (scores the checkpoint) or pred_dir= and gt_dir= (scores results "
                "made before), not both"
            )
        _check_output_is_not_an_input(cfg.output, cfg.gt_dir, cfg.ldr_dir)
        samples = folder_samples(cfg.pred_dir, cfg.gt_dir, cfg.ldr_dir, cfg.negative)
    elif cfg.ckpt is not None:
        _check_output_is_no_data_folder(cfg.output, data_config(cfg))
        samples = model_samples(cfg)
    else:
        raise HDRUNetError("give ckpt= (with data=) or pred_dir= and gt_dir=")
    metrics = cfg.get("metrics")
    if isinstance(metrics, str):  # metrics=cvvdp on the command line: one name
        metrics = [metrics]
    metrics = DEFAULT_METRICS if metrics is None else list(metrics)
    scores = evaluate(samples, Path(cfg.output), cfg.get("side_by_side", "best_worst"), metrics)
    mean = means(scores)
    print(f"{len(scores)} images; per-image means (NTIRE 2021 definitions):")
    print(f"  PSNR-mu {mean['psnr_mu']:.4f} dB   PSNR-L {mean['psnr_l']:.4f} dB")
    if samples.region:
        print(f"  scored: {samples.region}")
    if mean["identity_psnr_mu"] is not None:
        print(
            f"  LDR identity: PSNR-mu {mean['identity_psnr_mu']:.4f} dB   "
            f"PSNR-L {mean['identity_psnr_l']:.4f} dB"
        )
        below_mu, below_l = below_identity(scores)
        print(f"  images below the LDR identity: {below_mu} in PSNR-mu, {below_l} in PSNR-L")
    perceptual = [m for m in scores[0].values if m not in CHALLENGE_METRICS]
    if perceptual:
        note = PERCEPTUAL_NOTE.format(version=importlib.metadata.version("cvvdp"))
        print(f"perceptual ({note}):")
        for name in perceptual:
            small = unscored(scores, name)
            if mean[name] is None:
                print(f"  {LABELS[name]:<10} not scored: every image is smaller than its filters")
                continue
            line = f"  {LABELS[name]:<10} {mean[name]:8.4f} {UNITS[name]:<3}"
            if mean[f"identity_{name}"] is not None:
                line += f" (LDR {mean[f'identity_{name}']:8.4f})"
            if small:
                line += f"   ({small} image(s) under {MIN_SIZE[name]} pixels a side not scored)"
            print(line)
    if samples.groups:
        print("per capture setting (dB):")
        for group, members in group_scores(scores, samples.groups).items():
            if members:
                _print_means(group, members)
    print(f"  scores and best/worst images in {cfg.output}")
    return scores


if __name__ == "__main__":
    from hdrunet_pl.cli import evaluate as _main

    _main()
