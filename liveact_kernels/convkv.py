"""ConvKV memory compression: a depthwise conv with stride = kernel = group over cached K/V tokens."""
from __future__ import annotations

import torch

from . import _backend, reference
from ._autograd import kernel_with_ref_backward, needs_grad
from ._validate import FLOAT_DTYPES, check_choice, check_out, check_same_device, check_tensor


def convkv_compress(x, weight, *, group=5, mode="token", frame_len=None, out=None, backend="auto"):
    """Compress `group` cached tokens (mode="token", the official checkpoint's raster-order merge) or
    `group` frames at each spatial position (mode="frame", needs frame_len) into one, fp32 accumulation.

    x: (batch, group*M, heads, head_dim) bf16/fp16/fp32; weight: (heads*head_dim, 1, group), the
    checkpoint's nn.Conv1d layout (no bias). Returns (batch, M, heads, head_dim) in x.dtype.
    """
    op = "convkv_compress"
    check_tensor(op, "x", x, ndim=4, dtypes=FLOAT_DTYPES)
    B, N, H, Dh = x.shape
    check_choice(op, "mode", mode, ("token", "frame"))
    if not isinstance(group, int) or group < 1:
        raise ValueError(f"{op}: group must be a positive int, got {group!r}")
    check_tensor(op, "weight", weight, ndim=(2, 3), dtypes=FLOAT_DTYPES)
    if weight.numel() != H * Dh * group or weight.shape[0] != H * Dh or weight.shape[-1] != group:
        raise ValueError(f"{op}: weight must have shape ({H * Dh}, 1, {group}) for x {tuple(x.shape)}, "
                         f"got {tuple(weight.shape)}")
    check_same_device(op, x=x, weight=weight)
    if N % group:
        raise ValueError(f"{op}: x has {N} tokens, not a multiple of group={group} (x {tuple(x.shape)})")
    if mode == "frame":
        if not isinstance(frame_len, int) or frame_len < 1:
            raise ValueError(f"{op}: mode='frame' needs frame_len (tokens per frame) as a positive int, "
                             f"got {frame_len!r}")
        if N % (group * frame_len):
            raise ValueError(f"{op}: mode='frame' needs a token count that is a multiple of group*frame_len="
                             f"{group * frame_len}, got {N}")
    M = N // group
    check_out(op, out, (B, M, H, Dh), x.dtype, x.device)
    b = _backend.resolve(op, backend, x.device)
    if b == "torch":
        r = reference.convkv_compress_ref(x, weight, group=group, mode=mode, frame_len=frame_len)
        return out.copy_(r) if out is not None else r

    def kernel(x, weight):
        o = out if out is not None else x.new_empty((B, M, H, Dh))
        _backend.launch(op, b, x, weight.reshape(H * Dh, group).float().contiguous(), group, mode,
                        int(frame_len or 0), o)
        return o

    if needs_grad(x, weight):
        return kernel_with_ref_backward(
            kernel, lambda x, w: reference.convkv_compress_ref(x, w, group=group, mode=mode, frame_len=frame_len),
            (x, weight))
    return kernel(x, weight)


@_backend.register_fake("liveact::convkv_compress_fwd")
def _convkv_compress_fake(x, weight, group, merge, frame_len, out):
    return None


_CACHE_DTYPES = FLOAT_DTYPES + (reference.FP8_DTYPE,)


