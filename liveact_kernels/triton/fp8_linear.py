"""Triton W8A8 FP8 GEMM for fp8_linear: out = (x_q @ w_q^T) * x_scale[m] * w_scale[n] + bias[n], e4m3 x e4m3
tensor-core dot with fp32 accumulation (wgmma on sm_90, mma on sm_89). The activation quantisation
(dynamic per-token scales) is fp8.py's quantize kernel, called by the wrapper with the same backend.

H100 at LiveAct's FFN (M 9360 tokens, K 5120, N 13824): 2*M*N*K = 1.32e12 FLOP -> 0.67 ms at 1979 TFLOP/s
(projection); bytes x 48 MB + w 71 MB + out 259 MB (bf16) = 378 MB -> 0.11 ms: compute-bound.
Tiles 128 x 128 x 128, 8 warps (2 warp groups), 3 stages: smem (128*128 + 128*128) B x 3 = 96 KB (< 227 KB);
accumulator 128 x 128 fp32 over 256 threads = 64 registers per thread. Grid 74 x 108 = 7992 CTAs, grouped
by 8 rows of tiles so that consecutive CTAs reuse the same weight columns from L2.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import device_cc


@triton.jit
def _fp8_gemm_kernel(a_ptr, as_ptr, b_ptr, bs_ptr, bias_ptr, c_ptr, M, N, K,
                     sam, sak, sbn, sbk, scm, scn,
                     HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     GROUP_M: tl.constexpr):
    # a: (M, K) e4m3, as: (M,) fp32; b: (N, K) e4m3, bs: (N,) fp32; c: (M, N)
    pid = tl.program_id(0)
    n_m = tl.cdiv(M, BLOCK_M)
    n_n = tl.cdiv(N, BLOCK_N)
    group = pid // (GROUP_M * n_n)
    first_m = group * GROUP_M
    gm = tl.minimum(n_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * n_n)) % gm
    pid_n = (pid % (GROUP_M * n_n)) // gm
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + rk
        a = tl.load(a_ptr + rm[:, None].to(tl.int64) * sam + kk[None, :] * sak,
                    mask=(rm[:, None] < M) & (kk[None, :] < K), other=0.0)
        b = tl.load(b_ptr + rn[None, :].to(tl.int64) * sbn + kk[:, None] * sbk,
                    mask=(rn[None, :] < N) & (kk[:, None] < K), other=0.0)
        acc = tl.dot(a, b, acc)
    sa = tl.load(as_ptr + rm, mask=rm < M, other=0.0)
    sb = tl.load(bs_ptr + rn, mask=rn < N, other=0.0)
    out = acc * sa[:, None] * sb[None, :]
    if HAS_BIAS:
        out += tl.load(bias_ptr + rn, mask=rn < N, other=0.0)[None, :]
    tl.store(c_ptr + rm[:, None].to(tl.int64) * scm + rn[None, :] * scn, out.to(c_ptr.dtype.element_ty),
             mask=(rm[:, None] < M) & (rn[None, :] < N))


def config(cc: int = 90) -> dict:
    return {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 128, "GROUP_M": 8, "num_warps": 8,
            "num_stages": 3 if cc >= 90 else 2}


def fp8_linear_fwd_triton(x_q, x_scale, w_q, w_scale, bias, out):
    """x_q: (M, K) float8_e4m3fn; x_scale: (M, 1) fp32; w_q: (N, K) float8_e4m3fn; w_scale: (N,) fp32;
    bias: (N,) fp32 or None; out: (M, N)."""
    M, K = x_q.shape
    N = w_q.shape[0]
    if M * N == 0:
        return
    if K == 0:
        out.copy_(bias.expand(M, N) if bias is not None else torch.zeros_like(out))
        return
    cc = device_cc(x_q.device)
    if cc < 89:
        raise RuntimeError(f"fp8_linear (triton): FP8 tensor cores need sm_89 or newer, got sm_{cc}")
    cfg = config(cc)
    xs = x_scale.reshape(-1)
    grid = (triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(N, cfg["BLOCK_N"]),)
    _fp8_gemm_kernel[grid](x_q, xs, w_q, w_scale, bias if bias is not None else w_scale, out, M, N, K,
                           *x_q.stride(), *w_q.stride(), *out.stride(), HAS_BIAS=bias is not None,
                           BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"],
                           GROUP_M=cfg["GROUP_M"], num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
