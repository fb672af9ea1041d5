"""Image files: LDR, NTIRE 16-bit PNG + align ratio, OpenEXR, Radiance; errors name the file."""

import hashlib
import json
import logging
import os
import pickle
import re
from pathlib import Path

import cv2
import numpy as np
import OpenEXR
import pytest

from hdrunet_pl.errors import HDRUNetError, ImageFileError
from hdrunet_pl.io import (
    REC709_CHROMATICITIES,
    alignratio_path_for,
    hdr_image_size,
    luminance_chroma_to_rgb,
    png_info,
    read_alignratio,
    read_exr,
    read_hdr_png,
    read_ldr,
    read_ldr_codes,
    read_linear_hdr,
    read_radiance,
    rgb_to_rec709_matrix,
    rgb_to_xyz_matrix,
    write_exr,
    write_hdr,
    write_hdr_png,
    write_ldr,
    write_radiance,
)


def hdr_image(h=12, w=17, peak=20.0, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((h, w, 3)) ** 3 * peak).astype(np.float32)


def test_ldr_round_trip_is_8_bit_exact(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (9, 13, 3)).astype(np.float32) / 255
    write_ldr(tmp_path / "a.png", image)
    assert png_info(tmp_path / "a.png").bit_depth == 8
    np.testing.assert_array_equal(read_ldr(tmp_path / "a.png"), image)


def _with_png_chunk(png: bytes, kind: bytes, data: bytes) -> bytes:
    """A PNG file's bytes with one more chunk right after its header chunk."""
    import struct
    import zlib

    chunk = struct.pack(">I", len(data)) + kind + data
    chunk += struct.pack(">I", zlib.crc32(kind + data))
    end_of_header = 8 + 8 + 13 + 4
    return png[:end_of_header] + chunk + png[end_of_header:]


def test_an_embedded_colour_profile_is_converted_to_srgb(tmp_path, caplog):
    """A phone photo in Display P3 is read in sRGB, as a colour-managed viewer shows it (by
    LittleCMS), not as if its codes were sRGB's; an sRGB profile changes nothing; what
    cannot be converted is read as sRGB with a log line."""
    import zlib

    from PIL import Image, ImageCms

    from .icc import DISPLAY_P3, grey_profile, matrix_trc_profile, srgb_encode, stored_gamma

    levels = np.array([0, 40, 90, 128, 200, 255], np.uint8)
    codes = np.stack(np.meshgrid(levels, levels, levels), axis=-1).reshape(12, 18, 3)
    p3 = matrix_trc_profile(DISPLAY_P3, 2.2, "Display P3 (test)")
    Image.fromarray(codes).save(tmp_path / "p3.png", icc_profile=p3)
    with caplog.at_level(logging.INFO, logger="hdrunet_pl.io"):
        read = read_ldr_codes(tmp_path / "p3.png")
    assert "p3.png: converted from its colour profile 'Display P3 (test)' to sRGB" in caplog.text
    p3_to_srgb = np.linalg.inv(rgb_to_xyz_matrix(REC709_CHROMATICITIES)) @ rgb_to_xyz_matrix(
        DISPLAY_P3
    )
    linear = (codes / 255.0) ** stored_gamma(2.2) @ p3_to_srgb.T
    expected = np.round(srgb_encode(linear) * 255)
    assert np.abs(read.astype(int) - expected).max() <= 2
    assert np.abs(read.astype(int) - codes).max() > 20  # not the codes as stored
    # an sRGB profile: the codes as stored
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(codes).save(tmp_path / "srgb.png", icc_profile=srgb)
    np.testing.assert_array_equal(read_ldr_codes(tmp_path / "srgb.png"), codes)
    # 16 bits (LittleCMS through Pillow converts 8): read as stored, said
    deep = (codes.astype(np.uint16) * 257)[..., ::-1]
    png = cv2.imencode(".png", deep)[1].tobytes()
    iccp = b"Display P3\0\0" + zlib.compress(p3)
    (tmp_path / "deep.png").write_bytes(_with_png_chunk(png, b"iCCP", iccp))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hdrunet_pl.io"):
        np.testing.assert_array_equal(read_ldr_codes(tmp_path / "deep.png"), deep[..., ::-1])
    assert "deep.png: 16-bit image in colour profile 'Display P3 (test)', read as sRGB" in (
        caplog.text
    )
    # a grey profile's tone curve (Photoshop's grey working spaces), converted
    ramp = np.linspace(0, 255, 16).astype(np.uint8).reshape(4, 4)
    Image.fromarray(ramp).save(tmp_path / "grey.png", icc_profile=grey_profile(1.8, "Gray 1.8"))
    expected = np.round(srgb_encode((ramp / 255.0) ** stored_gamma(1.8)) * 255)
    read = read_ldr_codes(tmp_path / "grey.png")
    assert np.abs(read.astype(int) - expected[..., None]).max() <= 2
    assert np.abs(read[..., 0].astype(int) - ramp).max() > 10
    # CMYK ink (OpenCV's to turn into RGB) is not what an RGB profile describes: not applied
    rgb = Image.fromarray(codes)
    rgb.convert("CMYK").save(tmp_path / "ink.jpg", quality=95)
    rgb.convert("CMYK").save(tmp_path / "ink_p3.jpg", quality=95, icc_profile=p3)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hdrunet_pl.io"):
        read = read_ldr_codes(tmp_path / "ink_p3.jpg")
    np.testing.assert_array_equal(read, read_ldr_codes(tmp_path / "ink.jpg"))
    assert "ink_p3.jpg: colour profile 'Display P3 (test)' (RGB) not applied to its CMYK" in (
        caplog.text
    )
    # a name LittleCMS cannot decode (non-ASCII bytes) costs the name, not the conversion
    accented = matrix_trc_profile(DISPLAY_P3, 2.2, "\u00c9cran P3 caf\u00e9")
    Image.fromarray(codes).save(tmp_path / "accented.png", icc_profile=accented)
    np.testing.assert_array_equal(
        read_ldr_codes(tmp_path / "accented.png"), read_ldr_codes(tmp_path / "p3.png")
    )
    # a broken profile that turns white black: not applied, said
    black = grey_profile(1.0, "black", table=[0, 0])
    Image.fromarray(ramp).save(tmp_path / "black.png", icc_profile=black)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hdrunet_pl.io"):
        np.testing.assert_array_equal(read_ldr_codes(tmp_path / "black.png")[..., 0], ramp)
    assert "black.png: colour profile 'black' turns white into [0, 0, 0]" in caplog.text
    # a profile LittleCMS cannot read: as sRGB, said
    Image.fromarray(codes).save(tmp_path / "bad.png", icc_profile=b"not a profile")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hdrunet_pl.io"):
        np.testing.assert_array_equal(read_ldr_codes(tmp_path / "bad.png"), codes)
    assert "bad.png: unusable colour profile" in caplog.text


def test_alignratio_naming_follows_ntire():
    assert alignratio_path_for("/d/0042_gt.png").name == "0042_alignratio.npy"
    assert alignratio_path_for("/d/0042.png").name == "0042_alignratio.npy"


def test_hdr_png_is_written_as_the_challenge_does(tmp_path):
    hdr = hdr_image()
    hdr[0, 0] = [30.0, 1.0, 0.5]  # the peak, in red
    ratio = write_hdr_png(tmp_path / "0001_gt.png", hdr)
    assert ratio == pytest.approx(65535 / 30.0, rel=1e-6)
    stored = np.load(tmp_path / "0001_alignratio.npy", allow_pickle=False)
    assert float(stored) == pytest.approx(ratio)
    raw = cv2.imread(str(tmp_path / "0001_gt.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw[0, 0, 2] == 65535  # BGR on disk: red is last
    back = read_hdr_png(tmp_path / "0001_gt.png")
    assert back.dtype == np.float32 and back.shape == hdr.shape
    assert np.abs(back - hdr).max() <= 0.5 / ratio + 1e-6  # half a 16-bit step
    np.testing.assert_array_equal(back, raw[..., ::-1].astype(np.float32) / np.float32(ratio))


def test_hdr_png_with_an_explicit_ratio_path(tmp_path):
    write_hdr_png(tmp_path / "x.png", hdr_image(), tmp_path / "ratios" / "x.npy")
    assert read_hdr_png(tmp_path / "x.png", tmp_path / "ratios" / "x.npy").shape == (12, 17, 3)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0.0, "finite and > 0"),
        (-3.0, "finite and > 0"),
        (np.nan, "finite and > 0"),
        (np.ones(3), "need one number"),
        (1e-50, "finite and > 0 in float32"),  # finite in float64, 0 in float32
        (1e300, "finite and > 0 in float32"),  # finite in float64, inf in float32
        (1e-40, "gives no usable HDR values"),  # 65535 / ratio is inf in float32
    ],
)
def test_bad_align_ratios_are_refused(tmp_path, value, message):
    np.save(tmp_path / "0001_alignratio.npy", np.asarray(value, dtype=np.float64))
    with pytest.raises(ImageFileError, match=message) as err:
        read_alignratio(tmp_path / "0001_alignratio.npy")
    assert "0001_alignratio.npy" in str(err.value)


@pytest.mark.parametrize("value", [np.array("3.0"), np.array(True), np.array(1 + 2j)])
def test_an_align_ratio_that_is_not_a_real_number_says_so(tmp_path, value):
    np.save(tmp_path / "0001_alignratio.npy", value)
    with pytest.raises(ImageFileError, match=f"need a real number, got {value.dtype} data"):
        read_alignratio(tmp_path / "0001_alignratio.npy")


def test_npz_under_an_align_ratio_name_is_an_image_file_error(tmp_path):
    np.savez(tmp_path / "0001_alignratio", ratio=np.float32(3.0))
    (tmp_path / "0001_alignratio.npz").rename(tmp_path / "0001_alignratio.npy")
    with pytest.raises(ImageFileError, match=r"NpzFile \(\.npz\?\), not a plain \.npy"):
        read_alignratio(tmp_path / "0001_alignratio.npy")


