"""Triton flash attention for the `attention` op: bf16/fp16/fp32 Q/K/V, or FP8 e4m3 K/V with per-(token, head)
scales applied in registers; NHD/HND through strides; GQA; bottom-right causal mask; LSE (natural log).

Online softmax in base 2 (scale * log2(e) folded into the scores). With FP8 K/V the default is exact
dequantisation in registers (K, V widened to q's dtype; per-key scales on S's and P's columns). Opt-in
(qk_fp8=True, an FP8-capable target: sm_89+, or the interpreter), Q*K^T runs as an e4m3 x e4m3 dot: each query row is quantised in registers with
its own scale (amax/448, a finer granularity than SageAttention's per-block Q scale), K is used exactly as
stored, and the per-key scales multiply the columns of S after the dot (S_ij = qs_i * ks_j * sum_d qq_id kq_jd,
the exact algebra of dequantisation, so K is never re-quantised). P*V with FP8 V: the per-key V scales fold
into P's columns as P' = P * vs / max(vs) in [0, 1], then either an fp16 dot with V widened in registers (e4m3
values are exact in fp16; P' keeps 11 mantissa bits; default), or (PV_FP8) an e4m3 dot with P' * 448; the
block's max(vs) (/448) multiplies the product. fp32 q: fp32 dots throughout.
Accumulation is fp32 throughout.

H100 sizing at LiveAct's self-attention (B 1, H 40, Dh 128, Nq 9360, Nk 16380):
  FLOPs 4*H*Dh*Nq*Nk = 3.14e12 -> 1.59 ms at 1979 TFLOP/s fp8, 3.17 ms at 989 bf16 (projections).
  Bytes: Q 96 MB + K/V (fp8) 168 MB once per query tile in L2 terms; from HBM about (Q + O + K + V) = 360 MB
  -> 0.11 ms: compute-bound by ~15x, so tiles are sized for tensor-core throughput.
  FP8 K/V on sm_90: BLOCK_M 128 x BLOCK_N 128, 8 warps (two warp groups of 64 rows for wgmma m64), 3 stages:
  K 16 KB + V 16 KB per stage plus the bf16 copy of V for P.V -> 134 KB of shared memory (< 227 KB); S and acc
  128x128 fp32 over 256 threads = 64 + 64 registers per thread: 253 registers, no spills (compile report).
  bf16 inputs on sm_90: BLOCK_N 64 (halves the S tile; 174 registers, 132 KB for 3 stages of 16+16 KB).
  Grid: ceil(9360/128) * 40 = 2960 programs = 22.4 waves over 132 SMs (1 CTA/SM).
  sm_89 / sm_80 (99 / 163 KB, mma.sync): BLOCK_N 64, 2 stages; FP8 K/V on sm_89: BLOCK_M 64 x BLOCK_N 32,
  4 warps, which keeps the conversions of K, V and P within 255 registers (no spills).
"""
from __future__ import annotations


import torch
import triton
import triton.language as tl

from ._common import device_cc, pow2

LOG2E = 1.4426950408889634


@triton.jit
def _attn_fwd_kernel(q_ptr, k_ptr, v_ptr, ks_ptr, vs_ptr, o_ptr, lse_ptr,
                     Nq, Nk, Hq, n_rep, qk_scale,
                     sqb, sqn, sqh, sqd, skb, skn, skh, skd, svb, svn, svh, svd,
                     sksb, sksn, sksh, svsb, svsn, svsh, sob, son, soh, sod,
                     HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     CAUSAL: tl.constexpr, KV_FP8: tl.constexpr, QK_FP8: tl.constexpr, PV_FP8: tl.constexpr,
                     HAS_LSE: tl.constexpr):
    # q: (B, Nq, Hq, Dh), k/v: (B, Nk, Hkv, Dh) any strides; ks/vs: (B, Nk, Hkv) fp32; lse: (B, Hq, Nq)
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // Hq).to(tl.int64)
    h = bh % Hq
    hk = h // n_rep
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < HEAD_DIM
    q = tl.load(q_ptr + b * sqb + offs_m[:, None] * sqn + h * sqh + offs_d[None, :] * sqd,
                mask=(offs_m[:, None] < Nq) & dmask[None, :], other=0.0)
    if QK_FP8:
        q32 = q.to(tl.float32)
        qs = tl.maximum(tl.max(tl.abs(q32), axis=1) / 448.0, 1e-12)
        qq = tl.clamp(q32 / qs[:, None], -448.0, 448.0).to(tl.float8e4nv)
        row_scale = qs * qk_scale
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    if CAUSAL:
        hi = tl.minimum(Nk, (pid_m + 1) * BLOCK_M + Nk - Nq)   # bottom-right: key j <= i + Nk - Nq
    else:
        hi = Nk
    k_base = k_ptr + b * skb + hk * skh
    v_base = v_ptr + b * svb + hk * svh
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        nmask = offs_n < Nk
        k = tl.load(k_base + offs_n[:, None] * skn + offs_d[None, :] * skd, mask=nmask[:, None] & dmask[None, :],
                    other=0.0)
        if KV_FP8:
            ks = tl.load(ks_ptr + b * sksb + offs_n * sksn + hk * sksh, mask=nmask, other=0.0)
            if QK_FP8:
                s = tl.dot(qq, tl.trans(k)) * row_scale[:, None] * ks[None, :]
            else:
                s = tl.dot(q, tl.trans(k.to(q.dtype)), input_precision="ieee") * (ks[None, :] * qk_scale)
        else:
            s = tl.dot(q, tl.trans(k), input_precision="ieee") * qk_scale
        valid = nmask[None, :]
        if CAUSAL:
            valid = valid & (offs_n[None, :] <= offs_m[:, None] + (Nk - Nq))
        s = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)      # rows with no key yet: avoid inf - inf
        p = tl.math.exp2(s - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None]
        v = tl.load(v_base + offs_n[:, None] * svn + offs_d[None, :] * svd, mask=nmask[:, None] & dmask[None, :],
                    other=0.0)
        if KV_FP8:
            vs = tl.load(vs_ptr + b * svsb + offs_n * svsn + hk * svsh, mask=nmask, other=0.0)
            if PV_FP8:
                vmax = tl.maximum(tl.max(vs, axis=0), 1e-30)
                pq = (p * (vs * (448.0 / vmax))[None, :]).to(tl.float8e4nv)
                acc += tl.dot(pq, v) * (vmax / 448.0)
            elif q.dtype == tl.float32:
                acc = tl.dot(p * vs[None, :], v.to(tl.float32), acc, input_precision="ieee")
            else:
                # P.V in fp16 whatever q's 16-bit dtype: e4m3 values are exact in fp16, and P * vs / max(vs)
                # in [0, 1] keeps 11 mantissa bits (bf16 would keep 8); the block's max(vs) scales the product
                vmax = tl.maximum(tl.max(vs, axis=0), 1e-30)
                p16 = (p * (vs / vmax)[None, :]).to(tl.float16)
                acc += tl.dot(p16, v.to(tl.float16)) * vmax
        else:
            acc = tl.dot(p.to(v.dtype), v, acc, input_precision="ieee")
        m_i = m_new
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    tl.store(o_ptr + b * sob + offs_m[:, None] * son + h * soh + offs_d[None, :] * sod,
             out.to(o_ptr.dtype.element_ty), mask=(offs_m[:, None] < Nq) & dmask[None, :])
    if HAS_LSE:
        lse = tl.where(l_i == 0.0, float("-inf"), (m_i + tl.math.log2(l_safe)) * 0.6931471805599453)
        tl.store(lse_ptr + (b * Hq + h) * Nq + offs_m, lse, mask=offs_m < Nq)


