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
def _convkv_compress_fake(x, weight, group, mode, frame_len, out):
    return None
