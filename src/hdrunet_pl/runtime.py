"""Process-level settings that make the CPU paths fast.

PyTorch's CPU tensors come from the C allocator. glibc's malloc serves large blocks with
fresh ``mmap`` pages and returns them on ``free``: every big activation of every layer is
page-faulted in again, which on this project's 2-core machine cost more system time than
the convolutions themselves (1060x1900 bf16 inference: 5.0 s, 2.4 s with freed memory
kept). :func:`keep_freed_memory` asks malloc to serve large blocks from its heap and keep
freed memory for reuse, as tcmalloc or jemalloc would.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import time
from pathlib import Path

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
NEVER_TRIM = -1
"""``M_TRIM_THRESHOLD`` value that keeps all freed memory (``man mallopt``). A finite
threshold is an ``int`` (at most 2 GiB): the activations of a whole 1060x1900 frame in fp32
(4.6 GB) went beyond it, and each frame page-faulted its top gigabytes in again (sys time
4.7-8.2 s of a 14-18 s frame, measured; none with tiles under 2 GiB)."""
DISABLE_ENV = "HDRUNET_KEEP_FREED_MEMORY"


def keep_freed_memory() -> bool:
    """Tune glibc malloc for large, repeated tensor allocations; True if it took effect.

    Large blocks come from the heap (not ``mmap``) and freed memory is kept for reuse (the
    process keeps its peak size; :func:`trim_heap` returns it on request).

    No effect (False) off Linux/glibc or when ``HDRUNET_KEEP_FREED_MEMORY=0``.
    """
    if sys.platform != "linux" or os.environ.get(DISABLE_ENV, "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))


def restore_malloc_defaults() -> None:
    """Undo :func:`keep_freed_memory` (glibc defaults), e.g. to time a plain baseline."""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt(M_MMAP_MAX, 65536)
    libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)
    trim_heap()


def trim_heap() -> None:
    """Collect garbage and return the C heap's free memory to the system (glibc)."""
    import gc

    gc.collect()
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def process_start_time() -> float:
    """When this process started, in seconds since the epoch (``time.time()``'s clock), to
    about 10 ms: from the kernel's record of it on Linux (a forked process's own start),
    elsewhere when this module was first imported."""
    try:
        stat = Path("/proc/self/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22: start, ticks since boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return _IMPORTED
    return time.time() - age


_IMPORTED = time.time()


PR_SET_PDEATHSIG = 1
"""``prctl`` option: the signal a process gets when its parent ends (``man prctl``)."""


def end_with_parent(parent: int) -> None:
    """Make this (worker) process end when ``parent``, which started it, ends, killed
    included: a worker left behind would go on holding what its parent held (an output
    folder's lock) and wait forever. SIGTERM through ``prctl`` on Linux; nothing elsewhere."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it ended before the call took effect
        os.kill(os.getpid(), signal.SIGTERM)
