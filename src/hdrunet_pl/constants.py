"""Numbers fixed by the NTIRE 2021 HDR challenge and the HDRUNet paper (one home each)."""

GAMMA: float = 2.24
"""Gamma of the challenge: linear HDR = non-linear HDR ** GAMMA."""

MU: float = 5000.0
"""Compression of the mu-law tonemapper used by PSNR-mu (and the mu-law loss)."""

NORM_PERCENTILE: float = 99.0
"""Percentile of the linear reference that normalises images before tonemapping in PSNR-mu."""

LDR_LEVELS: int = 255
"""Largest code of an 8-bit LDR image: LDR in [0, 1] is ``uint8 / LDR_LEVELS``."""
