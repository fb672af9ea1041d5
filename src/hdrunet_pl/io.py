"""Image files: 8-bit LDR, the NTIRE 16-bit PNG + align-ratio pair, OpenEXR, Radiance .hdr
and the portable float map (.pfm).

Every reader returns a float32 ``(H, W, 3)`` RGB array:

- LDR files: values in [0, 1];
- NTIRE PNG pairs: the non-linear HDR (``png / alignratio``), >= 0;
- OpenEXR, Radiance ``.hdr`` (also named ``.pic`` or ``.rgbe``) and ``.pfm``: linear
  radiance, >= 0.

Writers take the same layout, write to a temporary name in the target folder and rename, so
a reader never sees a half-written file. Every failure raises :class:`ImageFileError` naming
the file. Grayscale images are converted to RGB and an alpha channel is dropped; both are
logged.
"""

from __future__ import annotations

import contextlib
import glob
import io
import logging
import os
import re
import struct
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import OpenEXR
from PIL import Image, ImageCms

from hdrunet_pl.constants import GAMMA
from hdrunet_pl.errors import ImageFileError, one_line

log = logging.getLogger(__name__)

PNG16_MAX = 65535
"""The NTIRE align ratio scales the HDR so that its maximum maps to this 16-bit value."""
ALIGNRATIO_SUFFIX = "_alignratio.npy"
GT_SUFFIX = "_gt"
LDR_SUFFIX = "_medium"
LDR_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
RADIANCE_EXTENSIONS = (".hdr", ".pic", ".rgbe")
LINEAR_HDR_EXTENSIONS = (".exr", *RADIANCE_EXTENSIONS, ".pfm")
"""Suffixes of the linear HDR files read here (any case)."""
HDR_EXTENSIONS = (*LINEAR_HDR_EXTENSIONS, ".png")
"""... and the NTIRE 16-bit PNG (with its align ratio), which holds non-linear HDR."""


def is_hdr_ground_truth(path: Path) -> bool:
    """Whether a file is by its name an HDR image that data sets read: a linear HDR file
    (:data:`LINEAR_HDR_EXTENSIONS`) or an NTIRE ``*_gt.png``."""
    suffix = path.suffix.lower()
    return suffix in LINEAR_HDR_EXTENSIONS or (suffix == ".png" and path.stem.endswith(GT_SUFFIX))


_EXR_COMPRESSION = {
    "none": OpenEXR.NO_COMPRESSION,
    "zip": OpenEXR.ZIP_COMPRESSION,
    "piz": OpenEXR.PIZ_COMPRESSION,
    "dwab": OpenEXR.DWAB_COMPRESSION,
}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # PNG colour type -> samples per pixel


# ---------------------------------------------------------------------------- helpers


def _process_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


NEW_FILE_MODE = 0o666 & ~_process_umask()
"""The permissions of a file this package writes: what ``open()`` would give under the
process's umask (a temporary file is made private first)."""


def _temporary_prefix(path: Path, pid: int | str) -> str:
    return f".{path.stem}.tmp-{pid}-"


def new_temporary(path: Path) -> Path:
    """Make a new, empty file with an unguessable name beside ``path`` (same suffix), made
    by this call alone: never an existing file or a symbolic link planted under the name.
    Its permissions are :data:`NEW_FILE_MODE`; the name records this process's id."""
    handle, name = tempfile.mkstemp(
        dir=path.parent, prefix=_temporary_prefix(path, os.getpid()), suffix=path.suffix
    )
    try:
        os.fchmod(handle, NEW_FILE_MODE)
    finally:
        os.close(handle)
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a new temporary file beside ``path`` (same suffix, see :func:`new_temporary`)
    to write; rename it to ``path`` on success, delete it otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_temporary(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def process_gone(pid: str) -> bool:
    """True when ``pid`` (text, as a file name holds it) is the id of no running process;
    False for a running one (another user's included) or text that is no process id."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (ValueError, PermissionError, OverflowError):
        return False
    return False


def remove_stale_temporaries(path: str | Path) -> None:
    """Delete the :func:`atomic_path` temporaries of ``path`` left by killed processes (their
    process id no longer runs)."""
    path = Path(path)
    prefix = _temporary_prefix(path, "")[:-1]  # up to the process id
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*{glob.escape(path.suffix)}"):
        if process_gone(tmp.name[len(prefix) :].split("-", 1)[0]):
            tmp.unlink(missing_ok=True)


def remove_dead_temporaries(folder: str | Path) -> list[Path]:
    """Delete the :func:`atomic_path` temporaries directly in ``folder`` whose process no
    longer runs (left by a killed run); one pass over the folder. Returns them."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp-*-*"):
        pid = tmp.name.rsplit(".tmp-", 1)[-1].split("-", 1)[0]
        if process_gone(pid) and tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ImageFileError(f"{path}: {not_a_file(path)}")
    return path


def not_a_file(path: Path) -> str:
    """Why ``path`` (no regular file) cannot be read as one, in words: a folder, a link
    that leads nowhere, a pipe, socket or device, or nothing there."""
    if path.is_dir():
        return "a folder, not a file"
    if path.is_symlink() and not path.exists():
        return "a symbolic link that leads to no file (a loop?)"
    if path.exists():  # a FIFO, a socket, a device: never read (a FIFO would block)
        return "not a regular file (a pipe, socket or device)"
    return "no such file"


