"""Real HDR photographs for examples and tests, fetched from a package registry.

The PyPI wheel ``viser==1.0.16`` carries ten CC0 Poly Haven HDR panoramas (Radiance
``.hdr``, 1024x512). :func:`poly_haven_hdris` downloads that wheel with pip and extracts
them; nothing is committed to this repository.

python -m hdrunet_pl.samples data/hdri
hdrunet-train data=hdr_folder data.root=data/hdri data.rows=[0.25,0.75]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from hdrunet_pl.errors import HDRUNetError

VISER_SPEC = "viser==1.0.16"
HDRI_FOLDER = "viser/client/public/hdri/"
DOWNLOAD_TIMEOUT = 300
"""Seconds that the wheel's download may take before it counts as failed."""
EQUIRECT_BAND = (0.25, 0.75)
"""Rows (fractions) of an equirectangular panorama away from its distorted poles."""


def poly_haven_hdris(dest: str | Path) -> list[Path]:
    """The ten Poly Haven ``.hdr`` panoramas in ``dest`` (downloaded once, then reused)."""
    dest = Path(dest)
    found = sorted(dest.glob("*.hdr"))
    if len(found) >= 10:
        return found
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--timeout", "30"]
        cmd += ["-d", tmp, VISER_SPEC]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise HDRUNetError(
                f"could not download {VISER_SPEC} within {DOWNLOAD_TIMEOUT} s (offline?)"
            ) from None
        wheels = list(Path(tmp).glob("viser-*.whl"))
        if result.returncode or not wheels:
            raise HDRUNetError(f"could not download {VISER_SPEC}: {result.stderr.strip()}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            for member in wheel.namelist():
                if member.startswith(HDRI_FOLDER) and member.endswith(".hdr"):
                    target = dest / Path(member).name
                    tmp_target = target.with_suffix(".part")
                    tmp_target.write_bytes(wheel.read(member))
                    tmp_target.replace(target)
    return sorted(dest.glob("*.hdr"))


if __name__ == "__main__":
    for path in poly_haven_hdris(sys.argv[1] if len(sys.argv) > 1 else "hdri"):
        print(path)
