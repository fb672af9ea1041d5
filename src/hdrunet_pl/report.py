"""``hdrunet-report <sweep dir>``: the paper-style table of a Hydra multirun.

Reads each job's overrides (``.hydra/overrides.yaml``), network (``config.yaml``: its
parameters and multiply-accumulates for one 256x256 input, counted on the meta device) and
final metrics (``metrics.json``; for a job still running or stopped, or resumed past its
summary, the last validation row of ``csv/metrics.csv``, NaN shown as such; PU21 and
ColorVideoVDP scores from that row where a run logged them), and writes ``report.md``,
``report.csv`` and ``report.png`` (PSNR-mu per variant) into the sweep folder. Variants the
sweep asked for (its sweeper's values as the command line overrode them) but that have no
folder yet are listed as missing.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from hdrunet_pl.errors import HDRUNetError
from hdrunet_pl.outputs import OutputFolder
from hdrunet_pl.run_files import (
    CONFIG_FILE,
    FAILED_FILE,
    HYDRA_OVERRIDES_FILE,
    METRICS_FILE,
)

if TYPE_CHECKING:
    from hdrunet_pl.models.checkpoints import NetConfig

SCORES_NOTE = (
    "Validation scores as the NTIRE 2021 scoring program defines them, averaged per image: "
    "PSNR-mu after gamma 2.24, 99th-percentile normalisation and mu-law (5000) tonemapping; "
    "PSNR-L on the non-linear values normalised by the GT maximum (no gamma)."
)
SCORES = ("psnr_mu", "psnr_l", "identity_psnr_mu")
"""Score columns of every report (as :class:`RunResult` fields)."""
COST_SIZE = 256
"""Side of the square input whose multiply-accumulates the report counts."""
COST_NOTE = (
    f"params: trainable parameters; GMAC: billions of multiply-accumulates for one "
    f"{COST_SIZE}x{COST_SIZE} input (FLOPs counted by torch's FlopCounterMode, halved)."
)
OPTIONAL_METRICS = {
    "pu21_psnr": ("val/pu21_psnr", "PU21-PSNR (dB)"),
    "pu21_ssim": ("val/pu21_ssim", "PU21-SSIM"),
    "cvvdp": ("val/cvvdp", "CVVDP (JOD)"),
}
"""Report column -> (logged validation metric, markdown header): shown when a run has it."""
NETWORKS = {"hdrunet_pl.models.HDRUNet": None, "hdrunet_pl.models.ExpandNet": "expandnet"}
"""``model.net._target_`` values the report counts, with the ``arch`` their configs record."""


@dataclass
class RunResult:
    """One row of the table: a variant, its network's size, its scores (dB) and where it
    stands. ``gmacs``: billions of multiply-accumulates for one 256x256 input."""

    variant: str
    params: int | None = None
    gmacs: float | None = None
    psnr_mu: float | None = None
    psnr_l: float | None = None
    identity_psnr_mu: float | None = None
    steps: int | None = None
    scored_at: int | None = None  # the step of the validation the scores are from
    status: str = "missing"
    run: str = ""
    extra: dict[str, float] = field(default_factory=dict)  # OPTIONAL_METRICS found


def _split_sweep(value: str) -> list[str]:
    """Hydra's simple choice sweep ``a,b,c`` -> values (brackets and quotes kept intact)."""
    values, depth, current = [], 0, ""
    for char in value:
        depth += (char in "[({" and 1) or ((char in "])}" and -1) or 0)
        if char == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += char
    return [*values, current]


MAX_SWEPT = 10_000
"""The most values one swept parameter, and the most jobs all of them together, may have
(a record that claims more is refused rather than expanded: ``range(0,100000000)`` is a few
bytes)."""


CONF_DIR = Path(__file__).parent / "conf"
"""The package's config tree (config groups are its folders)."""


