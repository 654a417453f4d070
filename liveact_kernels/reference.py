"""Pure-PyTorch references for every op: the oracle of the tests and the "torch" backend.

Each `<op>_ref` has the public op's signature (minus `backend`/`out`), computes in fp32 (fp64 for the RoPE
angles) and casts back at the end. No tricks: these are written to be obviously right, not fast.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0
FP8_MIN_SCALE = 1e-12  # a scale is never 0: all-zero (or all non-finite) groups get this scale


# ------------------------------------------------------------------------------------------ adaLN family
def modulation_rows(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-sample [B, D] / [B, 1, D] or per-frame [B, F, D] modulation tensor to x [B, L, D]
    (L = F * frame_len, token order frame-major). Returns fp32 [B, L, D] (a view where possible)."""
    B, L, D = x.shape
    if t.dim() == 2:
        t = t[:, None, :]
    Fr = t.shape[1]
    t = t.float()
    if Fr == 1:
        return t.expand(t.shape[0], L, D)
    return t[:, :, None, :].expand(t.shape[0], Fr, L // Fr, D).reshape(t.shape[0], L, D)


def _normalize(x32: torch.Tensor, eps: float, norm: str, weight, bias) -> torch.Tensor:
    if norm == "layer":
        mu = x32.mean(-1, keepdim=True)
        var = (x32 - mu).square().mean(-1, keepdim=True)
        n = (x32 - mu) * torch.rsqrt(var + eps)
    else:
        n = x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + eps)
    if weight is not None:
        n = n * weight.float()
    if bias is not None:
        n = n + bias.float()
    return n


def adaln_modulate_ref(x, shift, scale, *, eps=1e-6, norm="layer", weight=None, bias=None):
    """norm(x) * (1 + scale) + shift, in fp32, cast to x.dtype.

    x: (batch, seqlen, dim); shift, scale: (batch, dim), (batch, 1, dim) or (batch, frames, dim) with
    seqlen = frames * frame_len; norm: "layer" (LayerNorm) or "rms"; weight, bias: optional affine (dim,)
    applied by the norm before the modulation (as nn.LayerNorm(elementwise_affine=True) would).
    """
    n = _normalize(x.float(), eps, norm, weight, bias)
    return (n * (1 + modulation_rows(scale, x)) + modulation_rows(shift, x)).to(x.dtype)


def gated_residual_ref(x, y, gate):
    """x + y * gate in fp32, cast to x.dtype. x, y: (batch, seqlen, dim); gate shaped like adaLN's shift."""
    return (x.float() + y.float() * modulation_rows(gate, x)).to(x.dtype)


def adaln_residual_ref(x, y, gate, shift, scale, *, eps=1e-6, norm="layer", weight=None, bias=None):
    """(x_new, adaln_modulate(x_new, shift, scale)) with x_new = x + y * gate (rounded to x.dtype first,
    exactly as the unfused composition would see it)."""
    x_new = gated_residual_ref(x, y, gate)
    return x_new, adaln_modulate_ref(x_new, shift, scale, eps=eps, norm=norm, weight=weight, bias=bias)


def rms_norm_ref(x, weight=None, *, eps=1e-6):
    """x * rsqrt(mean(x^2, -1) + eps) * weight in fp32, cast to x.dtype. x: (..., dim); weight: (dim,) or None."""
    return _normalize(x.float(), eps, "rms", weight, None).to(x.dtype)


