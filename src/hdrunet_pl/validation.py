"""Checks of the numeric settings users change, run when a config is composed: a wrong
value stops the run at start with one line instead of failing hours (or 200,000 steps) in."""

from __future__ import annotations

from collections.abc import Callable
from numbers import Real

from omegaconf import DictConfig, OmegaConf

from hdrunet_pl.errors import HDRUNetError

_MISSING = object()


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _milestones(value: object) -> bool:
    return (
        isinstance(value, list | tuple)
        and all(_int(v) and v > 0 for v in value)
        and list(value) == sorted(set(value))
    )


def _betas(value: object) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(_number(v) and 0 <= v < 1 for v in value)
    )


def _interval(value: object) -> bool:
    return (_int(value) and value >= 1) or (_number(value) and 0 < value <= 1)


def _bool(value: object) -> bool:
    return isinstance(value, bool)


def _path(value: object) -> bool:
    return isinstance(value, str) and value != ""


def _path_or_null(value: object) -> bool:
    return value is None or _path(value)


BOOL = (_bool, "true or false")
PATH = (_path, "a path (quote a name that reads as a number, boolean or null: 'KEY=\"2024\"')")
PATH_OR_NULL = (_path_or_null, f"null or {PATH[1]}")

TRAINING_PRECISIONS = ("32", "32-true", "bf16-mixed", "bf16", "16-mixed", "16")
"""``trainer.precision`` values a run may use: float32 weights, with or without autocast."""

TRAIN_RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "seed": (lambda v: _int(v) and 0 <= v < 2**32, "an integer from 0 to 4294967295"),
    "model.optimizer.lr": (lambda v: _number(v) and v > 0, "a number > 0"),
    "model.optimizer.betas": (_betas, "two numbers in [0, 1), e.g. [0.9,0.99]"),
    "model.optimizer.weight_decay": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "model.scheduler.gamma": (lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "model.scheduler.milestones": (_milestones, "increasing positive step numbers"),
    "model.net.nf": (lambda v: _int(v) and v >= 2 and v % 2 == 0, "an even integer >= 2"),
    "trainer.max_steps": (lambda v: _int(v) and (v == -1 or v >= 1), "-1 or an integer >= 1"),
    # with check_val_every_n_epoch null (the default: validation by steps) Lightning takes
    # whole steps only; a fraction of an epoch needs check_val_every_n_epoch=N as well
    "trainer.val_check_interval": (
        _interval,
        "a number of steps >= 1 (a fraction of an epoch in (0, 1] only with "
        "trainer.check_val_every_n_epoch=N)",
    ),
    "trainer.precision": (
        lambda v: str(v) in TRAINING_PRECISIONS,
        f"one of {', '.join(TRAINING_PRECISIONS)} (the weights and optimizer stay float32; "
        "bf16-true, 16-true and 64-true are not supported)",
    ),
    "trainer.accumulate_grad_batches": (
        lambda v: v == 1,
        "1: a run that accumulates gradients would not resume its stream of training "
        "samples exactly; give a larger data.batch_size (or more devices) instead",
    ),
    "trainer.log_every_n_steps": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "data.batch_size": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "data.num_workers": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "data.val_count": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    **{
        key: BOOL
        for key in (
            "validate_first",
            "skip_nonfinite",
            "model.compile",
            "model.net.use_condition",
            "model.net.use_weighting",
            "data.augment",
        )
    },
    "callbacks.last_checkpoint.every_n_train_steps": (
        lambda v: _int(v) and v >= 1,
        "an integer >= 1",
    ),
}
"""Setting -> (check, what it must be). Settings a config does not have are not checked."""


PREDICT_RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "ckpt": PATH,
    "input": PATH,
    "output": PATH,
    "preview": BOOL,
    "overwrite": BOOL,
}
"""The settings of ``hdrunet-predict`` besides the ``inference`` group's."""

EVAL_RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    **{key: PATH_OR_NULL for key in ("ckpt", "run", "pred_dir", "gt_dir", "ldr_dir")},
    "output": PATH,
}
"""The settings of ``hdrunet-eval`` besides the ``inference`` group's."""

MAX_CHECK_PIXELS = 1 << 22
"""The most pixels (batch x height x width) of ``hdrunet-export``'s check input: the network
runs on it twice (PyTorch and the export), in float32."""