def _group_options(group: str) -> list[str]:
    """The options of config group ``group`` (``loss``: ``l1``, ``tanh_l1``, ...), sorted as
    Hydra lists them for a ``glob(...)`` sweep."""
    folder = CONF_DIR / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _sweep_values(entry: str) -> tuple[str, list[str]]:
    """The key of the override ``entry`` as Hydra's sweeper names it (``+scale`` and
    ``scale`` are two keys) and its values as Hydra hands them to the jobs (``1e-3,2e-4`` ->
    ``0.001``, ``0.0002``; ``range(1,3)`` -> ``1``, ``2``), so that they match each job's
    ``overrides.yaml``; ``glob(...)`` over the group's options in the package's config tree;
    a plain split where Hydra cannot expand it here."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob

    key, _, value = entry.partition("=")
    try:
        override = OverridesParser.create().parse_overrides([entry])[0]
        key = override.get_key_element()
        if isinstance(override.value(), Glob):  # a config group's options, as Hydra expands it
            return key, override.value().filter(_group_options(override.key_or_group))
        if not override.is_sweep_override():
            return key, [override.get_value_element_as_str()]
        values = list(itertools.islice(override.sweep_string_iterator(), MAX_SWEPT + 1))
    except Exception:
        values = _split_sweep(value)
    if len(values) > MAX_SWEPT:
        raise HDRUNetError(
            f"multirun.yaml sweeps {key} over more than {MAX_SWEPT:,} values; is it Hydra's "
            "record of a sweep?"
        )
    return key, values


def swept_values(sweep_dir: Path) -> dict[str, list[str]]:
    """Key -> values of every swept parameter, from the sweep's ``multirun.yaml``: the
    sweeper's ``params`` (an experiment's list), then the command line's overrides, a key
    given there replacing the list (as Hydra's BasicSweeper merges them: ``experiment=
    ablation_loss loss=l1`` runs loss=l1 alone); a command-line key of one value that the
    sweeper does not list is a setting of every job, not a swept parameter."""
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return {}
    try:
        recorded = yaml.safe_load(path.read_text(errors="replace"))
    except (yaml.YAMLError, RecursionError):
        raise HDRUNetError(f"{path}: unreadable YAML; is it Hydra's record of a sweep?") from None
    hydra_cfg = (recorded.get("hydra") if isinstance(recorded, dict) else None) or {}
    if not isinstance(hydra_cfg, dict):
        raise HDRUNetError(f"{path}: no hydra settings; is it Hydra's record of a sweep?")
    params: dict[str, list[str]] = {}
    for key, value in ((hydra_cfg.get("sweeper") or {}).get("params") or {}).items():
        swept_key, values = _sweep_values(f"{key}={value}")
        params[swept_key] = values
    for override in (hydra_cfg.get("overrides") or {}).get("task") or []:
        key, values = _sweep_values(str(override))
        if key in params or len(values) > 1:  # a dict keeps the key's place, as Hydra's does
            params[key] = values
    jobs = math.prod(len(values) for values in params.values())
    if jobs > MAX_SWEPT:
        raise HDRUNetError(
            f"{path} sweeps {jobs:,} combinations, more than {MAX_SWEPT:,}; is it Hydra's "
            "record of a sweep?"
        )
    return params


def _finite(value: object) -> float | None:
    """``value`` as a finite number, else None (a damaged or non-finite record)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _csv_rows(run_dir: Path) -> Iterator[dict[str, str]]:
    """The rows of a job's CSV logs (a damaged byte reads as U+FFFD)."""
    for path in sorted(run_dir.glob("**/metrics.csv")):
        with path.open(errors="replace", newline="") as f:
            try:
                yield from csv.DictReader(f)
            except csv.Error:  # a damaged file (a field over csv's size limit): its rows so far
                continue


def _number(value: object) -> float | None:
    """A logged value as a number, NaN and infinity included (a diverged run's score);
    None for an empty or unreadable cell."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


@dataclass
class CsvLog:
    """What a job's CSV log holds: the step of its last row, the latest step it reached
    and its last validation row (metric -> value, every one from that same row)."""

    step: int | None = None
    latest_step: int | None = None
    validation: dict[str, float] = field(default_factory=dict)
    validation_step: int | None = None


def read_csv_log(run_dir: Path) -> CsvLog:
    """The last row and the last validation row (one with a ``val/`` value) of a job's CSV
    logs; a row's unreadable cells are left out, never filled from another row."""
    log = CsvLog()
    for row in _csv_rows(run_dir):
        step = _finite(row.get("step"))
        if step is not None:
            log.step = int(step)
            log.latest_step = max(log.step, log.latest_step or 0)
        scores = {
            key: number
            for key, value in row.items()
            if isinstance(key, str)
            and key.startswith("val/")
            and (number := _number(value)) is not None
        }
        if scores:
            log.validation = scores
            log.validation_step = int(step) if step is not None else None
    return log


