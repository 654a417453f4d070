"""Triton kernels of the causal depthwise conv1d (any width and stride, initial/final states, SiLU) and of
its streaming single-step update.

H100 sizing (x [B, C, L] bf16, contiguous along L): a [16 channels, 128 outputs] tile per program, 4 warps:
each thread owns 16 outputs; the W taps re-read overlapping x windows from L1, so HBM traffic is
(L + Lo) x C x 2 B. Example [1, 5120, 4096], W 4, stride 1: 84 MB -> 0.025 ms at 3.35 TB/s (projection).
"""
from __future__ import annotations

import triton
import triton.language as tl

from ._common import pow2


@triton.jit
def _act(v, ACT: tl.constexpr):
    if ACT == 1:
        v = v / (1.0 + tl.exp(-v))  # SiLU
    return v


@triton.jit
def _dwconv_kernel(x_ptr, w_ptr, b_ptr, init_ptr, out_ptr, fs_ptr, C, L, Lo, stride,
                   sxb, sxc, sxl, sib, sic, sil, sob, soc, sol, sfb, sfc, sfl,
                   W: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, HAS_FS: tl.constexpr,
                   ACT: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr, WPAD: tl.constexpr):
    # xp = cat(initial_states (W-1 columns, zeros if absent), x) along time; out[t] = sum_k w[k] xp[t*stride + k]
    b = tl.program_id(0).to(tl.int64)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    ts = tl.program_id(2) * BLOCK_T + tl.arange(0, BLOCK_T)
    cm = cs < C
    acc = tl.zeros([BLOCK_C, BLOCK_T], dtype=tl.float32)
    for k in tl.static_range(W):
        i = ts * stride + k                           # index into xp
        xi = i - (W - 1)
        m = cm[:, None] & (ts[None, :] < Lo) & (xi[None, :] >= 0) & (xi[None, :] < L)
        v = tl.load(x_ptr + b * sxb + cs[:, None] * sxc + xi[None, :] * sxl, mask=m, other=0.0).to(tl.float32)
        if HAS_INIT:
            mi = cm[:, None] & (ts[None, :] < Lo) & (i[None, :] < W - 1)
            vi = tl.load(init_ptr + b * sib + cs[:, None] * sic + i[None, :] * sil, mask=mi, other=0.0)
            v += vi.to(x_ptr.dtype.element_ty).to(tl.float32)   # the reference casts the states to x.dtype
        acc += v * tl.load(w_ptr + cs * W + k, mask=cm, other=0.0)[:, None]
    if HAS_BIAS:
        acc += tl.load(b_ptr + cs, mask=cm, other=0.0)[:, None]
    acc = _act(acc, ACT)
    tl.store(out_ptr + b * sob + cs[:, None] * soc + ts[None, :] * sol, acc.to(out_ptr.dtype.element_ty),
             mask=cm[:, None] & (ts[None, :] < Lo))
    if HAS_FS:
        if tl.program_id(2) == 0:
            # final_states[j] = xp[L + j], j < W - 1
            fj = tl.arange(0, WPAD)
            fi = L + fj
            fxi = fi - (W - 1)
            fm = cm[:, None] & (fj[None, :] < W - 1)
            fv = tl.load(x_ptr + b * sxb + cs[:, None] * sxc + fxi[None, :] * sxl, mask=fm & (fxi[None, :] >= 0),
                         other=0.0)
            if HAS_INIT:
                fvi = tl.load(init_ptr + b * sib + cs[:, None] * sic + fi[None, :] * sil,
                              mask=fm & (fi[None, :] < W - 1), other=0.0)
                fv = tl.where(fxi[None, :] >= 0, fv, fvi.to(x_ptr.dtype.element_ty))
            tl.store(fs_ptr + b * sfb + cs[:, None] * sfc + fj[None, :] * sfl, fv.to(fs_ptr.dtype.element_ty), mask=fm)


