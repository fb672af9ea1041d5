"""Matrix/TRC ICC colour profiles (version 2) written by the ICC specification (ICC.1:2001-04),
for tests of colour-managed reading: the files phones and cameras embed (Display P3, ...).

No ICC profile ships with the packages the tests may use, so the tests make their own.
"""

from __future__ import annotations

import struct

import numpy as np

from hdrunet_pl.io import bradford_adaptation, rgb_to_xyz_matrix

DISPLAY_P3 = (0.680, 0.320, 0.265, 0.690, 0.150, 0.060, 0.3127, 0.3290)
"""CIE xy of Display P3's red, green, blue and white (D65)."""
D50 = np.array([0.9642, 1.0, 0.8249])
"""The ICC profile connection space's white."""


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz_tag(xyz: np.ndarray) -> bytes:
    return b"XYZ " + bytes(4) + b"".join(_s15(v) for v in xyz)


def stored_gamma(gamma: float) -> float:
    """The gamma a ``curv`` tag stores (u8Fixed8: in steps of 1/256)."""
    return round(gamma * 256) / 256


def _padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def _profile(space: bytes, tags: list[tuple[bytes, bytes]]) -> bytes:
    """A display profile's bytes: the 128-byte header, the tag table, the tags."""
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, data in tags:
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += _padded(data)
    size = offset + len(body)
    header = (
        struct.pack(">I", size)
        + bytes(4)
        + struct.pack(">I", 0x02100000)
        + b"mntr"
        + space
        + b"XYZ "
        + struct.pack(">6H", 2026, 12, 7, 0, 0, 0)
        + b"acsp"
        + bytes(4 + 4 + 4 + 4 + 8 + 4)
        + b"".join(_s15(v) for v in D50)
        + bytes(4 + 16 + 28)
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def _text_tags(name: str) -> list[tuple[bytes, bytes]]:
    text = name.encode("latin-1") + b"\0"  # version 2's "ASCII"; latin-1 as some tools write
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    return [(b"desc", desc), (b"cprt", b"text" + bytes(4) + b"no copyright, test data\0")]


def _curve(gamma: float, table: list[int] | None = None) -> bytes:
    if table is not None:  # sampled: 16-bit values at equal steps of the code
        return b"curv" + bytes(4) + struct.pack(f">I{len(table)}H", len(table), *table)
    return b"curv" + bytes(4) + struct.pack(">IH", 1, round(stored_gamma(gamma) * 256))


def grey_profile(gamma: float, name: str, table: list[int] | None = None) -> bytes:
    """A grey display profile: luminance = codes ** ``gamma`` (or the sampled ``table``)."""
    curve = _curve(gamma, table)
    return _profile(b"GRAY", [*_text_tags(name), (b"wtpt", _xyz_tag(D50)), (b"kTRC", curve)])


def matrix_trc_profile(chromaticities: tuple[float, ...], gamma: float, name: str) -> bytes:
    """An RGB display profile: linear RGB = codes ** ``gamma`` (each channel), to XYZ by the
    primaries and white of ``chromaticities`` (8 CIE xy numbers), adapted to D50 by
    Bradford as the specification asks."""
    to_xyz = rgb_to_xyz_matrix(chromaticities)
    white = to_xyz.sum(axis=1)
    colorants = bradford_adaptation(white, D50) @ to_xyz
    curve = _curve(gamma)
    tags = [
        *_text_tags(name),
        (b"wtpt", _xyz_tag(D50)),
        (b"rXYZ", _xyz_tag(colorants[:, 0])),
        (b"gXYZ", _xyz_tag(colorants[:, 1])),
        (b"bXYZ", _xyz_tag(colorants[:, 2])),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    return _profile(b"RGB ", tags)


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1's sRGB transfer function: linear [0, 1] -> non-linear [0, 1]."""
    linear = np.clip(linear, 0, 1)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