# ------------------------------------------------------------------------------------------------- RoPE
def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Wan's channel split of the head dim over (time, height, width): 128 -> (44, 42, 42)."""
    return head_dim - 4 * (head_dim // 6), 2 * (head_dim // 6), 2 * (head_dim // 6)


def _axis_table(pos: torch.Tensor, dim: int, theta: float):
    # omega_j = theta^(-2j/dim), j < dim/2; angles in fp64 (the official code uses complex128)
    j = torch.arange(0, dim, 2, dtype=torch.float64, device=pos.device)
    omega = 1.0 / torch.pow(torch.tensor(theta, dtype=torch.float64, device=pos.device), j / dim)
    ang = pos.to(torch.float64)[:, None] * omega[None, :]
    return torch.cos(ang).float(), torch.sin(ang).float()


def rope3d_tables(grid, frame_positions, *, head_dim: int, theta: float = 10000.0,
                  split: Optional[Sequence[int]] = None, device=None):
    """fp32 cos/sin tables per axis: (cos_f, sin_f) [F, split[0]/2], (cos_h, sin_h) [h, split[1]/2],
    (cos_w, sin_w) [w, split[2]/2]. Shared by every backend of rope3d."""
    Fr, h, w = (int(g) for g in grid)
    split = tuple(split) if split is not None else rope_split(head_dim)
    if not torch.is_tensor(frame_positions):
        frame_positions = torch.tensor(list(frame_positions), dtype=torch.float64)
    fp = frame_positions.to(device=device, dtype=torch.float64).reshape(-1)
    cf, sf = _axis_table(fp, split[0], theta)
    ch, sh = _axis_table(torch.arange(h, device=device, dtype=torch.float64), split[1], theta)
    cw, sw = _axis_table(torch.arange(w, device=device, dtype=torch.float64), split[2], theta)
    return cf, sf, ch, sh, cw, sw


def rope3d_ref(x, *, grid, frame_positions, theta=10000.0, split=None):
    """Wan's 3-axis rotary embedding. x: (batch, F*h*w, heads, head_dim), tokens frame-major;
    grid = (F, h, w); frame_positions: (F,) temporal position of each frame. Channel pairs (2k, 2k+1)
    rotate: [0, s0) with the frame position, [s0, s0+s1) with the row, the rest with the column."""
    B, N, H, Dh = x.shape
    Fr, h, w = (int(g) for g in grid)
    cf, sf, ch, sh, cw, sw = rope3d_tables(grid, frame_positions, head_dim=Dh, theta=theta, split=split,
                                           device=x.device)
    cos = torch.cat([cf[:, None, None, :].expand(Fr, h, w, -1), ch[None, :, None, :].expand(Fr, h, w, -1),
                     cw[None, None, :, :].expand(Fr, h, w, -1)], dim=-1).reshape(N, 1, Dh // 2)
    sin = torch.cat([sf[:, None, None, :].expand(Fr, h, w, -1), sh[None, :, None, :].expand(Fr, h, w, -1),
                     sw[None, None, :, :].expand(Fr, h, w, -1)], dim=-1).reshape(N, 1, Dh // 2)
    xr = x.float().reshape(B, N, H, Dh // 2, 2)
    a, b = xr[..., 0], xr[..., 1]
    out = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1)
    return out.reshape(B, N, H, Dh).to(x.dtype)


# ----------------------------------------------------------------------------------------------- ConvKV
def convkv_compress_ref(x, weight, *, group=5, mode="token", frame_len=None):
    """ConvKV memory compression: depthwise, stride = kernel = group, no bias, fp32 accumulation.

    x: (batch, group*M, heads, head_dim); weight: (heads*head_dim, 1, group) (nn.Conv1d layout).
    mode="token": out[:, t] = sum_j w[:, j] * x[:, group*t + j] (the official checkpoint's raster-order
    merge); mode="frame": out[:, k*frame_len + s] = sum_j w[:, j] * x[:, (k*group + j)*frame_len + s]
    (the same spatial token across `group` consecutive frames). Returns (batch, M, heads, head_dim).
    """
    B, N, H, Dh = x.shape
    M = N // group
    w = weight.reshape(H, Dh, group).float()
    if mode == "token":
        xs = x.float().reshape(B, M, group, H, Dh)
        out = torch.einsum("bmjhd,hdj->bmhd", xs, w)
    else:
        K = N // (group * frame_len)
        xs = x.float().reshape(B, K, group, frame_len, H, Dh)
        out = torch.einsum("bkjshd,hdj->bkshd", xs, w).reshape(B, M, H, Dh)
    return out.to(x.dtype)


def convkv_cache_update_ref(cache_k, cache_v, new_k, new_v, weight_k, weight_v=None, *, frame_len, k_scale=None,
                            v_scale=None, group=5, mode="token", sinks=2, compressed=2, recent=2, block=2):
    """The ConvKV cache update of one layer and denoising step, in place (reference-model.md section 4.2).

    cache_k, cache_v: (batch, S*frame_len, heads, head_dim), S = sinks + compressed + recent + nb frame slots
    with nb = compressed*(group-1) (14 = 2 + 2 + 2 + 8 for LiveAct); bf16/fp16/fp32, or float8_e4m3fn with
    k_scale/v_scale (batch, S*frame_len, heads, 1) fp32 (one scale per token and head).
    block 0: new (sinks+compressed+recent frames) -> slots 0..; block 1: new (nb frames) -> the last nb slots;
    block >= 2, with Phi = convkv_compress_ref (mode, group) applied to the slots as they were before the call:
      slot sinks+c <- Phi(slots sinks+c*group ... sinks+(c+1)*group-1) for c < compressed  (2 <- 2..6, 3 <- 7..11)
      slot sinks+compressed+r <- slot sinks+compressed*group+r for r < recent (raw copy, scales too: 4,5 <- 12,13)
      the last nb slots <- new (nb frames: 6..13).
    FP8 caches are read as q * scale (fp32) and written with quantize_fp8_ref(granularity="token_head").
    weight_v=None uses weight_k for V, as the official code does (reference-model.md section 12, item 1).
    """
    fl = frame_len
    weight_v = weight_k if weight_v is None else weight_v
    for cache, scale, new, w in ((cache_k, k_scale, new_k, weight_k), (cache_v, v_scale, new_v, weight_v)):
        fp8 = cache.dtype == FP8_DTYPE
        old = cache.clone()
        old_scale = scale.clone() if fp8 else None

        def tokens(slot0, n_slots):
            return slice(slot0 * fl, (slot0 + n_slots) * fl)

        def put(slot0, values):  # values: fp32 (batch, n*fl, heads, head_dim)
            sl = tokens(slot0, values.shape[1] // fl)
            if fp8:
                q, s = quantize_fp8_ref(values, granularity="token_head")
                cache[:, sl] = q
                scale[:, sl] = s
            else:
                cache[:, sl] = values.to(cache.dtype)

        if block == 0:
            put(0, new.float())
            continue
        if block >= 2:
            old32 = dequantize_fp8_ref(old, old_scale, torch.float32) if fp8 else old.float()
            for c in range(compressed):
                src = old32[:, tokens(sinks + c * group, group)]
                put(sinks + c, convkv_compress_ref(src, w, group=group, mode=mode, frame_len=fl))
            if recent:
                dst, src = tokens(sinks + compressed, recent), tokens(sinks + compressed * group, recent)
                cache[:, dst] = old[:, src]
                if fp8:
                    scale[:, dst] = old_scale[:, src]
        put(sinks + compressed + recent, new.float())
    return cache_k, cache_v


# ---------------------------------------------------------------------------- causal depthwise conv1d
def causal_dwconv1d_ref(x, weight, bias=None, *, stride=1, activation=None, initial_states=None,
                        return_final_states=False):
    """Causal depthwise 1D convolution (causal-conv1d's layout and argument names), any width and stride.

    x: (batch, channels, seqlen); weight: (channels, width); bias: (channels,);
    initial_states: (batch, channels, width - 1), the inputs before x (zeros if None).
    out[:, :, t] = act(bias + sum_k weight[:, k] * xp[:, :, t*stride + k]) with xp = cat(initial_states, x),
    t < ceil(seqlen / stride). final_states: the last width - 1 entries of xp.
    """
    Bn, C, L = x.shape
    W = weight.shape[-1]
    init = initial_states if initial_states is not None else x.new_zeros(Bn, C, W - 1)
    xp = torch.cat([init.to(x.dtype), x], dim=-1).float()
    out = F.conv1d(xp, weight.float()[:, None, :], bias.float() if bias is not None else None,
                   stride=stride, groups=C)
    out = out[..., : (L + stride - 1) // stride] if L > 0 else out[..., :0]
    if activation in ("silu", "swish"):
        out = F.silu(out)
    out = out.to(x.dtype)
    if return_final_states:
        return out, xp[..., xp.shape[-1] - (W - 1):].to(x.dtype)
    return out


def causal_dwconv1d_update_ref(x, conv_state, weight, bias=None, activation=None):
    """One streaming step (causal-conv1d's update): x (batch, channels) or (batch, channels, seqlen);
    conv_state (batch, channels, state_len >= width - 1) holds the latest inputs and is shifted left and
    updated in place. Step i's window is the last `width` entries of cat(conv_state, x_i), so state_len =
    width - 1 works (the common case). x is rounded to conv_state's dtype as it enters the state.
    Returns out shaped like x."""
    squeeze = x.dim() == 2
    xs = x[..., None] if squeeze else x
    W = weight.shape[-1]
    outs = []
    for i in range(xs.shape[-1]):
        xp = torch.cat([conv_state, xs[..., i: i + 1].to(conv_state.dtype)], dim=-1)
        win = xp[..., xp.shape[-1] - W:].float()
        conv_state.copy_(xp[..., 1:])
        o = (win * weight.float()).sum(-1)
        if bias is not None:
            o = o + bias.float()
        if activation in ("silu", "swish"):
            o = F.silu(o)
        outs.append(o)
    out = torch.stack(outs, dim=-1).to(x.dtype) if outs else xs.new_empty(xs.shape)
    return out[..., 0] if squeeze else out


# ------------------------------------------------------------------------------------------------- FP8
def fp8_group_size(shape, granularity: str, block: int) -> int:
    """Elements per scale: "tensor" all; "token" the last two dims of a 4-D (batch, tokens, heads, head_dim)
    tensor, else the last dim; "token_head" the last dim; "block" `block` elements along the last dim."""
    if granularity == "tensor":
        return max(1, math.prod(shape))
    if granularity == "token":
        return shape[-1] * shape[-2] if len(shape) == 4 else shape[-1]
    if granularity == "token_head":
        return shape[-1]
    return block


def fp8_scale_shape(shape, granularity: str, block: int):
    shape = tuple(shape)
    if granularity == "tensor":
        return ()
    if granularity == "token":
        return shape[:-2] + (1, 1) if len(shape) == 4 else shape[:-1] + (1,)
    if granularity == "token_head":
        return shape[:-1] + (1,)
    return shape[:-1] + (shape[-1] // block,)


def quantize_fp8_ref(x, *, granularity="tensor", block=128):
    """Symmetric FP8 e4m3 quantisation: scale = amax / 448 per group (fp32, at least 1e-12), q = x / scale
    rounded to nearest even and saturated to +-448. Non-finite inputs: amax ignores NaN and +-inf; +-inf
    saturate to +-448 * scale; NaN stays NaN in q. Returns (q float8_e4m3fn, scale fp32 shaped by
    fp8_scale_shape)."""
    gs = fp8_group_size(x.shape, granularity, block)
    sshape = fp8_scale_shape(x.shape, granularity, block)
    if x.numel() == 0:  # empty groups (or none): amax 0, so the minimum scale
        return torch.empty(x.shape, dtype=FP8_DTYPE, device=x.device), \
            torch.full(sshape, FP8_MIN_SCALE, dtype=torch.float32, device=x.device)
    xf = x.float().reshape(-1, gs)
    finite = torch.where(torch.isfinite(xf), xf.abs(), torch.zeros_like(xf))
    amax = finite.amax(dim=1, keepdim=True) if xf.shape[0] else finite.new_zeros(0, 1)
    scale = torch.clamp(amax / FP8_MAX, min=FP8_MIN_SCALE)
    q = torch.clamp(xf / scale, -FP8_MAX, FP8_MAX)  # clamp keeps NaN, saturates +-inf
    q = q.to(FP8_DTYPE).reshape(x.shape)
    return q, scale.reshape(sshape)


def fp8_scale_group_size(q_shape, scale_shape) -> int:
    """Elements of q per scale, for a scale that covers contiguous groups of q: 0-D (one scale), or the
    same rank as q with scale_shape = q_shape[:j] + (c,) + (1,) * (rank - j - 1), where c == q_shape[j], or
    c divides q_shape[j] when j is the last dim (1 x block tiles). Every granularity of quantize_fp8 has
    this form. Raises ValueError otherwise."""
    q_shape, scale_shape = tuple(q_shape), tuple(scale_shape)
    n = math.prod(q_shape)
    if len(scale_shape) == 0:
        return n
    bad = ValueError(f"scale shape {scale_shape} does not give one scale per contiguous group of q {q_shape} "
                     f"(expected () or q.shape[:j] + (c,) + (1,)*k, e.g. {q_shape[:-1] + (1,)})")
    if len(scale_shape) != len(q_shape):
        raise bad
    j = max((i for i, c in enumerate(scale_shape) if c != 1), default=-1)
    if j < 0:
        return n
    c, d = scale_shape[j], q_shape[j]
    block_ok = j == len(q_shape) - 1 and c > 0 and d % c == 0
    if scale_shape[:j] != q_shape[:j] or not (c == d or block_ok):
        raise bad
    return (d // c if c else 0) * math.prod(q_shape[j + 1:])


def fp8_expand_scale(scale, shape):
    """Broadcast a scale from quantize_fp8 (any granularity) to `shape`, fp32."""
    scale = scale.float()
    if scale.dim() == 0:
        return scale.expand(shape)
    if scale.shape[-1] not in (1, shape[-1]):  # block granularity
        scale = scale.repeat_interleave(shape[-1] // scale.shape[-1], dim=-1)
    return scale.expand(shape)


def dequantize_fp8_ref(q, scale, dtype=torch.bfloat16):
    """q.float() * scale (broadcast per granularity), cast to dtype."""
    return (q.float() * fp8_expand_scale(scale, q.shape)).to(dtype)


# ------------------------------------------------------------------------------------------- attention
def _to_nhd(t, layout):
    return t if layout == "NHD" else t.transpose(1, 2)


def attention_ref(q, k, v, *, tensor_layout="HND", is_causal=False, sm_scale=None, return_lse=False,
                  k_scale=None, v_scale=None):
    """softmax(q k^T * sm_scale) v in fp32, output in q.dtype.

    tensor_layout "HND": q (batch, heads, seqlen_q, head_dim), k/v (batch, kv_heads, seqlen_k, head_dim);
    "NHD": (batch, seqlen, heads, head_dim). heads % kv_heads == 0 (GQA). is_causal is bottom-right aligned
    (query i sees keys j <= i + seqlen_k - seqlen_q). k/v may be float8_e4m3fn with k_scale/v_scale shaped
    like k with a last dim of 1. lse (natural log): (batch, heads, seqlen_q), fp32.
    """
    qn, kn, vn = _to_nhd(q, tensor_layout), _to_nhd(k, tensor_layout), _to_nhd(v, tensor_layout)
    kf = kn.float() * (_to_nhd(k_scale, tensor_layout).float() if k_scale is not None else 1.0)
    vf = vn.float() * (_to_nhd(v_scale, tensor_layout).float() if v_scale is not None else 1.0)
    B, Nq, Hq, Dh = qn.shape
    Nk, Hk = kf.shape[1], kf.shape[2]
    scale = sm_scale if sm_scale is not None else Dh ** -0.5
    rep = Hq // Hk
    qf = qn.float().permute(0, 2, 1, 3)                                   # (B, Hq, Nq, Dh)
    kf = kf.permute(0, 2, 1, 3).repeat_interleave(rep, dim=1)             # (B, Hq, Nk, Dh)
    vf = vf.permute(0, 2, 1, 3).repeat_interleave(rep, dim=1)
    s = torch.matmul(qf, kf.transpose(-1, -2)) * scale                    # (B, Hq, Nq, Nk)
    if is_causal:
        i = torch.arange(Nq, device=q.device)[:, None]
        j = torch.arange(Nk, device=q.device)[None, :]
        s = s.masked_fill(j > i + (Nk - Nq), float("-inf"))
    lse = torch.logsumexp(s, dim=-1)                                      # -inf for rows with no key
    p = torch.exp(s - lse[..., None].clamp_min(torch.finfo(torch.float32).min))
    p = torch.nan_to_num(p, nan=0.0)
    o = torch.matmul(p, vf).permute(0, 2, 1, 3)                           # (B, Nq, Hq, Dh)
    if tensor_layout == "HND":
        o = o.transpose(1, 2)
    o = o.to(q.dtype)
    return (o, lse) if return_lse else o


def audio_cross_attention_ref(q, k, v, *, frame_len, frame_offset=0, zero_first_frame=False, sm_scale=None):
    """Per-latent-frame cross-attention to audio tokens.

    q: (batch, T*frame_len, heads, head_dim); k, v: (batch, F_audio, N_a, heads, head_dim).
    Query frame j attends only to the N_a tokens of audio frame frame_offset + j. zero_first_frame zeroes
    the output of query frame 0 (the reference-image frame of block 0). Returns q's shape and dtype.
    """
    B, L, H, Dh = q.shape
    T = L // frame_len
    scale = sm_scale if sm_scale is not None else Dh ** -0.5
    qf = q.float().reshape(B, T, frame_len, H, Dh).permute(0, 1, 3, 2, 4)            # (B, T, H, fl, Dh)
    kf = k[:, frame_offset: frame_offset + T].float().permute(0, 1, 3, 2, 4)         # (B, T, H, Na, Dh)
    vf = v[:, frame_offset: frame_offset + T].float().permute(0, 1, 3, 2, 4)
    p = torch.softmax(torch.matmul(qf, kf.transpose(-1, -2)) * scale, dim=-1)
    o = torch.matmul(p, vf).permute(0, 1, 3, 2, 4)                                   # (B, T, fl, H, Dh)
    if zero_first_frame and T > 0:
        o[:, 0] = 0
    return o.reshape(B, L, H, Dh).to(q.dtype)


# ---------------------------------------------------------------------------------------------- FP8 GEMM
def fp8_linear_ref(x, weight_q, weight_scale, bias=None, *, out_dtype=None):
    """W8A8 linear: x (..., in_features) is quantised per token (dynamic), weight_q (out, in) float8_e4m3fn
    with weight_scale () per tensor or (out,) / (out, 1) per channel; fp32 accumulation.
    Returns (..., out_features) in out_dtype (default x.dtype)."""
    K = x.shape[-1]
    x2 = x.reshape(math.prod(x.shape[:-1]), K)  # not -1: K may be 0
    xq, xs = quantize_fp8_ref(x2, granularity="token")
    ws = weight_scale.float().reshape(-1)
    acc = torch.matmul(xq.float(), weight_q.float().t())
    out = acc * xs * (ws[None, :] if ws.numel() > 1 else ws)
    if bias is not None:
        out = out + bias.float()
    return out.to(out_dtype or x.dtype).reshape(*x.shape[:-1], weight_q.shape[0])