def _variant(run_dir: Path, keys: list[str]) -> str:
    """A job's label: its values of the swept ``keys`` (its folder name if it has none)."""
    try:  # a damaged record labels the job by its folder
        overrides = yaml.safe_load((run_dir / HYDRA_OVERRIDES_FILE).read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError, RecursionError):
        overrides = None
    if not isinstance(overrides, list):
        overrides = []
    chosen = dict(str(o).partition("=")[::2] for o in overrides)
    return " ".join(f"{k}={chosen[k]}" for k in keys if k in chosen) or run_dir.name


def recorded_network(run_dir: Path) -> NetConfig | None:
    """The network configuration in a run's ``config.yaml`` (validated as a checkpoint's
    record is), or None when there is none or it is not one this package builds."""
    from hdrunet_pl.errors import CheckpointError
    from hdrunet_pl.models.checkpoints import config_from_record

    try:
        net = yaml.safe_load((run_dir / CONFIG_FILE).read_text())["model"]["net"]
        record = {k: v for k, v in net.items() if k != "_target_"}
        arch = NETWORKS[net["_target_"]]
    except (
        OSError,
        yaml.YAMLError,
        UnicodeDecodeError,
        RecursionError,
        KeyError,
        TypeError,
        AttributeError,
    ):
        return None
    if arch is not None:
        record["arch"] = arch
    try:
        return config_from_record(record)
    except CheckpointError:
        return None