@triton.jit
def _dwconv_update_kernel(x_ptr, st_ptr, w_ptr, b_ptr, out_ptr, C, S, St,
                          sxb, sxc, sxl, ssb, ssc, ssl, sob, soc, sol,
                          W: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr, BLOCK_C: tl.constexpr,
                          SPAD: tl.constexpr, STPAD: tl.constexpr):
    # ext = cat(conv_state (St), x (S)); out[i] = sum_k w[k] ext[St + i + 1 - W + k]; new state = ext[S:S+St]
    b = tl.program_id(0).to(tl.int64)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = cs < C
    si = tl.arange(0, SPAD)
    acc = tl.zeros([BLOCK_C, SPAD], dtype=tl.float32)
    for k in tl.static_range(W):
        e = St + si + 1 - W + k
        m = cm[:, None] & (si[None, :] < S)
        vs = tl.load(st_ptr + b * ssb + cs[:, None] * ssc + e[None, :] * ssl, mask=m & (e[None, :] < St), other=0.0)
        vx = tl.load(x_ptr + b * sxb + cs[:, None] * sxc + (e[None, :] - St) * sxl, mask=m & (e[None, :] >= St),
                     other=0.0).to(st_ptr.dtype.element_ty)       # x enters the state in the state's dtype
        v = tl.where(e[None, :] < St, vs.to(tl.float32), vx.to(tl.float32))
        acc += v * tl.load(w_ptr + cs * W + k, mask=cm, other=0.0)[:, None]
    if HAS_BIAS:
        acc += tl.load(b_ptr + cs, mask=cm, other=0.0)[:, None]
    acc = _act(acc, ACT)
    tl.store(out_ptr + b * sob + cs[:, None] * soc + si[None, :] * sol, acc.to(out_ptr.dtype.element_ty),
             mask=cm[:, None] & (si[None, :] < S))
    # shift the state: read every new value first, then write (other threads may own the source slots)
    j = tl.arange(0, STPAD)
    e = S + j
    m = cm[:, None] & (j[None, :] < St)
    vs = tl.load(st_ptr + b * ssb + cs[:, None] * ssc + e[None, :] * ssl, mask=m & (e[None, :] < St), other=0.0)
    vx = tl.load(x_ptr + b * sxb + cs[:, None] * sxc + (e[None, :] - St) * sxl, mask=m & (e[None, :] >= St),
                 other=0.0).to(st_ptr.dtype.element_ty)
    nv = tl.where(e[None, :] < St, vs, vx)
    tl.debug_barrier()
    tl.store(st_ptr + b * ssb + cs[:, None] * ssc + j[None, :] * ssl, nv, mask=m)


_ACT = {None: 0, "silu": 1, "swish": 1}


def config() -> dict:
    return {"BLOCK_C": 16, "BLOCK_T": 128, "num_warps": 4}


def causal_dwconv1d_fwd_triton(x, weight, bias, initial_states, stride, activation, out, final_states):
    """x: (B, C, L); weight: (C, W) fp32; bias: (C,) fp32 or None; initial_states: (B, C, W-1) or None;
    out: (B, C, ceil(L/stride)); final_states: (B, C, W-1) or None."""
    B, C, L = x.shape
    W = weight.shape[1]
    Lo = out.shape[2]
    fs = final_states if final_states is not None and W > 1 else None
    if B * C == 0 or (Lo == 0 and fs is None):
        return
    cfg = config()
    ini = initial_states if initial_states is not None else x
    fsa = fs if fs is not None else out
    grid = (B, triton.cdiv(C, cfg["BLOCK_C"]), max(1, triton.cdiv(Lo, cfg["BLOCK_T"])))
    _dwconv_kernel[grid](x, weight, bias if bias is not None else weight, ini, out, fsa, C, L, Lo, int(stride),
                         *x.stride(), *ini.stride(), *out.stride(), *fsa.stride(), W=W, HAS_BIAS=bias is not None,
                         HAS_INIT=initial_states is not None, HAS_FS=fs is not None, ACT=_ACT[activation],
                         BLOCK_C=cfg["BLOCK_C"], BLOCK_T=cfg["BLOCK_T"], WPAD=pow2(W - 1, 2),
                         num_warps=cfg["num_warps"])


def causal_dwconv1d_update_fwd_triton(x, conv_state, weight, bias, activation, out):
    """x, out: (B, C, S); conv_state: (B, C, St >= W-1), updated in place; weight (C, W) fp32."""
    B, C, S = x.shape
    St = conv_state.shape[2]
    W = weight.shape[1]
    if B * C == 0 or S == 0:
        return
    _dwconv_update_kernel[(B, triton.cdiv(C, 64))](
        x, conv_state, weight, bias if bias is not None else weight, out, C, S, St, *x.stride(), *conv_state.stride(),
        *out.stride(), W=W, HAS_BIAS=bias is not None, ACT=_ACT[activation], BLOCK_C=64, SPAD=pow2(S, 2),
        STPAD=pow2(St, 2), num_warps=2)
