"""Wan's 3-axis rotary embedding (time, height, width) in fp32 from precomputed cos/sin tables."""
from __future__ import annotations

import torch

from . import _backend, reference
from ._autograd import kernel_with_ref_backward, needs_grad
from ._validate import FLOAT_DTYPES, check_out, check_tensor

_TABLES: dict = {}
_TABLES_MAX = 64


def _tables(grid, frame_positions, head_dim, theta, split, device):
    if torch.is_tensor(frame_positions):
        key_pos = tuple(float(p) for p in frame_positions.detach().cpu().reshape(-1).tolist())
    else:
        key_pos = tuple(float(p) for p in frame_positions)
    key = (tuple(int(g) for g in grid), key_pos, head_dim, float(theta), tuple(split) if split else None, str(device))
    t = _TABLES.get(key)
    if t is None:
        t = reference.rope3d_tables(grid, torch.tensor(key_pos, dtype=torch.float64), head_dim=head_dim,
                                    theta=theta, split=split, device=device)
        t = tuple(a.contiguous() for a in t)
        if len(_TABLES) >= _TABLES_MAX:
            _TABLES.pop(next(iter(_TABLES)))
        _TABLES[key] = t
    return t


def rope3d(x, *, grid, frame_positions, theta=10000.0, split=None, out=None, backend="auto"):
    """Apply Wan's 3-axis RoPE.

    x: (batch, F*h*w, heads, head_dim), tokens frame-major; grid: (F, h, w); frame_positions: (F,) the
    temporal position of each frame (cached keys sit at their slot positions); split: channels per axis,
    default Wan's (head_dim - 4*(head_dim//6), 2*(head_dim//6), 2*(head_dim//6)) = (44, 42, 42) for 128.
    """
    op = "rope3d"
    check_tensor(op, "x", x, ndim=4, dtypes=FLOAT_DTYPES)
    B, N, H, Dh = x.shape
    if len(tuple(grid)) != 3:
        raise ValueError(f"{op}: grid must be (frames, height, width), got {grid!r}")
    Fr, h, w = (int(g) for g in grid)
    if Fr * h * w != N:
        raise ValueError(f"{op}: grid {tuple(grid)} has {Fr * h * w} tokens but x has {N} (x shape {tuple(x.shape)})")
    npos = len(frame_positions) if not torch.is_tensor(frame_positions) else frame_positions.numel()
    if npos != Fr:
        raise ValueError(f"{op}: frame_positions must have {Fr} entries (one per frame), got {npos}")
    sp = tuple(split) if split is not None else reference.rope_split(Dh)
    if len(sp) != 3 or sum(sp) != Dh or any(s % 2 for s in sp):
        raise ValueError(f"{op}: split must be 3 even sizes summing to head_dim {Dh}, got {sp}")
    check_out(op, out, x.shape, x.dtype, x.device)
    b = _backend.resolve(op, backend, x.device)
    if b == "torch":
        r = reference.rope3d_ref(x, grid=grid, frame_positions=frame_positions, theta=theta, split=sp)
        return out.copy_(r) if out is not None else r
    tables = _tables(grid, frame_positions, Dh, theta, sp, x.device)

    def kernel(x):
        o = out if out is not None else torch.empty_like(x, memory_format=torch.contiguous_format)
        _backend.launch(op, b, x, *tables, o)
        return o

    if needs_grad(x):
        return kernel_with_ref_backward(
            kernel, lambda x: reference.rope3d_ref(x, grid=grid, frame_positions=frame_positions, theta=theta,
                                                   split=sp), (x,))
    return kernel(x)


@_backend.register_fake("liveact::rope3d_fwd")
def _rope3d_fake(x, cos_f, sin_f, cos_h, sin_h, cos_w, sin_w, out):
    return None
