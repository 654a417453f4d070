"""Per-latent-frame cross-attention to audio tokens: query frame j sees only the N_a (=32) tokens of audio
frame frame_offset + j (a block-diagonal pattern, no padding of the 32 keys)."""
from __future__ import annotations

import torch

from . import _backend, reference
from ._autograd import kernel_with_ref_backward, needs_grad
from ._validate import FLOAT_DTYPES, check_out, check_same_device, check_tensor


def audio_cross_attention(q, k, v, *, frame_len, frame_offset=0, zero_first_frame=False, sm_scale=None,
                          out=None, backend="auto"):
    """q: (batch, T*frame_len, heads, head_dim); k, v: (batch, F_audio, N_a, heads, head_dim) with
    frame_offset + T <= F_audio. zero_first_frame zeroes the output of query frame 0 (LiveAct's block-0
    reference frame; the model zeroes after its output projection). out: optional preallocated output
    (q's shape and dtype, any strides), e.g. a persistent buffer that saves the page faults of a fresh
    allocation per call. Returns out (q's shape and dtype)."""
    op = "audio_cross_attention"
    check_tensor(op, "q", q, ndim=4, dtypes=FLOAT_DTYPES)
    check_tensor(op, "k", k, ndim=5, dtypes=(q.dtype,))
    check_tensor(op, "v", v, ndim=5, dtypes=(q.dtype,))
    B, L, H, Dh = q.shape
    if not isinstance(frame_len, int) or frame_len < 1 or L % frame_len:
        raise ValueError(f"{op}: frame_len must be a positive int dividing q's seqlen {L}, got {frame_len!r}")
    T = L // frame_len
    if k.shape != v.shape or k.shape[0] != B or k.shape[3] != H or k.shape[4] != Dh:
        raise ValueError(f"{op}: k and v must have shape ({B}, F_audio, N_a, {H}, {Dh}); got k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}")
    if frame_offset < 0 or frame_offset + T > k.shape[1]:
        raise ValueError(f"{op}: query frames [{frame_offset}, {frame_offset + T}) need audio frames that k has "
                         f"(F_audio = {k.shape[1]})")
    check_same_device(op, q=q, k=k, v=v)
    check_out(op, out, q.shape, q.dtype, q.device)
    scale = float(sm_scale) if sm_scale is not None else Dh ** -0.5
    b = _backend.resolve(op, backend, q.device)
    if b == "torch":
        res = reference.audio_cross_attention_ref(q, k, v, frame_len=frame_len, frame_offset=frame_offset,
                                                  zero_first_frame=zero_first_frame, sm_scale=scale)
        return res if out is None else out.copy_(res)

    def kernel(q, k, v, dst=None):
        dst = torch.empty_like(q, memory_format=torch.contiguous_format) if dst is None else dst
        _backend.launch(op, b, q, k, v, frame_len, int(frame_offset), bool(zero_first_frame), scale, dst)
        return dst

    if needs_grad(q, k, v):  # training: the kernel's forward, the reference's backward
        if out is not None:
            raise ValueError(f"{op}: out= cannot be used when q, k or v requires grad")
        return kernel_with_ref_backward(
            kernel, lambda q, k, v: reference.audio_cross_attention_ref(
                q, k, v, frame_len=frame_len, frame_offset=frame_offset, zero_first_frame=zero_first_frame,
                sm_scale=scale), (q, k, v))
    return kernel(q, k, v, out)


@_backend.register_fake("liveact::audio_cross_attention_fwd")
def _audio_cross_attention_fake(q, k, v, frame_len, frame_offset, zero_first_frame, sm_scale, out):
    return None
