"""``hdrunet-report <sweep dir>``: the paper-style table of a Hydra multirun.

Reads each job's overrides (``.hydra/overrides.yaml``) and final metrics (``metrics.json``,
or the last validation in ``csv/metrics.csv`` for a job still running), and writes
``report.md``, ``report.csv`` and ``report.png`` (PSNR-mu per variant) into the sweep
folder. Variants the sweep asked for but that have no folder yet are listed as missing.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from hdrunet_pl.errors import HDRUNetError
from hdrunet_pl.io import atomic_path
from hdrunet_pl.outputs import OutputFolder
from hdrunet_pl.run_files import FAILED_FILE, METRICS_FILE

SCORES_NOTE = (
    "Validation scores as the NTIRE 2021 scoring program defines them, averaged per image: "
    "PSNR-mu after gamma 2.24, 99th-percentile normalisation and mu-law (5000) tonemapping; "
    "PSNR-L on the non-linear values normalised by the GT maximum (no gamma)."
)
COLUMNS = ("variant", "psnr_mu", "psnr_l", "identity_psnr_mu", "steps", "status", "run")


@dataclass
class RunResult:
    """One row of the table: a variant, its scores (dB) and where it stands."""

    variant: str
    psnr_mu: float | None = None
    psnr_l: float | None = None
    identity_psnr_mu: float | None = None
    steps: int | None = None
    status: str = "missing"
    run: str = ""


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


def swept_values(sweep_dir: Path) -> dict[str, list[str]]:
    """Key -> values of every swept parameter, from the sweep's ``multirun.yaml``."""
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return {}
    hydra_cfg = yaml.safe_load(path.read_text()).get("hydra", {})
    params: dict[str, list[str]] = {}
    for key, value in ((hydra_cfg.get("sweeper") or {}).get("params") or {}).items():
        params[str(key)] = _split_sweep(str(value))
    for override in (hydra_cfg.get("overrides") or {}).get("task") or []:
        key, _, value = str(override).partition("=")
        values = _split_sweep(value)
        if len(values) > 1:
            params[key] = values
    return params


def _last_csv_metrics(run_dir: Path) -> dict[str, float]:
    found: dict[str, float] = {}
    for path in sorted(run_dir.glob("**/metrics.csv")):
        with path.open() as f:
            for row in csv.DictReader(f):
                for key, value in row.items():
                    if value not in ("", None) and key is not None:
                        found[key] = float(value)
    return found


def read_run(run_dir: Path, keys: list[str]) -> RunResult:
    """The result of one job folder, labelled by its values of the swept ``keys``."""
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    chosen = dict(str(o).partition("=")[::2] for o in overrides)
    variant = " ".join(f"{k}={chosen[k]}" for k in keys if k in chosen) or run_dir.name
    result = RunResult(variant=variant, run=run_dir.name)
    metrics_file = run_dir / METRICS_FILE
    if (run_dir / FAILED_FILE).is_file():
        result.status = "failed: " + (run_dir / FAILED_FILE).read_text().strip()[:120]
        return result
    if metrics_file.is_file():
        try:
            metrics = json.loads(metrics_file.read_text())
        except (ValueError, UnicodeDecodeError):
            result.status = f"unreadable {METRICS_FILE}"
            return result
        if not isinstance(metrics, dict):
            result.status = f"unreadable {METRICS_FILE}"
            return result
        result.psnr_mu, result.psnr_l = metrics.get("psnr_mu_after"), metrics.get("psnr_l_after")
        result.identity_psnr_mu = metrics.get("psnr_mu_identity")
        result.steps, result.status = metrics.get("steps"), "done"
        return result
    metrics = _last_csv_metrics(run_dir)
    result.status = "running or stopped"
    result.psnr_mu, result.psnr_l = metrics.get("val/psnr_mu"), metrics.get("val/psnr_l")
    result.identity_psnr_mu = metrics.get("val/psnr_mu_identity")
    result.steps = int(metrics["step"]) if "step" in metrics else None
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
    runs = [
        read_run(d, keys)
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
        for path in sorted(run_dir.glob("**/metrics.csv")):
            with path.open() as f:
                for row in csv.DictReader(f):
                    if row.get(metric) not in ("", None):
                        steps.append(int(float(row["step"])))
                        values.append(float(row[metric]))
        if steps:
            curves[read_run(run_dir, keys).variant] = (steps, values)
    return curves


def _fmt(value: float | int | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def markdown_table(runs: list[RunResult]) -> str:
    """The table in GitHub markdown."""
    head = "| variant | PSNR-mu (dB) | PSNR-L (dB) | LDR identity PSNR-mu | steps | status |"
    lines = [head, "|---|---:|---:|---:|---:|---|"]
    for r in runs:
        cells = [r.variant, _fmt(r.psnr_mu), _fmt(r.psnr_l), _fmt(r.identity_psnr_mu)]
        lines.append("| " + " | ".join([*cells, _fmt(r.steps), r.status]) + " |")
    lines += ["", SCORES_NOTE]
    return "\n".join(lines)


def write_report(sweep_dir: str | Path, runs: list[RunResult]) -> list[Path]:
    """``report.md``, ``report.csv`` and ``report.png`` in the sweep folder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep_dir = Path(sweep_dir)
    md, table, png = (sweep_dir / f"report.{ext}" for ext in ("md", "csv", "png"))
    OutputFolder(sweep_dir, "hdrunet-report").claim([md, table, png])
    with atomic_path(md) as tmp:
        tmp.write_text(markdown_table(runs) + "\n")
    with atomic_path(table) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for r in runs:
            writer.writerow(
                [
                    _fmt(getattr(r, c)) if c not in ("variant", "status", "run") else getattr(r, c)
                    for c in COLUMNS
                ]
            )
    scored = [r for r in runs if r.psnr_mu is not None]
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(scored) + 2), 3.5), dpi=100)
    ax.bar([r.variant for r in scored], [r.psnr_mu for r in scored], color="tab:blue")
    identity = [r.identity_psnr_mu for r in scored if r.identity_psnr_mu is not None]
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
    with atomic_path(png) as tmp:
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
    print(markdown_table(runs))
    missing = [r.variant for r in runs if r.status == "missing"]
    if missing:
        print(f"\nmissing runs: {', '.join(missing)}")
    print("\nwritten: " + ", ".join(str(p) for p in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
