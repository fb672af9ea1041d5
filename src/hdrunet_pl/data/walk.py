"""Finding data files under a root folder, symlinked subfolders included."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def _folders(root: str | Path) -> Iterator[tuple[str, list[str]]]:
    """Each folder under ``root`` (``root`` included), symlinked subfolders followed, each
    real folder visited once (so symlink loops end), in sorted order: (folder, the names of
    its entries that are not folders)."""
    seen: set[tuple[int, int]] = set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        info = os.stat(folder)
        if (info.st_dev, info.st_ino) in seen:
            subfolders.clear()
            continue
        seen.add((info.st_dev, info.st_ino))
        subfolders.sort()
        yield folder, sorted(names)


def files_under(root: str | Path, not_files: list[Path] | None = None) -> Iterator[Path]:
    """Every file under ``root``, following symlinked subfolders (each real folder is
    visited once, so symlink loops end). Paths keep the names they are reached by. Entries
    that are no files (a link that leads nowhere, a pipe, a socket) are left out, and added
    to ``not_files`` when it is given."""
    for folder, names in _folders(root):
        for name in names:
            path = Path(folder) / name
            if path.is_file():
                yield path
            elif not_files is not None:
                not_files.append(path)


def folder_holding(root: str | Path, target: str | Path) -> Path | None:
    """The folder under ``root`` (``root`` itself, or a subfolder, symlinked ones followed)
    whose real path holds ``target`` (which need not exist yet), by the name it is reached
    by; ``None`` when no folder of ``root``'s tree holds it. A tool that writes ``target``
    would otherwise write into a data set that it, or the next run, reads from ``root``."""
    target = Path(target).resolve()
    if target.is_relative_to(Path(root).resolve()):  # root itself, made or not yet
        return Path(root)
    for folder, names in _folders(root):
        if target.is_relative_to(Path(folder).resolve()):
            return Path(folder)
        for name in names:  # a link that leads nowhere yet: to the target, made later
            link = Path(folder) / name
            # realpath, not resolve(): a link in a loop raises there (RuntimeError, 3.11)
            if (
                link.is_symlink()
                and not link.exists()
                and target.is_relative_to(os.path.realpath(link))
            ):
                return link
    return None
