"""benchmarks/gpu_figures.py measures on CUDA only: without it, one line and exit status 1, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the script would measure")
def test_without_cuda_the_gpu_figures_script_exits_at_once_with_one_line():
    docs = (ROOT / "docs" / "operating.md").read_bytes()
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_figures.py")], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == ["gpu_figures: no CUDA device here (no /dev/nvidia* or "
                                        "torch.cuda.is_available() is False); run it on a GPU machine"]
    assert (ROOT / "docs" / "operating.md").read_bytes() == docs
