"""Where results go: every tool writes through an :class:`OutputFolder`, which never
replaces or deletes a file that this package did not write.

An output folder keeps a manifest, ``.hdrunet-outputs``: one line per file the package
wrote there (its name relative to the folder). A file is entered before it gets its final
name, so a kill in between leaves at worst a listed name without a file. A file that
exists but is not listed (the user's data, another program's results, an input) is never
written over or deleted; a tool that would have to stops with one line instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from hdrunet_pl.errors import HDRUNetError

MANIFEST = ".hdrunet-outputs"
"""Name of the manifest file in an output folder."""


class OutputFolder:
    """A folder that ``tool`` writes into, with the files it may write over.

    Args:
        path: the folder (made when missing).
        tool: the command's name, for messages (``hdrunet-predict``).
        inputs: files the tool reads; never written over, even when listed as outputs.
    """

    def __init__(self, path: str | Path, tool: str, inputs: Iterable[Path] = ()) -> None:
        self.path = Path(path)
        self.tool = tool
        if self.path.exists() and not self.path.is_dir():
            raise HDRUNetError(f"output {self.path}: is a file; give a folder for the results")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise HDRUNetError(f"output {self.path}: cannot be made ({err.strerror})") from None
        self._inputs = {p.resolve() for p in inputs}
        manifest = self.path / MANIFEST
        self._ours = set(manifest.read_text().splitlines()) if manifest.is_file() else set()

    def _name(self, path: Path) -> str:
        return path.resolve().relative_to(self.path.resolve()).as_posix()

    def owns(self, path: Path) -> bool:
        """True when ``path`` (in this folder) was written by this package."""
        return self._name(path) in self._ours

    def foreign(self, paths: Iterable[Path]) -> list[Path]:
        """The files among ``paths`` that exist but must not be written over."""
        return [
            p for p in paths if p.resolve() in self._inputs or (p.exists() and not self.owns(p))
        ]

    def claim(self, paths: Iterable[Path]) -> None:
        """Enter ``paths`` as this package's outputs before they are written; refuses (one
        line) when any of them exists and was not written by this package."""
        paths = list(paths)
        refused = self.foreign(paths)
        if refused:
            raise HDRUNetError(
                f"{refused[0]}: exists and was not written by {self.tool}; not written over "
                "(move it, or choose another output folder)"
            )
        new = [self._name(p) for p in paths if not self.owns(p)]
        if new:
            try:
                with (self.path / MANIFEST).open("a") as f:
                    f.write("".join(f"{name}\n" for name in new))
            except OSError as err:
                raise HDRUNetError(
                    f"output {self.path}: cannot be written ({err.strerror})"
                ) from None
            self._ours.update(new)

    def complete(self, paths: Iterable[Path]) -> bool:
        """True when every file of a result group exists and was written by this package."""
        return all(p.is_file() and self.owns(p) for p in paths)
