"""Where results go: every tool writes through an :class:`OutputFolder`, which never
replaces or deletes a file that this package did not write.

An output folder keeps a manifest, ``.hdrunet-outputs``: a line with a file's name
(relative to the folder) when the package is about to write it, and a line with its name,
size, modification time, the writing tool and what it was made from (its origin: the input
and settings, as a digest; see :func:`origin`) once it is written. A result counts as done
(a re-run skips it) only when it was made from the same origin. A file may be written
over only when the manifest records it as written and it is still that file (same size
and time), and deleted only by the tool that wrote it: the user's data, another program's
results, an input, a file put where a failed or killed run left only a name, and an output
changed since are never written over or deleted; a tool that would have to stops with one
line instead. Folders (stream shards) are owned by name.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from hdrunet_pl.errors import HDRUNetError
from hdrunet_pl.io import NEW_FILE_MODE, atomic_path, new_temporary, write_checked

MANIFEST = ".hdrunet-outputs"
"""Name of the manifest file in an output folder."""
MANIFEST_SLACK = 100
"""Superseded manifest lines tolerated beyond twice the current ones before it is rewritten."""


def file_identity(path: str | Path) -> str:
    """A file as a result's origin: its resolved path, size and modification time (another
    file, or the same name changed since, gives another identity)."""
    path = Path(path).resolve()
    stat = path.stat()
    return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"


def origin(*parts: str) -> str:
    """What a result was made from (inputs' :func:`file_identity`, settings), as one short
    digest for the manifest."""
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogateescape")).hexdigest()[:32]


def check_writable(folder: str | Path) -> None:
    """Refuse, in one line, an output folder that cannot be written: a probe file is made
    and removed in it, or in the nearest folder above it that exists (which the tool would
    make it in). Nothing is left behind either way."""
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.is_dir()), None)
    if existing is None:
        return  # refused later, where the folder is made, with the OS's reason
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".hdrunet-probe-")
    except OSError as err:
        raise HDRUNetError(f"output {folder}: cannot be written ({err.strerror})") from None
    os.close(handle)
    os.unlink(probe)


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
        self._lock = threading.Lock()  # writer threads record their files
        self._read_manifest()

    def _read_manifest(self) -> None:
        """This package's files in the folder, as its manifest records them now."""
        self._ours: set[str] = set()  # names claimed
        self._stats: dict[str, tuple[int, int]] = {}  # name -> (size, mtime_ns) as written
        manifest = self.path / MANIFEST
        if manifest.is_symlink() or (manifest.exists() and not manifest.is_file()):
            # its lines say which files may be written over: only this package's own file
            raise HDRUNetError(
                f"{manifest}: not a file this package wrote (a symbolic link?); nothing "
                "written (remove it, or choose another output folder)"
            )
        self._writers: dict[str, str] = {}  # name -> the tool that wrote it (when recorded)
        self._origins: dict[str, str] = {}  # name -> what it was made from (when recorded)
        self._by_origin: dict[str, list[str]] | None = None  # its inverse, made when asked
        text = manifest.read_text(errors="replace") if manifest.is_file() else ""
        # lines end in "\n" only: a name may hold U+0085, U+2028 or U+2029, which
        # str.splitlines() also breaks at (one such name split another file's record)
        lines = [line for line in text.split("\n") if line]
        self._lines = len(lines)
        for line in lines:
            # "name" (claimed) or "name<TAB>size<TAB>mtime[<TAB>tool[<TAB>origin]]"
            # (written); names hold no tab (control characters are refused)
            name, *fields = line.split("\t")
            if len(fields) in (2, 3, 4) and fields[0].isdigit() and fields[1].isdigit():
                self._stats[name] = (int(fields[0]), int(fields[1]))
                if len(fields) >= 3:
                    self._writers[name] = fields[2]
                if len(fields) == 4:
                    self._origins[name] = fields[3]
                else:  # written again without an origin: the old one no longer holds
                    self._origins.pop(name, None)
            else:
                name = line
            self._ours.add(name)

    @contextlib.contextmanager
    def sole_writer(self) -> Iterator[OutputFolder]:
        """Hold the folder for one run of a tool: a second run of this package writing into
        it at the same time stops with one line, instead of each taking the other's results
        for files it did not write (or skipping them half-written). The lock is the
        folder's own (no file is left in it) and ends with the run or its process."""
        descriptor = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        held = [descriptor]

        def close_in_child() -> None:
            # a forked worker's copy would keep the lock after this run ends (killed, say)
            if held:
                with contextlib.suppress(OSError):
                    os.close(held.pop())

        os.register_at_fork(after_in_child=close_in_child)
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise HDRUNetError(
                    f"output {self.path}: in use by another run of this package; wait for it "
                    "to end, or choose another output folder"
                ) from None
            self._read_manifest()  # as the run before this one left it
            self._compact()
            yield self
        finally:
            held.clear()
            os.close(descriptor)  # releases the lock

    def _compact(self) -> None:
        """Rewrite the manifest with one line per file, its latest record, once superseded
        lines outnumber the current ones by far: a folder cut again and again would grow it
        without bound (and every worker reads it whole). Only while the folder is held."""
        if self._lines <= 2 * len(self._ours) + MANIFEST_SLACK:
            return
        lines = []
        for name in sorted(self._ours):
            fields = [name]
            if name in self._stats:
                fields += [str(v) for v in self._stats[name]]
                if name in self._writers:
                    fields.append(self._writers[name])
                    if name in self._origins:
                        fields.append(self._origins[name])
            lines.append("\t".join(fields) + "\n")
        with atomic_path(self.path / MANIFEST) as tmp:
            tmp.write_text("".join(lines))
        self._lines = len(lines)

    def _name(self, path: Path) -> str:
        # the parent is resolved, not the file: a symbolic link in the folder is named as
        # itself (and is never this package's), wherever it points
        try:
            name = (path.parent.resolve() / path.name).relative_to(self.path.resolve()).as_posix()
        except ValueError:  # a symbolic link to a folder elsewhere
            raise HDRUNetError(
                f"{path}: leads outside the output folder {self.path} (a symbolic link?); "
                "not written"
            ) from None
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise HDRUNetError(
                f"{name.encode('utf-8', 'surrogateescape')!r}: a file name that is not valid "
                "UTF-8 cannot be recorded in the output manifest; rename the input"
            ) from None
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise HDRUNetError(
                f"{name!r}: a file name with a control character (a newline, a tab) cannot be "
                "recorded in the output manifest; rename the input"
            )
        return name

    def owns(self, path: Path) -> bool:
        """True when ``path`` (in this folder) was written by this tool (or recorded without
        its tool) and is unchanged since (a folder: when this package made it); another
        tool's result (a prediction where eval writes ``best_<name>.png``) is not this
        tool's to write over."""
        name = self._name(path)
        if name not in self._ours or path.is_symlink():  # this package writes no links
            return False
        if self._writers.get(name, self.tool) != self.tool:
            return False
        try:
            stat = path.stat()
        except OSError:
            return True  # nothing there to lose
        if path.is_dir():
            return True
        return self._stats.get(name) == (stat.st_size, stat.st_mtime_ns)

    def foreign(self, paths: Iterable[Path]) -> list[Path]:
        """The files among ``paths`` that exist but must not be written over."""
        return [
            p
            for p in paths
            if p.resolve() in self._inputs or ((p.exists() or p.is_symlink()) and not self.owns(p))
        ]

    def claim(self, paths: Iterable[Path]) -> None:
        """Enter ``paths`` as this package's outputs before they are written; refuses (one
        line) when any of them exists and was not written by this package."""
        paths = list(paths)
        refused = self.foreign(paths)
        inputs = [p for p in refused if p.resolve() in self._inputs]
        if inputs:  # an input given through a link into this folder, say
            raise HDRUNetError(
                f"{inputs[0]}: is one of this run's inputs ({inputs[0].resolve()}); not written "
                "over (choose another output folder)"
            )
        writer = self._writers.get(self._name(refused[0]), self.tool) if refused else self.tool
        if writer != self.tool:
            raise HDRUNetError(
                f"{refused[0]}: a result of {writer}; not written over by {self.tool} (choose "
                "another output folder)"
            )
        if refused and self._name(refused[0]) in self._ours.difference(self._stats):
            # reserved by a run of this package that never recorded it written: a killed
            # run's file, or one put there since; which, only the user can tell
            raise HDRUNetError(
                f"{refused[0]}: its name was reserved by a run of this package that stopped "
                "before recording it written (killed?), and a file is there now; not written "
                "over (delete it if it is that run's, to go on)"
            )
        if refused:
            raise HDRUNetError(
                f"{refused[0]}: exists and was not written by {self.tool} (or was changed "
                "since); not written over (move it, or choose another output folder)"
            )
        new = [self._name(p) for p in paths if self._name(p) not in self._ours]
        self._append(new, new)

    def written(
        self, paths: Iterable[Path], made_from: str = "", sources: Iterable[Path] | None = None
    ) -> None:
        """Record ``paths``, just written by this package (claimed before), as its files:
        they may be written over until they change. ``made_from``: their :func:`origin`
        (what :meth:`complete` compares). ``sources``: the files to take each one's size and
        time from (temporaries about to be renamed to them: a rename keeps both). Safe to
        call from writer threads."""
        paths = list(paths)
        records = {}
        for path, source in zip(paths, paths if sources is None else sources, strict=True):
            stat = source.stat()
            records[self._name(path)] = (stat.st_size, stat.st_mtime_ns)
        tail = f"\t{made_from}" if made_from else ""
        lines = [
            f"{name}\t{size}\t{mtime}\t{self.tool}{tail}" for name, (size, mtime) in records.items()
        ]
        self._append(lines, list(records))
        with self._lock:
            self._by_origin = None
            self._stats.update(records)
            self._writers.update(dict.fromkeys(records, self.tool))
            for name in records:
                if made_from:
                    self._origins[name] = made_from
                else:
                    self._origins.pop(name, None)

    @contextlib.contextmanager
    def new_file(self, path: Path, made_from: str = "") -> Iterator[Path]:
        """Yield a temporary file beside ``path`` (claimed before) to write; when the block
        ends normally it is :meth:`place`-d (recorded, then renamed), else deleted: the
        recorded counterpart of :func:`~hdrunet_pl.io.atomic_path`."""
        tmp = new_temporary(path)
        try:
            yield tmp
            self.place([path], [tmp], made_from)
        finally:
            tmp.unlink(missing_ok=True)

    def write_bytes(self, path: Path, data: bytes, made_from: str = "") -> None:
        """Write ``data`` as ``path`` (claimed before), read back before it is placed."""
        with self.new_file(path, made_from) as tmp:
            write_checked(tmp, data, path)

    def place(self, paths: list[Path], temporaries: list[Path], made_from: str = "") -> None:
        """Give the written ``temporaries`` (:func:`~hdrunet_pl.io.new_temporary` files in
        this folder) their names ``paths`` (claimed before): this tool's earlier files there
        are removed, the new ones recorded as written, and only then renamed (the last path
        last: an NTIRE PNG after its align ratio). At no moment is a result in place but
        unrecorded, nor an earlier one changed under its record: a run killed anywhere
        leaves only files that a re-run may replace, or temporaries, which
        :func:`~hdrunet_pl.io.remove_dead_temporaries` removes."""
        self.claim(paths)  # still ours: nobody put a file there since the claim
        for path in paths:
            if path.exists() and not path.is_symlink():
                path.unlink()
        self.written(paths, made_from, sources=temporaries)
        for tmp, path in reversed(list(zip(temporaries, paths, strict=True))):
            os.replace(tmp, path)

    def _append(self, lines: list[str], names: list[str]) -> None:
        """Add ``lines`` to the manifest and ``names`` (their files) to this package's."""
        if not lines:
            return
        with self._lock:
            try:
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                with open(os.open(self.path / MANIFEST, flags, NEW_FILE_MODE), "a") as f:
                    f.write("".join(f"{line}\n" for line in lines))
            except OSError as err:
                raise HDRUNetError(
                    f"output {self.path}: cannot be written ({err.strerror})"
                ) from None
            self._ours.update(names)

    def remove_stale(self, patterns: Iterable[str], keep: Iterable[Path]) -> list[Path]:
        """Delete the files matching ``patterns`` (globs relative to the folder) that this
        tool wrote, unchanged since, and that are not in ``keep``: an earlier run's results
        that this run's replace (another run's best image under another name); another
        tool's results (a prediction named ``best_photo.png``) stay. Returns them.
        """
        kept = {self._name(p) for p in keep}

        def mine(path: Path) -> bool:
            try:
                name = self._name(path)  # refuses a path through a link out of the folder
            except HDRUNetError:
                return False
            return (
                path.is_file()
                and not path.is_symlink()
                and name not in kept
                and self._writers.get(name) == self.tool
                and self.owns(path)
            )

        stale = [p for pattern in patterns for p in sorted(self.path.glob(pattern)) if mine(p)]
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    def partners(self, path: Path) -> list[Path]:
        """The other files of ``path``'s result: this tool's files in the folder, unchanged
        since written, that were recorded with the same origin (made from the same input
        with the same settings, in one write), e.g. a PNG's align ratio."""
        name = self._name(path)
        made_from = self._origins.get(name)
        if not made_from or not self.owns(path):
            return []
        with self._lock:
            if self._by_origin is None:  # one pass over the records, not one per file asked
                self._by_origin = {}
                for other, theirs in self._origins.items():
                    self._by_origin.setdefault(theirs, []).append(other)
            names = sorted(self._by_origin.get(made_from, []))
        return [
            self.path / other
            for other in names
            if other != name and self.owns(self.path / other) and (self.path / other).exists()
        ]

    def complete(self, paths: Iterable[Path], made_from: str | None = None) -> bool:
        """True when every file of a result group exists and was written by this tool,
        unchanged since, and (given ``made_from``) made from that :func:`origin`: a result
        of another input of the same name, or of other settings, is not done."""
        return all(
            p.is_file()
            and self.owns(p)
            and (made_from is None or self._origins.get(self._name(p)) == made_from)
            for p in paths
        )