def network_cost(config: NetConfig, size: int = COST_SIZE) -> tuple[int, float]:
    """(trainable parameters, GMAC for one (1, 3, size, size) input) of the network that
    ``config`` describes: ``FlopCounterMode``'s FLOPs / 2, on the meta device (no memory,
    no computation)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from hdrunet_pl.models.blocks import num_parameters
    from hdrunet_pl.models.checkpoints import build_network

    with torch.device("meta"):
        net = build_network(config)
        ldr = torch.empty(1, 3, size, size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(ldr)
    return num_parameters(net), counter.get_total_flops() / 2 / 1e9


def read_run(
    run_dir: Path, keys: list[str], costs: dict[NetConfig, tuple[int, float]] | None = None
) -> RunResult:
    """The result of one job folder, labelled by its values of the swept ``keys``
    (``costs``: network costs already counted, filled in as they are)."""
    result = RunResult(variant=_variant(run_dir, keys), run=run_dir.name)
    config = recorded_network(run_dir)
    if config is not None:
        costs = {} if costs is None else costs
        if config not in costs:
            costs[config] = network_cost(config)
        result.params, result.gmacs = costs[config]
    log = read_csv_log(run_dir)
    result.extra = {
        column: log.validation[logged]
        for column, (logged, _) in OPTIONAL_METRICS.items()
        if logged in log.validation
    }
    metrics_file = run_dir / METRICS_FILE
    if (run_dir / FAILED_FILE).is_file():
        result.status = (
            "failed: " + (run_dir / FAILED_FILE).read_text(errors="replace").strip()[:120]
        )
        return result
    summary_steps = None
    if metrics_file.is_file():
        try:
            metrics = json.loads(metrics_file.read_text())
        except (ValueError, UnicodeDecodeError, RecursionError):
            result.status = f"unreadable {METRICS_FILE}"
            return result
        if not isinstance(metrics, dict):
            result.status = f"unreadable {METRICS_FILE}"
            return result
        steps = _finite(metrics.get("steps"))
        summary_steps = int(steps) if steps is not None else None
        trained_on = (
            summary_steps is not None
            and log.latest_step is not None
            and log.latest_step > summary_steps
        )
        if not trained_on:  # the summary is the run's latest word
            result.psnr_mu = _finite(metrics.get("psnr_mu_after"))
            result.psnr_l = _finite(metrics.get("psnr_l_after"))
            result.identity_psnr_mu = _finite(metrics.get("psnr_mu_identity"))
            result.steps = result.scored_at = summary_steps
            result.status = "done"
            return result
    # no summary, or one older than the log (resumed with a larger trainer.max_steps):
    # the scores of the log's last validation, all from its one row
    scores = log.validation
    result.psnr_mu, result.psnr_l = scores.get("val/psnr_mu"), scores.get("val/psnr_l")
    result.identity_psnr_mu = scores.get("val/psnr_mu_identity")
    result.steps, result.scored_at = log.step, log.validation_step
    result.status = "running or stopped"
    if summary_steps is not None:
        result.status += f" (resumed after its step-{summary_steps} summary)"
    if scores and result.scored_at != result.steps:
        where = "an unknown step" if result.scored_at is None else f"step {result.scored_at}"
        result.status += f"; scores of {where}"
    return result


def _job_order(path: Path) -> tuple[int, str]:
    number = path.name.split("_")[0]
    return (int(number) if number.isdigit() else 1 << 30, path.name)


def collect(sweep_dir: str | Path) -> list[RunResult]:
    """Every job of the sweep plus a ``missing`` row for each variant without a folder."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir}: no such sweep folder")
    if not (sweep_dir / "multirun.yaml").is_file():
        what = "a single run's folder" if (sweep_dir / ".hydra").is_dir() else "not a sweep"
        raise FileNotFoundError(
            f"{sweep_dir}: {what} (no multirun.yaml); give the folder of a multirun "
            "(hdrunet-train -m ...), e.g. logs/train/multiruns/<time>; nothing was written"
        )
    params = swept_values(sweep_dir)
    keys = list(params)
    costs: dict[NetConfig, tuple[int, float]] = {}
    runs = [
        read_run(d, keys, costs)
        for d in sorted(sweep_dir.iterdir(), key=_job_order)
        if d.is_dir() and (d / ".hydra").is_dir()
    ]
    seen = {r.variant for r in runs}
    for combo in itertools.product(*params.values()) if params else []:
        variant = " ".join(f"{k}={v}" for k, v in zip(keys, combo, strict=True))
        if variant not in seen:
            runs.append(RunResult(variant=variant))
    if not runs:
        raise FileNotFoundError(f"{sweep_dir}: no runs (job folders with .hydra/) found")
    return runs


def load_curves(
    sweep_dir: str | Path, metric: str = "val/psnr_mu"
) -> dict[str, tuple[list[int], list[float]]]:
    """Variant -> (steps, values) of ``metric`` from each job's CSV log (``logger=csv``)."""
    sweep_dir = Path(sweep_dir)
    keys = list(swept_values(sweep_dir))
    curves = {}
    for run_dir in sorted(sweep_dir.iterdir(), key=_job_order):
        if not (run_dir / ".hydra").is_dir():
            continue
        steps, values = [], []
        for row in _csv_rows(run_dir):
            step, value = _finite(row.get("step")), _finite(row.get(metric))
            if step is not None and value is not None:
                steps.append(int(step))
                values.append(value)
        if steps:
            curves[_variant(run_dir, keys)] = (steps, values)
    return curves


def _fmt(value: float | int | None, decimals: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{decimals}f}" if isinstance(value, float) else str(value)


def _raw(value: float | int | None) -> str:
    """A value for ``report.csv``: as logged, not rounded for reading."""
    return "" if value is None else repr(value)


COLUMN_DECIMALS = {"pu21_ssim": 3}
"""Decimals shown in ``report.md`` where 2 (dB, JOD) say too little (an SSIM in [0, 1])."""


