"""What tintdb does to keep the process's resident memory down.

Measured in a process of its own (the test runner's heap is not ours to judge).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

_HELD_THEN_RELEASED = r"""
from tintdb._exact import release_free_heap

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

# 200 MB in blocks small enough for glibc's heap, all freed but the last: the heap
# cannot shrink from its top, so without a trim the freed pages stay resident.
blocks = [bytearray(64 << 10) for _ in range(3200)]
last = blocks[-1]
del blocks
held = rss_mb()
release_free_heap()
print(held, rss_mb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_heap_memory_goes_back_to_the_system_before_a_second_graph() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _HELD_THEN_RELEASED], capture_output=True, text=True, check=True
    ).stdout
    held, after = map(float, out.split())
    assert held - after > 150, (held, after)
