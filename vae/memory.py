"""Let a process keep the memory it frees: torch on CPU frees and asks again for the same large
blocks (feature maps, gradients) every batch, and glibc's defaults hand them to the kernel in
between, so every batch faults its pages in again, zeroed by the kernel.

glibc serves a block of more than 128 KB (raised as such blocks are freed, to at most 32 MB) with
its own mmap, unmapped when freed, and gives the top of the heap back once more than twice that
is free there. `keep_freed_memory` serves blocks up to 256 MB from the heap and keeps up to 1 GB
of freed memory (glibc's `mallopt`; on another C library it does nothing). Arithmetic is
unchanged: a model trains to the same bits. Measured on this 2-core machine against the code
before (docs/faces.md, "The observer agent's speed"):
- the observer agent, 300 trials x 256 chains, table built during the run: 835 -> 1,153
  chain-trials/s; decoding and judging every face: 490 -> 693 (benchmarks/bench_observer.py,
  the two side by side);
- `python -m mcmcp.plan` of the observer agent (2 workers): 126 -> 75 CPU s, 46 of them in the
  kernel before (whole commands in turn, medians of 3);
- 2 epochs of `python -m vae.train` on the default faces, start-up and the reader's check
  included: 59.5 -> 50.6 s (12 s in the kernel before, under 1 after); peak memory 1.3 -> 1.6 GB
  (the same way).
"""

from __future__ import annotations

import ctypes
import functools

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's malloc.h
KEEP = 1 << 30  # bytes of freed memory kept at the top of the heap
HEAP_BLOCKS = 256 << 20  # blocks up to this size come from the heap (a batch's largest maps)
FALLBACK = 32 << 20  # glibc's own upper bound for the mmap threshold, if it refuses HEAP_BLOCKS
PAD = 64 << 20  # bytes asked of the kernel beyond each request, so the heap grows rarely


@functools.cache
def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed memory (see the module doc), once per process; False
    where the C library is not glibc (nothing changed)."""
    libc = ctypes.CDLL(None)
    if not (hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version")):
        return False
    if not libc.mallopt(M_MMAP_THRESHOLD, HEAP_BLOCKS):
        libc.mallopt(M_MMAP_THRESHOLD, FALLBACK)
    libc.mallopt(M_TRIM_THRESHOLD, KEEP)
    libc.mallopt(M_TOP_PAD, PAD)
    return True
