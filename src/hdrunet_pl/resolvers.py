"""OmegaConf resolvers used by the config tree (registered when ``hdrunet_pl`` is imported).

- ``${hdrunet.dirname:text}``: ``text`` made safe as one folder name;
- ``${hdrunet.suffix:text}``: ``_text`` made safe, or nothing for empty text;
- ``${hdrunet.auto_precision:}``: ``bf16-mixed`` where bf16 is fast, else ``32-true``;
- ``${hdrunet.workers:n}``: ``n`` DataLoader workers, at most as many as this process may
  use CPUs.
"""

from __future__ import annotations

import os
import re

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


def register() -> None:
    """Register the resolvers (idempotent)."""
    OmegaConf.register_new_resolver("hdrunet.dirname", dirname, replace=True)
    OmegaConf.register_new_resolver("hdrunet.suffix", suffix, replace=True)
    OmegaConf.register_new_resolver("hdrunet.auto_precision", auto_precision, replace=True)
    OmegaConf.register_new_resolver("hdrunet.workers", workers, replace=True)


register()