def test_a_write_that_does_not_read_back_never_gets_its_name(tmp_path, monkeypatch):
    """A full disk: the write reports no error, but the file is truncated."""
    from hdrunet_pl import io

    real = io._write_bytes

    def truncating(path, data):
        real(path, data[:100])

    monkeypatch.setattr(io, "_write_bytes", truncating)
    with pytest.raises(ImageFileError, match="does not read back as written"):
        write_hdr_png(tmp_path / "0001.png", hdr_image())
    assert not (tmp_path / "0001.png").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["0001_alignratio.npy"]  # no PNG: no unit


def test_a_pixel_type_the_format_would_convert_is_refused(tmp_path):
    """OpenCV's encoders convert without a word: float32 to an 8-bit PNG of zeros, 16 bits
    to an 8-bit BMP. What a file cannot hold as it is is refused, and nothing is written."""
    from hdrunet_pl.io import imwrite

    for name, image in (
        ("a.png", np.full((8, 8, 3), 0.5, np.float32)),
        ("a.bmp", np.full((8, 8, 3), 60000, np.uint16)),
        ("a.hdr", np.full((8, 8, 3), 9, np.uint8)),
        ("a.xyz", np.full((8, 8, 3), 9, np.uint8)),
    ):
        with pytest.raises(ImageFileError, match=rf"{name}: cannot write \w+ pixels"):
            imwrite(tmp_path / name, image)
    assert list(tmp_path.iterdir()) == []
    imwrite(tmp_path / "a.PNG", np.full((8, 8, 3), 60000, np.uint16))  # any case
    assert cv2.imread(str(tmp_path / "a.PNG"), cv2.IMREAD_UNCHANGED).max() == 60000


def test_a_full_disk_is_one_error_naming_the_file(tmp_path, monkeypatch):
    """ENOSPC from the write: an ImageFileError naming the file (one line in every tool),
    not a bare OSError, and no file under the final name."""
    from hdrunet_pl import io

    def full(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io, "_write_bytes", full)
    with pytest.raises(ImageFileError, match=r"0001\.png: cannot write \(No space left"):
        write_hdr_png(tmp_path / "0001.png", hdr_image())
    assert not (tmp_path / "0001.png").exists()

    class FullDiskEXR:  # OpenEXR's binding raises RuntimeError for a failed write
        def __init__(self, *args):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, filename):
            raise RuntimeError(f"Failed to write pixel data to {filename}: No space left")

    monkeypatch.setattr(io.OpenEXR, "File", FullDiskEXR)
    with pytest.raises(ImageFileError, match=r"a\.exr: cannot write \(Failed to write pixel"):
        io.write_exr(tmp_path / "a.exr", hdr_image())
    assert not any(p.suffix == ".exr" for p in tmp_path.iterdir())  # nor its temporary


def test_pickled_align_ratio_is_refused(tmp_path):
    path = tmp_path / "evil_alignratio.npy"
    np.save(path, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ImageFileError, match="not a plain numeric"):
        read_alignratio(path)
    path.write_bytes(pickle.dumps(1.0))
    with pytest.raises(ImageFileError, match=r"evil_alignratio\.npy: not a \.npy file") as err:
        read_alignratio(path)
    assert "allow_pickle" not in str(err.value)  # numpy's advice to load it unsafely


def test_a_text_file_as_an_align_ratio_is_named_as_not_a_npy_file(tmp_path):
    """It was said to hold pickled data, with numpy's advice to load it unsafely."""
    path = tmp_path / "0001_alignratio.npy"
    path.write_text("14000\n")
    with pytest.raises(ImageFileError) as err:
        read_alignratio(path)
    message = str(err.value)
    assert message.startswith(f"{path}: not a .npy file") and "b'14000\\n'" in message
    assert "pickle" not in message


def test_missing_align_ratio_and_8_bit_gt(tmp_path):
    write_ldr(tmp_path / "0001_gt.png", np.full((8, 8, 3), 0.5, np.float32))
    with pytest.raises(ImageFileError, match="align ratio file missing"):
        read_hdr_png(tmp_path / "0001_gt.png")
    np.save(tmp_path / "0001_alignratio.npy", np.float32(100.0))
    with pytest.raises(ImageFileError, match=r"uint8 PNG where a 16-bit HDR PNG is expected"):
        read_hdr_png(tmp_path / "0001_gt.png")


