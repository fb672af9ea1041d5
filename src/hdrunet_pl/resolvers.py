"""OmegaConf resolvers used by the config tree (registered when ``hdrunet_pl`` is imported).

- ``${hdrunet.dirname:text}``: ``text`` made safe as one folder name;
- ``${hdrunet.suffix:text}``: ``_text`` made safe, or nothing for empty text;
- ``${hdrunet.auto_precision:}``: ``bf16-mixed`` where bf16 is fast, else ``32-true``;
- ``${hdrunet.workers:n}``: ``n`` DataLoader workers, at most as many as this process may
  use CPUs;
- ``${hdrunet.hydra_subdir:run_dir}``: where Hydra keeps a job's record in ``run_dir``
  (``.hydra``), or nothing when the folder already holds a record that is not this job's.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from omegaconf import OmegaConf


def dirname(text: str, limit: int = 120) -> str:
    """A safe single folder name from Hydra's ``override_dirname``: letters, digits and
    ``._+-`` only (no ``/``, and no ``=`` or ``,``, which Hydra's override parser would read
    in a pasted path), bounded length."""
    safe = re.sub(r"[^A-Za-z0-9._+-]+", "_", str(text)).strip("_")
    return safe[:limit]


def suffix(text: str) -> str:
    """``_text`` (made safe with :func:`dirname`), or nothing for empty text."""
    safe = dirname(text)
    return f"_{safe}" if safe else ""


def auto_precision() -> str:
    """``bf16-mixed`` where bf16 is fast (AVX-512 bf16/AMX CPUs, Ampere+ GPUs), else ``32-true``."""
    from hdrunet_pl.inference import bf16_supported, resolve_device

    return "bf16-mixed" if bf16_supported(resolve_device("auto")) else "32-true"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity where the OS reports one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def workers(configured: int) -> int:
    """``configured`` DataLoader workers, but no more than :func:`available_cpus` (the
    number above which torch warns that workers will compete for CPUs)."""
    return max(0, min(int(configured), available_cpus()))


def hydra_subdir(run_dir: str | None) -> str | None:
    """Hydra's ``output_subdir`` for a job in ``run_dir``: ``.hydra`` in a new or empty
    folder (or one where a start of this package stopped before its first checkpoint);
    ``None`` (Hydra writes no record) in a folder that holds a run of this package (its
    ``.hydra/`` record of the first start stays, whether this start is refused or resumes
    it; each start's overrides go to the run's ``overrides.yaml``) or files of somebody
    else's (which the job then refuses, having written nothing over them)."""
    from hdrunet_pl.run_files import foreign_run_folder, is_package_run  # yaml, on demand

    if run_dir is None:  # not a job (``--cfg hydra``)
        return ".hydra"
    folder = Path(run_dir)
    if folder.is_dir() and (is_package_run(folder) or foreign_run_folder(folder)):
        return None
    return ".hydra"


def register() -> None:
    """Register the resolvers (idempotent)."""
    OmegaConf.register_new_resolver("hdrunet.dirname", dirname, replace=True)
    OmegaConf.register_new_resolver("hdrunet.suffix", suffix, replace=True)
    OmegaConf.register_new_resolver("hdrunet.auto_precision", auto_precision, replace=True)
    OmegaConf.register_new_resolver("hdrunet.workers", workers, replace=True)
    OmegaConf.register_new_resolver("hdrunet.hydra_subdir", hydra_subdir, replace=True)


register()
