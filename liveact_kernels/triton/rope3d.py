"""Triton kernel of Wan's 3-axis RoPE (time, height, width) from fp32 cos/sin tables.

Also holds `_rope_pairs`, the in-register rotation that cache_attention.py applies to Q and K while loading.
H100 at LiveAct's shapes (x [1, 9360, 40, 128] bf16): one program per (token, 8 heads): a [8, 128] tile
(2 KB in, 2 KB out), 4 warps -> 8 elements per thread as one 16-byte vector; the tables (time 22, height 21,
width 21 fp32 pairs per position) are 15 KB in total and stay in L1/L2. Bytes: 4 B/element (read + write bf16)
-> [9360, 40, 128]: 192 MB -> 0.057 ms at 3.35 TB/s (projection). 46800 programs: hundreds of waves, no tail.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ._common import pow2


@triton.jit
def _rope_cos_sin(cf_ptr, sf_ptr, ch_ptr, sh_ptr, cw_ptr, sw_ptr, fpos, row, col, pair,
                  T0: tl.constexpr, T1: tl.constexpr, T2: tl.constexpr):
    """cos/sin of channel pair `pair` (any shape) for tokens at temporal position index `fpos`, grid row `row`
    and column `col` (broadcastable to pair): pairs [0, T0) rotate with time, [T0, T0+T1) with the row,
    [T0+T1, T0+T1+T2) with the column. Pairs >= T0+T1+T2 (padding) get cos 1, sin 0."""
    in_f = pair < T0
    in_h = (pair >= T0) & (pair < T0 + T1)
    in_w = (pair >= T0 + T1) & (pair < T0 + T1 + T2)
    of = fpos * T0 + pair
    oh = row * T1 + (pair - T0)
    ow = col * T2 + (pair - T0 - T1)
    c = tl.load(cf_ptr + of, mask=in_f, other=0.0) + tl.load(ch_ptr + oh, mask=in_h, other=0.0) + \
        tl.load(cw_ptr + ow, mask=in_w, other=0.0)
    s = tl.load(sf_ptr + of, mask=in_f, other=0.0) + tl.load(sh_ptr + oh, mask=in_h, other=0.0) + \
        tl.load(sw_ptr + ow, mask=in_w, other=0.0)
    pad = pair >= T0 + T1 + T2
    return tl.where(pad, 1.0, c), s


@triton.jit
def _rope3d_kernel(x_ptr, out_ptr, cf_ptr, sf_ptr, ch_ptr, sh_ptr, cw_ptr, sw_ptr, N, H, h, w,
                   sxb, sxn, sxh, sxd, sob, son, soh, sod,
                   T0: tl.constexpr, T1: tl.constexpr, T2: tl.constexpr, BLOCK_H: tl.constexpr,
                   HALF: tl.constexpr):
    # x: (B, N, H, Dh) any strides, tokens frame-major over the grid (F, h, w)
    tok = tl.program_id(0).to(tl.int64)
    b = tok // N
    n = tok % N
    hs = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    pr = tl.arange(0, HALF)
    fpos = n // (h * w)
    row = (n // w) % h
    col = n % w
    c, s = _rope_cos_sin(cf_ptr, sf_ptr, ch_ptr, sh_ptr, cw_ptr, sw_ptr, fpos, row, col, pr, T0, T1, T2)
    d = tl.arange(0, 2 * HALF)
    m = (hs[:, None] < H) & (d[None, :] < 2 * (T0 + T1 + T2))
    # one contiguous (vectorised) load of the [heads, Dh] tile, split into even/odd channels in registers
    xt = tl.load(x_ptr + b * sxb + n * sxn + hs[:, None] * sxh + d[None, :] * sxd, mask=m, other=0.0)
    a, bb = tl.split(tl.reshape(xt.to(tl.float32), [BLOCK_H, HALF, 2]))
    ot = tl.reshape(tl.join(a * c[None, :] - bb * s[None, :], a * s[None, :] + bb * c[None, :]), [BLOCK_H, 2 * HALF])
    tl.store(out_ptr + b * sob + n * son + hs[:, None] * soh + d[None, :] * sod, ot.to(out_ptr.dtype.element_ty),
             mask=m)


def config(H: int, Dh: int) -> dict:
    return {"BLOCK_H": min(8, pow2(H)), "HALF": pow2(Dh // 2), "num_warps": 4}


def rope3d_fwd_triton(x, cos_f, sin_f, cos_h, sin_h, cos_w, sin_w, out):
    """x, out: (B, F*h*w, H, Dh); tables fp32 contiguous (F, T0), (h, T1), (w, T2) with T0+T1+T2 = Dh/2."""
    B, N, H, Dh = x.shape
    if x.numel() == 0:
        return
    cfg = config(H, Dh)
    h, w = cos_h.shape[0], cos_w.shape[0]
    grid = (B * N, triton.cdiv(H, cfg["BLOCK_H"]))
    _rope3d_kernel[grid](x, out, cos_f, sin_f, cos_h, sin_h, cos_w, sin_w, N, H, h, w, *x.stride(), *out.stride(),
                         T0=cos_f.shape[1], T1=cos_h.shape[1], T2=cos_w.shape[1], BLOCK_H=cfg["BLOCK_H"],
                         HALF=cfg["HALF"], num_warps=cfg["num_warps"])
