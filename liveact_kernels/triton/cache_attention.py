"""FP8 attention over LiveAct's ConvKV cache with the 3-axis RoPE applied while loading (Triton).

`cache_attention(q, k_cache, v_cache, ...)` computes, for the current block's queries,
    softmax(RoPE(q, q_frame_positions) . RoPE(K, slot positions)^T * sm_scale) . V
over the step's cache as stored (reference-model.md section 4): K after RMSNorm and before RoPE, V raw, both
bf16/fp16 or FP8 e4m3 with per-(token, head) fp32 scales. Cache token n belongs to slot n // fl (fl = h*w)
and sits at grid row (n % fl) // w, column n % w; slot s has temporal position kv_frame_positions[s]
(default s: sinks 0-1, compressed 2-3, recent 4-5, current block 6-13). No roped copy of the cache is ever
written: each K tile is dequantised, rotated and (FP8 path) re-quantised per key row in registers.
Non-causal over the window (the block is bidirectional).

Numerics. RoPE rotates channel pairs (2i, 2i+1): each Q or K tile is loaded contiguously (16-byte vectors),
split into even/odd channel halves in registers (reshape + split), rotated in fp32, and the dot is split:
S = Q_even . K_even^T + Q_odd . K_odd^T. FP8 path (QK_FP8): after RoPE each query row and each key row is
quantised to e4m3 with its own scale (amax/448), S = qs_i * ks_j * (e4m3 dots): per-token scales are at least
as fine as SageAttention's per-block ones. P.V as in attention.py: V's per-key scales fold into P; P.V in fp16
(default; bf16 for a bf16 cache) or e4m3 (PV_FP8). K smoothing (SMOOTH, default with the FP8 path): a pre-pass sums the roped keys
per (batch, kv head, channel) with atomics (one read of K: 84 MB fp8 at LiveAct's shapes, 0.025 ms at
3.35 TB/s, projection); the main kernel subtracts the mean after RoPE and before quantising K, which shrinks
the per-key amax when K has a per-channel offset (as keys after a learned RMSNorm weight typically do) and
changes S by a per-row constant that softmax ignores; the LSE adds q.mean back.

H100 sizing at 720x416 (fl 1170, H 40, Dh 128; Nq 9360 = 8 frames, Nk 16380 = 14 slots):
  tensor work 4*H*Dh*Nq*Nk = 3.14e12 FLOP: QK half in fp8 (1979 TFLOP/s) 0.79 ms + PV half in bf16 (989)
  1.59 ms = 2.38 ms, or 1.59 ms with PV_FP8 (projections; HBM traffic 0.36 GB = 0.11 ms, compute-bound).
  Per K tile (64 keys) and query tile (128 rows) the kernel also gathers cos/sin, rotates and re-quantises
  64x128 K values (~15 CUDA-core ops each, ~0.12 MOP) next to the softmax's 128x64 exp2 + rescale (~0.08 MOP)
  and the tile's 2.1 MFLOP of dots: the K work is amortised over BLOCK_M query rows and is of the order of the
  softmax, which is what limits FlashAttention-3-style kernels on H100. Reaching the 60%-of-FP8-peak goal is
  therefore not established here; bench/test_gpu.py measures it on a GPU.
  sm_90: BLOCK_M 128 x BLOCK_N 64, 8 warps (2 warp groups, wgmma m64), 2 stages: 255 registers, 149 KB of
  shared memory (< 227 KB; the gathered cos/sin and K staging tiles dominate), no spills. Grid
  ceil(9360/128) x 40 = 2960 CTAs, 1 per SM -> 22.4 waves. sm_89 / sm_80 (99 / 163 KB): BLOCK_M 64 x
  BLOCK_N 32, 8 warps, 1 stage (16-29 KB, 206-209 registers, no spills); the numbers are in
  docs/gpu-compile-report.md, regenerated from the compiled kernels.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .. import reference
from ._common import device_cc, pow2
from .rope3d import _rope_cos_sin

LOG2E = 1.4426950408889634
FP8 = torch.float8_e4m3fn


@triton.jit
def _cache_attn_kernel(q_ptr, k_ptr, v_ptr, ks_ptr, vs_ptr, o_ptr, lse_ptr, km_ptr,
                       cf_ptr, sf_ptr, ch_ptr, sh_ptr, cw_ptr, sw_ptr,
                       Nq, Nk, Hq, n_rep, fl, w, Tq, qk_scale,
                       sqb, sqn, sqh, sqd, skb, skn, skh, skd, svb, svn, svh, svd,
                       sksb, sksn, sksh, svsb, svsn, svsh, sob, son, soh, sod,
                       T0: tl.constexpr, T1: tl.constexpr, T2: tl.constexpr,
                       HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                       KV_FP8: tl.constexpr, QK_FP8: tl.constexpr, PV_FP8: tl.constexpr, HAS_LSE: tl.constexpr,
                       SMOOTH: tl.constexpr):
    # q: (B, Nq, Hq, Dh) pre-RoPE; k/v: (B, >=Nk, Hkv, Dh) pre-RoPE cache; ks/vs (B, Nk, Hkv) fp32;
    # cos/sin tables: time rows [0, Tq) for the query frames, row Tq + s for cache slot s
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // Hq).to(tl.int64)
    h = bh % Hq
    hk = h // n_rep
    HALF: tl.constexpr = BLOCK_D // 2
    pr = tl.arange(0, HALF)
    d = tl.arange(0, BLOCK_D)
    dmask = d < HEAD_DIM
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mmask = offs_m < Nq
    # ---- queries: one contiguous (16-byte vector) load, split into even/odd channels, rotated at their frames
    qt = tl.load(q_ptr + b * sqb + offs_m[:, None] * sqn + h * sqh + d[None, :] * sqd,
                 mask=mmask[:, None] & dmask[None, :], other=0.0).to(tl.float32)
    qe, qo = tl.split(tl.reshape(qt, [BLOCK_M, HALF, 2]))
    pq = offs_m % fl
    c, s = _rope_cos_sin(cf_ptr, sf_ptr, ch_ptr, sh_ptr, cw_ptr, sw_ptr, (offs_m // fl)[:, None],
                         (pq // w)[:, None], (pq % w)[:, None], pr[None, :], T0, T1, T2)
    qre = qe * c - qo * s
    qro = qe * s + qo * c
    if SMOOTH:   # km: (B, Hkv, 2, HALF) fp32 sums of the roped keys over the Nk tokens
        kmb = km_ptr + (b * (Hq // n_rep) + hk) * 2 * HALF
        kme = tl.load(kmb + pr) / Nk
        kmo = tl.load(kmb + HALF + pr) / Nk
        lse_shift = tl.sum(qre * kme[None, :] + qro * kmo[None, :], axis=1) * qk_scale
    if QK_FP8:
        qs = tl.maximum(tl.maximum(tl.max(tl.abs(qre), axis=1), tl.max(tl.abs(qro), axis=1)) / 448.0, 1e-12)
        qa = (qre / qs[:, None]).to(tl.float8e4nv)
        qb = (qro / qs[:, None]).to(tl.float8e4nv)
        row_scale = qs * qk_scale
    else:
        qa = qre.to(q_ptr.dtype.element_ty)
        qb = qro.to(q_ptr.dtype.element_ty)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    k_base = k_ptr + b * skb + hk * skh
    v_base = v_ptr + b * svb + hk * svh
    for start_n in range(0, Nk, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        nmask = offs_n < Nk
        kt = tl.load(k_base + offs_n[:, None] * skn + d[None, :] * skd, mask=nmask[:, None] & dmask[None, :],
                     other=0.0).to(tl.float32)
        if KV_FP8:
            kt = kt * tl.load(ks_ptr + b * sksb + offs_n * sksn + hk * sksh, mask=nmask, other=0.0)[:, None]
        ke, ko = tl.split(tl.reshape(kt, [BLOCK_N, HALF, 2]))
        pk = offs_n % fl
        kc, ksn = _rope_cos_sin(cf_ptr, sf_ptr, ch_ptr, sh_ptr, cw_ptr, sw_ptr, (Tq + offs_n // fl)[:, None],
                                (pk // w)[:, None], (pk % w)[:, None], pr[None, :], T0, T1, T2)
        kre = ke * kc - ko * ksn
        kro = ke * ksn + ko * kc
        if SMOOTH:   # subtract the mean roped key: S changes by q.mean per row, which softmax ignores
            kre = kre - kme[None, :]
            kro = kro - kmo[None, :]
        if QK_FP8:
            ks2 = tl.maximum(tl.maximum(tl.max(tl.abs(kre), axis=1), tl.max(tl.abs(kro), axis=1)) / 448.0, 1e-12)
            ka = (kre / ks2[:, None]).to(tl.float8e4nv)
            kb = (kro / ks2[:, None]).to(tl.float8e4nv)
            sc = tl.dot(qa, tl.trans(ka))
            sc = tl.dot(qb, tl.trans(kb), sc)
            sc = sc * row_scale[:, None] * ks2[None, :]
        else:
            sc = tl.dot(qa, tl.trans(kre.to(q_ptr.dtype.element_ty)), input_precision="ieee")
            sc = tl.dot(qb, tl.trans(kro.to(q_ptr.dtype.element_ty)), sc, input_precision="ieee")
            sc = sc * qk_scale
        sc = tl.where(nmask[None, :], sc, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(sc, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(sc - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None]
        v = tl.load(v_base + offs_n[:, None] * svn + d[None, :] * svd, mask=nmask[:, None] & dmask[None, :],
                    other=0.0)
        if KV_FP8:
            vsc = tl.load(vs_ptr + b * svsb + offs_n * svsn + hk * svsh, mask=nmask, other=0.0)
            if PV_FP8:
                vmax = tl.maximum(tl.max(vsc, axis=0), 1e-30)
                pq8 = (p * (vsc * (448.0 / vmax))[None, :]).to(tl.float8e4nv)
                acc += tl.dot(pq8, v) * (vmax / 448.0)
            else:   # fp16 P.V with P * vs / max(vs) (see attention.py): 11 mantissa bits for P
                vmax = tl.maximum(tl.max(vsc, axis=0), 1e-30)
                p16 = (p * (vsc / vmax)[None, :]).to(tl.float16)
                acc += tl.dot(p16, v.to(tl.float16)) * vmax
        else:
            acc = tl.dot(p.to(v.dtype), v, acc, input_precision="ieee")
        m_i = m_new
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    tl.store(o_ptr + b * sob + offs_m[:, None] * son + h * soh + d[None, :] * sod,
             (acc / l_safe[:, None]).to(o_ptr.dtype.element_ty), mask=mmask[:, None] & dmask[None, :])
    if HAS_LSE:
        lse2 = m_i + tl.math.log2(l_safe)
        if SMOOTH:
            lse2 += lse_shift
        lse = tl.where(l_i == 0.0, float("-inf"), lse2 * 0.6931471805599453)
        tl.store(lse_ptr + (b * Hq + h) * Nq + offs_m, lse, mask=mmask)


@triton.jit
def _roped_k_sum_kernel(k_ptr, ks_ptr, km_ptr, cf_ptr, sf_ptr, ch_ptr, sh_ptr, cw_ptr, sw_ptr, Nk, Hk, fl, w, Tq,
                        skb, skn, skh, skd, sksb, sksn, sksh,
                        T0: tl.constexpr, T1: tl.constexpr, T2: tl.constexpr, HEAD_DIM: tl.constexpr,
                        BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, KV_FP8: tl.constexpr):
    # km[b, hk, 0|1, :] += sum over this program's keys of the roped even|odd channels (pre-zeroed, fp32)
    HALF: tl.constexpr = BLOCK_D // 2
    bh = tl.program_id(0)
    b = (bh // Hk).to(tl.int64)
    hk = bh % Hk
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = offs_n < Nk
    d = tl.arange(0, BLOCK_D)
    pr = tl.arange(0, HALF)
    kt = tl.load(k_ptr + b * skb + offs_n[:, None] * skn + hk * skh + d[None, :] * skd,
                 mask=nmask[:, None] & (d[None, :] < HEAD_DIM), other=0.0).to(tl.float32)
    if KV_FP8:
        kt = kt * tl.load(ks_ptr + b * sksb + offs_n * sksn + hk * sksh, mask=nmask, other=0.0)[:, None]
    ke, ko = tl.split(tl.reshape(kt, [BLOCK_N, HALF, 2]))
    pk = offs_n % fl
    c, s = _rope_cos_sin(cf_ptr, sf_ptr, ch_ptr, sh_ptr, cw_ptr, sw_ptr, (Tq + offs_n // fl)[:, None],
                         (pk // w)[:, None], (pk % w)[:, None], pr[None, :], T0, T1, T2)
    kmb = km_ptr + bh.to(tl.int64) * 2 * HALF
    tl.atomic_add(kmb + pr, tl.sum(ke * c - ko * s, axis=0))
    tl.atomic_add(kmb + HALF + pr, tl.sum(ke * s + ko * c, axis=0))


def config(kv_fp8: bool, cc: int = 90) -> dict:
    """Shipped tiles (module docstring has the arithmetic)."""
    if cc >= 90:
        return {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 2}
    # Ada / Ampere: 99 / 163 KB of shared memory; the gathered cos/sin tiles make multi-stage pipelining too big
    return {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 8, "num_stages": 1}


_TABLES: dict = {}


def _tables(grid_hw, q_pos, k_pos, head_dim, theta, split, device):
    key = (tuple(grid_hw), tuple(q_pos), tuple(k_pos), head_dim, float(theta), tuple(split), str(device))
    t = _TABLES.get(key)
    if t is None:
        h, w = grid_hw
        pos = torch.tensor(list(q_pos) + list(k_pos), dtype=torch.float64)
        t = tuple(a.contiguous() for a in reference.rope3d_tables((len(pos), h, w), pos, head_dim=head_dim,
                                                                  theta=theta, split=split, device=device))
        if len(_TABLES) > 64:
            _TABLES.clear()
        _TABLES[key] = t
    return t


def _positions(name, p, n):
    if p is None:
        return None
    vals = [float(x) for x in (p.detach().cpu().reshape(-1).tolist() if torch.is_tensor(p) else p)]
    if len(vals) != n:
        raise ValueError(f"cache_attention: {name} must have {n} entries, got {len(vals)}")
    return vals


def cache_attention(q, k_cache, v_cache, *, grid_hw, q_frame_positions, k_scale=None, v_scale=None,
                    kv_frame_positions=None, num_kv_tokens=None, sm_scale=None, theta=10000.0, split=None,
                    qk_fp8=None, pv_fp8=False, smooth_k=None, return_lse=False, out=None):
    """Attention of the current block's queries over the step's KV cache, RoPE applied on the fly.

    q: (batch, Tq*h*w, heads, head_dim), pre-RoPE queries, bf16/fp16 (NHD, LiveAct's layout).
    k_cache, v_cache: (batch, S*h*w, kv_heads, head_dim): pre-RoPE keys and raw values in slots of
      fl = h*w tokens; bf16/fp16 like q, or float8_e4m3fn with k_scale / v_scale (batch, S*h*w, kv_heads, 1) fp32.
    grid_hw: (h, w), the latent grid of one frame. q_frame_positions: (Tq,) temporal positions of the query
      frames (6..13 for blocks n >= 1, 0..5 for block 0). kv_frame_positions: (S,) positions of the slots
      (default 0..S-1). num_kv_tokens: attend to the first num_kv_tokens cache tokens only (default all; block
      0 uses 6*fl). qk_fp8: e4m3 Q.K^T (default: when the cache is fp8); pv_fp8: e4m3 P.V.
    smooth_k: subtract the mean roped key before the e4m3 quantisation of K (SageAttention's K smoothing;
      exact under softmax, the LSE is corrected); default: on with qk_fp8. One extra pass over K.
    Returns out (batch, Tq*h*w, heads, head_dim) in q.dtype, and lse (batch, heads, Tq*h*w) fp32 if return_lse.
    """
    op = "cache_attention"
    for name, t in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
        if not torch.is_tensor(t) or t.dim() != 4:
            raise ValueError(f"{op}: {name} must be a 4-D tensor, got {getattr(t, 'shape', type(t).__name__)}")
    if q.dtype not in (torch.bfloat16, torch.float16):
        raise TypeError(f"{op}: q must have dtype bfloat16/float16, got {q.dtype}")
    kv_fp8 = k_cache.dtype == FP8
    for name, t, sc in (("k_cache", k_cache, k_scale), ("v_cache", v_cache, v_scale)):
        if t.dtype == FP8:
            want = tuple(t.shape[:3]) + (1,)
            if sc is None or tuple(sc.shape) != want or sc.dtype != torch.float32:
                raise ValueError(f"{op}: {name} is float8_e4m3fn, so its scale must be fp32 of shape {want}, got "
                                 f"{None if sc is None else (tuple(sc.shape), sc.dtype)}")
        elif t.dtype != q.dtype:
            raise TypeError(f"{op}: {name} must have q's dtype {q.dtype} or float8_e4m3fn, got {t.dtype}")
        elif sc is not None:
            raise ValueError(f"{op}: a scale is only for a float8_e4m3fn {name}, but {name} is {t.dtype}")
    if (v_cache.dtype == FP8) != kv_fp8:
        raise TypeError(f"{op}: k_cache and v_cache must both be fp8 or both {q.dtype}, got {k_cache.dtype}, "
                        f"{v_cache.dtype}")
    B, Nq, Hq, Dh = q.shape
    if k_cache.shape != v_cache.shape or k_cache.shape[0] != B or k_cache.shape[3] != Dh:
        raise ValueError(f"{op}: k_cache and v_cache must have shape ({B}, tokens, kv_heads, {Dh}); got "
                         f"{tuple(k_cache.shape)}, {tuple(v_cache.shape)}")
    Hk = k_cache.shape[2]
    if Hq % Hk:
        raise ValueError(f"{op}: q heads ({Hq}) must be a multiple of kv heads ({Hk})")
    h, w = (int(g) for g in grid_hw)
    fl = h * w
    if Nq % fl or k_cache.shape[1] % fl:
        raise ValueError(f"{op}: q tokens ({Nq}) and cache tokens ({k_cache.shape[1]}) must be multiples of "
                         f"h*w = {fl}")
    Tq, S = Nq // fl, k_cache.shape[1] // fl
    Nk = int(num_kv_tokens) if num_kv_tokens is not None else k_cache.shape[1]
    if not 0 <= Nk <= k_cache.shape[1]:
        raise ValueError(f"{op}: num_kv_tokens must be in [0, {k_cache.shape[1]}], got {Nk}")
    qpos = _positions("q_frame_positions", q_frame_positions, Tq)
    kpos = _positions("kv_frame_positions", kv_frame_positions, S) or [float(s) for s in range(S)]
    sp = tuple(split) if split is not None else reference.rope_split(Dh)
    if len(sp) != 3 or sum(sp) != Dh or any(x % 2 for x in sp):
        raise ValueError(f"{op}: split must be 3 even sizes summing to head_dim {Dh}, got {sp}")
    if q.stride(-1) != 1 or k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError(f"{op}: q, k_cache and v_cache need a unit stride along head_dim")
    dev = q.device
    if dev.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        raise RuntimeError(f"{op}: Triton kernels run on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1")
    cc = device_cc(dev)
    use_qk_fp8 = (kv_fp8 if qk_fp8 is None else bool(qk_fp8)) and cc >= 89
    # time rows: [0, Tq) query frames, Tq + s for slot s; kv positions enter through the table rows
    tables = _tables((h, w), qpos, kpos, Dh, theta, sp, dev)
    if out is None:
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty((B, Hq, Nq), dtype=torch.float32, device=dev) if return_lse else None
    if B * Nq * Hq:
        cfg = config(kv_fp8, cc)
        ks = k_scale if kv_fp8 else q
        vs = v_scale if kv_fp8 else q
        lse_t = lse if lse is not None else q
        smooth = use_qk_fp8 if smooth_k is None else bool(smooth_k)
        HALF = pow2(Dh, 16) // 2
        km = torch.zeros((B, Hk, 2, HALF), dtype=torch.float32, device=dev) if smooth else out
        if smooth and Nk:
            _roped_k_sum_kernel[(B * Hk, triton.cdiv(Nk, 32))](
                k_cache, ks, km, *tables, Nk, Hk, fl, w, Tq, *k_cache.stride(), *ks.stride()[:3],
                T0=sp[0] // 2, T1=sp[1] // 2, T2=sp[2] // 2, HEAD_DIM=Dh, BLOCK_D=pow2(Dh, 16), BLOCK_N=32,
                KV_FP8=kv_fp8, num_warps=8)
        grid = (triton.cdiv(Nq, cfg["BLOCK_M"]), B * Hq)
        _cache_attn_kernel[grid](
            q, k_cache, v_cache, ks, vs, out, lse_t, km, *tables, Nq, Nk, Hq, Hq // Hk, fl, w, Tq,
            float(sm_scale if sm_scale is not None else Dh ** -0.5) * LOG2E,
            *q.stride(), *k_cache.stride(), *v_cache.stride(), *ks.stride()[:3], *vs.stride()[:3], *out.stride(),
            T0=sp[0] // 2, T1=sp[1] // 2, T2=sp[2] // 2, HEAD_DIM=Dh, BLOCK_D=pow2(Dh, 16),
            BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], KV_FP8=kv_fp8, QK_FP8=use_qk_fp8,
            PV_FP8=bool(pv_fp8 and kv_fp8 and cc >= 89), HAS_LSE=return_lse, SMOOTH=smooth and Nk > 0,
            num_warps=cfg["num_warps"],
            num_stages=cfg["num_stages"])
    return (out, lse) if return_lse else out
