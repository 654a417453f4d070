# Avatar metrics: mouth opening measured in frames (the renderer says where the mouth is drawn) and its
# correlation with audio loudness; face-region mean Lab colour and SSIM against the reference image.
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from . import render as R
from .video_io import to_tchw

_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def _frames_tchw(frames: torch.Tensor, layout: str | None = None) -> torch.Tensor:
    """(3, T, H, W) / (T, 3, H, W) / (3, H, W) in [-1, 1] or uint8 (layouts: video_io.to_tchw) -> (T, 3, H, W)
    float in [0, 1]."""
    frames = to_tchw(frames.unsqueeze(0) if frames.dim() == 3 else frames, layout)
    frames = frames.detach()
    if frames.dtype == torch.uint8:
        return frames.float() / 255.0
    return (frames.float().clamp(-1, 1) + 1.0) / 2.0


def mouth_opening(frames: torch.Tensor, box: tuple, layout: str | None = None) -> np.ndarray:
    """Soft count of dark (mouth-interior) pixels per column of the mouth box: ≈ the opening height in pixels.

    A pixel counts by how much darker it is than the box's median luma (the skin around the mouth), so the
    measure works for every skin tone. frames: (T, 3, H, W) or (3, T, H, W); box: (y0, y1, x0, x1).
    Returns (T,) float32.
    """
    x = _frames_tchw(frames, layout)
    y0, y1, x0, x1 = box
    if not (0 <= y0 < y1 <= x.shape[2] and 0 <= x0 < x1 <= x.shape[3]):
        raise ValueError(f"box {box} outside the frame size {tuple(x.shape[2:])}")
    luma = (x[:, :, y0:y1, x0:x1] * _LUMA).sum(1)  # (T, h, w)
    ref = luma.flatten(1).median(1).values.view(-1, 1, 1).clamp_min(0.05)
    dark = ((ref - luma) / ref * 2.0 - 0.6).clamp(0.0, 1.0)  # >= 30% darker than skin starts to count
    return (dark.sum((1, 2)) / max(1, (x1 - x0) * 0.5)).numpy().astype(np.float32)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape or a.size < 3:
        raise ValueError(f"pearson needs two equal-length series of >= 3 values, got {a.shape} and {b.shape}")
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


def lag_correlation(opening: np.ndarray, loudness: np.ndarray, max_lag: int = 3) -> dict:
    """Pearson r at lag 0 and the best lag in [-max_lag, max_lag] (positive = mouth follows the audio later)."""
    r0 = pearson(opening, loudness)
    best = (0, r0)
    for lag in range(-max_lag, max_lag + 1):
        if lag == 0:
            continue
        if lag > 0:
            r = pearson(opening[lag:], loudness[:-lag])
        else:
            r = pearson(opening[:lag], loudness[-lag:])
        if r > best[1]:
            best = (lag, r)
    return {"r": r0, "best_lag": best[0], "r_best_lag": best[1]}


# ----------------------------------------------------------------------------- colour and structure

def rgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], (..., 3, H, W) -> CIE Lab (D65), same shape."""
    c = torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    m = torch.tensor([[0.4124564, 0.3575761, 0.1804375],
                      [0.2126729, 0.7151522, 0.0721750],
                      [0.0193339, 0.1191920, 0.9503041]], dtype=x.dtype)
    xyz = torch.einsum("ij,...jhw->...ihw", m, c)
    white = torch.tensor([0.95047, 1.0, 1.08883], dtype=x.dtype).view(3, 1, 1)
    t = xyz / white
    d = 6.0 / 29.0
    f = torch.where(t > d ** 3, t.clamp_min(1e-12) ** (1.0 / 3.0), t / (3 * d * d) + 4.0 / 29.0)
    L = 116.0 * f[..., 1, :, :] - 16.0
    a = 500.0 * (f[..., 0, :, :] - f[..., 1, :, :])
    b = 200.0 * (f[..., 1, :, :] - f[..., 2, :, :])
    return torch.stack([L, a, b], -3)


def face_mask(ident: R.Identity, height: int = R.HEIGHT, width: int = R.WIDTH, shrink: float = 0.8) -> torch.Tensor:
    """(H, W) bool: the inner part of the face ellipse at rest (shrunk so head motion keeps it on skin/features)."""
    ys = (torch.arange(height) + 0.5) / height
    xs = (torch.arange(width) + 0.5) / width
    Y, X = torch.meshgrid(ys, xs, indexing="ij")
    return ((X - 0.5) / (ident.face_rx * shrink)) ** 2 + ((Y - 0.47) / (ident.face_ry * shrink)) ** 2 <= 1.0


def face_lab(frames: torch.Tensor, mask: torch.Tensor, layout: str | None = None) -> np.ndarray:
    """Mean Lab over the face mask per frame. Returns (T, 3) float32."""
    x = _frames_tchw(frames, layout)
    lab = rgb_to_lab(x)
    m = mask.to(lab.dtype)
    return ((lab * m).sum((2, 3)) / m.sum()).numpy().astype(np.float32)


def ssim(frames: torch.Tensor, ref: torch.Tensor, box: tuple | None = None, win: int = 7,
         layout: str | None = None) -> np.ndarray:
    """SSIM (luma, uniform win x win window) of each frame against ref, inside box (y0, y1, x0, x1).

    frames: (T, 3, H, W) / (3, T, H, W); ref: (3, H, W). Returns (T,) float32.
    """
    x = _frames_tchw(frames, layout)
    r = _frames_tchw(ref.unsqueeze(1), "cthw") if ref.dim() == 3 else _frames_tchw(ref)
    if r.shape[2:] != x.shape[2:]:
        raise ValueError(f"ref size {tuple(r.shape[2:])} != frame size {tuple(x.shape[2:])}")
    if box is not None:
        y0, y1, x0, x1 = box
        x, r = x[:, :, y0:y1, x0:x1], r[:, :, y0:y1, x0:x1]
    a = (x * _LUMA).sum(1, keepdim=True)
    b = (r * _LUMA).sum(1, keepdim=True).expand_as(a)
    k = torch.ones(1, 1, win, win) / (win * win)
    mu_a, mu_b = F.conv2d(a, k), F.conv2d(b, k)
    saa = F.conv2d(a * a, k) - mu_a ** 2
    sbb = F.conv2d(b * b, k) - mu_b ** 2
    sab = F.conv2d(a * b, k) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))
    return s.mean((1, 2, 3)).numpy().astype(np.float32)


def no_trend(first: np.ndarray, later: dict, k: float = 2.0) -> dict:
    """Stability verdict: every later checkpoint mean lies within the first window's mean ± max(k·std, range/2).

    first: (n,) or (n, c) per-block values of the first minute; later: {label: (m,) or (m, c) values}.
    """
    first = np.asarray(first, np.float64)
    mu = first.mean(0)
    spread = np.maximum(k * first.std(0), (first.max(0) - first.min(0)) / 2.0)
    out = {"first_mean": np.atleast_1d(mu).tolist(), "allowed": np.atleast_1d(spread).tolist(), "checkpoints": {}}
    ok = True
    for lab, vals in later.items():
        m = np.asarray(vals, np.float64).mean(0)
        dev = np.abs(m - mu)
        within = bool(np.all(dev <= spread + 1e-9))
        ok &= within
        out["checkpoints"][lab] = {"mean": np.atleast_1d(m).tolist(), "abs_dev": np.atleast_1d(dev).tolist(),
                                   "within": within}
    out["stable"] = ok
    return out
