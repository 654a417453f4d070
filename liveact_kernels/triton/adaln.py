"""Triton kernels of the adaLN family: adaln_modulate, gated_residual, adaln_residual (one fused row kernel).

Design for H100 at LiveAct's shapes (x [1, 9360, 5120] bf16, per-frame modulation [1, 8, 5120] fp32):
one program per token row, the whole row (D = 5120 -> BLOCK_D 8192, masked) in registers, 16 warps
(512 threads x 16 values each, loaded as 16-byte vectors; the sm_90 build uses 44 registers and no spills,
docs/gpu-compile-report.md). Rows are independent: 9360 programs of 512 threads, up to 4 resident per SM
(2048 threads) -> ~18 waves over 132 SMs with ~40 KB of loads in flight per SM to hide HBM latency.
Bytes moved (adaln_residual, bf16): read x, y (2 x 2 B x D), write x_new, out (2 x 2 B x D) = 8 B/element;
the fp32 modulation rows (3 x 4 B x D per frame) stay in L2 across the frame's 1170 rows. At
[9360, 5120]: 383 MB -> 0.114 ms at 3.35 TB/s (projection). FLOPs ~12/element: far below the ridge.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ._common import pow2, row_warps


@triton.jit
def _adaln_row_kernel(x_ptr, y_ptr, gate_ptr, shift_ptr, scale_ptr, w_ptr, b_ptr, xo_ptr, out_ptr,
                      L, D, Fg, Fsh, Fsc, eps,
                      sxb, sxl, sxd, syb, syl, syd, sxob, sxol, sxod, sob, sol, sod,
                      BLOCK_D: tl.constexpr, HAS_RES: tl.constexpr, HAS_NORM: tl.constexpr, RMS: tl.constexpr,
                      HAS_W: tl.constexpr, HAS_B: tl.constexpr):
    # x: (B, L, D) any strides; gate/shift/scale: (B, F*, D) fp32 contiguous with their own frame counts F*;
    # row l uses frame l // (L // F*) of each
    row = tl.program_id(0).to(tl.int64)
    b = row // L
    l = row % L
    cols = tl.arange(0, BLOCK_D)
    m = cols < D
    x = tl.load(x_ptr + b * sxb + l * sxl + cols * sxd, mask=m, other=0.0).to(tl.float32)
    if HAS_RES:
        y = tl.load(y_ptr + b * syb + l * syl + cols * syd, mask=m, other=0.0).to(tl.float32)
        g = tl.load(gate_ptr + (b * Fg + l // (L // Fg)) * D + cols, mask=m, other=0.0)
        xn = (x + y * g).to(xo_ptr.dtype.element_ty)
        tl.store(xo_ptr + b * sxob + l * sxol + cols * sxod, xn, mask=m)
        x = xn.to(tl.float32)  # the norm sees x_new rounded to x.dtype, like the unfused composition
    if HAS_NORM:
        if RMS:
            n = x * tl.math.rsqrt(tl.sum(x * x, axis=0) / D + eps)
        else:
            mean = tl.sum(x, axis=0) / D
            xc = tl.where(m, x - mean, 0.0)
            n = xc * tl.math.rsqrt(tl.sum(xc * xc, axis=0) / D + eps)
        if HAS_W:
            n = n * tl.load(w_ptr + cols, mask=m, other=0.0)
        if HAS_B:
            n = n + tl.load(b_ptr + cols, mask=m, other=0.0)
        sc = tl.load(scale_ptr + (b * Fsc + l // (L // Fsc)) * D + cols, mask=m, other=0.0)
        sh = tl.load(shift_ptr + (b * Fsh + l // (L // Fsh)) * D + cols, mask=m, other=0.0)
        tl.store(out_ptr + b * sob + l * sol + cols * sod, (n * (1.0 + sc) + sh).to(out_ptr.dtype.element_ty), mask=m)


def config(D: int, elem_bytes: int = 2) -> dict:
    """The shipped launch configuration for row length D."""
    block = pow2(D, 16)
    return {"BLOCK_D": block, "num_warps": row_warps(block, elem_bytes)}


def _launch(x, y, gate, shift, scale, weight, bias, eps, rms, x_out, out, has_res, has_norm):
    B, L, D = x.shape
    if B * L == 0 or D == 0:
        return
    mod = gate if gate is not None else shift
    Fg, Fsh, Fsc = (t.shape[1] if t is not None else 1 for t in (gate, shift, scale))
    yy = y if y is not None else x
    xo = x_out if x_out is not None else x
    oo = out if out is not None else x
    cfg = config(D, x.element_size())
    _adaln_row_kernel[(B * L,)](
        x, yy, gate if gate is not None else mod, shift if shift is not None else mod,
        scale if scale is not None else mod, weight if weight is not None else mod,
        bias if bias is not None else mod, xo, oo, L, D, Fg, Fsh, Fsc, float(eps),
        *x.stride(), *yy.stride(), *xo.stride(), *oo.stride(),
        BLOCK_D=cfg["BLOCK_D"], HAS_RES=has_res, HAS_NORM=has_norm, RMS=bool(rms), HAS_W=weight is not None,
        HAS_B=bias is not None, num_warps=cfg["num_warps"])


def adaln_modulate_fwd_triton(x, shift, scale, weight, bias, eps, rms, out):
    """x, out: (B, L, D); shift, scale: (B, F, D) fp32 contiguous; weight/bias: (D,) fp32 or None."""
    _launch(x, None, None, shift, scale, weight, bias, eps, rms, None, out, False, True)


def gated_residual_fwd_triton(x, y, gate, out):
    """out = x + y * gate; x, y, out: (B, L, D); gate (B, F, D) fp32 contiguous."""
    _launch(x, y, gate, None, None, None, None, 0.0, False, out, None, True, False)


def adaln_residual_fwd_triton(x, y, gate, shift, scale, weight, bias, eps, rms, x_out, out):
    """x_out = x + y * gate; out = norm(x_out) * (1 + scale) + shift, one read of x and y."""
    _launch(x, y, gate, shift, scale, weight, bias, eps, rms, x_out, out, True, True)