def config(head_dim: int, kv_fp8: bool, cc: int = 90) -> dict:
    """Shipped tile configuration per target (see the module docstring for the arithmetic)."""
    big_d = head_dim > 128
    cfg = {"BLOCK_M": 128, "BLOCK_N": 128 if kv_fp8 else 64, "num_warps": 8, "num_stages": 3}
    if big_d:
        cfg.update(BLOCK_M=64, BLOCK_N=64, num_warps=4)
    if cc < 90:   # Ada / Ampere: 99 / 163 KB smem, mma.sync keeps more registers live than wgmma
        cfg.update(BLOCK_N=64, num_stages=2)
        if kv_fp8:   # the fp8 -> fp16/e4m3 staging: a 64 x 32 tile keeps it within 255 registers (no spills)
            cfg.update(BLOCK_M=64, BLOCK_N=32, num_warps=4)
    return cfg


def attention_fwd_triton(q, k, v, k_scale, v_scale, is_causal, sm_scale, out, lse, *, qk_fp8: bool = False,
                         pv_fp8: bool = False):
    """q, out: (B, Nq, Hq, Dh); k, v: (B, Nk, Hkv, Dh) (NHD views of any layout); k_scale/v_scale (B, Nk, Hkv, 1)
    fp32 when k/v are float8_e4m3fn; lse: (B, Hq, Nq) fp32 or None.
    With FP8 K/V the default (what the `attention` op runs) dequantises exactly: K and V are widened to q's
    dtype in registers (e4m3 values are exact in bf16/fp16) and the scales applied to S's columns and P's
    columns, so the result obeys the same FA3 accuracy rule as bf16 attention. qk_fp8 / pv_fp8 (sm_89+) select
    the e4m3 tensor-core dots described in the module docstring, trading accuracy for twice the peak."""
    B, Nq, Hq, Dh = q.shape
    Nk, Hk = k.shape[1], k.shape[2]
    if B * Nq * Hq == 0:
        return
    kv_fp8 = k.dtype == torch.float8_e4m3fn
    if kv_fp8 != (v.dtype == torch.float8_e4m3fn):
        raise TypeError(f"attention (triton): k and v must both be float8_e4m3fn or neither, got {k.dtype}, {v.dtype}")
    cc = device_cc(q.device)
    qk_fp8 = bool(qk_fp8) and kv_fp8 and cc >= 89
    cfg = config(Dh, kv_fp8, cc)
    ks = k_scale if k_scale is not None else q
    vs = v_scale if v_scale is not None else q
    lse_t = lse if lse is not None else q
    grid = (triton.cdiv(Nq, cfg["BLOCK_M"]), B * Hq)
    _attn_fwd_kernel[grid](
        q, k, v, ks, vs, out, lse_t, Nq, Nk, Hq, Hq // Hk, float(sm_scale) * LOG2E,
        *q.stride(), *k.stride(), *v.stride(), *ks.stride()[:3], *vs.stride()[:3], *out.stride(),
        HEAD_DIM=Dh, BLOCK_D=pow2(Dh, 16), BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], CAUSAL=bool(is_causal),
        KV_FP8=kv_fp8, QK_FP8=qk_fp8, PV_FP8=bool(pv_fp8 and kv_fp8 and cc >= 89), HAS_LSE=lse is not None,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
