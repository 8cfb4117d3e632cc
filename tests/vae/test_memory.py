"""vae.memory.keep_freed_memory: a freed block is served again from the heap, where glibc's
defaults hand it back to the kernel and fault every page in again; and what the committed decoder
and observer compute is the same."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import ctypes, json, resource, sys, torch
torch.set_num_threads(1)
from vae.checkpoint import load_checkpoint
from vae.memory import keep_freed_memory
from vae.observer import load_observer
if sys.argv[1] == "keep":
    assert keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
size = 48 << 20  # above the 32 MB glibc's defaults ever serve from the heap
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    libc.memset(block, 1, size)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
model = load_checkpoint("vae/checkpoints/default.pt").model.eval()
observer = load_observer("vae/checkpoints/observer.pt").eval()
z = torch.nn.functional.normalize(torch.randn(64, 3, generator=torch.Generator().manual_seed(0)))
with torch.inference_mode():
    sums = [float(observer(model.decode(z[i:i + 32])).double().sum()) for i in (0, 32)]
print(json.dumps({"faults": faults, "sums": sums}))
"""


def run(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_freed_block_is_served_again_without_faulting_its_pages_in():
    default, keep = run("default"), run("keep")
    pages = (48 << 20) // 4096
    assert min(default["faults"]) > pages // 2  # the control: every time, every page
    assert max(keep["faults"][1:]) < pages // 20  # the first time only
    assert keep["sums"] == default["sums"]  # the same arithmetic