def test_truncated_and_garbage_pngs_name_the_file(tmp_path):
    write_hdr_png(tmp_path / "0001_gt.png", hdr_image(64, 64))
    data = (tmp_path / "0001_gt.png").read_bytes()
    (tmp_path / "0001_gt.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageFileError, match=r"0001_gt\.png: unreadable"):
        read_hdr_png(tmp_path / "0001_gt.png")
    (tmp_path / "junk.png").write_bytes(b"not a png at all")
    with pytest.raises(ImageFileError, match=r"junk\.png"):
        read_ldr(tmp_path / "junk.png")
    with pytest.raises(ImageFileError, match="not a PNG"):
        png_info(tmp_path / "junk.png")
    with pytest.raises(ImageFileError, match="no such file"):
        read_ldr(tmp_path / "missing.png")


def test_what_is_there_but_no_file_is_named_for_what_it_is(tmp_path):
    """A FIFO (never opened: it would block), a folder or a dangling link named like an
    image read as "no such file" though something is there."""
    import os

    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    for name, what in (
        ("pipe.png", "not a regular file (a pipe, socket or device)"),
        ("folder.png", "a folder, not a file"),
        ("dangling.png", "a symbolic link that leads to no file"),
    ):
        with pytest.raises(ImageFileError, match=re.escape(f"{name}: {what}")):
            read_ldr(tmp_path / name)
    os.mkfifo(tmp_path / "0001_alignratio.npy")
    with pytest.raises(ImageFileError, match=r"0001_alignratio\.npy: not a regular file"):
        read_alignratio(tmp_path / "0001_alignratio.npy")


def test_a_truncated_exr_is_named_as_such(tmp_path):
    """Not "no R, G, B channels; has []": the file has them, its pixels are cut off."""
    write_exr(tmp_path / "a.exr", hdr_image(64, 64))
    data = (tmp_path / "a.exr").read_bytes()
    (tmp_path / "a.exr").write_bytes(data[: len(data) // 2])
    assert hdr_image_size(tmp_path / "a.exr") == (64, 64)  # the header is whole
    with pytest.raises(ImageFileError, match=r"a\.exr: its pixels cannot be read \(truncated"):
        read_exr(tmp_path / "a.exr")


def test_an_ldr_header_is_held_to_the_packages_pixel_limit_not_pillows(tmp_path):
    """Pillow refuses headers above 179 M pixels by itself; images between that and the
    package's 268 M limit were refused with a message naming the package's limit."""
    from hdrunet_pl.io import MAX_PIXELS

    from .support import bomb_png

    under, over = tmp_path / "under.png", tmp_path / "over.png"
    bomb_png(under, side=14_000)  # 196 M pixels: Pillow's limit, not the package's
    bomb_png(over, side=17_000)  # 289 M pixels
    assert 14_000**2 < MAX_PIXELS < 17_000**2
    with pytest.raises(ImageFileError) as err:
        read_ldr(under)  # its rows are missing: refused when decoded, not for its size
    assert "more than an image file may have" not in str(err.value)
    with pytest.raises(ImageFileError, match=r"289,000,000 pixels is more than an image file"):
        read_ldr(over)


def test_an_exr_whose_header_claims_too_many_pixels_is_refused_before_reading(tmp_path):
    import struct

    write_exr(tmp_path / "a.exr", hdr_image(6, 9))
    data = (tmp_path / "a.exr").read_bytes()
    key = b"dataWindow\x00box2i\x00" + struct.pack("<i", 16)
    start = data.index(key) + len(key)
    bomb = data[:start] + struct.pack("<4i", 0, 0, 19999, 19999) + data[start + 16 :]
    (tmp_path / "bomb.exr").write_bytes(bomb)
    for read in (hdr_image_size, read_exr):
        with pytest.raises(ImageFileError, match=r"20000x20000 pixels is more than an image file"):
            read(tmp_path / "bomb.exr")


def test_exr_alpha_is_dropped_with_a_log_line_and_integer_channels_are_refused(tmp_path, caplog):
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    rgba = np.dstack([hdr_image(4, 5), np.full((4, 5), 0.5, np.float32)])
    with OpenEXR.File(header, {"RGBA": rgba}) as f:
        f.write(str(tmp_path / "rgba.exr"))
    ids = {c: np.arange(20, dtype=np.uint32).reshape(4, 5) for c in "RGB"}
    with OpenEXR.File(header, ids) as f:
        f.write(str(tmp_path / "ids.exr"))
    with caplog.at_level(logging.WARNING):
        np.testing.assert_array_equal(read_exr(tmp_path / "rgba.exr"), rgba[..., :3])
    assert "rgba.exr: alpha channel dropped" in caplog.text
    with pytest.raises(ImageFileError, match=r"ids\.exr: integer OpenEXR channels \(B, G, R"):
        read_exr(tmp_path / "ids.exr")


def test_grayscale_is_converted_and_alpha_dropped_with_a_log_line(tmp_path, caplog):
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    bgra = np.dstack([gray, gray // 2, gray // 3, np.full_like(gray, 255)])
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    with caplog.at_level(logging.WARNING):
        g = read_ldr(tmp_path / "g.png")
        a = read_ldr(tmp_path / "a.png")
    assert g.shape == (4, 5, 3) and np.all(g[..., 0] == g[..., 2])
    np.testing.assert_array_equal(a[..., 0], (gray // 3) / np.float32(255))  # R = BGR[2]
    assert "g.png: grayscale image, converted to RGB" in caplog.text
    assert "a.png: alpha channel dropped" in caplog.text
    # grey with alpha (OpenCV hands it over as colour) and a palette's or a grey image's
    # transparency (a tRNS chunk) were converted without their lines
    from PIL import Image

    Image.fromarray(np.dstack([gray, gray]), "LA").save(tmp_path / "la.png")
    Image.fromarray(gray, "L").convert("P").save(tmp_path / "p.png", transparency=0)
    Image.fromarray(gray, "L").save(tmp_path / "key.png", transparency=30)
    Image.fromarray(np.dstack([gray] * 3), "RGB").save(tmp_path / "rgb.png")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        for name in ("la", "p", "key", "rgb"):
            assert read_ldr(tmp_path / f"{name}.png").shape == (4, 5, 3)
    said = {r.getMessage() for r in caplog.records}
    grey, alpha = (
        "grayscale image, converted to RGB by repeating its channel",
        "alpha channel dropped",
    )
    assert said == {
        f"{tmp_path / 'la.png'}: {grey}",
        f"{tmp_path / 'la.png'}: {alpha}",
        f"{tmp_path / 'p.png'}: transparency dropped",
        f"{tmp_path / 'key.png'}: {grey}",
        f"{tmp_path / 'key.png'}: transparency dropped",
    }


def _quadrants(height: int = 20, width: int = 40) -> np.ndarray:
    """An RGB uint8 image with a different colour in each quadrant (any turn or flip shows)."""
    image = np.zeros((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    image[:h, :w], image[:h, w:], image[h:, :w] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    return image


def _save_with_orientation(path: Path, stored: np.ndarray, orientation: int) -> None:
    import tifffile
    from PIL import Image

    if path.suffix == ".tif":  # the orientation tag (274) of the TIFF itself
        tifffile.imwrite(path, stored, photometric="rgb", extratags=[(274, "H", 1, orientation)])
        return
    exif = Image.Exif()
    exif[0x0112] = orientation
    options = {"quality": 95} if path.suffix == ".jpg" else {"lossless": True}
    Image.fromarray(stored).save(
        path, format=path.suffix[1:].replace("jpg", "jpeg"), exif=exif, **options
    )


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".tif", ".webp"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_an_exif_orientation_is_applied_in_every_format(tmp_path, suffix, orientation):
    """A photo taken upright is stored sideways with an orientation tag (JPEG, PNG eXIf,
    TIFF, WebP): it is read upright, pixel for pixel as Pillow's ``exif_transpose`` shows
    it. OpenCV 5's ``imread`` failed outright on TIFFs with orientation 5-8."""
    from PIL import Image, ImageOps

    path = tmp_path / f"photo{suffix}"
    _save_with_orientation(path, _quadrants(), orientation)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    read = read_ldr(path)
    assert read.shape == upright.shape == ((20, 40, 3) if orientation < 5 else (40, 20, 3))
    assert np.abs(np.round(read * 255).astype(int) - upright).max() <= 2  # JPEG rounding


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_tiff_alpha_is_dropped_not_multiplied_into_the_colour(tmp_path, caplog, orientation):
    """OpenCV's TIFF reader multiplies 8-bit colour by an unassociated alpha: a half-
    transparent photo came out half as bright, a transparent one black. Turned upright as
    the same photo without alpha is (OpenCV's path, checked against Pillow above)."""
    import tifffile

    colour = _quadrants()
    tag = [(274, "H", 1, orientation)]
    tifffile.imwrite(tmp_path / "rgb.tif", colour, photometric="rgb", extratags=tag)
    upright = read_ldr(tmp_path / "rgb.tif")
    for alpha in (128, 0):
        rgba = np.dstack([colour, np.full(colour.shape[:2], alpha, np.uint8)])
        path = tmp_path / f"a{alpha}.tif"
        tifffile.imwrite(path, rgba, photometric="rgb", extrasamples=[2], extratags=tag)
        with caplog.at_level(logging.WARNING):
            np.testing.assert_array_equal(read_ldr(path), upright)
            np.testing.assert_array_equal(read_ldr(path, upright=False), colour / np.float32(255))
        assert f"a{alpha}.tif: alpha channel dropped" in caplog.text


def test_a_compressed_tiff_with_alpha_is_read_without_its_alpha_multiplied_in(tmp_path):
    """LZW needs a codec tifffile may lack (imagecodecs): Pillow decodes it then."""
    from PIL import Image

    rgba = np.dstack([_quadrants(), np.full((20, 40), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "lzw.tif", compression="tiff_lzw")
    np.testing.assert_array_equal(read_ldr(tmp_path / "lzw.tif"), _quadrants() / np.float32(255))


def test_orientation_follows_the_content_not_the_suffix(tmp_path):
    """A JPEG saved under a .png name (orientation 6) is turned as a JPEG would be."""
    _save_with_orientation(tmp_path / "photo.jpg", _quadrants(), 6)
    (tmp_path / "photo.jpg").rename(tmp_path / "photo.png")
    assert read_ldr(tmp_path / "photo.png").shape == (40, 20, 3)


@pytest.mark.parametrize("half", [False, True])
def test_exr_round_trip(tmp_path, half):
    hdr = hdr_image(peak=1000.0)
    write_exr(tmp_path / "a.exr", hdr, half=half)
    back = read_exr(tmp_path / "a.exr")
    np.testing.assert_allclose(back, hdr, rtol=1e-3 if half else 0, atol=1e-4 if half else 0)
    assert hdr_image_size(tmp_path / "a.exr") == (12, 17)


@pytest.mark.parametrize("compression", ["PIZ_COMPRESSION", "ZIP_COMPRESSION", "DWAB_COMPRESSION"])
def test_exr_written_by_other_tools_is_read(tmp_path, compression, caplog):
    hdr = hdr_image(64, 64) - 0.01  # lossy files can hold small negatives
    header = {"compression": getattr(OpenEXR, compression), "type": OpenEXR.scanlineimage}
    channels = {
        c: np.ascontiguousarray(hdr[..., i].astype(np.float16)) for i, c in enumerate("RGB")
    }
    with OpenEXR.File(header, channels) as exr:
        exr.write(str(tmp_path / "b.exr"))
    with caplog.at_level(logging.WARNING):
        back = read_exr(tmp_path / "b.exr")
    assert back.min() >= 0 and "negative values clipped to 0" in caplog.text
    rtol = 0.05 if compression == "DWAB_COMPRESSION" else 0.01  # DWAB is lossy
    np.testing.assert_allclose(back, np.maximum(hdr, 0), atol=0.02, rtol=rtol)


def test_exr_with_nan_or_without_rgb_is_refused(tmp_path):
    hdr = hdr_image()
    hdr[3, 4, 1] = np.nan
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {"RGB": hdr}) as exr:
        exr.write(str(tmp_path / "nan.exr"))
    with pytest.raises(ImageFileError, match=r"nan\.exr: 1 NaN/Inf values"):
        read_exr(tmp_path / "nan.exr")
    with OpenEXR.File(header, {"Z": hdr[..., 0].copy()}) as exr:
        exr.write(str(tmp_path / "depth.exr"))
    with pytest.raises(ImageFileError, match="no R, G, B"):
        read_exr(tmp_path / "depth.exr")
    channels = {"R": hdr[..., 0].copy(), "G": hdr[..., 1].copy()}
    with OpenEXR.File(header, channels) as exr:
        exr.write(str(tmp_path / "rg.exr"))
    for read in (read_exr, hdr_image_size):  # the missing channel named
        with pytest.raises(ImageFileError, match=r"rg\.exr: OpenEXR with R, G but no B$"):
            read(tmp_path / "rg.exr")
    (tmp_path / "junk.exr").write_bytes(b"\x76\x2f\x31\x01garbage")
    with pytest.raises(ImageFileError, match=r"junk\.exr: unreadable OpenEXR"):
        read_exr(tmp_path / "junk.exr")


def test_radiance_round_trip_within_rgbe_precision(tmp_path):
    hdr = hdr_image(peak=500.0) + 0.01
    write_radiance(tmp_path / "a.hdr", hdr)
    back = read_radiance(tmp_path / "a.hdr")
    assert back.dtype == np.float32
    assert (np.abs(back - hdr) <= hdr.max(axis=-1, keepdims=True) / 100).all()  # shared exponent
    assert hdr_image_size(tmp_path / "a.hdr") == (12, 17)


RADIANCE_ORIENTATIONS = {
    # resolution string -> the stored scanlines, from the upright (H, W, 3) image (Ward's
    # format: the first axis is the major one; -Y runs top to bottom, +X left to right)
    "-Y {h} +X {w}": lambda a: a,
    "+Y {h} +X {w}": lambda a: a[::-1],
    "-Y {h} -X {w}": lambda a: a[:, ::-1],
    "+Y {h} -X {w}": lambda a: a[::-1, ::-1],
    "+X {w} -Y {h}": lambda a: a.transpose(1, 0, 2),
    "+X {w} +Y {h}": lambda a: a[::-1].transpose(1, 0, 2),
    "-X {w} -Y {h}": lambda a: a[:, ::-1].transpose(1, 0, 2),
    "-X {w} +Y {h}": lambda a: a[::-1, ::-1].transpose(1, 0, 2),
}


def _radiance_file(path: Path, upright: np.ndarray, resolution: str, header: bytes = b"") -> None:
    """``upright`` stored with ``resolution``'s orientation and extra ``header`` lines."""
    h, w = upright.shape[:2]
    stored = np.ascontiguousarray(RADIANCE_ORIENTATIONS[resolution](upright))
    write_radiance(path, stored)
    data = path.read_bytes()
    standard = b"-Y %d +X %d\n" % stored.shape[:2]
    assert data.count(standard) == 1 and data.count(b"\n\n") >= 1
    data = data.replace(standard, resolution.format(h=h, w=w).encode() + b"\n", 1)
    path.write_bytes(data.replace(b"\n\n", b"\n" + header + b"\n", 1))


@pytest.mark.parametrize("resolution", RADIANCE_ORIENTATIONS)
def test_radiance_files_of_every_orientation_read_upright(tmp_path, resolution):
    upright = hdr_image(6, 9, peak=4.0) + 0.1
    _radiance_file(tmp_path / "standard.hdr", upright, "-Y {h} +X {w}")
    _radiance_file(tmp_path / "turned.hdr", upright, resolution)
    assert hdr_image_size(tmp_path / "turned.hdr") == (6, 9)
    np.testing.assert_array_equal(
        read_radiance(tmp_path / "turned.hdr"), read_radiance(tmp_path / "standard.hdr")
    )


def test_radiance_exposure_and_colorcorr_are_divided_out(tmp_path):
    """Ward's format: EXPOSURE and COLORCORR record what the pixels were multiplied by
    (cumulative); the reader returns the radiance before."""
    scaled = hdr_image(6, 9, peak=4.0) + 0.1
    factor = np.array([2.0 * 1.5 * 0.5, 2.0 * 1.5 * 1.0, 2.0 * 1.5 * 4.0], np.float32)
    header = b"EXPOSURE=2.0\nEXPOSURE=1.5\nCOLORCORR=0.5 1 4\n"
    _radiance_file(tmp_path / "plain.hdr", scaled, "-Y {h} +X {w}")
    _radiance_file(tmp_path / "scaled.hdr", scaled, "-Y {h} +X {w}", header)
    stored = read_radiance(tmp_path / "plain.hdr")  # the same pixels, no header lines
    assert not np.allclose(stored / factor, stored)
    np.testing.assert_allclose(read_radiance(tmp_path / "scaled.hdr"), stored / factor, rtol=1e-6)


def test_radiance_xyze_and_bad_headers_are_refused_from_the_header(tmp_path):
    upright = hdr_image(6, 9) + 0.1
    _radiance_file(tmp_path / "a.hdr", upright, "-Y {h} +X {w}")
    data = (tmp_path / "a.hdr").read_bytes()
    cases = {
        "xyze.hdr": (data.replace(b"32-bit_rle_rgbe", b"32-bit_rle_xyze"), "only 32-bit_rle_rgbe"),
        "exposure.hdr": (data.replace(b"\n\n", b"\nEXPOSURE=0\n\n", 1), "finite factor > 0"),
        # 1e40 is finite in float64 but not in float32, the pixels' type
        "e40.hdr": (data.replace(b"\n\n", b"\nEXPOSURE=1e40\n\n", 1), "finite factor > 0"),
        "huge.hdr": (data.replace(b"-Y 6 +X 9", b"-Y 99999999999 +X 9"), "valid image size"),
        # a few bytes that claim 400 million pixels (memory is taken before the body runs out)
        "bomb.hdr": (data.replace(b"-Y 6 +X 9", b"-Y 20000 +X 20000"), "more than an image file"),
        # Python's float() takes these, Radiance's C reader does not (1_000 is 1 there)
        "underscore.hdr": (data.replace(b"\n\n", b"\nEXPOSURE=1_000\n\n", 1), "unreadable"),
        "one_factor.hdr": (data.replace(b"\n\n", b"\nCOLORCORR=2\n\n", 1), "unreadable"),
        "axes.hdr": (data.replace(b"-Y 6 +X 9", b"-Y 6 +Y 9"), "without a valid image size"),
        "cut.hdr": (data[:20], "without its end"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        for read in (hdr_image_size, read_radiance):
            with pytest.raises(ImageFileError, match=message):
                read(tmp_path / name)


def test_radiance_with_the_original_run_length_encoding_is_named(tmp_path):
    """Radiance's pre-1991 run lengths (a pixel, then ``1 1 1 n``: repeat it n times),
    which OpenCV does not decode, are named as such, not as a damaged file."""
    header = b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 2 +X 8\n"
    scanline = bytes([128, 64, 32, 129, 1, 1, 1, 7])
    (tmp_path / "old.hdr").write_bytes(header + scanline * 2)
    with pytest.raises(ImageFileError, match=r"old\.hdr: Radiance file with the original run"):
        read_radiance(tmp_path / "old.hdr")
    (tmp_path / "cut.hdr").write_bytes(header + bytes([128, 64, 32, 129]) * 9)  # truncated
    with pytest.raises(ImageFileError, match=r"cut\.hdr: unreadable, truncated"):
        read_radiance(tmp_path / "cut.hdr")


def test_radiance_headers_opencv_alone_would_refuse_are_read(tmp_path):
    """FORMAT is optional in Ward's format, and header lines may end in CR LF: OpenCV's
    reader refuses both in the standard orientation; the package reads them. Header lines of
    any length are read whole (OpenCV alone reads them in 128-byte pieces: a comment of 127
    bytes ended its header early and shifted every pixel)."""
    upright = hdr_image(6, 9, peak=4.0) + 0.1
    _radiance_file(tmp_path / "a.hdr", upright, "-Y {h} +X {w}")
    data = (tmp_path / "a.hdr").read_bytes()
    expected = read_radiance(tmp_path / "a.hdr")
    head, pixels = data.split(b"\n\n", 1)
    variants = {
        "no_format.hdr": head.replace(b"\nFORMAT=32-bit_rle_rgbe", b"") + b"\n\n" + pixels,
        "crlf.hdr": head.replace(b"\n", b"\r\n") + b"\r\n\r\n" + pixels,
        **{
            # a header line that reads like the resolution string follows the long one
            f"comment{n}.hdr": head + b"\n#" + b"A" * (n - 1) + b"\n-Y 6 +X 9\n\n" + pixels
            for n in (126, 127, 128, 300)
        },
        # a long history of commands in the header (Radiance keeps every one)
        "history.hdr": head + b"\n" + b"pcomb -s 0.5 - # step\n" * 4000 + b"\n" + pixels,
    }
    for name, content in variants.items():
        (tmp_path / name).write_bytes(content)
        assert hdr_image_size(tmp_path / name) == (6, 9)
        np.testing.assert_array_equal(read_radiance(tmp_path / name), expected)


def _exr_part(name: str, channels: dict[str, np.ndarray]):
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    return OpenEXR.Part(header | {"name": name}, channels)


def test_a_multi_part_exr_is_read_from_its_one_image_part_or_refused(tmp_path):
    image = hdr_image(6, 9)
    depth = np.full((6, 9), 3.0, np.float32)
    with OpenEXR.File([_exr_part("depth", {"Z": depth}), _exr_part("beauty", {"RGB": image})]) as f:
        f.write(str(tmp_path / "render.exr"))
    np.testing.assert_array_equal(read_exr(tmp_path / "render.exr"), image)
    assert hdr_image_size(tmp_path / "render.exr") == (6, 9)
    with OpenEXR.File([_exr_part("a", {"RGB": image * 0}), _exr_part("b", {"RGB": image})]) as f:
        f.write(str(tmp_path / "two.exr"))
    for read in (read_exr, hdr_image_size):
        with pytest.raises(ImageFileError, match=r"two\.exr: multi-part .* 2 of 2 parts"):
            read(tmp_path / "two.exr")
    with OpenEXR.File([_exr_part("z", {"Z": depth}), _exr_part("n", {"N": depth})]) as f:
        f.write(str(tmp_path / "aovs.exr"))
    with OpenEXR.File(
        {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}, {"Z": depth}
    ) as f:
        f.write(str(tmp_path / "depth.exr"))
    for name in ("aovs.exr", "depth.exr"):  # refused from the header, before any training
        with pytest.raises(ImageFileError, match="no R, G, B \\(or Y\\) channels"):
            hdr_image_size(tmp_path / name)


ACES_AP0 = (0.7347, 0.2653, 0.0, 1.0, 0.0001, -0.077, 0.32168, 0.33767)


def _luminance_chroma(image, weights):
    """OpenEXR's encoding of RGB as Y, RY = (R - Y) / Y, BY = (B - Y) / Y, full size."""
    luma = image @ weights
    channels = (luma, image[..., 0] / luma - 1, image[..., 2] / luma - 1)
    return tuple(np.ascontiguousarray(c, dtype=np.float32) for c in channels)


def _write_exr(path, channels, header=None):
    base = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(base | (header or {}), channels) as f:
        f.write(str(path))


def test_a_deep_exr_is_refused_naming_the_file(tmp_path):
    """A renderer's deep OpenEXR (a list of samples per pixel) has no flat image to read:
    refused in one line naming it, by the reader and by every tool's file check (it was a
    ValueError from numpy, naming nothing)."""
    counts = np.array([[1, 2, 0], [1, 1, 3]], dtype=np.uint32)
    rng = np.random.default_rng(0)
    samples = np.empty(counts.shape, dtype=object)
    for index, n in np.ndenumerate(counts):
        samples[index] = rng.random(n).astype(np.float32)
    header = {"type": OpenEXR.deepscanline, "compression": OpenEXR.ZIPS_COMPRESSION}
    with OpenEXR.File(header, {c: samples for c in "RGBA"}) as f:
        f.write(str(tmp_path / "deep.exr"))
    with pytest.raises(ImageFileError, match=r"deep\.exr: deep OpenEXR"):
        read_linear_hdr(tmp_path / "deep.exr")


def test_an_exr_layer_holding_the_image_is_read_or_the_choice_refused(tmp_path):
    image = hdr_image(4, 5)
    aov = np.full((4, 5), 7.0, np.float32)

    def layered(prefix):
        return {f"{prefix}{c}": np.ascontiguousarray(image[..., i]) for i, c in enumerate("RGB")}

    # one layer (a render's ViewLayer.Combined pass), with a depth channel beside it
    _write_exr(tmp_path / "render.exr", layered("ViewLayer.Combined.") | {"depth.Z": aov})
    np.testing.assert_array_equal(read_exr(tmp_path / "render.exr"), image)
    # unprefixed R, G, B are the image; layered AOVs beside them are ignored
    aovs = {f"diffuse.{c}": aov for c in "RGB"}
    _write_exr(tmp_path / "beauty.exr", layered("") | aovs)
    np.testing.assert_array_equal(read_exr(tmp_path / "beauty.exr"), image)
    # a normal pass (X, Y, Z) beside it is no image; a grey layer alone is one
    normal = {f"ViewLayer.Normal.{c}": aov for c in "XYZ"}
    _write_exr(tmp_path / "blender.exr", layered("ViewLayer.Combined.") | normal)
    np.testing.assert_array_equal(read_exr(tmp_path / "blender.exr"), image)
    _write_exr(tmp_path / "grey.exr", {"scan.Y": aov} | {"depth.Z": aov})
    np.testing.assert_array_equal(read_exr(tmp_path / "grey.exr"), np.full((4, 5, 3), 7.0))
    # Blender's Combined pass beside other RGB passes (AO, diffuse colour) is the image
    ao = {f"ViewLayer.AO.{c}": aov for c in "RGB"}
    _write_exr(tmp_path / "passes.exr", layered("ViewLayer.Combined.") | ao)
    np.testing.assert_array_equal(read_exr(tmp_path / "passes.exr"), image)
    # two layers that each hold an image: which is the user's choice
    _write_exr(tmp_path / "two.exr", layered("left.") | aovs)
    for read in (read_exr, hdr_image_size):
        with pytest.raises(ImageFileError, match=r"2 layers \('diffuse', 'left'\) hold an"):
            read(tmp_path / "two.exr")


def test_rgb_to_xyz_follows_the_standards():
    # sRGB / Rec. 709 (IEC 61966-2-1's matrix, to its 4 digits) and XYZ stored as RGB
    np.testing.assert_allclose(
        rgb_to_xyz_matrix(REC709_CHROMATICITIES),
        [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]],
        atol=1e-4,
    )
    np.testing.assert_allclose(rgb_to_xyz_matrix((1, 0, 0, 1, 0, 0, 1 / 3, 1 / 3)), np.eye(3))
    # ACES2065-1 (AP0, whose blue lies at y < 0) to linear sRGB, Bradford-adapted from the
    # ACES white to D65: the matrix published with the ACES reference transforms
    np.testing.assert_allclose(
        rgb_to_rec709_matrix(ACES_AP0),
        [[2.5217, -1.1341, -0.3876], [-0.2765, 1.3727, -0.0962], [-0.0154, -0.1530, 1.1684]],
        atol=2e-4,
    )
    np.testing.assert_allclose(rgb_to_rec709_matrix(ACES_AP0).sum(axis=1), 1)  # white stays
    np.testing.assert_allclose(rgb_to_rec709_matrix(REC709_CHROMATICITIES), np.eye(3), atol=1e-12)
    red_white = (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.64, 0.33)  # every colour grey
    outside = (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.1, 0.8)
    edge = (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.47, 0.465)  # red-green edge, in float32
    beyond = (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.8, 0.8)  # x + y > 1
    same = (0.64, 0.33, 0.64, 0.33, 0.15, 0.06, 0.3127, 0.329)
    edge = tuple(float(np.float32(v)) for v in edge)  # as OpenEXR stores it
    for bad in (same, red_white, outside, edge, beyond, (0,) * 8, (1,) * 7):
        with pytest.raises(ValueError):
            rgb_to_xyz_matrix(bad)


def test_a_luminance_chroma_exr_is_read_as_the_rgb_it_encodes(tmp_path):
    image = hdr_image(6, 9) + 0.1
    weights = rgb_to_xyz_matrix(REC709_CHROMATICITIES)[1]
    luma, ry, by = _luminance_chroma(image, weights)
    _write_exr(tmp_path / "yc.exr", {"Y": luma, "RY": ry, "BY": by})
    np.testing.assert_allclose(read_exr(tmp_path / "yc.exr"), image, rtol=1e-5)
    assert hdr_image_size(tmp_path / "yc.exr") == (6, 9)
    # grey pixels (both chroma values 0) come back as R = G = B = Y exactly
    grey = luminance_chroma_to_rgb(luma, ry * 0, by * 0, weights)
    np.testing.assert_array_equal(grey, np.repeat(luma[..., None], 3, axis=2))
    # one chroma channel alone cannot be turned into colour: refused, not read as grey
    _write_exr(tmp_path / "half.exr", {"Y": luma, "RY": ry})
    with pytest.raises(ImageFileError, match="only one of RY, BY"):
        read_exr(tmp_path / "half.exr")


def test_subsampled_chroma_is_interpolated_between_its_samples(tmp_path):
    # chroma at 2x2 subsampling, as OpenEXR writes it: sample (i, j) on pixel (2i, 2j)
    luma = np.linspace(0.5, 4.0, 4 * 6, dtype=np.float32).reshape(4, 6)
    ry = np.array([[0.0, 0.2, 0.4], [0.6, 0.8, 1.0]], np.float32)
    by = np.full((2, 3), -0.5, np.float32)
    weights = rgb_to_xyz_matrix(REC709_CHROMATICITIES)[1]
    image = luminance_chroma_to_rgb(luma, ry, by, weights)
    red_over_luma = image[..., 0] / luma - 1
    np.testing.assert_allclose(red_over_luma[0], [0.0, 0.1, 0.2, 0.3, 0.4, 0.4], atol=1e-6)
    np.testing.assert_allclose(red_over_luma[:, 0], [0.0, 0.3, 0.6, 0.6], atol=1e-6)
    np.testing.assert_allclose(image[..., 2], luma * 0.5, rtol=1e-6)
    np.testing.assert_allclose(image @ weights, luma, rtol=1e-5)  # luminance kept

    # the same through a file: the binding (3.x) writes a subsampled channel from the first
    # h * w / 4 values of a full-size array
    def subsampled(samples: np.ndarray) -> OpenEXR.Channel:
        flat = np.zeros(luma.size, np.float32)
        flat[: samples.size] = samples.ravel()
        return OpenEXR.Channel(flat.reshape(luma.shape), 2, 2)

    full = {"RY": subsampled(ry), "BY": subsampled(by)}
    _write_exr(tmp_path / "yc.exr", {"Y": OpenEXR.Channel(luma)} | full)
    with OpenEXR.File(str(tmp_path / "yc.exr"), separate_channels=True) as f:
        stored = f.parts[0].channels
        np.testing.assert_array_equal(stored["RY"].pixels, ry)  # the file holds the samples
    np.testing.assert_allclose(read_exr(tmp_path / "yc.exr"), image, rtol=1e-6)
    # colour channels subsampled the same way: refused by name, not a bare numpy error, nor
    # read at the smaller size when every one of them is
    rgb = {"G": OpenEXR.Channel(luma), "R": full["RY"], "B": full["BY"]}
    _write_exr(tmp_path / "sub.exr", rgb)
    with pytest.raises(ImageFileError, match=r"sub\.exr: OpenEXR with subsampled B, R channels"):
        read_exr(tmp_path / "sub.exr")
    _write_exr(tmp_path / "all.exr", {c: subsampled(ry) for c in "RGB"})
    with pytest.raises(ImageFileError, match=r"subsampled B, G, R channels"):
        read_exr(tmp_path / "all.exr")
    # alpha and depth are dropped, subsampled or not
    _write_exr(
        tmp_path / "rgbaz.exr",
        {**{c: OpenEXR.Channel(luma) for c in "RGB"}, "A": subsampled(ry), "Z": subsampled(by)},
    )
    np.testing.assert_array_equal(read_exr(tmp_path / "rgbaz.exr"), np.stack([luma] * 3, -1))


def test_an_exr_in_other_primaries_is_converted_to_rec709(tmp_path):
    image = hdr_image(5, 7) + 0.05  # linear Rec. 709
    to_aces = np.linalg.inv(rgb_to_rec709_matrix(ACES_AP0))
    aces = (image.astype(np.float64) @ to_aces.T).astype(np.float32)
    _write_exr(tmp_path / "aces.exr", {"RGB": aces}, {"chromaticities": ACES_AP0})
    np.testing.assert_allclose(read_exr(tmp_path / "aces.exr"), image, rtol=1e-4, atol=1e-6)
    # luminance/chroma in those primaries: Y weighs R, G, B by the file's own primaries
    luma, ry, by = _luminance_chroma(aces, rgb_to_xyz_matrix(ACES_AP0)[1])
    _write_exr(tmp_path / "yc.exr", {"Y": luma, "RY": ry, "BY": by}, {"chromaticities": ACES_AP0})
    np.testing.assert_allclose(read_exr(tmp_path / "yc.exr"), image, rtol=1e-4, atol=1e-6)
    # part of a colour set beside Y: refused, not read as grey
    plane = np.ascontiguousarray(image[..., 0])
    for partial in ({"X": plane, "Y": plane}, {"Y": plane, "R": plane}):
        _write_exr(tmp_path / "partial.exr", partial)
        with pytest.raises(ImageFileError, match="not read as grey from Y"):
            read_exr(tmp_path / "partial.exr")
    # Y beside Z alone: a grey image with OpenEXR's depth channel, not part of CIE XYZ
    _write_exr(tmp_path / "depth.exr", {"Y": plane, "Z": plane + 7})
    np.testing.assert_array_equal(read_exr(tmp_path / "depth.exr"), np.stack([plane] * 3, -1))
    # X, Y, Z channels: CIE XYZ, not a grey image in Y
    xyz = (image.astype(np.float64) @ rgb_to_xyz_matrix(REC709_CHROMATICITIES).T).astype(np.float32)
    _write_exr(
        tmp_path / "xyz.exr", {c: np.ascontiguousarray(xyz[..., i]) for i, c in enumerate("XYZ")}
    )
    np.testing.assert_allclose(read_exr(tmp_path / "xyz.exr"), image, rtol=1e-4, atol=1e-6)
    # the same values in R, G, B with CIE XYZ's own primaries (OpenEXR's XYZ.exr): the same
    # colours, its equal-energy white not adapted to D65 (Bradford would tint it 7-16 %)
    xyz_primaries = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1 / 3, 1 / 3)
    _write_exr(tmp_path / "xyz_rgb.exr", {"RGB": xyz}, {"chromaticities": xyz_primaries})
    np.testing.assert_allclose(read_exr(tmp_path / "xyz_rgb.exr"), image, rtol=1e-4, atol=1e-6)
    _write_exr(tmp_path / "bad.exr", {"RGB": aces}, {"chromaticities": (0.3,) * 8})
    with pytest.raises(ImageFileError, match=r"bad\.exr: unusable chromaticities"):
        read_exr(tmp_path / "bad.exr")


@pytest.mark.parametrize("negative", ["fill", "clip"])
def test_colours_outside_rec709_are_clipped_per_channel_and_only_artefacts_filled(
    tmp_path, negative, caplog
):
    """A saturated green stored in ACES (all values >= 0) lies outside Rec. 709: its
    negative red is clipped, the pixel kept; a negative value of the file itself (lossy
    compression's ringing) is the artefact that data.negative fills."""
    rec709 = np.full((24, 24, 3), 0.5, np.float32)
    rec709[8:16, 8:16] = (-0.05, 2.0, 0.1)  # green beyond Rec. 709's gamut
    rec709[18:, :8] = (0.0, 0.3, 0.6)  # in the gamut, on its edge: rounding gives -1e-9
    to_aces = np.linalg.inv(rgb_to_rec709_matrix(ACES_AP0))
    aces = (rec709.astype(np.float64) @ to_aces.T).astype(np.float32)
    assert aces.min() >= 0
    aces[2, 2] = (-1.0, 0.5, 0.5)  # ringing in the file's own values
    _write_exr(tmp_path / "aces.exr", {"RGB": aces}, {"chromaticities": ACES_AP0})
    with caplog.at_level(logging.INFO):
        image = read_exr(tmp_path / "aces.exr", negative)
    # the green block (and the clipped artefact), not the pixels on the gamut's edge
    outside = 64 + (negative == "clip")
    assert f"{outside} pixels outside Rec. 709's gamut" in caplog.text, caplog.text
    np.testing.assert_allclose(
        image[8:16, 8:16], np.broadcast_to([0, 2.0, 0.1], (8, 8, 3)), atol=1e-4
    )
    np.testing.assert_allclose(image[16:, 16:], 0.5, atol=1e-5)  # grey stays grey
    artefact = np.maximum(aces[2, 2].astype(np.float64), 0) @ rgb_to_rec709_matrix(ACES_AP0).T
    expected = [0.5, 0.5, 0.5] if negative == "fill" else np.maximum(artefact, 0)
    np.testing.assert_allclose(image[2, 2], expected, atol=1e-5)


def test_write_hdr_dispatch_writes_nonlinear_png_and_linear_exr_hdr(tmp_path):
    nonlinear = hdr_image(peak=3.0)
    assert write_hdr(tmp_path / "p.png", nonlinear) == [
        tmp_path / "p.png",
        tmp_path / "p_alignratio.npy",
    ]
    write_hdr(tmp_path / "e.exr", nonlinear)
    np.testing.assert_allclose(read_hdr_png(tmp_path / "p.png"), nonlinear, atol=3.0 / 65535)
    np.testing.assert_allclose(read_exr(tmp_path / "e.exr"), nonlinear**2.24, rtol=1e-5)
    np.testing.assert_allclose(
        read_linear_hdr(tmp_path / "p.png"), nonlinear**2.24, rtol=1e-3, atol=1e-4
    )
    with pytest.raises(ImageFileError, match="unknown HDR format"):
        write_hdr(tmp_path / "x.tiff", nonlinear)


def test_real_poly_haven_panoramas_read_as_linear_float(poly_haven):
    for path in poly_haven[:3]:
        image = read_radiance(path)
        assert image.shape == (512, 1024, 3) and image.dtype == np.float32
        assert image.min() >= 0
        lum = image.mean(axis=-1)
        assert np.percentile(lum, 99.9) / max(np.percentile(lum, 1), 1e-6) > 50  # real HDR


def test_npm_exr_modules_are_decoded_with_their_licence(tmp_path):
    import base64
    import io as bytes_io
    import json
    import tarfile

    from hdrunet_pl.samples import PMNDRS_SAME_AS_POLY_HAVEN, extract_npm_exrs

    image = (np.random.default_rng(0).random((8, 16, 3)) * 30).astype(np.float32)
    write_exr(tmp_path / "scene.exr", image)
    payload = base64.b64encode((tmp_path / "scene.exr").read_bytes()).decode()
    module = f"export default 'data:application/exr;base64,{payload}'\n".encode()
    archive = bytes_io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name in ("package/hdri/bridge.exr.js", "package/hdri/night.exr.js"):
            info = tarfile.TarInfo(name)
            info.size = len(module)
            tar.addfile(info, bytes_io.BytesIO(module))
    dest = tmp_path / "held_out"
    dest.mkdir()
    files = extract_npm_exrs(
        archive.getvalue(), dest, "pkg@1", "CC0-1.0", PMNDRS_SAME_AS_POLY_HAVEN
    )
    assert [f.name for f in files] == ["bridge.exr"]  # night is a poly_haven scene
    np.testing.assert_array_equal(read_exr(files[0]), image)
    # again into the same folder: its own files are kept (the same bytes) or replaced (an
    # earlier fetch's, by the recorded hash), a user's file or a user's edit never
    extract_npm_exrs(archive.getvalue(), dest, "pkg@1", "CC0-1.0", PMNDRS_SAME_AS_POLY_HAVEN)
    fetched = (dest / "bridge.exr").read_bytes()
    (dest / "bridge.exr").write_bytes(b"my edit")
    with pytest.raises(HDRUNetError, match=r"changed since hdrunet_pl\.samples fetched it"):
        extract_npm_exrs(archive.getvalue(), dest, "pkg@1", "CC0-1.0", PMNDRS_SAME_AS_POLY_HAVEN)
    assert (dest / "bridge.exr").read_bytes() == b"my edit"
    (dest / "bridge.exr").write_bytes(fetched)
    record = json.loads((dest / "SOURCES.json").read_text())
    record["bridge.exr"]["sha256"] = hashlib.sha256(b"an earlier version").hexdigest()
    (dest / "SOURCES.json").write_text(json.dumps(record))
    (dest / "bridge.exr").write_bytes(b"an earlier version")  # this module's, by its record
    extract_npm_exrs(archive.getvalue(), dest, "pkg@1", "CC0-1.0", PMNDRS_SAME_AS_POLY_HAVEN)
    assert (dest / "bridge.exr").read_bytes() == fetched
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "bridge.exr").write_bytes(b"my own picture")
    with pytest.raises(HDRUNetError, match="not fetched by"):
        extract_npm_exrs(archive.getvalue(), mine, "pkg@1", "CC0-1.0")
    assert (mine / "bridge.exr").read_bytes() == b"my own picture"
    (mine / "bridge.exr").unlink()
    (mine / "SOURCES.json").write_text('{"notes": "mine"}')
    with pytest.raises(HDRUNetError, match="not a record"):
        extract_npm_exrs(archive.getvalue(), mine, "pkg@1", "CC0-1.0")
    (mine / "SOURCES.json").write_text("[" * 100_000)
    with pytest.raises(HDRUNetError, match="not a record"):
        extract_npm_exrs(archive.getvalue(), mine, "pkg@1", "CC0-1.0")
    (mine / "SOURCES.json").write_text('{"notes": "mine"}')
    assert (mine / "SOURCES.json").read_text() == '{"notes": "mine"}'
    record = json.loads((dest / "SOURCES.json").read_text())
    assert record == {
        "bridge.exr": {
            "file": "bridge.exr",
            "package": "pkg@1",
            "registry": "npm",
            "licence": "CC0-1.0",
            "sha256": hashlib.sha256(fetched).hexdigest(),
        }
    }


def test_two_fetches_into_one_folder_take_turns_and_both_are_recorded(tmp_path, monkeypatch):
    """The second fetch waits for the first (a lock on the folder itself): each read the
    record, wrote its files and replaced the record with its own, losing the other's."""
    import json
    import threading

    from hdrunet_pl import samples

    first_writing, release = threading.Event(), threading.Event()
    write = samples._write

    def slow_write(target, data):
        if target.name == "a.hdr":  # the first fetch, paused while it holds the folder
            first_writing.set()
            assert release.wait(10)
        write(target, data)

    monkeypatch.setattr(samples, "_write", slow_write)

    def fetch(name: str) -> None:
        record = samples.SampleRecord(name, "pkg@1", "PyPI", "CC0")
        samples._write_samples(tmp_path, {name: name.encode()}, [record])

    first = threading.Thread(target=fetch, args=("a.hdr",))
    first.start()
    assert first_writing.wait(10)
    second = threading.Thread(target=fetch, args=("b.hdr",))
    second.start()
    second.join(0.5)
    assert second.is_alive(), "the second fetch did not wait for the first"
    release.set()
    first.join(10)
    second.join(10)
    assert sorted(json.loads((tmp_path / "SOURCES.json").read_text())) == ["a.hdr", "b.hdr"]
    assert (tmp_path / "a.hdr").read_bytes() == b"a.hdr"


def test_a_held_out_fetch_never_shares_a_folder_with_training_scenes(tmp_path, monkeypatch, capsys):
    """data=held_out scores every HDR file under its root: fetching the held-out scenes into
    a folder that also holds a training scene (an earlier `--source pmndrs`) is refused
    before any download; a complete held-out folder lists the eight scenes only; a user's
    file named like the module's temporary file is never touched."""
    from hdrunet_pl import samples

    def offline(*args):
        raise AssertionError("nothing should be downloaded")

    def offline_registry(*args):
        raise HDRUNetError("could not download @pmndrs/assets@1.7.0 from npm: unreachable")

    monkeypatch.setattr(samples, "_npm_tarball", offline)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for scene in ("bridge", "night"):  # night is a poly_haven scene
        (mixed / f"{scene}.exr").write_bytes(b"exr")
    with pytest.raises(
        HDRUNetError, match=r"holds 1 HDR file\(s\) that are not held-out scenes \(night\.exr\)"
    ):
        samples.pmndrs_exrs(mixed, held_out_only=True)

    held_out = tmp_path / "held_out"
    held_out.mkdir()
    names = sorted(f"{scene}.exr" for scene in samples.PMNDRS_HELD_OUT)
    assert len(names) == 8 and not samples.PMNDRS_HELD_OUT & samples.PMNDRS_SAME_AS_POLY_HAVEN
    for name in names:
        (held_out / name).write_bytes(b"exr")
    record = {n: {"file": n, "package": "p", "registry": "npm", "licence": "CC0"} for n in names}
    (held_out / "SOURCES.json").write_text(json.dumps(record))
    with pytest.raises(AssertionError, match="nothing should be downloaded"):
        samples.pmndrs_exrs(held_out, held_out_only=True)  # an old record: fetched again
    monkeypatch.setattr(samples, "_npm_tarball", offline_registry)
    with pytest.raises(HDRUNetError, match=r"unreachable \(the files are in .* no sha256"):
        samples.pmndrs_exrs(held_out, held_out_only=True)  # offline: why it downloads
    monkeypatch.setattr(samples, "_npm_tarball", offline)
    for name in names:  # the hash as any tool writes it
        record[name]["sha256"] = hashlib.sha256(b"exr").hexdigest().upper()
    (held_out / "SOURCES.json").write_text(json.dumps(record))
    assert [p.name for p in samples.pmndrs_exrs(held_out, held_out_only=True)] == names
    # a folder or a link where a scene goes: refused before any download
    (held_out / "sky.exr").unlink()
    (held_out / "sky.exr").symlink_to(held_out / "hall.exr")
    with pytest.raises(HDRUNetError, match=r"sky\.exr: not a regular file"):
        samples.pmndrs_exrs(held_out, held_out_only=True)
    (held_out / "sky.exr").unlink()
    (held_out / "sky.exr").write_bytes(b"exr")
    # a scene changed since it was fetched: no longer the held-out set
    (held_out / "hall.exr").write_bytes(b"another scene")
    with pytest.raises(HDRUNetError, match=r"hall\.exr: changed since .* delete it to fetch"):
        samples.pmndrs_exrs(held_out, held_out_only=True)
    (held_out / "hall.exr").write_bytes(b"exr")
    # HDR files data=held_out would score beside them: in a symlinked folder, NTIRE pairs
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "night.hdr").write_bytes(b"hdr")
    (held_out / "linked").symlink_to(tmp_path / "training")
    (held_out / "0001_gt.png").write_bytes(b"png")
    with pytest.raises(HDRUNetError, match=r"holds 2 HDR file.*0001_gt\.png, linked/night\.hdr"):
        samples.pmndrs_exrs(held_out, held_out_only=True)
    (held_out / "linked").unlink()
    (held_out / "0001_gt.png").unlink()
    # the set fetched one level down already: named as such (its eight scenes were listed
    # as "HDR files that are not held-out scenes")
    with pytest.raises(HDRUNetError, match=rf"holds the held-out scenes already, in {held_out}:"):
        samples.pmndrs_exrs(tmp_path, held_out_only=True)
    # and the other way round: no training source is fetched into the held-out folder
    monkeypatch.setattr(samples.subprocess, "run", offline)  # poly_haven's pip download
    for source in ("poly_haven", "pmndrs"):
        for dest in (held_out, held_out / "sub"):  # data=held_out reads subfolders too
            assert samples.main([str(dest), "--source", source]) == 2
            assert "holds the held-out scenes" in capsys.readouterr().err
    assert sorted(p.name for p in held_out.glob("*.exr")) == names

    (held_out / "bridge.exr.part").write_text("a user's notes")
    samples._write(held_out / "bridge.exr", b"new")
    assert (held_out / "bridge.exr").read_bytes() == b"new"
    assert (held_out / "bridge.exr.part").read_text() == "a user's notes"
    assert sorted(p.name for p in held_out.iterdir() if p.suffix == ".part") == ["bridge.exr.part"]

    assert samples.main([str(held_out / "bridge.exr"), "--source", "pmndrs_held_out"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("samples: error: ") and "\n" not in error
    (tmp_path / "a-file").write_text("x")  # every source: one reason, not mkdir's EEXIST
    for source in ("poly_haven", "pmndrs"):
        assert samples.main([str(tmp_path / "a-file"), "--source", source]) == 2
        error = capsys.readouterr().err.strip()
        assert error.endswith("a-file: is a file; give a folder for the files"), error
    monkeypatch.chdir(tmp_path)  # an unset $DEST: nothing fetched into the current folder
    assert samples.main(["", "--source", "poly_haven"]) == 2
    assert "an empty folder name" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.hdr"))


def _fake_pip_download(hdr_files: dict[str, bytes]):
    """A stand-in for `pip download viser==...`: a wheel holding ``hdr_files``."""
    import subprocess
    import zipfile

    from hdrunet_pl import samples

    def run(cmd, **kwargs):
        folder = Path(cmd[cmd.index("-d") + 1])
        with zipfile.ZipFile(folder / "viser-1.0.16-py3-none-any.whl", "w") as wheel:
            for name, data in hdr_files.items():
                wheel.writestr(samples.HDRI_FOLDER + name, data)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    return run


@pytest.mark.parametrize(
    ("where", "cut", "status", "said"),
    [
        ("_write", OSError(28, "No space left on device"), 2, "No space left on device"),
        ("_write", KeyboardInterrupt(), 130, "interrupted"),
        ("_record", KeyboardInterrupt(), 130, "interrupted"),  # a file written, not recorded
    ],
)
def test_a_fetch_cut_short_goes_on_when_run_again(
    tmp_path, monkeypatch, capsys, where, cut, status, said
):
    """A fetch stopped part way (a full disk, Ctrl-C, even between writing a file and
    recording it) ends with one line, and the same command run again completes it: every
    file recorded with its sha256. Before, the files were recorded only at the end, and
    every rerun refused the unrecorded ones as a user's."""
    from hdrunet_pl import samples

    hdr_files = {f"scene_{i}.hdr": f"#?RADIANCE {i}".encode() * (i + 1) for i in range(10)}
    monkeypatch.setattr(samples.subprocess, "run", _fake_pip_download(hdr_files))
    real = getattr(samples, where)
    calls = []

    def cut_short(*args):
        calls.append(args)
        if len(calls) == 5:
            raise cut
        return real(*args)

    dest = tmp_path / "hdri"
    monkeypatch.setattr(samples, where, cut_short)
    assert samples.main([str(dest)]) == status
    error = capsys.readouterr().err
    assert said in error and error.count("\n") == 1 and "Traceback" not in error
    assert 0 < len(list(dest.glob("*.hdr"))) < 10  # cut part way
    monkeypatch.setattr(samples, where, real)
    assert samples.main([str(dest)]) == 0, capsys.readouterr().err
    assert sorted(capsys.readouterr().out.split()) == sorted(str(dest / n) for n in hdr_files)
    record = json.loads((dest / "SOURCES.json").read_text())
    assert {name: r["sha256"] for name, r in record.items()} == {
        name: hashlib.sha256(data).hexdigest() for name, data in hdr_files.items()
    }
    assert all((dest / name).read_bytes() == data for name, data in hdr_files.items())
    assert not [p for p in dest.iterdir() if p.suffix == ".part"]
    # a user's file under a fetched name is still never written over, cut short or not
    (dest / "scene_3.hdr").write_bytes(b"my own picture")
    del record["scene_3.hdr"]
    (dest / "SOURCES.json").write_text(json.dumps(record))
    assert samples.main([str(dest)]) == 2
    assert "scene_3.hdr: exists and was not fetched" in capsys.readouterr().err
    assert (dest / "scene_3.hdr").read_bytes() == b"my own picture"


def test_held_out_and_training_scenes_never_nest(tmp_path, monkeypatch, capsys):
    """Training on a folder (data=hdr_folder searches subfolders, symlinked ones too)
    must not reach the held-out scenes: no training source is fetched into a folder that
    holds a held-out folder below it, and the held-out set is not fetched below a folder
    that training scenes were fetched into; beside each other is fine."""
    from hdrunet_pl import samples

    def offline(*args, **kwargs):
        raise HDRUNetError("offline here")

    monkeypatch.setattr(samples, "_npm_tarball", offline)
    monkeypatch.setattr(samples, "_fetched_here", lambda *args: False)

    def pip_offline(cmd, **kwargs):
        raise samples.subprocess.TimeoutExpired(cmd, 1)

    monkeypatch.setattr(samples.subprocess, "run", pip_offline)

    def record(folder: Path, names: list[str], package: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        known = {n: {"file": n, "package": package, "licence": "CC0"} for n in names}
        (folder / "SOURCES.json").write_text(json.dumps(known))

    held_out_names = sorted(f"{scene}.exr" for scene in samples.PMNDRS_HELD_OUT)
    record(tmp_path / "data" / "eval" / "held_out", held_out_names, "@pmndrs/assets@1.7.0")
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "held").symlink_to(tmp_path / "data" / "eval")
    for dest in (tmp_path / "data", tmp_path / "data" / "eval", tmp_path / "linked"):
        for source in ("poly_haven", "pmndrs"):
            assert samples.main([str(dest), "--source", source]) == 2
            error = capsys.readouterr().err
            assert f"(below {dest}) holds the held-out scenes" in error, error
    assert sorted(p.name for p in (tmp_path / "data").rglob("*") if p.is_file()) == ["SOURCES.json"]

    record(tmp_path / "train", ["apartment.hdr"], samples.VISER_SPEC)
    for dest in (tmp_path / "train" / "held_out", tmp_path / "train" / "a" / "b"):
        assert samples.main([str(dest), "--source", "pmndrs_held_out"]) == 2
        error = capsys.readouterr().err
        assert f"{tmp_path / 'train'} (above {dest}) holds training scenes" in error, error
    assert not (tmp_path / "train" / "held_out").exists()

    # beside each other: both go on to download (offline here)
    assert samples.main([str(tmp_path / "data" / "hdri"), "--source", "poly_haven"]) == 2
    assert "could not download" in capsys.readouterr().err
    assert samples.main([str(tmp_path / "held_out_2"), "--source", "pmndrs_held_out"]) == 2
    assert "offline here" in capsys.readouterr().err


def test_negative_pixels_are_filled_from_their_valid_neighbours(tmp_path, caplog):
    """Lossy EXR ringing (negative radiance) becomes its surroundings with negative="fill",
    a black hole with the default "clip"."""
    from hdrunet_pl.io import fill_negative

    image = np.full((40, 50, 3), 0.5, dtype=np.float32)
    image[:, 25:] = 2.0  # two flat regions
    image[10, 10] = [-3.0, 0.4, 0.4]  # one negative channel: the whole pixel is refilled
    image[20:23, 30:33] = -50.0  # a 3x3 hole in the bright region
    image[30:40, 0:12] = -1.0  # a hole too large for 4 rounds of radius 2 at its far corner
    filled, count = fill_negative(image)
    assert count == 1 + 9 + 120 - 8  # 8 pixels of the far corner left unfilled (clipped)
    assert np.allclose(filled[10, 10], 0.5) and np.allclose(filled[20:23, 30:33], 2.0)
    assert filled.min() >= 0 and filled[39, 0].max() == 0  # what is left is clipped
    assert np.allclose(filled[30, 0:12], 0.5)  # the hole's edge filled from outside
    untouched = (image >= 0).all(axis=-1)
    assert np.array_equal(filled[untouched], image[untouched])
    # through the EXR reader: clipped by default, filled on request, and said so
    channels = {c: np.ascontiguousarray(image[..., i]) for i, c in enumerate("RGB")}
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, channels) as exr:
        exr.write(str(tmp_path / "ringing.exr"))
    assert read_linear_hdr(tmp_path / "ringing.exr")[21, 31].max() == 0
    with caplog.at_level(logging.WARNING):
        back = read_linear_hdr(tmp_path / "ringing.exr", negative="fill")
    assert np.array_equal(back, filled)
    assert "122 pixels with negative values filled from neighbours, 8 too far" in caplog.text
    # sums near float32's largest value stay finite; a wholly negative image is all clipped
    huge = np.full((8, 8, 3), 3e38, np.float32)
    huge[4, 4] = -1
    assert np.allclose(fill_negative(huge)[0][4, 4], 3e38)
    black, filled_count = fill_negative(-np.ones((8, 8, 3), np.float32))
    assert filled_count == 0 and black.max() == 0
    with pytest.raises(ValueError, match="negative must be one of"):
        read_exr(tmp_path / "ringing.exr", negative="zero")


def _write_pfm(path, image, little_endian=True, header_sep=b"\n"):
    """A portable float map by its definition: header, then float32 rows bottom row first."""
    grey = image.ndim == 2
    h, w = image.shape[:2]
    scale = b"-1.0" if little_endian else b"1.0"
    head = (b"Pf" if grey else b"PF") + b"\n" + b"%d%s%d\n" % (w, header_sep, h) + scale + b"\n"
    data = np.ascontiguousarray(image[::-1], dtype="<f4" if little_endian else ">f4")
    path.write_bytes(head + data.tobytes())
    return path


@pytest.mark.parametrize("little_endian", [True, False])
def test_pfm_reads_upright_in_either_byte_order(tmp_path, little_endian):
    from hdrunet_pl.data.hdr_folder import find_hdr_files
    from hdrunet_pl.io import hdr_image_size, read_linear_hdr

    image = hdr_image(h=5, w=7)
    path = _write_pfm(tmp_path / "a.PFM", image, little_endian, header_sep=b" ")
    assert hdr_image_size(path) == (5, 7)
    np.testing.assert_array_equal(read_linear_hdr(path), image)  # exact: float32 both ways
    grey = _write_pfm(tmp_path / "g.pfm", image[..., 1], little_endian, header_sep=b"\n")
    np.testing.assert_array_equal(read_linear_hdr(grey), np.repeat(image[..., 1:2], 3, 2))
    # the other Radiance names are found and read as .hdr is
    write_radiance(tmp_path / "r.pic", image)
    (tmp_path / "r.pic").rename(tmp_path / "r.rgbe")
    write_radiance(tmp_path / "r.pic", image)
    assert [p.name for p in find_hdr_files(tmp_path)] == ["a.PFM", "g.pfm", "r.pic", "r.rgbe"]
    rgbe = read_linear_hdr(tmp_path / "r.rgbe")
    np.testing.assert_array_equal(rgbe, read_radiance(tmp_path / "r.pic"))
    np.testing.assert_allclose(rgbe, image, rtol=0.02, atol=0.1)  # RGBE's shared exponent


def test_damaged_pfm_files_are_refused_in_one_line(tmp_path):
    from hdrunet_pl.io import hdr_image_size, read_linear_hdr

    image = hdr_image(h=4, w=6)
    good = _write_pfm(tmp_path / "good.pfm", image).read_bytes()
    cases = {
        "truncated.pfm": (good[:-10], r"truncated"),
        "huge.pfm": (b"PF\n70000 70000\n-1.0\n" + good[13:], r"more than an image file may have"),
        "zero.pfm": (b"PF\n0 4\n-1.0\n", r"valid image size"),
        "scale.pfm": (b"PF\n6 4\nnan\n" + good[13:], r"scale"),
        "text.pfm": (b"P3\n6 4\n255\n", r"not a portable float map"),
        "crlf.pfm": (b"PF\r\n6 4\r\n-1.0\r\n" + good[-4 * 3 * 6 * 4 :], r"with CR LF"),
        "trailing.pfm": (good + b"\0", r"trailing bytes"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageFileError, match=message):
            hdr_image_size(tmp_path / name)
    bad = image.copy()
    bad[1, 2, 0] = np.inf
    with pytest.raises(ImageFileError, match=r"1 NaN/Inf values"):
        read_linear_hdr(_write_pfm(tmp_path / "inf.pfm", bad))
    negative = image.copy()
    negative[0, 0] = -1
    assert (read_linear_hdr(_write_pfm(tmp_path / "neg.pfm", negative)) >= 0).all()


def test_an_empty_or_huge_ldr_file_is_refused_by_name_before_decoding(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageFileError, match=r"empty\.png: an empty file \(0 bytes\)"):
        read_ldr(tmp_path / "empty.png")
    # a JPEG header that claims 60000 x 60000 pixels (3.6 G): refused from the header
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "small.jpg")
    data = bytearray((tmp_path / "small.jpg").read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") * 2
    (tmp_path / "huge.jpg").write_bytes(bytes(data))
    with pytest.raises(ImageFileError, match=r"huge\.jpg: .*than an image file may have here"):
        read_ldr(tmp_path / "huge.jpg")
    # content that no LDR format is (a Radiance header claiming 30000 x 30000 pixels named
    # .png, which OpenCV would decode by content), and a 16-bit NTIRE GT claiming too much
    (tmp_path / "radiance.png").write_bytes(
        b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 30000 +X 30000\n" + bytes(2000)
    )
    with pytest.raises(
        ImageFileError, match=r"radiance\.png: unreadable, truncated or not an image"
    ):
        read_ldr(tmp_path / "radiance.png")
    gt = bytearray(cv2.imencode(".png", np.zeros((4, 4, 3), np.uint16))[1].tobytes())
    gt[16:24] = (20000).to_bytes(4, "big") * 2
    (tmp_path / "0001_gt.png").write_bytes(bytes(gt))
    np.save(tmp_path / "0001_alignratio.npy", np.float32(100.0))
    for read in (hdr_image_size, read_hdr_png):
        with pytest.raises(ImageFileError, match=r"20000x20000 pixels is more than an image"):
            read(tmp_path / "0001_gt.png")


def test_radiance_without_a_format_line_is_read_without_opencvs_complaint(tmp_path, capfd):
    """FORMAT is optional in Ward's format; OpenCV reading such a file itself printed
    '[ERROR...] missing FORMAT specifier' on stderr (the pixels were right)."""
    image = hdr_image(peak=4.0) + 0.01
    write_radiance(tmp_path / "a.hdr", image)
    data = (tmp_path / "a.hdr").read_bytes()
    assert b"FORMAT=32-bit_rle_rgbe\n" in data
    (tmp_path / "b.hdr").write_bytes(data.replace(b"FORMAT=32-bit_rle_rgbe\n", b""))
    capfd.readouterr()
    np.testing.assert_array_equal(
        read_radiance(tmp_path / "b.hdr"), read_radiance(tmp_path / "a.hdr")
    )
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("name", ["anim.png", "anim.webp", "pages.tif"])
def test_an_animation_or_multi_page_file_says_its_first_frame_is_read(name, tmp_path, caplog):
    """Animated PNG and WebP files and multi-page TIFFs were converted from their first
    frame without a word (a GIF is refused by the tools, as an animation)."""
    from PIL import Image

    frames = [Image.fromarray(np.full((6, 8, 3), v, np.uint8)) for v in (10, 120, 240)]
    frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:], lossless=True)
    frames[0].save(tmp_path / "one.png")
    with caplog.at_level(logging.WARNING, logger="hdrunet_pl.io"):
        image = read_ldr(tmp_path / name)
        np.testing.assert_array_equal(image, read_ldr(tmp_path / "one.png"))
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / name}: 3 frames (an animation or several pages); the first is read"
    ]


def test_write_ldr_rounds_to_the_nearest_code(tmp_path):
    """8-bit codes are rounded, not truncated: (k + 0.6) / 255 is written as k + 1."""
    k = np.arange(0, 250, dtype=np.float32)
    values = np.stack([(k + 0.6) / 255, (k + 0.4) / 255, k / 255], axis=-1)[None]  # (1, 250, 3)
    write_ldr(tmp_path / "x.png", values)
    codes = read_ldr_codes(tmp_path / "x.png")
    np.testing.assert_array_equal(codes[0, :, 0], k + 1)
    np.testing.assert_array_equal(codes[0, :, 1], k)
    np.testing.assert_array_equal(codes[0, :, 2], k)


def test_hdr_names_that_are_no_files_are_named_when_left_out(tmp_path, caplog):
    """A link to a file moved away, or a pipe, named like an HDR image was left out of
    data=hdr_folder / held_out in silence: the set looked whole and was not."""
    from hdrunet_pl.data.hdr_folder import find_hdr_files

    write_radiance(tmp_path / "a.hdr", hdr_image(h=4, w=6))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "gone.exr").symlink_to(tmp_path / "moved_away.exr")
    os.mkfifo(tmp_path / "pipe.hdr")
    (tmp_path / "notes.txt").symlink_to(tmp_path / "nowhere.txt")  # no HDR name: no line
    with caplog.at_level(logging.WARNING, logger="hdrunet_pl.data.hdr_folder"):
        assert [p.name for p in find_hdr_files(tmp_path)] == ["a.hdr"]
    assert "2 HDR name(s) that are no readable files" in caplog.text
    assert "left out: pipe.hdr, sub/gone.exr" in caplog.text and "notes.txt" not in caplog.text