def _check_size(value: object) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) == 4
        and all(_int(v) and v >= 1 for v in value)
        and value[0] * value[2] * value[3] <= MAX_CHECK_PIXELS
    )


MIN_ONNX_OPSET = 18
"""torch.onnx's (dynamo) exporter converts to opset 18 and later only."""


def newest_onnx_opset() -> int | None:
    """The newest ONNX opset the installed ``onnx`` package knows (``None`` without it)."""
    try:
        import onnx
    except ImportError:
        return None
    return int(onnx.defs.onnx_opset_version())


def _opset(value: object) -> bool:
    newest = newest_onnx_opset()
    return _int(value) and value >= MIN_ONNX_OPSET and (newest is None or value <= newest)


EXPORT_RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "ckpt": PATH,
    "output": PATH_OR_NULL,
    "opset": (
        _opset,
        f"an ONNX opset number from {MIN_ONNX_OPSET} (the oldest torch.onnx's exporter "
        "writes) to the newest the installed onnx package knows",
    ),
    "tolerance": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "check_size": (
        _check_size,
        f"[batch, channels, height, width], integers >= 1, at most {MAX_CHECK_PIXELS:,} "
        "pixels in all (batch x height x width)",
    ),
}
"""The settings of ``hdrunet-export``."""

INFERENCE_RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "compile": BOOL,
    "tile": (lambda v: v is None or (_int(v) and v >= 0), "null, 0 or a tile side >= 1"),
    "overlap": (lambda v: v is None or (_int(v) and v >= 0), "null or an integer >= 0"),
    "memory_gb": (lambda v: _number(v) and v > 0, "a number > 0"),
    "tile_batch": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
}
"""The same for ``hdrunet-predict`` / ``hdrunet-eval`` (the ``inference`` group)."""


def check_settings(cfg: DictConfig, rules: dict[str, tuple[Callable[[object], bool], str]]) -> None:
    """Raise :class:`HDRUNetError` naming the first setting of ``cfg`` that breaks ``rules``."""
    for key, (ok, what) in rules.items():
        value = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)
        if value is _MISSING:
            continue
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        if not ok(value):
            raise HDRUNetError(f"{key} must be {what.replace('KEY', key)}, got {value!r}")


def check_required(cfg: DictConfig) -> None:
    """Raise :class:`HDRUNetError` naming every required setting (``???``) left unset."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        given = " ".join(f"{key}=..." for key in missing)
        raise HDRUNetError(f"missing required setting(s): {', '.join(missing)}; add {given}")


CONDITION_SETTINGS = ("condition", "hdrunet.condition", "model.net.condition")
"""Overrides that choose what HDRUNet's condition network sees (the group and its keys)."""
MODULATION_SETTINGS = ("modulation", "hdrunet.modulation", "model.net.modulation")
"""Overrides that choose HDRUNet's modulation (the group and its keys)."""


def check_groups_apply(cfg: DictConfig, overrides: list[str], model: str | None = None) -> None:
    """Refuse a ``modulation`` or ``condition`` choice that the configured network would
    ignore: both for ExpandNet or an HDRUNet without its condition network (``model=base``,
    ``model=base_weighting``), the condition for ``modulation=none`` (which builds none).
    Such a run would train the same network under another name.

    ``overrides`` are the run's command-line overrides (Hydra's ``overrides.task``), as
    group choices or keys; ``model`` the ``model`` group's choice (for the message).
    """
    net = cfg.get("model", {}).get("net", {})
    hdrunet = str(net.get("_target_", "")).endswith("HDRUNet")
    conditioned = hdrunet and net.get("use_condition", True)
    if conditioned and net.get("modulation", "sft") != "none":
        return  # the condition network is built: both choices apply
    ignored = CONDITION_SETTINGS if conditioned else CONDITION_SETTINGS + MODULATION_SETTINGS
    chosen = [o for o in overrides if o.split("=", 1)[0].lstrip("+~").split("@")[0] in ignored]
    if chosen:
        what = f"model={model}" if model else f"this model ({net.get('_target_')})"
        what = "modulation=none" if conditioned else what
        raise HDRUNetError(
            f"{', '.join(chosen)} does not apply to {what}: it has no condition network, so "
            "the run would train the same network under another name; drop the override"
        )
