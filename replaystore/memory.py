"""Keep glibc's malloc from handing freed scan buffers back to the kernel after every batch.

Lance decodes each scan batch (a stream's, an SQL statement's) into fresh buffers of a few MB. By
default glibc returns such memory to the kernel as soon as it is freed (an `munmap`, or a trim of
its heap's free top once that is larger than twice the largest buffer freed so far), so the next
batch's buffers are new pages that the kernel faults in and zeroes one by one: 40,000-70,000 page
faults per epoch of a 1M-row compacted table, more than half of the epoch's time
(`python -m benchmarks.profile_streaming malloc`, docs/benchmarks.md). Raising the mmap threshold
to its maximum (32 MiB) and the trim threshold to 128 MiB lets freed buffers be reused: those
epochs run about twice as fast, and the process keeps what it cycles through resident (about
250 MB more at the peak there).

A stream and an SQL statement ask for it. The setting is process-wide, so it is made once, only on
glibc, only where nobody set either threshold already (`GLIBC_TUNABLES=glibc.malloc.mmap_threshold=…`
or `…trim_threshold=…`, `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`), and never with
`REPLAYSTORE_MALLOC=default`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

M_TRIM_THRESHOLD = -1  # mallopt parameters (glibc's malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's maximum on 64-bit: buffers below it come from the heap
TRIM_THRESHOLD = 128 * 2**20  # free memory a heap keeps before it returns any to the kernel
OPT_OUT = "REPLAYSTORE_MALLOC"

log = logging.getLogger("replaystore")
_tuned: bool | None = None  # None: not tried yet in this process


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; whether they are raised."""
    global _tuned
    if _tuned is None:
        _tuned = _tune()
    return _tuned


def _tune() -> bool:
    if os.environ.get(OPT_OUT) == "default" or _user_tuned() or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    log.debug("malloc: mmap threshold %d, trim threshold %d (%s=default leaves them alone)", MMAP_THRESHOLD, TRIM_THRESHOLD, OPT_OUT)
    return done


def _user_tuned() -> bool:
    """Whether the user set either threshold (huge pages and other tunables combine with ours)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return any(f"malloc.{name}_threshold" in tunables or f"MALLOC_{name.upper()}_THRESHOLD_" in os.environ for name in ("mmap", "trim"))
