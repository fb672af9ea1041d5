"""Real HDR photographs for examples, training and held-out tests, fetched from package
registries (nothing is committed to this repository).

Sources (``SOURCES``), each recorded with its licence in ``<dest>/SOURCES.json``:

- ``poly_haven``: the PyPI wheel ``viser==1.0.16`` carries ten CC0 Poly Haven panoramas
  (Radiance ``.hdr``, 1024x512);
- ``pmndrs``: the npm package ``@pmndrs/assets@1.7.0`` (CC0-1.0) carries 18 OpenEXR
  panoramas (512x256) as base64 JavaScript modules. Ten of them are the same scenes as
  ``poly_haven``; ``pmndrs_held_out`` keeps the other eight (bridge, esplanade, hall, lab,
  sky, sunrise, venice, workshop), which a model trained on ``poly_haven`` never saw.

python -m hdrunet_pl.samples data/hdri                       # poly_haven
python -m hdrunet_pl.samples data/held_out --source pmndrs_held_out
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from hdrunet_pl.data.walk import files_under
from hdrunet_pl.errors import ERROR_STATUS, INTERRUPTED_STATUS, HDRUNetError
from hdrunet_pl.io import NEW_FILE_MODE, is_hdr_ground_truth

VISER_SPEC = "viser==1.0.16"
HDRI_FOLDER = "viser/client/public/hdri/"
PMNDRS_PACKAGE = "@pmndrs/assets"
PMNDRS_VERSION = "1.7.0"
NPM_REGISTRY = "https://registry.npmjs.org"
PMNDRS_SAME_AS_POLY_HAVEN = frozenset(
    [
        "apartment",
        "city",
        "dawn",
        "forest",
        "lobby",
        "night",
        "park",
        "studio",
        "sunset",
        "warehouse",
    ]
)
"""The pmndrs panoramas that show ``poly_haven`` scenes (the correlation of their log
luminance with that scene's is 0.86-1.0; the other eight are other scenes, checked by eye,
and correlate at most 0.85 with any poly_haven panorama)."""
PMNDRS_HELD_OUT = frozenset(
    ["bridge", "esplanade", "hall", "lab", "sky", "sunrise", "venice", "workshop"]
)
"""The other eight pmndrs panoramas: scenes that no ``poly_haven`` file shows."""
DOWNLOAD_TIMEOUT = 300
"""Seconds that a package's download may take before it counts as failed."""
EQUIRECT_BAND = (0.25, 0.75)
"""Rows (fractions) of an equirectangular panorama away from its distorted poles."""
RECORD_FILE = "SOURCES.json"


@dataclass(frozen=True)
class SampleRecord:
    """Where one sample file comes from and under which licence."""

    file: str
    package: str
    registry: str
    licence: str
    sha256: str = ""  # of the bytes written (records of earlier versions have none)


def _recorded(dest: Path) -> dict[str, dict]:
    """The records of ``dest/SOURCES.json`` (empty when there is none); refuses a file of
    that name that this module did not write."""
    path = dest / RECORD_FILE
    if not path.is_file():
        return {}
    try:
        known = json.loads(path.read_text())
        if not all(isinstance(v, dict) and "licence" in v for v in known.values()):
            raise ValueError
    except (ValueError, AttributeError, RecursionError, UnicodeDecodeError):
        raise HDRUNetError(
            f"{path}: not a record of hdrunet_pl.samples; not written over (choose another folder)"
        ) from None
    return known


def _record(dest: Path, records: list[SampleRecord]) -> None:
    known = _recorded(dest)
    known.update({r.file: asdict(r) for r in records})
    _write(dest / RECORD_FILE, (json.dumps(dict(sorted(known.items())), indent=2) + "\n").encode())


