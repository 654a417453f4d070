# Kernel entry points used by the model: liveact_kernels when it provides the ops, otherwise a temporary
# pure-PyTorch stand-in with the same signatures (removed once liveact_kernels.reference lands on main).
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_NAMES = ("adaln_modulate", "gated_residual", "rms_norm", "rope3d", "convkv_compress", "quantize_fp8",
          "dequantize_fp8", "attention", "audio_cross_attention")

try:
    import liveact_kernels as _K
    _HAVE = all(hasattr(_K, n) for n in _NAMES)
except ImportError:
    _K, _HAVE = None, False


def _bcast(m, x):
    # m: [B, D] | [B, 1, D] | [B, F, D] -> broadcastable to x [B, L, D]
    if m.dim() == 2:
        m = m[:, None]
    if m.shape[1] not in (1, x.shape[1]):
        f = m.shape[1]
        m = m.repeat_interleave(x.shape[1] // f, dim=1)
    return m.float()


def adaln_modulate(x, shift, scale, *, eps=1e-6, norm="layer", weight=None, bias=None, backend="auto"):
    xf = x.float()
    if norm == "layer":
        y = F.layer_norm(xf, (x.shape[-1],), None if weight is None else weight.float(),
                         None if bias is None else bias.float(), eps)
    else:
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        if weight is not None:
            y = y * weight.float()
    return (y * (1 + _bcast(scale, x)) + _bcast(shift, x)).to(x.dtype)


def gated_residual(x, y, gate, backend="auto"):
    return (x.float() + y.float() * _bcast(gate, x)).to(x.dtype)


def rms_norm(x, weight, *, eps=1e-6, backend="auto"):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype)


def rope3d(x, *, grid, frame_positions, theta=10000.0, split=(44, 42, 42), backend="auto"):
    f, h, w = grid
    B, L, H, D = x.shape
    pos = [frame_positions.to(torch.float64).reshape(f, 1, 1).expand(f, h, w),
           torch.arange(h, dtype=torch.float64).reshape(1, h, 1).expand(f, h, w),
           torch.arange(w, dtype=torch.float64).reshape(1, 1, w).expand(f, h, w)]
    angs = []
    for p, c in zip(pos, split):
        om = 1.0 / theta ** (torch.arange(0, c, 2, dtype=torch.float64) / c)
        angs.append(p.reshape(-1, 1) * om)
    ang = torch.cat(angs, -1).to(x.device)  # [L, D/2]
    cos, sin = ang.cos().float()[None, :, None], ang.sin().float()[None, :, None]
    xp = x.float().reshape(B, L, H, D // 2, 2)
    a, b = xp[..., 0], xp[..., 1]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], -1).reshape(B, L, H, D).to(x.dtype)


def convkv_compress(x, weight, *, group=5, mode="token", frame_len=None, backend="auto"):
    B, N, H, D = x.shape
    w = weight.float().reshape(H, D, group)
    if mode == "token":
        xr = x.float().reshape(B, N // group, group, H, D)
        out = torch.einsum("bmghd,hdg->bmhd", xr, w)
    else:
        xr = x.float().reshape(B, group, N // group, H, D)
        out = torch.einsum("bgmhd,hdg->bmhd", xr, w)
    return out.to(x.dtype)


def quantize_fp8(x, *, granularity="token_head", block=128, backend="auto"):
    xf = x.float()
    s = (xf.abs().amax(-1, keepdim=True) / 448.0).clamp_min(1e-12)
    return (xf / s).clamp(-448, 448).to(torch.float8_e4m3fn), s


def dequantize_fp8(q, scale, dtype=torch.bfloat16, backend="auto"):
    return (q.float() * scale).to(dtype)


def attention(q, k, v, *, tensor_layout="HND", is_causal=False, sm_scale=None, return_lse=False,
              k_scale=None, v_scale=None, backend="auto"):
    if k_scale is not None:
        k = k.float() * k_scale
        v = v.float() * v_scale
    dt = q.dtype
    if tensor_layout == "NHD":
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    qf, kf, vf = q.float(), k.float(), v.float()
    s = (qf @ kf.transpose(-1, -2)) * (sm_scale or 1 / math.sqrt(q.shape[-1]))
    o = (s.softmax(-1) @ vf).to(dt)
    if tensor_layout == "NHD":
        o = o.transpose(1, 2)
    return o


def audio_cross_attention(q, k, v, *, frame_len, frame_offset=0, zero_first_frame=False, backend="auto"):
    B, L, H, D = q.shape
    T = L // frame_len
    kk = k[:, frame_offset:frame_offset + T]  # [B, T, Na, H, D]
    vv = v[:, frame_offset:frame_offset + T]
    qf = q.float().reshape(B, T, frame_len, H, D).permute(0, 1, 3, 2, 4)
    kf = kk.float().permute(0, 1, 3, 2, 4)
    vf = vv.float().permute(0, 1, 3, 2, 4)
    o = ((qf @ kf.transpose(-1, -2)) / math.sqrt(D)).softmax(-1) @ vf
    o = o.permute(0, 1, 3, 2, 4).reshape(B, L, H, D)
    if zero_first_frame:
        o = torch.cat([torch.zeros_like(o[:, :frame_len]), o[:, frame_len:]], 1)
    return o.to(q.dtype)


if _HAVE:
    for _n in _NAMES:
        globals()[_n] = getattr(_K, _n)
