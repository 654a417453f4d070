"""Helpers shared by the Triton launchers: tile-size arithmetic and row views of tensors."""
from __future__ import annotations

import torch
import triton

# H100 SXM facts the tile choices in each kernel file are argued from.
H100_BW = 3.35e12            # HBM3 bytes/s
H100_SMS = 132
H100_SMEM_PER_SM = 228 * 1024
H100_REGS_PER_SM = 65536


def pow2(n: int, lo: int = 1) -> int:
    return max(lo, triton.next_power_of_2(max(1, int(n))))


def rows_2d(t: torch.Tensor) -> torch.Tensor:
    """t (..., D) as a 2-D (rows, D) view when the leading dims flatten into one stride, else a copy.
    The kernels take both strides, so a padded row stride (test `strided`) needs no copy."""
    D = t.shape[-1]
    if t.dim() == 1:
        return t.reshape(1, D)
    try:
        return t.view(-1, D)
    except RuntimeError:
        return t.reshape(-1, D)


def row_warps(block: int, elem_bytes: int = 2) -> int:
    """Warps for a one-row-per-program kernel: about 16 bytes (one 128-bit access) x 2 per thread per pass,
    at most 16 warps. D = 5120 bf16 -> BLOCK 8192 -> 8 warps (32 elements per thread)."""
    return int(min(16, max(1, block * elem_bytes // (32 * 32))))


def out_rows(out: torch.Tensor):
    """(rows, D) view of an output tensor, and whether it is a temporary that must be copied back."""
    D = out.shape[-1]
    try:
        return out.view(-1, D), False
    except RuntimeError:
        return torch.empty((out.numel() // max(D, 1), D), dtype=out.dtype, device=out.device), True


# Compute capability the launchers size their tiles for. None: the device's own (CUDA), or 90 for CPU tensors
# under the interpreter and for meta tensors (the AOT capture in aot.py sets it per target).
CC_OVERRIDE: int | None = None


def device_cc(device: torch.device) -> int:
    if CC_OVERRIDE is not None:
        return CC_OVERRIDE
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return major * 10 + minor
    return 90
