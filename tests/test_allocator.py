"""A scoring process keeps the memory a batch frees, so the next batch does not fault in fresh pages."""

from __future__ import annotations

import subprocess
import sys

from common.allocator import keep_freed_memory
from tests.helpers.dagster_services import ROOT

# Allocate and free a 64 MB buffer (over glibc's largest mmap threshold) ten times; print the page faults that
# the nine after the first cost.
FAULTS = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from common.allocator import keep_freed_memory
    assert keep_freed_memory()
np.ones(16 * 2**20, dtype=np.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(9):
    np.ones(16 * 2**20, dtype=np.float32)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
# The fewest faults a fresh 64 MB mapping can cost: one per 2 MiB page, when transparent huge pages back it.
FEWEST_FAULTS_PER_BUFFER = 64 // 2


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], cwd=ROOT, capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_freed_buffers_are_reused_instead_of_faulting_in_new_pages():
    assert _faults("default") >= 9 * FEWEST_FAULTS_PER_BUFFER, "glibc's default unmaps each buffer on free"
    assert _faults("keep") < FEWEST_FAULTS_PER_BUFFER


def test_setting_it_twice_is_one_setting():
    assert keep_freed_memory() is keep_freed_memory()
