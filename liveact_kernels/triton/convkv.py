"""Triton kernel of the ConvKV compression (depthwise conv, stride = kernel = group, no bias), both modes.

H100 at LiveAct's shapes (x [1, 5*1170, 40, 128] bf16 -> [1, 1170, 40, 128]): one program per (output
token, 1024 channels): reads group x 2 KB rows (each 16 B per thread, coalesced), the fp32 weights
(5 x 4 KB per channel block, L2-resident), writes 2 KB. Bytes: 12 B per output element (5 reads + 1 write,
bf16) -> 5850*5120*2 + 1170*5120*2 = 72 MB -> 0.021 ms at 3.35 TB/s (projection); 5850 programs of 4 warps.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import pow2


@triton.jit
def _convkv_kernel(x_ptr, w_ptr, out_ptr, M, Dh, C, frame_len, sxb, sxn, sxh, sxd, sob, som, soh, sod,
                   GROUP: tl.constexpr, FRAME: tl.constexpr, BLOCK_C: tl.constexpr):
    # x: (B, GROUP*M, H, Dh); w: (H*Dh, GROUP) fp32; out: (B, M, H, Dh); channel c = head*Dh + d
    pid = tl.program_id(0).to(tl.int64)
    b = pid // M
    mo = pid % M
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    xoff = (c // Dh) * sxh + (c % Dh) * sxd
    acc = tl.zeros([BLOCK_C], dtype=tl.float32)
    for j in tl.static_range(GROUP):
        if FRAME:
            src = ((mo // frame_len) * GROUP + j) * frame_len + mo % frame_len
        else:
            src = mo * GROUP + j
        xv = tl.load(x_ptr + b * sxb + src * sxn + xoff, mask=cm, other=0.0).to(tl.float32)
        acc += xv * tl.load(w_ptr + c * GROUP + j, mask=cm, other=0.0)
    tl.store(out_ptr + b * sob + mo * som + (c // Dh) * soh + (c % Dh) * sod, acc.to(out_ptr.dtype.element_ty),
             mask=cm)


def config(C: int) -> dict:
    return {"BLOCK_C": min(1024, pow2(C, 32)), "num_warps": 4}


def convkv_compress_fwd_triton(x, weight, group, mode, frame_len, out):
    """x: (B, group*M, H, Dh); weight: (H*Dh, group) fp32 contiguous; out: (B, M, H, Dh)."""
    B, N, H, Dh = x.shape
    M = out.shape[1]
    if B * M * H * Dh == 0:
        return
    C = H * Dh
    cfg = config(C)
    _convkv_kernel[(B * M, triton.cdiv(C, cfg["BLOCK_C"]))](
        x, weight, out, M, Dh, C, max(1, int(frame_len)), *x.stride(), *out.stride(), GROUP=int(group),
        FRAME=mode == "frame", BLOCK_C=cfg["BLOCK_C"], num_warps=cfg["num_warps"])


# ------------------------------------------------------------------------------- fused ConvKV cache update
@triton.jit
def _store_rows(c_ptr, s_ptr, rows, vals, rmask, d, dmask, scn, scd, ssn, FP8: tl.constexpr):
    """Writes fp32 rows [BT, BLOCK_D] to the cache at token rows: e4m3 + one scale per row (amax/448, the
    reference's quantize_fp8 'token_head'), or a plain cast."""
    m = rmask[:, None] & dmask[None, :]
    if FP8:
        amax = tl.max(tl.where(m & (vals == vals) & (tl.abs(vals) != float("inf")), tl.abs(vals), 0.0), axis=1)
        sc = tl.maximum(tl.math.div_rn(amax, 448.0), 1e-12)
        q = tl.clamp(tl.math.div_rn(vals, sc[:, None]), -448.0, 448.0, propagate_nan=tl.PropagateNan.ALL)
        tl.store(c_ptr + rows[:, None] * scn + d[None, :] * scd, q.to(tl.float8e4nv), mask=m)
        tl.store(s_ptr + rows * ssn, sc, mask=rmask)
    else:
        tl.store(c_ptr + rows[:, None] * scn + d[None, :] * scd, vals.to(c_ptr.dtype.element_ty), mask=m)


@triton.jit
def _load_rows(c_ptr, s_ptr, rows, rmask, d, dmask, scn, scd, ssn, FP8: tl.constexpr):
    v = tl.load(c_ptr + rows[:, None] * scn + d[None, :] * scd, mask=rmask[:, None] & dmask[None, :],
                other=0.0).to(tl.float32)
    if FP8:
        v = v * tl.load(s_ptr + rows * ssn, mask=rmask, other=0.0)[:, None]
    return v


@triton.jit
def _cache_update_one(c_ptr, s_ptr, n_ptr, w_ptr, fl, Nn, h, Dh,
                      scn, scd, ssn, snn, snd,
                      FP8: tl.constexpr, GROUP: tl.constexpr, FRAME: tl.constexpr, SINKS: tl.constexpr,
                      COMP: tl.constexpr, RECENT: tl.constexpr, BLOCK: tl.constexpr, BT: tl.constexpr,
                      BLOCK_D: tl.constexpr):
    # one (batch, head) of one cache; c_ptr/s_ptr/n_ptr already point at that batch and head
    d = tl.arange(0, BLOCK_D)
    dmask = d < Dh
    tt = tl.arange(0, BT)
    if BLOCK >= 2:
        wrow = w_ptr + (h * Dh + d) * GROUP
        # steps 1-2: slot SINKS+c <- Phi(slots SINKS+c*GROUP ...). Outputs are produced in increasing token
        # order and every source token of output t lies at or after t's own position, so each chunk's loads
        # precede (barrier) its stores and no later chunk reads a position already overwritten.
        for c in tl.static_range(COMP):
            for t0 in range(0, fl, BT):
                t = t0 + tt
                tm = t < fl
                acc = tl.zeros([BT, BLOCK_D], dtype=tl.float32)
                for j in tl.static_range(GROUP):
                    if FRAME:
                        src = (SINKS + c * GROUP + j) * fl + t
                    else:
                        src = (SINKS + c * GROUP) * fl + t * GROUP + j
                    x = _load_rows(c_ptr, s_ptr, src, tm, d, dmask, scn, scd, ssn, FP8)
                    acc += x * tl.load(wrow + j, mask=dmask, other=0.0)[None, :]
                tl.debug_barrier()
                _store_rows(c_ptr, s_ptr, (SINKS + c) * fl + t, acc, tm, d, dmask, scn, scd, ssn, FP8)
                tl.debug_barrier()
        # step 3: the RECENT newest raw frames move down (bytes and scales as stored, no re-quantisation)
        for r in tl.static_range(RECENT):
            for t0 in range(0, fl, BT):
                t = t0 + tt
                tm = t < fl
                src = (SINKS + COMP * GROUP + r) * fl + t
                dst = (SINKS + COMP + r) * fl + t
                m = tm[:, None] & dmask[None, :]
                raw = tl.load(c_ptr + src[:, None] * scn + d[None, :] * scd, mask=m)
                if FP8:
                    rs = tl.load(s_ptr + src * ssn, mask=tm)
                tl.debug_barrier()
                tl.store(c_ptr + dst[:, None] * scn + d[None, :] * scd, raw, mask=m)
                if FP8:
                    tl.store(s_ptr + dst * ssn, rs, mask=tm)
        tl.debug_barrier()
    # step 4: the new frames (quantised per token) into their slots
    if BLOCK == 0:
        first = 0
    else:
        first = (SINKS + COMP + RECENT) * fl
    for t0 in range(0, Nn, BT):
        t = t0 + tt
        tm = t < Nn
        x = tl.load(n_ptr + t[:, None] * snn + d[None, :] * snd, mask=tm[:, None] & dmask[None, :],
                    other=0.0).to(tl.float32)
        _store_rows(c_ptr, s_ptr, first + t, x, tm, d, dmask, scn, scd, ssn, FP8)


@triton.jit
def _cache_update_kernel(ck_ptr, cv_ptr, sk_ptr, sv_ptr, nk_ptr, nv_ptr, wk_ptr, wv_ptr, fl, Nn, H, Dh,
                         sckb, sckn, sckh, sckd, scvb, scvn, scvh, scvd, sskb, sskn, sskh, ssvb, ssvn, ssvh,
                         snkb, snkn, snkh, snkd, snvb, snvn, snvh, snvd,
                         FP8: tl.constexpr, GROUP: tl.constexpr, FRAME: tl.constexpr, SINKS: tl.constexpr,
                         COMP: tl.constexpr, RECENT: tl.constexpr, BLOCK: tl.constexpr, BT: tl.constexpr,
                         BLOCK_D: tl.constexpr):
    # grid (B*H, 2): axis 1 picks K (0) or V (1); caches (B, S*fl, H, Dh), scales (B, S*fl, H, 1)
    bh = tl.program_id(0)
    b = (bh // H).to(tl.int64)
    h = bh % H
    if tl.program_id(1) == 0:
        _cache_update_one(ck_ptr + b * sckb + h * sckh, sk_ptr + b * sskb + h * sskh, nk_ptr + b * snkb + h * snkh,
                          wk_ptr, fl, Nn, h, Dh, sckn, sckd, sskn, snkn, snkd, FP8, GROUP, FRAME, SINKS, COMP, RECENT,
                          BLOCK, BT, BLOCK_D)
    else:
        _cache_update_one(cv_ptr + b * scvb + h * scvh, sv_ptr + b * ssvb + h * ssvh, nv_ptr + b * snvb + h * snvh,
                          wv_ptr, fl, Nn, h, Dh, scvn, scvd, ssvn, snvn, snvd, FP8, GROUP, FRAME, SINKS, COMP, RECENT,
                          BLOCK, BT, BLOCK_D)


def convkv_cache_update(cache_k, cache_v, new_k, new_v, weight_k, weight_v=None, *, frame_len, k_scale=None,
                        v_scale=None, group=5, mode="token", sinks=2, compressed=2, recent=2, block=2):
    """The ConvKV cache update of one layer and step in ONE launch, in place (reference-model.md section 4.2):
    for block >= 2, slot sinks+c <- Phi(slots sinks+c*group ...) (c < compressed), the `recent` newest raw
    frames move to slots sinks+compressed.., and the new frames are written (FP8 caches: quantised with one
    scale per token and head); block 0 writes the new frames to slots 0.., block 1 to the last nb slots.

    cache_k, cache_v: (batch, S*frame_len, heads, head_dim) bf16/fp16/fp32 or float8_e4m3fn with
    k_scale / v_scale (batch, S*frame_len, heads, 1) fp32; new_k, new_v: (batch, frames*frame_len, heads,
    head_dim); weight_k / weight_v: (heads*head_dim, 1, group) (weight_v None: weight_k, as the official code).
    Programs: one per (batch, head, K|V), each streaming its head's slots in increasing token order (the
    in-place compression is safe only in that order, see _cache_update_one). H100 at 720x416, K and V
    together, fp8 caches: read 24 slots (1 B) + 16 new bf16 frames (2 B), write 24 slots: 479 MB per layer and
    step -> 0.143 ms at 3.35 TB/s (projection); only 80 programs (B 1 x 40 heads x K|V), so each must sustain
    ~42 GB/s from its SM to reach that: a GPU measurement decides.
    Tiles: 32 tokens x Dh per step, 8 warps (16 values per thread; 64-token tiles spilled on sm_80/89/90).
    Returns (cache_k, cache_v).
    """
    op = "convkv_cache_update"
    fp8 = cache_k.dtype == torch.float8_e4m3fn
    if cache_k.shape != cache_v.shape or cache_k.dim() != 4 or cache_v.dtype != cache_k.dtype:
        raise ValueError(f"{op}: cache_k and cache_v must be 4-D with equal shapes and dtypes, got "
                         f"{tuple(cache_k.shape)} {cache_k.dtype}, {tuple(cache_v.shape)} {cache_v.dtype}")
    B, N, H, Dh = cache_k.shape
    nb = compressed * (group - 1)
    S = sinks + compressed + recent + nb
    if N != S * frame_len:
        raise ValueError(f"{op}: the cache must hold S*frame_len = {S}*{frame_len} tokens, got {N}")
    want_new = (sinks + compressed + recent if block == 0 else nb) * frame_len
    for name, t in (("new_k", new_k), ("new_v", new_v)):
        if tuple(t.shape) != (B, want_new, H, Dh):
            raise ValueError(f"{op}: {name} must have shape {(B, want_new, H, Dh)} for block {block}, got "
                             f"{tuple(t.shape)}")
    if fp8:
        for name, s in (("k_scale", k_scale), ("v_scale", v_scale)):
            if s is None or tuple(s.shape) != (B, N, H, 1) or s.dtype != torch.float32:
                raise ValueError(f"{op}: an fp8 cache needs {name} fp32 of shape {(B, N, H, 1)}")
    if mode not in ("token", "frame"):
        raise ValueError(f"{op}: mode must be 'token' or 'frame', got {mode!r}")
    wk = weight_k.reshape(H * Dh, group).float().contiguous()
    wv = weight_v.reshape(H * Dh, group).float().contiguous() if weight_v is not None else wk
    convkv_cache_update_fwd_triton(cache_k, cache_v, new_k, new_v, wk, wv, k_scale, v_scale, frame_len, group, mode,
                                   sinks, compressed, recent, block)
    return cache_k, cache_v


def convkv_cache_update_fwd_triton(cache_k, cache_v, new_k, new_v, weight_k, weight_v, k_scale, v_scale, frame_len,
                                   group, merge, sinks, compressed, recent, block):
    """The op's launcher (torch.ops.liveact.convkv_cache_update_fwd's arguments): caches (B, S*fl, H, Dh),
    new (B, frames*fl, H, Dh), weights (H*Dh, group) fp32 (unused, possibly empty, for block < 2),
    scales (B, S*fl, H, 1) fp32 for fp8 caches. Updates the caches in place with one launch."""
    B, N, H, Dh = cache_k.shape
    fp8 = cache_k.dtype == torch.float8_e4m3fn
    n_new = new_k.shape[1]
    if block < 2 or weight_k.numel() == 0:
        weight_k = weight_v = torch.zeros(1, dtype=torch.float32, device=cache_k.device)
    sk = k_scale if fp8 else cache_k
    sv = v_scale if fp8 else cache_v
    if B * H == 0:
        return
    _cache_update_kernel[(B * H, 2)](
        cache_k, cache_v, sk, sv, new_k, new_v, weight_k, weight_v, int(frame_len), n_new, H, Dh,
        *cache_k.stride(), *cache_v.stride(), *sk.stride()[:3], *sv.stride()[:3], *new_k.stride(),
        *new_v.stride(), FP8=fp8, GROUP=int(group), FRAME=merge == "frame", SINKS=int(sinks), COMP=int(compressed),
        RECENT=int(recent), BLOCK=min(int(block), 2), BT=32, BLOCK_D=pow2(Dh, 16), num_warps=8)
