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

Lance decodes in its own threads, and glibc gives each thread an arena of heaps of 64 MiB. Once a
heap after an arena's first one is empty, glibc unmaps it unless more than `M_TOP_PAD` bytes of
free space would then remain (128 KiB by default): three scans at once (a read-once mixture) spill
into second heaps, which every epoch mapped and faulted in anew. A top pad of 128 MiB, more than a
heap can hold, keeps them: that mixture's epochs fault 1,200-1,800 pages instead of 2,300-4,100
(`python -m benchmarks.profile_streaming malloc`, docs/benchmarks.md).

A stream and an SQL statement ask for it. The setting is process-wide, so it is made once, only on
glibc, only where nobody set any of the three already (`GLIBC_TUNABLES=glibc.malloc.mmap_threshold=…`,
`…trim_threshold=…` or `…top_pad=…`; `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`,
`MALLOC_TOP_PAD_`), and never with `REPLAYSTORE_MALLOC=default`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

M_TRIM_THRESHOLD = -1  # mallopt parameters (glibc's malloc.h)
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's maximum on 64-bit: buffers below it come from the heap
TRIM_THRESHOLD = 128 * 2**20  # free memory a heap keeps before it returns any to the kernel
TOP_PAD = 128 * 2**20  # above a thread arena's 64 MiB heap size: its emptied heaps are kept, not unmapped
USER_SETTINGS = ("mmap_threshold", "trim_threshold", "top_pad")  # glibc's tunable names; MALLOC_<NAME>_ in the environment
OPT_OUT = "REPLAYSTORE_MALLOC"

log = logging.getLogger("replaystore")
_tuned: bool | None = None  # None: not tried yet in this process


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds and its top pad once per process; whether they are raised."""
    global _tuned
    if _tuned is None:
        _tuned = _tune()
    return _tuned


def _tune() -> bool:
    if os.environ.get(OPT_OUT) == "default" or _user_tuned() or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD))
    done = all([bool(mallopt(param, value)) for param, value in settings])
    log.debug("malloc: mmap threshold %d, trim threshold %d, top pad %d (%s=default leaves them alone)", MMAP_THRESHOLD, TRIM_THRESHOLD, TOP_PAD, OPT_OUT)
    return done


def _user_tuned() -> bool:
    """Whether the user set any of our three (huge pages and other tunables combine with ours)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return any(f"malloc.{name}" in tunables or f"MALLOC_{name.upper()}_" in os.environ for name in USER_SETTINGS)
