"""Finding data files under a root folder, symlinked subfolders included."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def files_under(root: str | Path) -> Iterator[Path]:
    """Every file under ``root``, following symlinked subfolders (each real folder is
    visited once, so symlink loops end). Paths keep the names they are reached by."""
    seen: set[tuple[int, int]] = set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        info = os.stat(folder)
        if (info.st_dev, info.st_ino) in seen:
            subfolders.clear()
            continue
        seen.add((info.st_dev, info.st_ino))
        subfolders.sort()
        for name in sorted(names):
            path = Path(folder) / name
            if path.is_file():
                yield path