def _write(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` through a new temporary file beside it (never one of
    the folder's files), renamed over ``target`` once complete."""
    handle, part = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        os.fchmod(handle, NEW_FILE_MODE)  # as open() would make it, not mkstemp's 0600
        with open(handle, "wb") as f:
            f.write(data)
        Path(part).replace(target)
    except BaseException:
        Path(part).unlink(missing_ok=True)
        raise


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def _folder_lock(dest: Path) -> Iterator[None]:
    """Hold an exclusive lock on folder ``dest`` itself (no lock file is left in it): two
    fetches at once would otherwise each record only their own files in SOURCES.json."""
    handle = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # releases the lock


def _recorded_hash(record: dict) -> str:
    """The sha256 a record holds, in lower case ("" for none, or one that is not text)."""
    value = record.get("sha256")
    return value.lower() if isinstance(value, str) else ""


def _fetched_here(dest: Path, names: list[str]) -> bool:
    """Whether every file of ``names`` is in ``dest`` as this module fetched it (its bytes'
    sha256 as recorded); False when one is missing or unrecorded, or its record (of an
    earlier version) has no sha256: it is fetched again. Refuses (one line, before any
    download) a file that was changed since it was fetched, and a folder or link in a
    file's place: the set it belongs to would no longer be the one named."""
    known = _recorded(dest) if dest.is_dir() else {}
    for name in names:
        path = dest / name
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise HDRUNetError(
                f"{path}: not a regular file (a folder or a link) where a fetched file goes; "
                "move it away"
            )
    for name in names:
        if not ((dest / name).is_file() and _recorded_hash(known.get(name, {}))):
            return False
    for name in names:
        if _sha256((dest / name).read_bytes()) != _recorded_hash(known[name]):
            raise HDRUNetError(
                f"{dest / name}: changed since hdrunet_pl.samples fetched it (its sha256 is "
                f"not the one in {RECORD_FILE}); delete it to fetch it again"
            )
    return True


def _unhashed(dest: Path, names: list[str]) -> bool:
    """Every file of ``names`` present and recorded, by an earlier version without sha256."""
    known = _recorded(dest) if dest.is_dir() else {}
    return all((dest / name).is_file() and name in known for name in names)


def _fetch_again_note(dest: Path, names: list[str]) -> str:
    """Why a complete folder is fetched again, for a download's error ("" otherwise)."""
    if not _unhashed(dest, names):
        return ""
    return (
        f" (the files are in {dest}, but {RECORD_FILE}, written by an earlier version, has "
        "no sha256 to check them against: they are fetched again once to record it)"
    )


def _write_samples(dest: Path, files: dict[str, bytes], records: list[SampleRecord]) -> None:
    """Write ``files`` (name -> bytes) into ``dest``, each recorded in SOURCES.json as soon
    as it is written, so that a fetch cut short (Ctrl-C, a full disk) goes on when run
    again. Refuses (one line, before writing anything) a file of such a name that this
    module did not fetch, or that was changed since it did: a sample never replaces a
    user's file or a user's edit. A file that already holds the bytes is left as it is (and
    recorded: one written just before a cut). Fetches into one folder take turns."""
    with _folder_lock(dest):
        known = _recorded(dest)
        for name, data in files.items():
            path = dest / name
            if not path.exists() and not path.is_symlink():
                continue
            if not path.is_file() or path.is_symlink():
                raise HDRUNetError(
                    f"{path}: exists and was not fetched by hdrunet_pl.samples; not written "
                    "over (choose another folder)"
                )
            current = path.read_bytes()
            if current == data:
                continue  # nothing would change: this module's, or the very same bytes
            if name not in known:
                raise HDRUNetError(
                    f"{path}: exists and was not fetched by hdrunet_pl.samples; not written "
                    "over (choose another folder)"
                )
            if _sha256(current) != _recorded_hash(known[name]):
                raise HDRUNetError(
                    f"{path}: changed since hdrunet_pl.samples fetched it; not written over "
                    "(move it away, or delete it to fetch it again)"
                )
        for record in records:
            data = files[record.file]
            record = replace(record, sha256=_sha256(data))
            path = dest / record.file
            try:
                if not (path.is_file() and path.read_bytes() == data):
                    _write(path, data)
                if known.get(record.file) != asdict(record):
                    _record(dest, [record])
            except OSError as err:  # a full disk: what is written so far is kept
                raise HDRUNetError(
                    f"{path}: could not write it ({err.strerror or err}); the files written "
                    "before it are kept and recorded: run the fetch again to go on"
                ) from None


def poly_haven_hdris(dest: str | Path) -> list[Path]:
    """The ten Poly Haven ``.hdr`` panoramas in ``dest`` (downloaded once, then reused)."""
    dest = Path(dest)
    _check_training_folder(dest)
    known = _recorded(dest) if dest.is_dir() else {}
    found = sorted(name for name, record in known.items() if record.get("package") == VISER_SPEC)
    # fetched here before (a user's own .hdr files do not count)
    if len(found) >= 10 and _fetched_here(dest, found):
        return [dest / name for name in found]
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--timeout", "30"]
        cmd += ["-d", tmp, VISER_SPEC]
        note = _fetch_again_note(dest, found) if found else ""
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise HDRUNetError(
                f"could not download {VISER_SPEC} within {DOWNLOAD_TIMEOUT} s (offline?){note}"
            ) from None
        wheels = list(Path(tmp).glob("viser-*.whl"))
        if result.returncode or not wheels:
            said = result.stderr.strip().splitlines()  # pip's retries before its last line
            raise HDRUNetError(
                f"could not download {VISER_SPEC}: {said[-1] if said else 'no wheel'}{note}"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            files = {
                Path(m).name: wheel.read(m)
                for m in wheel.namelist()
                if m.startswith(HDRI_FOLDER) and m.endswith(".hdr")
            }
    records = [SampleRecord(name, VISER_SPEC, "PyPI", "CC0 (Poly Haven)") for name in files]
    _write_samples(dest, files, records)
    return sorted(dest / record.file for record in records)


def _npm_tarball(package: str, version: str) -> tuple[bytes, str]:
    """The package's .tgz from the npm registry, checked against the registry's sha512;
    and the licence its metadata declares."""
    try:
        with urllib.request.urlopen(
            f"{NPM_REGISTRY}/{package}/{version}", timeout=DOWNLOAD_TIMEOUT
        ) as response:
            meta = json.load(response)
        with urllib.request.urlopen(meta["dist"]["tarball"], timeout=DOWNLOAD_TIMEOUT) as r:
            data = r.read()
    except OSError as err:
        raise HDRUNetError(f"could not download {package}@{version} from npm: {err}") from None
    algorithm, _, expected = meta["dist"]["integrity"].partition("-")
    digest = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if digest != expected:
        raise HDRUNetError(f"{package}@{version}: the download does not match its {algorithm}")
    return data, str(meta.get("license", "unknown"))


def _records_of(folder: Path) -> dict[str, dict]:
    """The records of ``folder/SOURCES.json``; empty when there is none, or when it is
    somebody else's file of that name (not a record of this module)."""
    try:
        return _recorded(folder) if folder.is_dir() else {}
    except HDRUNetError:
        return {}


def _holds_held_out(known: dict[str, dict]) -> bool:
    """Whether records are those of a held-out folder: every file one of its scenes."""
    return bool(known) and set(known) <= {f"{scene}.exr" for scene in PMNDRS_HELD_OUT}


def _check_held_out_folder(dest: Path, names: list[str]) -> None:
    """Refuses (one line) a held-out folder that holds other HDR files, at any depth:
    ``data=held_out`` scores every HDR file under its root, so a training scene there
    would be scored as held out; and one inside a folder that this module fetched training
    scenes into: training on that folder (``data=hdr_folder`` searches subfolders) would
    train on the held-out scenes."""
    for folder in dest.resolve().parents:
        known = _records_of(folder)
        if known and not _holds_held_out(known):
            raise HDRUNetError(
                f"{folder} (above {dest}) holds training scenes fetched by hdrunet_pl.samples, "
                "and training on it (data=hdr_folder searches subfolders) would include the "
                "held-out scenes: fetch them into a folder outside it"
            )
    if not dest.is_dir():
        return
    others = sorted(  # as data=held_out finds them: symlinked folders, NTIRE pairs too
        str(p.relative_to(dest))
        for p in files_under(dest)
        if is_hdr_ground_truth(p) and str(p.relative_to(dest)) not in names
    )
    held_out_below = sorted(
        record.parent
        for record in dest.rglob(RECORD_FILE)
        if record.parent != dest and _holds_held_out(_records_of(record.parent))
    )
    if others and held_out_below:  # the set fetched into a subfolder before
        raise HDRUNetError(
            f"{dest} holds the held-out scenes already, in {held_out_below[0]}: give that "
            "folder as data.root (a second copy in the folder above would be scored twice)"
        )
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise HDRUNetError(
            f"{dest} holds {len(others)} HDR file(s) that are not held-out scenes ({shown}); "
            "data=held_out would score them too: fetch the held-out set into its own folder"
        )


def _check_training_folder(dest: Path) -> None:
    """Refuses (one line) to fetch training photographs into the folder of the held-out
    scenes (every file it records is one of them) or below it: they would be scored as
    held out; and into a folder that holds such a folder at any depth (symlinked folders
    too): training on it (``data=hdr_folder`` searches subfolders) would train on them."""
    for folder in (dest, *dest.resolve().parents):  # data=held_out reads subfolders too
        if _holds_held_out(_records_of(folder)):
            raise HDRUNetError(
                f"{folder} holds the held-out scenes (--source pmndrs_held_out), and "
                f"data=held_out scores every HDR file below it: fetch into a folder outside it"
            )
    if not dest.is_dir():
        return
    for path in files_under(dest):  # as data=hdr_folder finds its files
        if path.name == RECORD_FILE and _holds_held_out(_records_of(path.parent)):
            raise HDRUNetError(
                f"{path.parent} (below {dest}) holds the held-out scenes (--source "
                f"pmndrs_held_out), and training on {dest} (data=hdr_folder searches "
                "subfolders) would include them: fetch into a folder that does not hold them"
            )


def pmndrs_exrs(dest: str | Path, held_out_only: bool = False) -> list[Path]:
    """The OpenEXR panoramas of ``@pmndrs/assets`` in ``dest`` (downloaded once); with
    ``held_out_only``, only the eight scenes that are not ``poly_haven``'s, into a folder
    that holds no other HDR file."""
    dest = Path(dest)
    scenes = PMNDRS_HELD_OUT if held_out_only else PMNDRS_HELD_OUT | PMNDRS_SAME_AS_POLY_HAVEN
    names = sorted(f"{scene}.exr" for scene in scenes)
    if held_out_only:
        _check_held_out_folder(dest, names)
    else:
        _check_training_folder(dest)
    if _fetched_here(dest, names):
        return [dest / name for name in names]
    dest.mkdir(parents=True, exist_ok=True)
    try:
        data, licence = _npm_tarball(PMNDRS_PACKAGE, PMNDRS_VERSION)
    except HDRUNetError as err:
        raise HDRUNetError(f"{err}{_fetch_again_note(dest, names)}") from None
    package = f"{PMNDRS_PACKAGE}@{PMNDRS_VERSION}"
    skip = PMNDRS_SAME_AS_POLY_HAVEN if held_out_only else frozenset()
    written = extract_npm_exrs(data, dest, package, licence, skip)
    return [path for path in written if path.name in names]


def extract_npm_exrs(
    tarball: bytes, dest: Path, package: str, licence: str, skip: frozenset[str] = frozenset()
) -> list[Path]:
    """The ``hdri/<scene>.exr.js`` modules of an npm .tgz (``export default
    'data:application/exr;base64,...'``) decoded into ``dest/<scene>.exr``, except the
    scenes in ``skip``; each file is recorded with ``package`` and ``licence``."""
    records = []
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        members = {
            Path(m.name).name.removesuffix(".exr.js"): m
            for m in archive.getmembers()
            if m.name.startswith("package/hdri/") and m.name.endswith(".exr.js")
        }
        files = {}
        for scene in sorted(scene for scene in members if scene not in skip):
            module = archive.extractfile(members[scene]).read().decode()
            start = module.index("base64,") + len("base64,")
            payload = module[start:].strip().rstrip(";").rstrip("'\"")
            files[f"{scene}.exr"] = base64.b64decode(payload)
            records.append(SampleRecord(f"{scene}.exr", package, "npm", licence))
    _write_samples(dest, files, records)
    return sorted(dest / record.file for record in records)


SOURCES = {
    "poly_haven": poly_haven_hdris,
    "pmndrs": pmndrs_exrs,
    "pmndrs_held_out": lambda dest: pmndrs_exrs(dest, held_out_only=True),
}
"""Source name -> function(dest) that fetches its files into ``dest`` and lists them."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hdrunet_pl.samples",
        description="Fetch openly licensed HDR photographs from package registries.",
    )
    parser.add_argument(
        "dest", nargs="?", default="hdri", help="folder for the files (default: ./hdri)"
    )
    parser.add_argument(
        "--source", choices=sorted(SOURCES), default="poly_haven", help="which set to fetch"
    )
    args = parser.parse_args(argv)
    if not args.dest.strip():  # an unset $DEST: not the current folder
        print(
            "samples: error: an empty folder name; give the folder for the files", file=sys.stderr
        )
        return ERROR_STATUS
    if Path(args.dest).exists() and not Path(args.dest).is_dir():  # mkdir: "File exists"
        print(
            f"samples: error: {args.dest}: is a file; give a folder for the files", file=sys.stderr
        )
        return ERROR_STATUS
    try:
        for path in SOURCES[args.source](args.dest):
            print(path)
    except HDRUNetError as err:
        print(f"samples: error: {err}", file=sys.stderr)
        return ERROR_STATUS
    except OSError as err:  # e.g. a destination that is a file, or not writable
        print(f"samples: error: {err.filename or args.dest}: {err.strerror}", file=sys.stderr)
        return ERROR_STATUS
    except KeyboardInterrupt:
        print(
            "samples: interrupted; the files written so far are kept and recorded: run the "
            "same command again to go on",
            file=sys.stderr,
        )
        return INTERRUPTED_STATUS
    return 0


if __name__ == "__main__":
    sys.exit(main())