def _fmt_gmacs(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def optional_columns(runs: list[RunResult]) -> list[str]:
    """The :data:`OPTIONAL_METRICS` columns that at least one run has, in their order."""
    return [c for c in OPTIONAL_METRICS if any(c in r.extra for r in runs)]


def markdown_table(runs: list[RunResult]) -> str:
    """The table in GitHub markdown."""
    extra = optional_columns(runs)
    heads = [
        "variant",
        "params",
        f"GMAC ({COST_SIZE}x{COST_SIZE})",
        "PSNR-mu (dB)",
        "PSNR-L (dB)",
        "LDR identity PSNR-mu",
        *(OPTIONAL_METRICS[c][1] for c in extra),
        "steps",
        "status",
    ]
    lines = ["| " + " | ".join(heads) + " |", "|---|" + "---:|" * (len(heads) - 2) + "---|"]
    for r in runs:
        cells = [
            r.variant,
            "-" if r.params is None else f"{r.params:,}",
            _fmt_gmacs(r.gmacs),
            _fmt(r.psnr_mu),
            _fmt(r.psnr_l),
            _fmt(r.identity_psnr_mu),
            *(_fmt(r.extra.get(c), COLUMN_DECIMALS.get(c, 2)) for c in extra),
        ]
        lines.append("| " + " | ".join([*cells, _fmt(r.steps), r.status]) + " |")
    lines += ["", SCORES_NOTE, COST_NOTE]
    return "\n".join(lines)


def write_report(sweep_dir: str | Path, runs: list[RunResult]) -> list[Path]:
    """``report.md``, ``report.csv`` and ``report.png`` in the sweep folder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep_dir = Path(sweep_dir)
    md, table, png = (sweep_dir / f"report.{ext}" for ext in ("md", "csv", "png"))
    folder = OutputFolder(sweep_dir, "hdrunet-report")
    folder.claim([md, table, png])
    with folder.new_file(md) as tmp:
        tmp.write_text(markdown_table(runs) + "\n")
    extra = optional_columns(runs)
    with folder.new_file(table) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "variant",
                "params",
                "gmacs_256",
                *SCORES,
                *extra,
                "steps",
                "scored_at_step",
                "status",
                "run",
            ]
        )
        for r in runs:
            writer.writerow(
                [
                    r.variant,
                    _raw(r.params),
                    _raw(r.gmacs),
                    *(_raw(getattr(r, c)) for c in SCORES),
                    *(_raw(r.extra.get(c)) for c in extra),
                    _raw(r.steps),
                    _raw(r.scored_at),
                    r.status,
                    r.run,
                ]
            )
    scored = [r for r in runs if r.psnr_mu is not None and math.isfinite(r.psnr_mu)]
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(scored) + 2), 3.5), dpi=100)
    ax.bar([r.variant for r in scored], [r.psnr_mu for r in scored], color="tab:blue")
    identity = [
        r.identity_psnr_mu
        for r in scored
        if r.identity_psnr_mu is not None and math.isfinite(r.identity_psnr_mu)
    ]
    if identity:
        ax.axhline(identity[0], color="tab:gray", linestyle="--", label="LDR identity")
        ax.legend(loc="lower right")
    shown = [r.psnr_mu for r in scored] + identity[:1]
    if shown:
        ax.set_ylim(min(shown) - 1, max(shown) + 0.5)
    for i, r in enumerate(scored):
        ax.annotate(f"{r.psnr_mu:.2f}", (i, r.psnr_mu), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("val PSNR-mu (dB)")
    ax.set_title(f"{sweep_dir.name}: PSNR-mu per variant")
    ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    with folder.new_file(png) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return [md, table, png]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hdrunet-report", description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", help="a Hydra multirun folder (logs/train/multiruns/<time>)")
    args = parser.parse_args(argv)
    try:
        runs = collect(args.sweep_dir)
        files = write_report(args.sweep_dir, runs)
    except (FileNotFoundError, HDRUNetError) as err:
        print(f"hdrunet-report: error: {err}", file=sys.stderr)
        return 2
    try:
        print(markdown_table(runs))
        missing = [r.variant for r in runs if r.status == "missing"]
        if missing:
            print(f"\nmissing runs: {', '.join(missing)}")
        print("\nwritten: " + ", ".join(str(p) for p in files), flush=True)
    except BrokenPipeError:  # `hdrunet-report ... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
