"""Triton per-frame audio cross-attention: query frame j attends to the N_a (= 32) audio tokens of audio frame
frame_offset + j. One program per (query tile, frame, head); the frame's K and V ([N_a, Dh]) are loaded once
per program and kept on chip; no padding of the 32 keys to 128 (N_a is padded only to the next power of two,
at least 16, the smallest tl.dot tile). All N_a keys fit one tile, so the softmax is exact (no online rescaling).

H100 at LiveAct's shapes (q [1, 8*1170, 40, 128] bf16, N_a 32): FLOPs 4*H*Dh*Na*L = 0.19 GFLOP, bytes:
q read + out write 9360*5120*2 B*2 = 192 MB, K/V 8*32*40*128*2 B*2 = 5 MB -> 0.059 ms at 3.35 TB/s (projection): ~1 FLOP/byte, purely bandwidth-bound, so the tile (BLOCK_M 64 query
rows x 128, 4 warps; S tile 64 x 32) is sized for many CTAs in flight (K/V 16 KB + Q 16 KB smem -> 6+ CTAs/SM),
not for tensor-core shape. Grid: ceil(1170/64)=19 x 8 frames x 40 heads = 6080 programs.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ._common import pow2

LOG2E = 1.4426950408889634


@triton.jit
def _audio_attn_kernel(q_ptr, k_ptr, v_ptr, o_ptr, frame_len, T, H, Na, frame_offset, qk_scale,
                       sqb, sqn, sqh, sqd, skb, skf, ska, skh, skd, svb, svf, sva, svh, svd, sob, son, soh, sod,
                       HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, NA: tl.constexpr,
                       ZERO_FIRST: tl.constexpr):
    # q, o: (B, T*frame_len, H, Dh); k, v: (B, F_audio, Na, H, Dh)
    pid_m = tl.program_id(0)
    bt = tl.program_id(1)
    h = tl.program_id(2)
    b = (bt // T).to(tl.int64)
    t = bt % T
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < frame_len
    tok = t * frame_len + rows
    d = tl.arange(0, BLOCK_D)
    dm = d < HEAD_DIM
    om = rmask[:, None] & dm[None, :]
    optrs = o_ptr + b * sob + tok[:, None] * son + h * soh + d[None, :] * sod
    if ZERO_FIRST and t == 0:
        tl.store(optrs, tl.zeros([BLOCK_M, BLOCK_D], dtype=o_ptr.dtype.element_ty), mask=om)
    else:
        a = tl.arange(0, NA)
        am = a < Na
        fa = frame_offset + t
        kv_m = am[:, None] & dm[None, :]
        k = tl.load(k_ptr + b * skb + fa * skf + a[:, None] * ska + h * skh + d[None, :] * skd, mask=kv_m, other=0.0)
        v = tl.load(v_ptr + b * svb + fa * svf + a[:, None] * sva + h * svh + d[None, :] * svd, mask=kv_m, other=0.0)
        q = tl.load(q_ptr + b * sqb + tok[:, None] * sqn + h * sqh + d[None, :] * sqd, mask=om, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision="ieee") * qk_scale
        s = tl.where(am[None, :], s, float("-inf"))
        p = tl.math.exp2(s - tl.max(s, axis=1)[:, None])
        l = tl.sum(p, axis=1)
        o = tl.dot(p.to(v.dtype), v, input_precision="ieee") / l[:, None]
        tl.store(optrs, o.to(o_ptr.dtype.element_ty), mask=om)


def config(head_dim: int) -> dict:
    return {"BLOCK_M": 64, "num_warps": 4}


def audio_cross_attention_fwd_triton(q, k, v, frame_len, frame_offset, zero_first_frame, sm_scale, out):
    """q, out: (B, T*frame_len, H, Dh); k, v: (B, F_audio, Na, H, Dh)."""
    B, L, H, Dh = q.shape
    Na = k.shape[2]
    if B * L * H == 0:
        return
    T = L // frame_len
    if Na == 0:
        out.zero_()
        return
    cfg = config(Dh)
    grid = (triton.cdiv(frame_len, cfg["BLOCK_M"]), B * T, H)
    _audio_attn_kernel[grid](q, k, v, out, frame_len, T, H, Na, int(frame_offset), float(sm_scale) * LOG2E,
                             *q.stride(), *k.stride(), *v.stride(), *out.stride(), HEAD_DIM=Dh,
                             BLOCK_D=pow2(Dh, 16), BLOCK_M=cfg["BLOCK_M"], NA=pow2(Na, 16),
                             ZERO_FIRST=bool(zero_first_frame), num_warps=cfg["num_warps"])
