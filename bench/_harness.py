"""Shared benchmark harness for `pytest bench/` (pytest-benchmark): providers of one op share a group, so
that make_table.py can compute ratios against the best baseline measured in the same run."""
from __future__ import annotations

import torch

# Each provider runs for about this long (median of rounds); the machine is noisy, so we report medians.
TARGET_SECONDS = 1.0


def _rounds(fn, target=TARGET_SECONDS, lo=3, hi=200):
    import time
    fn()  # warm-up (also compiles torch.compile'd baselines)
    t0 = time.perf_counter()
    fn()
    dt = max(time.perf_counter() - t0, 1e-6)
    return int(min(hi, max(lo, target / dt)))


def run(benchmark, fn, *, op: str, provider: str, shape: str, dtype, bytes_moved: float | None = None,
        flops: float | None = None, role: str = "kernel"):
    """Times fn with pytest-benchmark and records what make_table.py needs.

    role: "kernel" (ours), "baseline" (what the kernel replaces, e.g. eager PyTorch), or "copy" (a plain
    tensor copy of the same bytes: the memory-bandwidth yardstick).
    """
    benchmark.group = f"{op} {shape} {str(dtype).replace('torch.', '')}"
    benchmark.extra_info.update({"op": op, "provider": provider, "shape": shape, "role": role,
                                 "dtype": str(dtype).replace("torch.", ""), "bytes": bytes_moved, "flops": flops,
                                 "threads": torch.get_num_threads()})
    rounds = _rounds(fn)
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)


def copy_fn(nbytes: int):
    """A tensor copy that reads and writes nbytes/2 bytes each way: the same traffic as an op that reads
    nbytes/2 and writes nbytes/2."""
    n = max(1, int(nbytes // 2))
    src = torch.empty(n, dtype=torch.uint8)
    src.fill_(1)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)