def convkv_cache_update(cache_k, cache_v, new_k, new_v, weight_k, weight_v=None, *, frame_len, k_scale=None,
                        v_scale=None, group=5, mode="token", sinks=2, compressed=2, recent=2, block=2,
                        backend="auto"):
    """The ConvKV KV-cache update of one layer and denoising step, in place, in one kernel launch.

    cache_k, cache_v: (batch, S*frame_len, heads, head_dim) contiguous, S = sinks + compressed + recent + nb
    frame slots with nb = compressed*(group-1) (LiveAct: 14 = 2 + 2 + 2 + 8); bf16/fp16/fp32, or
    float8_e4m3fn with k_scale, v_scale: (batch, S*frame_len, heads, 1) fp32 contiguous (per token and head).
    new_k, new_v: the current block's K (after RMSNorm, before RoPE) and V, (batch, n*frame_len, heads,
    head_dim), same dtype as a float cache, or bf16/fp16/fp32 for an FP8 cache.
    weight_k, weight_v: (heads*head_dim, 1, group) ConvKV kernels (nn.Conv1d layout); weight_v=None uses
    weight_k for V as the official code does. Only read for block >= 2 (may be None for blocks 0 and 1).
    block: 0 writes new (n = sinks+compressed+recent = 6 frames) to slots 0..5; 1 writes new (n = nb = 8)
    to slots 6..13; >= 2 (steady state) does, from the slots as they were before the call:
      slot 2 <- Phi(slots 2..6), slot 3 <- Phi(slots 7..11), slots 4,5 <- slots 12,13, slots 6..13 <- new,
    with Phi = convkv_compress(mode, group) accumulated in fp32. FP8 caches are dequantised as q * scale
    (fp32 scale; the official code rounds the scale to bf16) and written with a fresh per-(token, head)
    scale = amax/448 (RNE, saturating); moved slots keep their FP8 bytes and scales.
    Needs compressed + recent <= group (so that the moves never overwrite a slot still to be read).
    Not differentiable (a cache update). Returns (cache_k, cache_v), the same tensors.
    """
    op = "convkv_cache_update"
    check_tensor(op, "cache_k", cache_k, ndim=4, dtypes=_CACHE_DTYPES)
    B, Ntot, H, Dh = cache_k.shape
    check_tensor(op, "cache_v", cache_v, shape=tuple(cache_k.shape), dtypes=(cache_k.dtype,))
    check_choice(op, "mode", mode, ("token", "frame"))
    for name, v, lo in (("frame_len", frame_len, 1), ("group", group, 2), ("sinks", sinks, 0),
                        ("compressed", compressed, 1), ("recent", recent, 0), ("block", block, 0)):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise ValueError(f"{op}: {name} must be an int >= {lo}, got {v!r}")
    if compressed + recent > group:
        raise ValueError(f"{op}: needs compressed + recent <= group, got compressed={compressed}, recent={recent}, "
                         f"group={group}")
    nb = compressed * (group - 1)
    S = sinks + compressed + recent + nb
    if Ntot != S * frame_len:
        raise ValueError(f"{op}: cache_k must hold {S} slots of frame_len={frame_len} tokens ({S * frame_len}), "
                         f"got shape {tuple(cache_k.shape)}")
    for name, c in (("cache_k", cache_k), ("cache_v", cache_v)):
        if not c.is_contiguous():
            raise ValueError(f"{op}: {name} must be contiguous (it is updated in place), got strides {c.stride()}")
    fp8 = cache_k.dtype == reference.FP8_DTYPE
    n_new = (sinks + compressed + recent if block == 0 else nb) * frame_len
    new_dtypes = FLOAT_DTYPES if fp8 else (cache_k.dtype,)
    check_tensor(op, "new_k", new_k, shape=(B, n_new, H, Dh), dtypes=new_dtypes)
    check_tensor(op, "new_v", new_v, shape=(B, n_new, H, Dh), dtypes=(new_k.dtype,))
    if fp8:
        for name, s in (("k_scale", k_scale), ("v_scale", v_scale)):
            check_tensor(op, name, s, shape=(B, Ntot, H, 1), dtypes=(torch.float32,))
            if not s.is_contiguous():
                raise ValueError(f"{op}: {name} must be contiguous, got strides {s.stride()}")
    elif k_scale is not None or v_scale is not None:
        raise ValueError(f"{op}: k_scale/v_scale are only for float8_e4m3fn caches, got a "
                         f"{str(cache_k.dtype).replace('torch.', '')} cache")
    weight_v = weight_k if weight_v is None else weight_v
    if block >= 2:
        for name, w in (("weight_k", weight_k), ("weight_v", weight_v)):
            check_tensor(op, name, w, ndim=(2, 3), dtypes=FLOAT_DTYPES)
            if w.shape[0] != H * Dh or w.shape[-1] != group or w.numel() != H * Dh * group:
                raise ValueError(f"{op}: {name} must have shape ({H * Dh}, 1, {group}), got {tuple(w.shape)}")
    check_same_device(op, cache_k=cache_k, cache_v=cache_v, new_k=new_k, new_v=new_v, k_scale=k_scale,
                      v_scale=v_scale, weight_k=weight_k if block >= 2 else None,
                      weight_v=weight_v if block >= 2 else None)
    b = _backend.resolve(op, backend, cache_k.device)
    if b == "torch":
        reference.convkv_cache_update_ref(cache_k, cache_v, new_k, new_v, weight_k, weight_v, frame_len=frame_len,
                                          k_scale=k_scale, v_scale=v_scale, group=group, mode=mode, sinks=sinks,
                                          compressed=compressed, recent=recent, block=block)
        return cache_k, cache_v
    if block >= 2:
        wk = weight_k.reshape(H * Dh, group).float().contiguous()
        wv = weight_v.reshape(H * Dh, group).float().contiguous()
    else:
        wk = wv = torch.empty(0, device=cache_k.device)
    _backend.launch(op, b, cache_k, cache_v, new_k, new_v, wk, wv, k_scale, v_scale, frame_len, group, mode, sinks,
                    compressed, recent, block)
    return cache_k, cache_v


@_backend.register_fake("liveact::convkv_cache_update_fwd")
def _convkv_cache_update_fake(cache_k, cache_v, new_k, new_v, weight_k, weight_v, k_scale, v_scale, frame_len, group,
                              merge, sinks, compressed, recent, block):
    return None