def imdecode(data: bytes, path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """OpenCV's decode of a file's bytes (BGR, file dtype) with a clear error naming ``path``."""
    if not data:
        raise ImageFileError(f"{path}: an empty file (0 bytes), not an image")
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error as err:
        raise ImageFileError(f"{path}: unreadable image ({err.msg.strip()})") from None
    if image is None or image.size == 0:
        raise ImageFileError(f"{path}: unreadable, truncated or not an image")
    return image


def imread(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """OpenCV's raw decode (BGR, file dtype) with a clear error for bad files.

    Decoded from the file's bytes: OpenCV 5's ``imread`` fails on TIFFs whose orientation
    swaps the axes (EXIF orientation 5-8), ``imdecode`` does not."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ImageFileError(f"{path}: unreadable ({err.strerror})") from None
    return imdecode(data, path, flags)


_ENCODABLE = {
    ".png": (np.uint8, np.uint16),
    ".bmp": (np.uint8,),
    ".jpg": (np.uint8,),
    ".jpeg": (np.uint8,),
    ".webp": (np.uint8,),
    ".tif": (np.uint8, np.uint16, np.float32),
    ".tiff": (np.uint8, np.uint16, np.float32),
    ".hdr": (np.float32,),
    ".pic": (np.float32,),
}
"""The pixel types each format written here stores as they are (OpenCV's encoders convert
others without a word: float32 to an 8-bit PNG of zeros)."""


def imwrite(path: Path, image: np.ndarray) -> None:
    """Atomically write an OpenCV (BGR) array in a format and pixel type of
    :data:`_ENCODABLE`; format by suffix.

    Encoded in memory, written under a temporary name and read back before it is renamed:
    a file that is truncated (a full disk) or altered never gets the final name. (Comparing
    the bytes costs a read; decoding the file back cost 0.1 s of a 1060x1900 16-bit PNG's
    0.3 s.) Every failure raises :class:`ImageFileError` naming ``path``.
    """
    data = encode_image(path, image)
    try:
        with atomic_path(path) as tmp:
            write_checked(tmp, data, path)
    except OSError as err:
        raise ImageFileError(f"{path}: cannot write ({err.strerror or err})") from None


def encode_image(path: Path, image: np.ndarray) -> bytes:
    """The bytes of an OpenCV (BGR) array in the format of ``path``'s suffix (see
    :func:`imwrite`); :class:`ImageFileError` naming ``path`` when it cannot be encoded."""
    kinds = _ENCODABLE.get(path.suffix.lower())
    if kinds is None or image.dtype not in kinds:
        raise ImageFileError(f"{path}: cannot write {image.dtype} pixels in this format")
    try:
        ok, encoded = cv2.imencode(path.suffix, image)
    except cv2.error as err:
        raise ImageFileError(f"{path}: cannot write ({err.msg.strip()})") from None
    if not ok:
        raise ImageFileError(f"{path}: cannot write (the encoder failed)")
    return encoded.tobytes()


def write_checked(tmp: Path, data: bytes, path: Path) -> None:
    """Write ``data`` into the temporary file ``tmp`` (of ``path``) and read it back: a
    file that is truncated (a full disk) or altered is refused, naming ``path``."""
    _write_bytes(tmp, data)
    if tmp.read_bytes() != data:
        raise ImageFileError(
            f"{path}: the written file does not read back as written (disk full?); not kept"
        )


def _write_bytes(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)


def _bgr_to_rgb(image: np.ndarray, path: Path) -> np.ndarray:
    """OpenCV's (H, W[, C]) BGR(A)/gray array -> (H, W, 3) RGB, converting with a log line."""
    if image.ndim == 2:
        log.warning("%s: grayscale image, converted to RGB by repeating its channel", path)
        return np.repeat(image[..., None], 3, axis=2)
    if image.shape[2] == 4:
        log.warning("%s: alpha channel dropped", path)
        image = image[..., :3]
    if image.shape[2] != 3:
        raise ImageFileError(f"{path}: {image.shape[2]} channels; need RGB or grayscale")
    return np.ascontiguousarray(image[..., ::-1])


def _rgb_to_bgr(image: np.ndarray, path: Path) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageFileError(f"{path}: need an (H, W, 3) RGB array, got shape {image.shape}")
    return np.ascontiguousarray(image[..., ::-1])


NEGATIVE = ("clip", "fill")
"""What readers of linear HDR do with negative values: ``clip`` them to 0 (each channel), or
``fill`` each pixel that has one from its valid neighbours (:func:`fill_negative`)."""


def fill_negative(image: np.ndarray, radius: int = 2, rounds: int = 4) -> tuple[np.ndarray, int]:
    """Pixels of linear ``(H, W, 3)`` ``image`` with a negative channel, replaced by the mean
    of the valid pixels (no negative channel) within ``radius``; ``rounds`` passes fill
    larger holes from their edges, and what is left is clipped to 0.

    Negative radiance is an encoding artefact, such as the ringing of lossy (DWAB) EXR
    compression around bright lights: clipped to 0, such pixels become black holes that a
    reconstruction is scored against. Returns the image and how many pixels were filled.
    """
    image = np.array(image, dtype=np.float32)
    invalid = (image < 0).any(axis=-1)
    before = int(invalid.sum())
    size = (2 * radius + 1, 2 * radius + 1)
    for _ in range(rounds):
        if not invalid.any():
            break
        valid = (~invalid).astype(np.float64)  # sums in float64: no overflow near float32's max
        sums = cv2.boxFilter(image * valid[..., None], -1, size, normalize=False)
        counts = cv2.boxFilter(valid, -1, size, normalize=False)
        fillable = invalid & (counts > 0.5)
        image[fillable] = (sums[fillable] / counts[fillable][:, None]).astype(np.float32)
        invalid &= ~fillable
    return np.maximum(image, 0), before - int(invalid.sum())


def _check_finite(image: np.ndarray, path: Path, negative: str = "clip") -> np.ndarray:
    bad = ~np.isfinite(image)
    if bad.any():
        raise ImageFileError(f"{path}: {int(bad.sum())} NaN/Inf values; fix or remove the file")
    if negative not in NEGATIVE:
        raise ValueError(f"negative must be one of {NEGATIVE}, got {negative!r}")
    if (image < 0).any():
        if negative == "fill":
            negatives = int((image < 0).any(axis=-1).sum())
            image, count = fill_negative(image)
            clipped = (
                f", {negatives - count} too far from any to fill set to 0"
                if count < negatives
                else ""
            )
            log.warning(
                "%s: %d pixels with negative values filled from neighbours%s", path, count, clipped
            )
        else:
            log.warning("%s: %d negative values clipped to 0", path, int((image < 0).sum()))
            image = np.maximum(image, 0)
    return image


@dataclass(frozen=True)
class PNGInfo:
    """What a PNG header says, read without decoding the image."""

    height: int
    width: int
    bit_depth: int
    channels: int


def png_info(path: str | Path) -> PNGInfo:
    """Size, bit depth and channel count from a PNG's IHDR chunk (no decoding); a PNG of
    more than :data:`MAX_PIXELS` pixels is refused (a few MB of compressed rows can declare
    gigabytes of pixels)."""
    path = _existing(path)
    with path.open("rb") as f:
        head = f.read(29)
    if len(head) < 29 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise ImageFileError(f"{path}: not a PNG file")
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    if colour not in _PNG_CHANNELS or width == 0 or height == 0:
        raise ImageFileError(f"{path}: corrupt PNG header")
    _check_pixel_count(path, height, width)
    return PNGInfo(height, width, depth, _PNG_CHANNELS[colour])


# ---------------------------------------------------------------------------- LDR


def _png_grey_and_transparency(path: Path) -> tuple[bool, str | None]:
    """Whether a PNG is grey, and its transparency: ``"alpha channel"``, ``"transparency"``
    (a ``tRNS`` chunk: a palette's or a colour key's, which OpenCV drops too) or None;
    (False, None) for other files."""
    try:
        channels = png_info(path).channels
    except ImageFileError:  # not a PNG
        return False, None
    if channels in (2, 4):
        return channels == 2, "alpha channel"
    keyed = _png_chunk_before_pixels(path, b"tRNS")
    return channels == 1, "transparency" if keyed else None


def _png_chunk_before_pixels(path: Path, kind: bytes) -> bool:
    """Whether a PNG has a chunk of ``kind`` before its first ``IDAT`` (chunk headers only
    are read)."""
    with path.open("rb") as f:
        f.seek(len(_PNG_SIGNATURE))
        while len(head := f.read(8)) == 8:
            length, name = struct.unpack(">I4s", head)
            if name == kind:
                return True
            if name in (b"IDAT", b"IEND"):
                return False
            f.seek(length + 4, os.SEEK_CUR)  # the data and its CRC
    return False


def read_ldr(path: str | Path, upright: bool = True) -> np.ndarray:
    """An 8-bit (or 16-bit) LDR image as float32 ``(H, W, 3)`` RGB in [0, 1], upright: the
    EXIF orientation of a JPEG, PNG, TIFF or WebP is applied, as photo viewers do.

    ``upright=False`` keeps the pixels as stored: the half of a pixel-aligned pair (an
    NTIRE LDR beside its 16-bit GT, which is read as stored) must not be turned alone."""
    codes = read_ldr_codes(path, upright)
    return codes.astype(np.float32) / np.float32(np.iinfo(codes.dtype).max)


def read_ldr_codes(path: str | Path, upright: bool = True) -> np.ndarray:
    """The codes of an 8-bit or 16-bit LDR image as stored, ``(H, W, 3)`` RGB uint8 or
    uint16 (see :func:`read_ldr`, which divides them by 255 or 65535): grey repeated to RGB,
    alpha dropped (a log line for each), never multiplied into the colour."""
    path = _existing(path)
    header = _check_ldr_size(path)
    if _tiff_with_alpha(path):
        # OpenCV's TIFF reader multiplies 8-bit colour by alpha: the samples as stored,
        # turned upright by the file's orientation tag as OpenCV's flags below would
        image, orientation = _tiff_colour(path)
        log.warning("%s: alpha channel dropped", path)
        if upright and orientation in _TURNS:
            image = np.ascontiguousarray(_TURNS[orientation](image))
    else:
        # these flags keep 8/16 bits and apply the EXIF orientation of every format (JPEG,
        # PNG eXIf, TIFF, WebP), found by content, not by the file's suffix; alpha dropped
        flags = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR
        image = imread(path, flags if upright else flags | cv2.IMREAD_IGNORE_ORIENTATION)
        grey, transparency = _png_grey_and_transparency(path)
        if grey and image.ndim == 3:  # grey + alpha comes as BGR (grey alone: said below)
            log.warning("%s: grayscale image, converted to RGB by repeating its channel", path)
        if transparency:
            log.warning("%s: %s dropped", path, transparency)
    if image.dtype not in (np.uint8, np.uint16):
        raise ImageFileError(f"{path}: {image.dtype} pixels; an LDR image needs 8 or 16 bits")
    return _to_srgb(_bgr_to_rgb(image, path), path, header)


_SRGB_TOLERANCE = 1
"""Codes by which a profile's conversion to sRGB may move a colour and the file still be
read as sRGB (the many sRGB profiles differ by rounding)."""
_PROFILE_MODES = {
    "RGB": ("RGB", "RGBA", "RGBX", "P", "PA", "RGB;16", "RGBA;16"),
    "GRAY": ("L", "LA", "1", "I;16", "I;16B", "I;16L", "I"),
}
"""Pillow modes of files whose pixels a profile of each colour space describes."""


def _to_srgb(image: np.ndarray, path: Path, header: LDRHeader) -> np.ndarray:
    """(H, W, 3) codes of ``path`` in sRGB: an embedded colour profile other than sRGB's
    (Display P3 of phone photos, Adobe RGB of cameras, a grey profile's tone curve) is
    converted by LittleCMS (Pillow's ImageCms; relative colorimetric: colours outside sRGB
    are clipped to its gamut), as a colour-managed viewer shows the file. The package's
    images, like the NTIRE data, are sRGB (Rec. 709 primaries); a profile left unapplied
    would shift every colour. What cannot be converted here is read as sRGB with a log
    line: 16-bit images, CMYK files (OpenCV converts their ink to RGB), unusable profiles."""
    icc, mode = header.icc_profile, header.mode
    if icc is None:
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = source.profile.xcolor_space.strip()
        transform = _transform(source, space) if space in _PROFILE_MODES else None
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as err:
        log.warning("%s: unusable colour profile (%s); read as sRGB", path, one_line(err))
        return image
    try:  # a name LittleCMS cannot decode (non-ASCII bytes of a version 2 profile)
        name = ImageCms.getProfileDescription(source).strip() or "unnamed"
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        name = "unnamed"
    if transform is None or mode not in _PROFILE_MODES[space]:
        log.warning(
            "%s: colour profile %r (%s) not applied to its %s pixels; read as sRGB",
            path,
            name,
            space,
            mode,
        )
        return image
    if _is_srgb(transform, space):
        return image
    white = _converted(np.full((1, 1, 3) if space == "RGB" else (1, 1), 255, np.uint8), transform)
    if white.min() < 255 - _WHITE_TOLERANCE:  # relative colorimetric keeps white white
        log.warning(
            "%s: colour profile %r turns white into %s (a broken profile?); not applied, "
            "read as sRGB",
            path,
            name,
            white.ravel().tolist(),
        )
        return image
    if image.dtype != np.uint8:
        log.warning(
            "%s: 16-bit image in colour profile %r, read as sRGB (not converted: convert it "
            "to sRGB first for its true colours)",
            path,
            name,
        )
        return image
    log.info("%s: converted from its colour profile %r to sRGB", path, name)
    return _converted(image if space == "RGB" else np.ascontiguousarray(image[..., 0]), transform)


_WHITE_TOLERANCE = 8
"""Codes by which a profile's white may come out below sRGB's white (a profile that maps
white far darker is broken; converted, it would turn the photo dark)."""


def _converted(pixels: np.ndarray, transform: ImageCms.ImageCmsTransform) -> np.ndarray:
    """8-bit (H, W, 3) RGB or (H, W) grey through a LittleCMS transform: (H, W, 3) RGB."""
    return np.array(ImageCms.applyTransform(Image.fromarray(pixels), transform))


def _transform(source: ImageCms.ImageCmsProfile, space: str) -> ImageCms.ImageCmsTransform:
    """LittleCMS's 8-bit transform from ``source`` (an RGB or GRAY profile) to sRGB RGB."""
    return ImageCms.buildTransform(
        source,
        ImageCms.createProfile("sRGB"),
        "RGB" if space == "RGB" else "L",
        "RGB",
        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
    )


def _is_srgb(transform: ImageCms.ImageCmsTransform, space: str) -> bool:
    """Whether a profile's transform to sRGB changes no colour of a grid (of a ramp of
    greys) by more than :data:`_SRGB_TOLERANCE`: sRGB's own profile, by whatever name."""

    levels = np.linspace(0, 255, 6 if space == "RGB" else 18).astype(np.uint8)
    if space == "RGB":
        probe = np.stack(np.meshgrid(levels, levels, levels), axis=-1).reshape(1, -1, 3)
        expected = probe
    else:
        probe = levels.reshape(1, -1)
        expected = np.repeat(probe[..., None], 3, axis=-1)
    probed = _converted(probe, transform)
    return bool(np.abs(probed.astype(int) - expected).max() <= _SRGB_TOLERANCE)


def _tiff_with_alpha(path: Path) -> bool:
    """An 8-bit TIFF with an unassociated alpha channel (Pillow's modes RGBA and LA)."""
    try:
        with _open_image(path) as image:
            return image.format == "TIFF" and image.mode in ("RGBA", "LA")
    except (OSError, ValueError, SyntaxError):
        return False


_TIFF_ORIENTATION = 274


def _tiff_colour(path: Path) -> tuple[np.ndarray, int]:
    """The colour samples of an 8-bit RGBA / grey + alpha TIFF as stored, in OpenCV's order
    (BGR, or grey), and the file's orientation (1-8). tifffile reads the samples as stored;
    a compression it has no codec for (LZW, JPEG) is decoded by Pillow, whose own turning
    of such files is wrong for orientations 5-8: refused then."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            tag = page.tags.get(_TIFF_ORIENTATION)
            orientation = int(tag.value) if tag is not None else 1
            try:
                stored = page.asarray()
            except Exception:  # no codec for its compression
                stored = None
    except Exception as err:
        raise ImageFileError(f"{path}: unreadable TIFF ({err})") from None
    if stored is None:
        if orientation != 1:
            raise ImageFileError(
                f"{path}: a compressed 8-bit TIFF with alpha and orientation {orientation} "
                "cannot be read without multiplying its alpha into the colour; save it "
                "without alpha, uncompressed or upright"
            )
        with _open_image(path) as file:  # upright as stored: Pillow's pixels are the samples
            stored = np.asarray(file.convert("RGBA" if file.mode == "RGBA" else "LA"))
    if stored.ndim != 3 or stored.shape[2] not in (2, 4):
        raise ImageFileError(f"{path}: {stored.shape} TIFF samples where RGBA or grey + alpha")
    colour = stored[..., 0] if stored.shape[2] == 2 else stored[..., 2::-1]
    return np.ascontiguousarray(colour), orientation


_TURNS = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}
"""How an image stored with an EXIF / TIFF orientation (2-8) is turned upright, as photo
viewers and Pillow's ``exif_transpose`` turn it (1: as stored)."""


@dataclass(frozen=True)
class LDRHeader:
    """What Pillow reads of an LDR file's header: its embedded ICC colour profile (if any)
    and its mode (``RGB``, ``L``, ``CMYK``, ...)."""

    icc_profile: bytes | None
    mode: str


_PILLOW_LIMIT = threading.Lock()


def _open_image(path: Path) -> Image.Image:
    """``Image.open(path)`` with :data:`MAX_PIXELS` as the decompression-bomb limit in place
    of Pillow's own (179 M pixels): images between the two were refused with a message that
    named this package's limit. Pillow's setting is process-wide: it is changed only for the
    call, under a lock, and the header's size is checked against ``MAX_PIXELS`` after it."""
    with _PILLOW_LIMIT, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked after it
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS // 2  # Pillow refuses above twice this
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _check_ldr_size(path: Path) -> LDRHeader:
    """Refuse an image whose header declares more than :data:`MAX_PIXELS` pixels
    before it is decoded (a small file can declare a 25,000 x 25,000 image: tens of GB once
    decoded and converted); content that Pillow cannot place is refused. Returns what the
    header says of the pixels' colours."""
    if path.stat().st_size == 0:
        raise ImageFileError(f"{path}: an empty file (0 bytes), not an image")
    try:
        with _open_image(path) as image:
            width, height = image.size
            header = LDRHeader(image.info.get("icc_profile") or None, image.mode)
            frames = getattr(image, "n_frames", 1)
    except Image.DecompressionBombError as err:  # more than MAX_PIXELS (see _open_image)
        claimed = re.search(r"\((\d+) pixels\)", str(err))
        size = f"{int(claimed.group(1)):,} pixels" if claimed else "its size"
        raise ImageFileError(
            f"{path}: {size} is more than an image file may have here ({MAX_PIXELS:,} "
            "pixels); split or downscale it"
        ) from None
    except (OSError, ValueError, SyntaxError):
        # every LDR format read here is Pillow's too: content it cannot place (a Radiance
        # file named .png, a damaged header) is not decoded on the strength of its header
        _check_float_tiff(path)
        raise ImageFileError(
            f"{path}: unreadable, truncated or not an image "
            f"(LDR formats: {', '.join(e.lstrip('.') for e in LDR_EXTENSIONS)})"
        ) from None
    _check_pixel_count(path, height, width)
    if frames > 1:  # an animated PNG or WebP, a multi-page TIFF
        log.warning(
            "%s: %d frames (an animation or several pages); the first is read", path, frames
        )
    return header


def _check_float_tiff(path: Path) -> None:
    """Name a floating-point TIFF (which Pillow does not open) as such, from its header."""
    import tifffile

    quiet = logging.getLogger("tifffile")  # its complaints about a damaged file
    level, quiet.level = quiet.level, logging.CRITICAL
    try:
        with tifffile.TiffFile(path) as tiff:
            kind = tiff.pages.first.dtype
    except Exception:  # not a TIFF, or a damaged one: the caller's message stands
        return
    finally:
        quiet.setLevel(level)
    if kind is not None and kind.kind == "f":
        raise ImageFileError(
            f"{path}: {kind} pixels (an HDR TIFF?); an LDR image needs 8 or 16 bits (HDR "
            "files are read as .exr, .hdr or .pfm)"
        )


def write_ldr(path: str | Path, image: np.ndarray) -> None:
    """Write a float ``(H, W, 3)`` RGB image in [0, 1] as 8 bits (PNG, JPEG, ...)."""
    path = Path(path)
    quantised = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    imwrite(path, _rgb_to_bgr(quantised, path))


# ---------------------------------------------------------------------------- NTIRE pairs


NTIRE_EXPOSURE_SUFFIXES = (LDR_SUFFIX, "_short", "_long")
"""The LDR frames of an NTIRE set: single-frame inputs are ``_medium``; the multi-frame
track adds the ``_short`` and ``_long`` exposures."""

_NTIRE_FRAME = re.compile(r"\d+(_s\d+)?")
"""An NTIRE frame id: ``0042``, or a sub-image of ``hdrunet-prepare crop``, ``0042_s007``."""


def ntire_frame_id(path: str | Path, suffix: str) -> str | None:
    """The frame id of an NTIRE PNG ``<frame id><suffix>.png`` (``0042_medium.png`` ->
    ``0042``), else None: a photo named ``holiday_medium.png`` or ``x_gt.jpg`` is none."""
    path = Path(path)
    frame = path.stem.removesuffix(suffix)
    if path.suffix.lower() != ".png" or frame == path.stem:
        return None
    return frame if _NTIRE_FRAME.fullmatch(frame) else None


def alignratio_path_for(png_path: str | Path) -> Path:
    """``.../NNNN_gt.png`` or ``.../NNNN.png`` -> ``.../NNNN_alignratio.npy`` (NTIRE naming)."""
    png_path = Path(png_path)
    stem = png_path.stem.removesuffix(GT_SUFFIX)
    return png_path.with_name(stem + ALIGNRATIO_SUFFIX)


def is_hdr_png(path: str | Path) -> bool:
    """A PNG with its NTIRE align ratio beside it (``x.png`` + ``x_alignratio.npy``,
    ``NNNN_gt.png`` + ``NNNN_alignratio.npy``): a 16-bit HDR image, whatever its name."""
    path = Path(path)
    return path.suffix.lower() == ".png" and alignratio_path_for(path).is_file()


NPY_MAGIC = b"\x93NUMPY"
"""The first bytes of every ``.npy`` file (NumPy's format)."""


def read_alignratio(path: str | Path) -> float:
    """The align ratio stored in an NTIRE ``.npy`` file: one finite value > 0.

    Read with ``allow_pickle=False``: a file holding a pickled object is refused.
    """
    path = Path(path)
    if not path.is_file() and (path.exists() or path.is_symlink()):
        raise ImageFileError(f"{path}: {not_a_file(path)}, not an align ratio file")
    if not path.is_file():
        raise ImageFileError(
            f"{path}: align ratio file missing (NTIRE pairs need NNNN{ALIGNRATIO_SUFFIX})"
        )
    with path.open("rb") as f:
        magic = f.read(6)
    if magic != NPY_MAGIC and not magic.startswith(b"PK"):  # .npy, or a zipped .npz
        raise ImageFileError(
            f"{path}: not a .npy file (NumPy's files start with \\x93NUMPY; this one with "
            f"{magic!r}); the align ratio is saved with numpy.save"
        )
    try:
        value = np.load(path, allow_pickle=False)
    except ValueError as err:
        if "pickled" in str(err):  # numpy's advice to load it unsafely is not repeated
            raise ImageFileError(f"{path}: holds a pickled object, not a number; refused") from None
        raise ImageFileError(f"{path}: not a plain numeric .npy file ({err}); refused") from None
    except Exception as err:
        raise ImageFileError(f"{path}: unreadable .npy file ({type(err).__name__})") from None
    if not isinstance(value, np.ndarray):
        raise ImageFileError(f"{path}: a {type(value).__name__} (.npz?), not a plain .npy number")
    if value.size != 1:
        raise ImageFileError(f"{path}: need one number, got an array of shape {value.shape}")
    if value.dtype.kind not in "fiu":
        shown = repr(value)[:60]
        raise ImageFileError(f"{path}: need a real number, got {value.dtype} data ({shown})")
    ratio = float(value.reshape(()))
    # checked in float32, the precision images are decoded in: 1e-50 would be 0 there and
    # 1e300 infinite, giving all-inf or all-zero HDR images
    ratio32 = np.float32(ratio) if abs(ratio) < 3.4e38 else np.float32(np.inf)
    if not np.isfinite(ratio) or ratio <= 0 or not (np.isfinite(ratio32) and ratio32 > 0):
        raise ImageFileError(
            f"{path}: align ratio must be finite and > 0 in float32 (the precision images are "
            f"decoded in), got {ratio}"
        )
    with np.errstate(over="ignore", under="ignore"):
        peak = np.float32(PNG16_MAX) / ratio32
    if not np.isfinite(peak) or peak == 0:
        raise ImageFileError(f"{path}: align ratio {ratio} gives no usable HDR values")
    return ratio


def read_hdr_png(png_path: str | Path, alignratio_path: str | Path | None = None) -> np.ndarray:
    """The non-linear HDR of an NTIRE pair as float32 ``(H, W, 3)`` RGB: ``png / alignratio``.

    ``alignratio_path`` defaults to the NTIRE name (:func:`alignratio_path_for`).
    """
    png_path = _existing(png_path)
    ratio = read_alignratio(alignratio_path or alignratio_path_for(png_path))
    return read_hdr_png_codes(png_path).astype(np.float32) / np.float32(ratio)


def read_hdr_png_codes(png_path: str | Path) -> np.ndarray:
    """The uint16 ``(H, W, 3)`` RGB codes of an NTIRE 16-bit HDR PNG (grey repeated, alpha
    dropped); an 8-bit PNG is refused."""
    png_path = _existing(png_path)
    png_info(png_path)  # its size checked before its pixels are decoded
    image = imread(png_path, cv2.IMREAD_UNCHANGED)
    if image.dtype != np.uint16:
        raise ImageFileError(
            f"{png_path}: {image.dtype} PNG where a 16-bit HDR PNG is expected "
            "(an 8-bit file cannot hold the HDR)"
        )
    return _bgr_to_rgb(image, png_path)


def encode_hdr_png(hdr: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """The NTIRE encoding of a finite non-linear HDR array: ``(uint16 codes, align ratio)``.

    As the challenge: ``ratio = 65535 / max(hdr)``, ``codes = round(hdr * ratio)`` (negative
    values clip to 0). ``codes / ratio`` is what a reader of the files gets back.
    """
    hdr = np.asarray(hdr, dtype=np.float32)
    peak = float(hdr.max())
    ratio = np.float32(PNG16_MAX / peak if peak > 0 else 1.0)
    return np.round(hdr * ratio).clip(0, PNG16_MAX).astype(np.uint16), ratio


def as_submitted(hdr: np.ndarray) -> np.ndarray:
    """``hdr`` as it reads back from its NTIRE 16-bit PNG pair (float32, same shape)."""
    codes, ratio = encode_hdr_png(hdr)
    return codes.astype(np.float32) / ratio


def write_hdr_png(
    png_path: str | Path, hdr: np.ndarray, alignratio_path: str | Path | None = None
) -> float:
    """Write a non-linear HDR ``(H, W, 3)`` RGB array as an NTIRE 16-bit PNG + align ratio.

    As the challenge: ``ratio = 65535 / max(hdr)``, ``png = round(hdr * ratio)``. Returns
    the ratio.
    """
    png_path = Path(png_path)
    quantised, ratio = encode_hdr_png(_check_finite(np.asarray(hdr, dtype=np.float32), png_path))
    ratio_path = Path(alignratio_path or alignratio_path_for(png_path))
    # An old PNG goes first and the new ratio is in place before the new PNG gets its name:
    # whenever the PNG exists, its own ratio is beside it (a kill leaves no stale pair).
    png_path.unlink(missing_ok=True)
    write_alignratio(ratio_path, ratio)
    imwrite(png_path, _rgb_to_bgr(quantised, png_path))
    return float(ratio)


def write_alignratio(path: str | Path, ratio: float) -> None:
    """Atomically write an NTIRE align ratio (float32 ``.npy``), checked by reading it back."""
    with atomic_path(path) as tmp:
        np.save(tmp, np.float32(ratio))
        if read_alignratio(tmp) != float(np.float32(ratio)):
            raise ImageFileError(f"{path}: does not read back as written (disk full?); not kept")


# ---------------------------------------------------------------------------- OpenEXR


MAX_PIXELS = 1 << 28
"""The most pixels an image file (HDR or LDR) may have (268 million: 3.2 GB as float32 RGB;
a 16k x 8k panorama has half as many): a header that claims more is refused before any
memory is taken, as a few-MB file can claim gigabytes."""


def _check_pixel_count(path: Path, height: int, width: int) -> None:
    if height * width > MAX_PIXELS:
        raise ImageFileError(
            f"{path}: {height}x{width} pixels is more than an image file may have here "
            f"({MAX_PIXELS:,} pixels); split or downscale it"
        )


def _exr_size(path: Path) -> tuple[int, int]:
    """(height, width) of an OpenEXR file's image part, from its header; checked against
    :data:`MAX_PIXELS`."""
    try:
        with OpenEXR.File(str(path), header_only=True) as exr:
            (x0, y0), (x1, y1) = _image_part(exr, path)[0].header["dataWindow"]
    except ImageFileError:
        raise
    except Exception as err:
        raise ImageFileError(f"{path}: unreadable OpenEXR header ({err})") from None
    height, width = int(y1 - y0 + 1), int(x1 - x0 + 1)
    _check_pixel_count(path, height, width)
    return height, width


_COLOUR_CHANNELS = ("R", "G", "B", "A", "Y", "RY", "BY", "X", "Z")


def _holds_image(names: set[str]) -> bool:
    """Channels that make an image: R, G, B; CIE X, Y, Z; or Y (grey, or with RY, BY)."""
    return {"R", "G", "B"} <= names or "Y" in names


def _image_layer(names: set[str], path: Path) -> str | None:
    """The prefix of the channels that hold the image among a part's channel ``names``: ""
    for ``R, G, B`` (or ``Y``), else ``"<layer>."`` of the one layer with R, G, B (a
    render's ``ViewLayer.Combined.R``, ...; among several, the one named ``Combined``), or
    failing that of the one with Y and no X or Z (a grey layer; a normal or position pass
    has X, Y, Z); None when none has. Several such layers are refused otherwise: which one
    is the image is the user's choice."""
    if _holds_image(names):
        return ""
    layers: dict[str, set[str]] = {}
    for name in names:
        layer, dot, channel = name.rpartition(".")
        if dot:
            layers.setdefault(layer + dot, set()).add(channel)
    for kind in (
        lambda channels: {"R", "G", "B"} <= channels,
        lambda channels: "Y" in channels and not channels & {"X", "Z"},
    ):
        found = sorted(prefix for prefix, channels in layers.items() if kind(channels))
        combined = [prefix for prefix in found if prefix.endswith(".Combined.")]
        if len(found) > 1 and len(combined) == 1:  # Blender's beauty pass beside its others
            return combined[0]
        if len(found) > 1:
            listed = ", ".join(repr(prefix[:-1]) for prefix in found)
            raise ImageFileError(
                f"{path}: OpenEXR whose {len(found)} layers ({listed}) hold an image; save "
                "the one to use as its own file"
            )
        if found:
            return found[0]
    return None


def _image_part(exr: OpenEXR.File, path: Path):  # -> tuple[OpenEXR.Part, str]
    """The part of an OpenEXR file that holds the image, and the prefix of its image
    channels (see :func:`_image_layer`): the only part, or the only one of a multi-part
    file (a render's beauty pass beside its AOVs) with R, G, B or Y channels."""

    def names(part) -> set[str]:  # from the header: a file opened header_only has no pixels
        return {c.name for c in part.header.get("channels", [])}

    def deep(part) -> bool:  # several samples per pixel (a renderer's deep output)
        return part.header.get("type") in (OpenEXR.deepscanline, OpenEXR.deeptile)

    parts = list(exr.parts)
    if not parts:  # the binding drops the parts whose pixels it could not read
        raise ImageFileError(f"{path}: its pixels cannot be read (truncated or damaged OpenEXR)")
    layers = [_image_layer(names(p), path) for p in parts]
    images = [
        (p, layer)
        for p, layer in zip(parts, layers, strict=True)
        if layer is not None and not deep(p)
    ]
    if not images and any(deep(p) for p in parts):
        raise ImageFileError(
            f"{path}: deep OpenEXR (several samples per pixel, no flat image); flatten it "
            "into a plain RGB image first"
        )
    if not images:
        found = sorted(set().union(*(names(p) for p in parts)))
        present = [c for c in "RGB" if c in found]
        if present:  # a colour image missing a channel: say which
            missing = ", ".join(c for c in "RGB" if c not in found)
            raise ImageFileError(f"{path}: OpenEXR with {', '.join(present)} but no {missing}")
        raise ImageFileError(f"{path}: no R, G, B (or Y) channels; has {found}")
    if len(images) == 1:
        part, layer = images[0]
    else:
        listed = ", ".join(repr(p.name()) for p in parts)
        raise ImageFileError(
            f"{path}: multi-part OpenEXR whose {len(images)} of {len(parts)} parts ({listed}) "
            "hold an image; save the one to use as its own file"
        )
    found = {name.removeprefix(layer) for name in names(part) if name.startswith(layer)}
    if not {"R", "G", "B"} <= found and found & {"RY", "BY"} and not {"RY", "BY"} <= found:
        raise ImageFileError(
            f"{path}: luminance/chroma OpenEXR with only one of RY, BY; its colour cannot be "
            "rebuilt"
        )
    return part, layer


def read_exr(path: str | Path, negative: str = "clip") -> np.ndarray:
    """Linear RGB of an OpenEXR file as float32 ``(H, W, 3)``, >= 0 (negative values: see
    ``NEGATIVE``), in Rec. 709 primaries with a D65 white.

    R, G, B channels are read as they are; ``X``, ``Y``, ``Z`` channels (CIE XYZ) are
    converted to Rec. 709 / D65; luminance/chroma files (``Y``, ``RY``, ``BY``,
    chroma usually at half resolution) are turned into RGB (:func:`luminance_chroma_to_rgb`);
    a ``Y``-only file is grey. A file whose ``chromaticities`` attribute names other
    primaries or another white (ACES, ...) is converted to Rec. 709 / D65
    (:func:`rgb_to_rec709_matrix`); CIE XYZ's own primaries are converted as ``X``, ``Y``,
    ``Z`` channels are. A multi-part file is read when exactly one part holds a flat image
    (deep files are refused).
    """
    path = _existing(path)
    _exr_size(path)  # a header that claims too many pixels is refused before they are read
    try:
        with OpenEXR.File(str(path), separate_channels=True) as exr:
            part, layer = _image_part(exr, path)
            if len(exr.parts) > 1:
                log.info("%s: multi-part OpenEXR, reading its image part %r", path, part.name())
            if layer:
                log.info("%s: reading the image of its layer %r", path, layer[:-1])
            found = {
                name.removeprefix(layer): ch
                for name, ch in part.channels.items()
                if name.startswith(layer) and name.removeprefix(layer) in _COLOUR_CHANNELS
            }
            channels = {name: ch.pixels for name, ch in found.items()}
            sampling = {name: (ch.xSampling, ch.ySampling) for name, ch in found.items()}
            chromaticities = part.header.get("chromaticities")
    except ImageFileError:
        raise
    except Exception as err:
        raise ImageFileError(f"{path}: unreadable OpenEXR file ({err})") from None
    if "A" in channels:
        log.warning("%s: alpha channel dropped", path)
        del channels["A"]
    if "Z" in channels and "X" not in channels:  # OpenEXR's depth channel, not CIE Z
        del channels["Z"]
    integer = sorted(n for n, pixels in channels.items() if pixels.dtype.kind in "ui")
    if integer:
        raise ImageFileError(
            f"{path}: integer OpenEXR channels ({', '.join(integer)}: ids or masks?), not "
            "radiance; save half or float channels"
        )
    subsampled = sorted(n for n in channels if n not in ("RY", "BY") and sampling[n] != (1, 1))
    if subsampled:
        raise ImageFileError(
            f"{path}: OpenEXR with subsampled {', '.join(subsampled)} channels (only RY and BY "
            "chroma may be); save every colour channel at full resolution"
        )
    primaries = _exr_chromaticities(chromaticities, path)
    to_rec709 = None  # set for CIE XYZ channels, else from the primaries below
    for group in ("RGB", "XZ"):  # a colour set in part: its other channels would be lost
        present = [c for c in group if c in channels]
        if present and len(present) < len(group) and not {"R", "G", "B"} <= channels.keys():
            missing = [c for c in group if c not in channels]
            grey = "; not read as grey from Y (its colour would be lost)" if "Y" in channels else ""
            raise ImageFileError(
                f"{path}: OpenEXR with {', '.join(present)} but no {', '.join(missing)}{grey}"
            )
    if all(c in channels for c in "RGB"):
        image = np.stack([channels[c] for c in "RGB"], axis=-1).astype(np.float32)
    elif {"X", "Y", "Z"} <= channels.keys():
        log.info("%s: CIE XYZ OpenEXR, converted to Rec. 709 / D65", path)
        image = np.stack([channels[c] for c in "XYZ"], axis=-1).astype(np.float32)
        to_rec709 = np.linalg.inv(rgb_to_xyz_matrix(REC709_CHROMATICITIES))
    elif {"Y", "RY", "BY"} <= channels.keys():
        log.info("%s: luminance/chroma OpenEXR, converted to RGB", path)
        luma = rgb_to_xyz_matrix(primaries)[1]
        if luma[1] <= 0:  # G is what remains of Y once R and B are taken out
            raise ImageFileError(
                f"{path}: luminance/chroma OpenEXR whose chromaticities give green no "
                "luminance; its colour cannot be rebuilt"
            )
        image = luminance_chroma_to_rgb(channels["Y"], channels["RY"], channels["BY"], luma)
    elif "Y" in channels:
        log.warning("%s: grayscale (Y) EXR, converted to RGB by repeating its channel", path)
        image = np.repeat(channels["Y"][..., None].astype(np.float32), 3, axis=2)
        primaries = REC709_CHROMATICITIES  # grey is grey in any primaries
    else:
        raise ImageFileError(f"{path}: no R, G, B (or Y) channels; has {sorted(channels)}")
    if to_rec709 is None and np.allclose(
        primaries[:6], _XYZ_PRIMARIES, atol=_CHROMATICITY_TOLERANCE
    ):
        # CIE XYZ stored in R, G, B: converted as X, Y, Z channels are, without adapting
        # its white (equal energy, a formality of XYZ, not the scene's light)
        log.info("%s: CIE XYZ OpenEXR (XYZ primaries), converted to Rec. 709 / D65", path)
        rec709 = rgb_to_xyz_matrix(REC709_CHROMATICITIES)
        to_rec709 = np.linalg.solve(rec709, rgb_to_xyz_matrix(primaries))
    if to_rec709 is None and not np.allclose(
        primaries, REC709_CHROMATICITIES, atol=_CHROMATICITY_TOLERANCE
    ):
        named = ", ".join(f"{v:.4g}" for v in primaries)
        log.info("%s: converted from its primaries (CIE xy %s) to Rec. 709 / D65", path, named)
        to_rec709 = rgb_to_rec709_matrix(primaries)
    # the file's own negative values (lossy compression's ringing) before any conversion
    image = _check_finite(image.astype(np.float32), path, negative)
    if to_rec709 is None:
        return image
    return _to_rec709_gamut(image, to_rec709, path)


def _to_rec709_gamut(image: np.ndarray, to_rec709: np.ndarray, path: Path) -> np.ndarray:
    """(H, W, 3) values >= 0 in a file's own colour space through the (3, 3) matrix into
    Rec. 709 / D65. Colours outside Rec. 709's gamut (a saturated green in ACES) come out
    with a negative channel: that channel is clipped to 0, the nearest colour the package's
    images can hold (not filled from neighbours: the pixel is not an artefact)."""
    with np.errstate(over="ignore", invalid="ignore"):
        image = image @ to_rec709.T.astype(np.float32)
    if not np.isfinite(image).all():
        raise ImageFileError(f"{path}: values too large for float32 once converted to Rec. 709")
    # a channel below 0 by more than float rounding (an exact conversion of Rec. 709 data
    # gives -1e-9 of a channel of 1): a colour outside the gamut, worth a log line
    outside = (image < -1e-5 * image.max(axis=-1, keepdims=True)).any(axis=-1)
    if outside.any():
        log.info(
            "%s: %d pixels outside Rec. 709's gamut (%.2g%%): their negative channels set to 0",
            path,
            int(outside.sum()),
            100 * outside.mean(),
        )
    return np.maximum(image, 0)


REC709_CHROMATICITIES = (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290)
"""CIE xy of the red, green and blue primaries and of the white (Rec. ITU-R BT.709 with D65):
what an OpenEXR file without a ``chromaticities`` attribute holds, what sRGB cameras and the
NTIRE data use, and what every image of this package is in."""
_CHROMATICITY_TOLERANCE = 1e-3  # files store them as float32, often rounded to 4 digits
_XYZ_PRIMARIES = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)
"""CIE xy of the "primaries" of CIE XYZ itself: a file with them holds X, Y, Z in R, G, B."""
_BRADFORD = np.array(
    [[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]]
)
"""The Bradford cone-response matrix (Lam 1985), for adapting a white point to another."""


def _exr_chromaticities(value: object, path: Path) -> tuple[float, ...]:
    """The 8 numbers of an OpenEXR ``chromaticities`` attribute (Rec. 709 when there is
    none), checked: each finite, the white's y > 0, primaries that span a colour space."""
    if value is None:
        return REC709_CHROMATICITIES
    try:
        numbers = tuple(float(v) for v in value)  # type: ignore[union-attr]
        rgb_to_xyz_matrix(numbers)
    except (TypeError, ValueError) as err:
        raise ImageFileError(f"{path}: unusable chromaticities attribute ({err})") from None
    return numbers


def rgb_to_xyz_matrix(chromaticities: tuple[float, ...]) -> np.ndarray:
    """(3, 3) matrix from linear RGB with these primaries and white to CIE XYZ, the white
    at Y = 1. ``chromaticities``: CIE xy of red, green, blue and white (8 numbers, as
    OpenEXR stores them; a primary may lie outside the visible gamut, as ACES AP0's blue
    at y < 0 does). Its middle row is the luminance weights of R, G and B."""
    xy = np.asarray(chromaticities, dtype=np.float64)
    if xy.shape != (8,) or not np.isfinite(xy).all() or xy[7] <= 0:
        raise ValueError(f"need 8 finite CIE xy numbers, the white's y > 0; got {chromaticities}")
    x, y = xy[0::2], xy[1::2]
    primaries = np.stack([x[:3], y[:3], 1 - x[:3] - y[:3]])  # columns: R, G, B, any scale
    white = np.array([x[3], y[3], 1 - x[3] - y[3]]) / y[3]
    if abs(np.linalg.det(primaries)) < 1e-6:
        raise ValueError(f"primaries {chromaticities[:6]} do not span a colour space")
    scales = np.linalg.solve(primaries, white)
    if white[2] < 0 or (scales <= 1e-6).any():  # x + y > 1, or white on or off the triangle
        raise ValueError(f"white {chromaticities[6:]} is not inside its primaries' triangle")
    return primaries * scales


def bradford_adaptation(source_white: np.ndarray, target_white: np.ndarray) -> np.ndarray:
    """(3, 3) matrix on CIE XYZ that takes colours seen under ``source_white`` to those
    under ``target_white`` (each an XYZ 3-vector), by the Bradford cone responses."""
    cone_source = _BRADFORD @ source_white  # the whites' cone responses
    cone_target = _BRADFORD @ target_white
    return np.linalg.solve(_BRADFORD, np.diag(cone_target / cone_source) @ _BRADFORD)


def rgb_to_rec709_matrix(chromaticities: tuple[float, ...]) -> np.ndarray:
    """(3, 3) matrix from linear RGB with these primaries and white (see
    :func:`rgb_to_xyz_matrix`) to linear Rec. 709 / D65, the white adapted with Bradford:
    the file's white becomes (1, 1, 1)."""
    source = rgb_to_xyz_matrix(chromaticities)
    target = rgb_to_xyz_matrix(REC709_CHROMATICITIES)
    adapt = bradford_adaptation(source.sum(axis=1), target.sum(axis=1))
    return np.linalg.solve(target, adapt @ source)


def _expand_samples(samples: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Linear interpolation of a subsampled OpenEXR channel to ``size`` pixels along
    ``axis``: sample ``i`` lies on pixel ``i * size / n`` (OpenEXR puts one on every
    ``sampling``-th pixel, and ``size`` is a multiple of it); the last is held to the edge."""
    n = samples.shape[axis]
    if n == size:
        return samples
    position = np.arange(size) * (n / size)  # in samples
    low = np.minimum(position.astype(np.int64), n - 1)
    high = np.minimum(low + 1, n - 1)
    shape = [1, 1]
    shape[axis] = size
    t = (position - low).reshape(shape).astype(np.float32)
    return np.take(samples, low, axis) * (1 - t) + np.take(samples, high, axis) * t


def luminance_chroma_to_rgb(
    luminance: np.ndarray, ry: np.ndarray, by: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """OpenEXR's luminance/chroma encoding back to RGB: ``(H, W)`` luminance ``Y`` and the
    chroma ``RY = (R - Y) / Y``, ``BY = (B - Y) / Y`` (each ``(H / s, W / s)`` for a
    subsampling ``s``, or full size) -> float32 ``(H, W, 3)`` linear RGB; ``weights``: the
    luminance weights of R, G, B (middle row of :func:`rgb_to_xyz_matrix`).

    Chroma is interpolated linearly between its samples (OpenEXR's own reader uses a longer
    filter, so colours can differ slightly at sharp colour edges); where both chroma values
    are 0 the pixel is grey, ``R = G = B = Y``, exactly.
    """
    luma = luminance.astype(np.float32)
    height, width = luma.shape
    chroma = []
    for channel in (ry, by):
        channel = _expand_samples(channel.astype(np.float32), 0, height)
        chroma.append(_expand_samples(channel, 1, width))
    ry, by = chroma
    wr, wg, wb = (float(w) for w in weights)
    red = (ry + 1) * luma
    blue = (by + 1) * luma
    green = (luma - wr * red - wb * blue) / wg
    grey = (ry == 0) & (by == 0)
    image = np.stack([red, green, blue], axis=-1)
    image[grey] = luma[grey, None]
    return image


def write_exr(
    path: str | Path, image: np.ndarray, half: bool = False, compression: str = "zip"
) -> None:
    """Write linear ``(H, W, 3)`` RGB as OpenEXR (float32, or half with ``half=True``)."""
    path = Path(path)
    if compression not in _EXR_COMPRESSION:
        raise ValueError(f"compression must be one of {sorted(_EXR_COMPRESSION)}")
    image = _check_finite(np.asarray(image, dtype=np.float32), path)
    _rgb_to_bgr(image, path)  # shape check
    pixels = np.ascontiguousarray(image.astype(np.float16 if half else np.float32, copy=False))
    header = {"compression": _EXR_COMPRESSION[compression], "type": OpenEXR.scanlineimage}
    with atomic_path(path) as tmp:
        try:
            with OpenEXR.File(header, {"RGB": pixels}) as exr:
                exr.write(str(tmp))
        except (OSError, RuntimeError) as err:  # the library's errors: a full disk, ...
            raise ImageFileError(f"{path}: cannot write ({one_line(err)})") from None
        try:
            back = read_exr(tmp)
        except ImageFileError:
            back = None
        if back is None or back.shape != pixels.shape:
            raise ImageFileError(
                f"{path}: the written file does not read back as written (disk full?); not kept"
            )


# ---------------------------------------------------------------------------- Radiance

_RADIANCE_RGBE = b"32-bit_rle_rgbe"
_C_NUMBER = re.compile(rb"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
"""A number as Radiance's C reader takes it (not Python's ``1_000``, ``inf`` or ``nan``)."""
_OPENCV_RADIANCE_LINE = 100
"""Header lines at least this long go through a rewritten header: OpenCV reads the header
in 128-byte pieces, and the rest of a longer line is taken for the next line."""
_RADIANCE_HEAD_BYTES = 1 << 20  # header lines (commands, comments) before the pixels
_RADIANCE_AXES = (b"-Y", b"+Y", b"-X", b"+X")
_RADIANCE_MAX_SIDE = 1 << 20  # pixels: a larger side is a corrupt header


@dataclass(frozen=True)
class RadianceHeader:
    """What a Radiance ``.hdr`` header says (Greg Ward's format: header lines, a blank line,
    the resolution string, then RGBE scanlines)."""

    height: int
    width: int
    scanlines: int  # the resolution string's first (major) axis length
    scanline_length: int  # its second (minor) axis length
    columns_major: bool  # scanlines are columns (``+X W -Y H`` and kin): transpose
    bottom_up: bool  # rows stored bottom to top (``+Y``): flip vertically
    right_to_left: bool  # columns stored right to left (``-X``): flip horizontally
    scale: tuple[float, float, float]  # EXPOSURE x COLORCORR: what the pixels were multiplied by
    data_offset: int  # where the scanlines start
    longest_line: int  # bytes of the header's longest line (resolution string included)
    plain_format: bool  # an exact ``FORMAT=32-bit_rle_rgbe`` line and no CR, as OpenCV wants


def radiance_header(path: str | Path, data: bytes | None = None) -> RadianceHeader:
    """Parse a Radiance header (all eight orientations of the resolution string; cumulative
    ``EXPOSURE`` and ``COLORCORR``); ``data`` is the file's bytes or its start.

    Only RGB files (``FORMAT=32-bit_rle_rgbe``) are accepted: an XYZE file is refused.
    """
    path = Path(path)
    if data is None:
        with _existing(path).open("rb") as f:
            data = f.read(_RADIANCE_HEAD_BYTES)
    if not data.startswith(b"#?"):
        raise ImageFileError(f"{path}: not a Radiance HDR file (no #? signature)")
    scale = np.ones(3)
    plain_format = False
    pos = data.find(b"\n") + 1
    while True:
        end = data.find(b"\n", pos)
        if pos == 0 or end < 0:
            if len(data) >= _RADIANCE_HEAD_BYTES:
                raise ImageFileError(
                    f"{path}: Radiance header longer than {_RADIANCE_HEAD_BYTES:,} bytes; "
                    "not read (a header that long is a damaged file)"
                )
            raise ImageFileError(f"{path}: Radiance header without its end (truncated?)")
        line, pos = data[pos:end].strip(), end + 1
        if not line:
            break
        key, _, value = line.partition(b"=")
        plain_format |= data[pos - len(line) - 1 : pos - 1] == b"FORMAT=" + _RADIANCE_RGBE
        if key == b"FORMAT" and value.strip() != _RADIANCE_RGBE:
            raise ImageFileError(
                f"{path}: Radiance FORMAT={value.strip().decode(errors='replace')}; only "
                f"{_RADIANCE_RGBE.decode()} (RGB) files are read: convert it to RGB"
            )
        numbers = value.split()
        if key in (b"EXPOSURE", b"COLORCORR") and (
            len(numbers) != (1 if key == b"EXPOSURE" else 3)
            or not all(_C_NUMBER.fullmatch(v) for v in numbers)
        ):
            raise ImageFileError(f"{path}: unreadable Radiance header line {line[:60]!r}")
        if key == b"EXPOSURE":
            scale *= float(numbers[0])
        elif key == b"COLORCORR":
            scale *= np.array([float(v) for v in numbers], dtype=float)
    with np.errstate(over="ignore", divide="ignore"):  # checked in float32, the pixels' type
        scale32 = scale.astype(np.float32)
        inverse = np.float32(1) / scale32
    if not (np.isfinite(scale32).all() and (scale32 > 0).all() and np.isfinite(inverse).all()):
        raise ImageFileError(
            f"{path}: Radiance EXPOSURE/COLORCORR must give a finite factor > 0 in float32, "
            f"got {', '.join(f'{v:g}' for v in scale)}"
        )
    end = data.find(b"\n", pos)
    fields = data[pos:end].split() if end > 0 else []
    if (
        len(fields) != 4
        or fields[0] not in _RADIANCE_AXES
        or fields[2] not in _RADIANCE_AXES
        or fields[0][1:] == fields[2][1:]
        or not (fields[1].isdigit() and fields[3].isdigit())
        or int(fields[1]) * int(fields[3]) == 0
        or max(int(fields[1]), int(fields[3])) > _RADIANCE_MAX_SIDE
    ):
        raise ImageFileError(f"{path}: Radiance header without a valid image size")
    major, minor = int(fields[1]), int(fields[3])
    _check_pixel_count(path, major, minor)
    columns_major = fields[0].endswith(b"X")
    signs = {fields[0][1:]: fields[0][:1], fields[2][1:]: fields[2][:1]}
    return RadianceHeader(
        height=minor if columns_major else major,
        width=major if columns_major else minor,
        scanlines=major,
        scanline_length=minor,
        columns_major=columns_major,
        bottom_up=signs[b"Y"] == b"+",
        right_to_left=signs[b"X"] == b"-",
        scale=tuple(float(v) for v in scale),
        data_offset=end + 1,
        longest_line=max(len(line) for line in data[: end + 1].split(b"\n")),
        plain_format=plain_format and b"\r" not in data[: end + 1],
    )


def read_radiance(path: str | Path, negative: str = "clip") -> np.ndarray:
    """Linear RGB of a Radiance ``.hdr`` (RGBE) file as float32 ``(H, W, 3)``, >= 0, upright
    whatever its resolution string, and divided by its ``EXPOSURE`` / ``COLORCORR``."""
    path = _existing(path)
    head = radiance_header(path)
    image = None
    upright = not (head.columns_major or head.bottom_up or head.right_to_left)
    if upright and head.plain_format and head.longest_line < _OPENCV_RADIANCE_LINE:
        with contextlib.suppress(cv2.error):  # straight from the file when OpenCV can
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        # OpenCV reads only the standard orientation (-Y H +X W), wants an exact FORMAT line
        # and no CR, and splits longer header lines (which can end its header early and
        # shift every pixel): give it that header, then turn the image upright (its RGBE
        # decoder goes through a temporary file)
        data = path.read_bytes()
        standard = b"#?RADIANCE\nFORMAT=%s\n\n-Y %d +X %d\n" % (
            _RADIANCE_RGBE,
            head.scanlines,
            head.scanline_length,
        )
        pixels = data[head.data_offset :]
        try:
            image = imdecode(standard + pixels, path, cv2.IMREAD_UNCHANGED)
        except ImageFileError:
            _check_old_run_lengths(pixels, head.scanlines * head.scanline_length, path)
            raise
    if image.dtype != np.float32 or image.shape != (head.scanlines, head.scanline_length, 3):
        raise ImageFileError(f"{path}: decoded as {image.dtype} {image.shape}, not Radiance RGBE")
    if head.columns_major:
        image = image.transpose(1, 0, 2)
    if head.bottom_up:
        image = image[::-1]
    if head.right_to_left:
        image = image[:, ::-1]
    image = _bgr_to_rgb(image, path)
    if head.scale != (1.0, 1.0, 1.0):
        image = image / np.asarray(head.scale, dtype=np.float32)
    return _check_finite(image, path, negative)


def _check_old_run_lengths(pixels: bytes, count: int, path: Path) -> None:
    """Name Radiance's original run-length encoding, which OpenCV does not decode: fewer
    bytes than ``count`` flat pixels, no new-style run-length scanline (``2 2 hi lo``), and
    repeat markers (``1 1 1 n``: repeat the pixel before)."""
    if len(pixels) >= 4 * count or pixels[:2] == b"\x02\x02":
        return
    quads = np.frombuffer(pixels[: len(pixels) // 4 * 4], dtype=np.uint8).reshape(-1, 4)
    if ((quads[1:, :3] == 1).all(axis=1)).any():
        raise ImageFileError(
            f"{path}: Radiance file with the original run-length encoding (repeat pixels "
            "1 1 1 n, from tools before 1991), which OpenCV does not read; save it again with "
            "a current tool (Radiance's ra_rgbe, an HDR image editor)"
        )


def write_radiance(path: str | Path, image: np.ndarray) -> None:
    """Write linear ``(H, W, 3)`` RGB as a Radiance ``.hdr`` file (RGBE, ~1% precision)."""
    path = Path(path)
    image = _check_finite(np.asarray(image, dtype=np.float32), path)
    imwrite(path, _rgb_to_bgr(image, path))


# ---------------------------------------------------------------------------- PFM

_PFM_HEADER = re.compile(rb"(P[Ff])\s+(\d{1,9})\s+(\d{1,9})\s+(\S{1,40})\s")
"""``PF`` (RGB) or ``Pf`` (grey), width, height and the scale, each followed by white space;
the pixels start after the single white-space character that ends the scale."""


@dataclass(frozen=True)
class PFMHeader:
    """What a portable float map's header says: the float32 pixels that follow are stored
    row by row from the bottom row up, little-endian where the scale is negative."""

    height: int
    width: int
    channels: int
    little_endian: bool
    data_offset: int


def pfm_header(path: str | Path) -> PFMHeader:
    """Parse the header of a ``.pfm`` file (checked against :data:`MAX_PIXELS` and the
    file's length)."""
    path = _existing(path)
    with path.open("rb") as f:
        head = f.read(128)
    match = _PFM_HEADER.match(head)
    if match is None:
        raise ImageFileError(f"{path}: not a portable float map (no PF/Pf header with a size)")
    kind, width, height, scale = match.groups()
    try:
        factor = float(scale)
    except ValueError:
        factor = float("nan")
    if not (np.isfinite(factor) and factor != 0):
        raise ImageFileError(f"{path}: PFM scale {scale[:20]!r} is not a finite number != 0")
    header = PFMHeader(
        height=int(height),
        width=int(width),
        channels=3 if kind == b"PF" else 1,
        little_endian=factor < 0,
        data_offset=match.end(),
    )
    if header.height * header.width == 0:
        raise ImageFileError(f"{path}: PFM header without a valid image size")
    _check_pixel_count(path, header.height, header.width)
    expected = header.data_offset + 4 * header.channels * header.height * header.width
    size = path.stat().st_size
    if size != expected:  # a CR LF header or trailing bytes would shift every pixel
        why = "truncated?" if size < expected else "a header with CR LF, or trailing bytes?"
        raise ImageFileError(
            f"{path}: {size:,} bytes, but its header declares {header.height}x{header.width} "
            f"float pixels after {header.data_offset} header bytes ({expected:,} bytes); {why}"
        )
    return header


def read_pfm(path: str | Path, negative: str = "clip") -> np.ndarray:
    """Linear RGB of a portable float map as float32 ``(H, W, 3)``, >= 0, upright (the file
    stores its bottom row first); a grey (``Pf``) map is repeated to RGB. The scale's
    magnitude is not applied (writers use it for the byte order only, as readers expect)."""
    path = Path(path)
    head = pfm_header(path)
    dtype = np.dtype("<f4" if head.little_endian else ">f4")
    count = head.height * head.width * head.channels
    with path.open("rb") as f:
        f.seek(head.data_offset)
        pixels = np.frombuffer(f.read(4 * count), dtype=dtype, count=count)
    image = pixels.astype(np.float32).reshape(head.height, head.width, head.channels)[::-1]
    if head.channels == 1:
        log.warning("%s: grayscale PFM, converted to RGB by repeating its channel", path)
        image = np.repeat(image, 3, axis=2)
    return _check_finite(np.ascontiguousarray(image), path, negative)


# ---------------------------------------------------------------------------- dispatch


def hdr_image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of a file of :data:`HDR_EXTENSIONS`, read from its header only."""
    path = _existing(path)
    suffix = path.suffix.lower()
    if suffix == ".png":
        info = png_info(path)
        _check_pixel_count(path, info.height, info.width)
        return info.height, info.width
    if suffix == ".exr":
        return _exr_size(path)
    if suffix in RADIANCE_EXTENSIONS:
        head = radiance_header(path)
        return head.height, head.width
    if suffix == ".pfm":
        pfm = pfm_header(path)
        return pfm.height, pfm.width
    raise ImageFileError(f"{path}: unknown HDR format; use one of {', '.join(HDR_EXTENSIONS)}")


def read_linear_hdr(path: str | Path, negative: str = "clip") -> np.ndarray:
    """Linear HDR from a file of :data:`LINEAR_HDR_EXTENSIONS` or an NTIRE PNG pair
    (linearised with gamma 2.24); negative values are clipped or filled, see ``NEGATIVE``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".exr":
        return read_exr(path, negative)
    if suffix in RADIANCE_EXTENSIONS:
        return read_radiance(path, negative)
    if suffix == ".pfm":
        return read_pfm(path, negative)
    if suffix == ".png":
        return read_hdr_png(path) ** np.float32(GAMMA)
    raise ImageFileError(f"{path}: unknown HDR format; use one of {', '.join(HDR_EXTENSIONS)}")


def write_hdr(
    path: str | Path, nonlinear: np.ndarray, alignratio_path: str | Path | None = None
) -> list[Path]:
    """Write a non-linear HDR by the suffix of ``path``; returns the files written.

    ``.png`` writes the NTIRE pair (non-linear values, as submitted to the challenge; the
    align ratio beside it, or as ``alignratio_path``); ``.exr`` and ``.hdr`` write linear
    radiance (``nonlinear ** 2.24``).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".png":
        ratio_path = Path(alignratio_path or alignratio_path_for(path))
        write_hdr_png(path, nonlinear, ratio_path)
        return [path, ratio_path]
    linear = np.maximum(np.asarray(nonlinear, dtype=np.float32), 0, order="C")
    np.power(linear, np.float32(GAMMA), out=linear)  # in place: one image buffer fewer
    if suffix == ".exr":
        write_exr(path, linear)
    elif suffix == ".hdr":
        write_radiance(path, linear)
    else:
        raise ImageFileError(f"{path}: unknown HDR format; use .png (NTIRE pair), .exr or .hdr")
    return [path]
