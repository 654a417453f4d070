# Procedural talking-face renderer for the tiny avatar: random identities, slow head motion, blinks and a
# mouth driven by audio loudness and a coarse spectrum. Vectorised torch, anti-aliased soft shapes.
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, asdict

import numpy as np
import torch

from . import audio as A

HEIGHT = 64
WIDTH = 64
HELDOUT_MOD = 8  # 1 in 8 identity seeds and 1 in 8 clip seeds are held out for evaluation

# Geometry in face-local units (multiples of the face radii), so the metrics can locate the mouth.
MOUTH_Y = 0.52  # mouth centre below the face centre, in units of face ry
EYE_Y = -0.12
MAX_SHIFT = 0.035  # max head translation (image fraction) of the motion model


def _hash01(seed: int, salt: str) -> float:
    h = hashlib.sha256(f"{salt}:{seed}".encode()).digest()
    return int.from_bytes(h[:8], "little") / 2.0**64


def is_heldout(seed: int, kind: str) -> bool:
    """Deterministic split: identity or clip seeds whose hash falls in the first 1/HELDOUT_MOD are held out."""
    if kind not in ("identity", "clip"):
        raise ValueError(f"kind must be 'identity' or 'clip', got {kind!r}")
    return _hash01(seed, kind) < 1.0 / HELDOUT_MOD


def split_seeds(kind: str, split: str, n: int, start: int = 0) -> list[int]:
    """The first n seeds (from `start`) belonging to `split` ('train' or 'eval') for `kind`."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    want = split == "eval"
    out, s = [], start
    while len(out) < n:
        if is_heldout(s, kind) == want:
            out.append(s)
        s += 1
    return out


@dataclass
class Identity:
    seed: int
    face_rx: float
    face_ry: float
    skin: tuple
    hair: tuple
    hair_style: int  # 0 short, 1 long, 2 very short (almost bald)
    hair_volume: float
    eye_color: tuple
    eye_dx: float
    eye_r: float
    brow_tilt: float
    lip: tuple
    mouth_w: float
    background: tuple
    shirt: tuple

    def to_dict(self) -> dict:
        return asdict(self)


_SKIN = [(0.97, 0.82, 0.71), (0.90, 0.72, 0.58), (0.78, 0.58, 0.42), (0.62, 0.43, 0.30), (0.45, 0.30, 0.21)]
_HAIR = [(0.08, 0.06, 0.05), (0.30, 0.18, 0.10), (0.55, 0.38, 0.20), (0.85, 0.70, 0.42), (0.60, 0.25, 0.10),
         (0.62, 0.62, 0.62)]
_EYES = [(0.35, 0.22, 0.12), (0.25, 0.45, 0.70), (0.30, 0.50, 0.30), (0.45, 0.45, 0.50)]


def sample_identity(seed: int) -> Identity:
    """A random face identity, deterministic for a seed."""
    rng = np.random.default_rng([seed, 7331])
    def jit(c, s=0.04):
        return tuple(float(np.clip(v + rng.uniform(-s, s), 0.0, 1.0)) for v in c)
    t = rng.uniform(0, len(_SKIN) - 1)
    i = int(t)
    skin = tuple((1 - (t - i)) * np.array(_SKIN[i]) + (t - i) * np.array(_SKIN[min(i + 1, len(_SKIN) - 1)]))
    skin = jit(skin, 0.02)
    lip = tuple(float(v) for v in np.clip(0.55 * np.array(skin) + 0.45 * np.array((0.70, 0.22, 0.25)), 0, 1))
    bg = jit(tuple(rng.uniform(0.25, 0.9, size=3)), 0.0)
    return Identity(
        seed=seed,
        face_rx=float(rng.uniform(0.19, 0.24)),
        face_ry=float(rng.uniform(0.25, 0.30)),
        skin=skin,
        hair=jit(_HAIR[int(rng.integers(len(_HAIR)))]),
        hair_style=int(rng.integers(0, 3)),
        hair_volume=float(rng.uniform(0.9, 1.15)),
        eye_color=jit(_EYES[int(rng.integers(len(_EYES)))]),
        eye_dx=float(rng.uniform(0.38, 0.48)),
        eye_r=float(rng.uniform(0.13, 0.18)),
        brow_tilt=float(rng.uniform(-0.15, 0.15)),
        lip=lip,
        mouth_w=float(rng.uniform(0.30, 0.40)),
        background=bg,
        shirt=jit(tuple(rng.uniform(0.1, 0.9, size=3)), 0.0),
    )


def sample_motion(seed: int, n_frames: int, fps: int = A.FPS, blink: bool = True) -> dict:
    """Slow head motion (sum of two sinusoids per axis) and blinks. Returns per-frame arrays (n_frames,)."""
    rng = np.random.default_rng([seed, 4242])
    t = np.arange(n_frames) / fps
    def wave(amp):
        f = rng.uniform(0.04, 0.25, size=2)
        ph = rng.uniform(0, 2 * np.pi, size=2)
        w = rng.uniform(0.4, 1.0, size=2)
        return amp * (w[0] * np.sin(2 * np.pi * f[0] * t + ph[0]) + w[1] * np.sin(2 * np.pi * f[1] * t + ph[1])) / 2
    dx, dy, roll = wave(MAX_SHIFT), wave(MAX_SHIFT * 0.6), wave(0.08)
    eye = np.ones(n_frames)
    if blink:
        prof = np.array([0.6, 0.15, 0.0, 0.2, 0.65])  # eyelid openness through a 200 ms blink at 25 fps
        k = int(rng.uniform(0.3, 3.0) * fps)
        while k < n_frames:
            seg = eye[k:k + len(prof)]
            eye[k:k + len(prof)] = np.minimum(seg, prof[: len(seg)])
            k += int(rng.exponential(3.0) * fps) + len(prof) + 5
    return {"dx": dx.astype(np.float32), "dy": dy.astype(np.float32), "roll": roll.astype(np.float32),
            "eye": eye.astype(np.float32)}


def still_motion(n_frames: int) -> dict:
    z = np.zeros(n_frames, np.float32)
    return {"dx": z, "dy": z, "roll": z, "eye": np.ones(n_frames, np.float32)}


def _ellipse(x, y, rx, ry, px):
    """Soft (anti-aliased) ellipse coverage. x, y: (T, H, W) local coords; rx, ry scalars or (T,1,1)."""
    d = torch.sqrt((x / rx) ** 2 + (y / ry) ** 2 + 1e-12)
    rmin = torch.minimum(torch.as_tensor(rx), torch.as_tensor(ry)) if torch.is_tensor(rx) or torch.is_tensor(ry) \
        else min(rx, ry)
    return torch.clamp(0.5 - (d - 1.0) * rmin / px, 0.0, 1.0)


def _paint(img, mask, color):
    c = torch.tensor(color, dtype=img.dtype).view(1, 3, 1, 1)
    m = mask.unsqueeze(1)
    return img * (1 - m) + c * m


def render_frames(ident: Identity, open_: np.ndarray, bright: np.ndarray, motion: dict,
                  height: int = HEIGHT, width: int = WIDTH) -> torch.Tensor:
    """Render T frames. open_, bright: (T,) mouth drive in [0, 1]; motion: sample_motion() dict.

    Returns frames: (T, 3, H, W) float32 in [-1, 1].
    """
    T = len(open_)
    if len(bright) != T or any(len(motion[k]) < T for k in ("dx", "dy", "roll", "eye")):
        raise ValueError(f"drive and motion arrays must all have length {T}")
    px = 1.0 / max(height, width)
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width
    Y, X = torch.meshgrid(ys, xs, indexing="ij")
    f = lambda a: torch.as_tensor(np.asarray(a[:T], np.float32)).view(T, 1, 1)
    cx, cy, roll, eye = 0.5 + f(motion["dx"]), 0.47 + f(motion["dy"]), f(motion["roll"]), f(motion["eye"])
    op, br = f(open_), f(bright)
    # Face-local coordinates (rotate by -roll around the head centre).
    xr, yr = X[None] - cx, Y[None] - cy
    c, s = torch.cos(roll), torch.sin(roll)
    x, y = c * xr + s * yr, -s * xr + c * yr
    rx, ry = ident.face_rx, ident.face_ry

    bg = torch.tensor(ident.background).view(1, 3, 1, 1)
    img = (bg * (1.05 - 0.25 * Y[None, None])).expand(T, 3, height, width).clone()
    # Shoulders and neck move with the head translation, not its roll.
    img = _paint(img, _ellipse(X[None] - cx, Y[None] - (cy + 0.58), 0.42, 0.22, px), ident.shirt)
    neck = ((torch.abs(X[None] - cx) < rx * 0.45) & (Y[None] > cy) & (Y[None] < cy + 0.45)).float()
    img = _paint(img, neck, tuple(0.85 * v for v in ident.skin))
    hv = ident.hair_volume
    if ident.hair_style == 1:  # long hair behind the face
        back = _ellipse(x, y - 0.06 * ry, rx * 1.25 * hv, ry * 1.25 * hv, px) * (y < ry * 1.1).float()
        img = _paint(img, back, ident.hair)
    face = _ellipse(x, y, rx, ry, px)
    shade = torch.clamp(1.0 - 0.12 * ((x / rx) ** 2 + (y / ry) ** 2), 0.8, 1.0).unsqueeze(1)
    skin = torch.tensor(ident.skin).view(1, 3, 1, 1) * shade
    img = img * (1 - face.unsqueeze(1)) + skin * face.unsqueeze(1)
    # Hair cap: the part of a slightly larger ellipse above a fringe line.
    if ident.hair_style != 2:
        cap = _ellipse(x, y + 0.02, rx * 1.08 * hv, ry * 1.06 * hv, px)
        fringe = torch.clamp(0.5 - (y - (-ry * 0.45 + 0.04 * torch.cos(x / rx * 3.0))) / px, 0.0, 1.0)
        img = _paint(img, cap * fringe, ident.hair)
    else:
        cap = _ellipse(x, y + 0.02, rx * 1.02, ry * 1.02, px)
        fringe = torch.clamp(0.5 - (y + ry * 0.7) / px, 0.0, 1.0)
        img = _paint(img, cap * fringe, ident.hair)
    # Eyes: white, iris, eyelid closing by scaling the vertical radius.
    er = ident.eye_r * rx
    for side in (-1.0, 1.0):
        ex, ey = x - side * ident.eye_dx * rx, y - EYE_Y * ry
        openy = torch.clamp(eye, 0.05, 1.0)
        white = _ellipse(ex, ey, er * 1.3, er * 0.8 * openy + 1e-3, px)
        img = _paint(img, white, (0.96, 0.96, 0.94))
        iris = _ellipse(ex, ey, er * 0.75, er * 0.75, px) * white
        img = _paint(img, iris, ident.eye_color)
        pupil = _ellipse(ex, ey, er * 0.35, er * 0.35, px) * white
        img = _paint(img, pupil, (0.03, 0.03, 0.03))
        lid = (1.0 - white) * _ellipse(ex, ey, er * 1.3, er * 0.8, px) * (eye < 0.9).float()
        img = _paint(img, lid, tuple(0.8 * v for v in ident.skin))
        brow_y = ey + er * 1.5 + side * ident.brow_tilt * (ex / er) * er * 0.3
        brow = _ellipse(ex, brow_y, er * 1.5, er * 0.28, px)
        img = _paint(img, brow, ident.hair)
    nose = _ellipse(x, y - 0.22 * ry, rx * 0.10, ry * 0.10, px)
    img = _paint(img, nose, tuple(0.82 * v for v in ident.skin))
    # Mouth: lips ellipse grows with opening; interior dark, teeth strip when wide open.
    mw = ident.mouth_w * rx * (0.85 + 0.35 * br)
    mx, my = x, y - MOUTH_Y * ry
    lip_h = ry * (0.045 + 0.23 * op * (1.15 - 0.4 * br))
    lips = _ellipse(mx, my, mw * 1.08, lip_h + 0.012, px)
    img = _paint(img, lips, ident.lip)
    inner_h = torch.clamp(lip_h - 0.008, min=1e-4)
    inner = _ellipse(mx, my, mw * 0.92, inner_h, px) * torch.clamp(op * 4.0, 0.0, 1.0)
    img = _paint(img, inner, (0.22, 0.04, 0.06))
    teeth = inner * torch.clamp((-(my + inner_h * 0.45)) / px + 0.5, 0.0, 1.0) * (op > 0.25).float()
    img = _paint(img, teeth, (0.92, 0.90, 0.85))
    return (img.clamp(0.0, 1.0) * 2.0 - 1.0).contiguous()


def face_box(ident: Identity, height: int = HEIGHT, width: int = WIDTH, margin: float = 0.0) -> tuple:
    """Pixel box (y0, y1, x0, x1) of the face at rest, widened by `margin` (image fraction)."""
    cx, cy = 0.5, 0.47
    y0 = int(math.floor((cy - ident.face_ry - margin) * height))
    y1 = int(math.ceil((cy + ident.face_ry + margin) * height))
    x0 = int(math.floor((cx - ident.face_rx - margin) * width))
    x1 = int(math.ceil((cx + ident.face_rx + margin) * width))
    return max(y0, 0), min(y1, height), max(x0, 0), min(x1, width)


def mouth_box(ident: Identity, height: int = HEIGHT, width: int = WIDTH) -> tuple:
    """Pixel box (y0, y1, x0, x1) that contains the mouth for any head pose of the motion model."""
    cx, cy = 0.5, 0.47 + MOUTH_Y * ident.face_ry
    hw = ident.mouth_w * ident.face_rx * 1.3 + MAX_SHIFT + 0.01
    hh_up = 0.03 + MAX_SHIFT * 0.6
    hh_dn = ident.face_ry * 0.25 + MAX_SHIFT * 0.6 + 0.01
    y0, y1 = int(math.floor((cy - hh_up) * height)), int(math.ceil((cy + hh_dn) * height))
    x0, x1 = int(math.floor((cx - hw) * width)), int(math.ceil((cx + hw) * width))
    return max(y0, 0), min(y1, height), max(x0, 0), min(x1, width)


def make_clip(identity_seed: int, clip_seed: int, n_frames: int, height: int = HEIGHT, width: int = WIDTH,
              fps: int = A.FPS, sr: int = A.SAMPLE_RATE) -> dict:
    """A talking-head training/eval clip: speech, frames and the drive signals.

    Returns {"frames": (T, 3, H, W) in [-1, 1], "wav": (T*sr/fps,), "open": (T,), "bright": (T,), "db": (T,),
    "identity": Identity, "reference": (3, H, W) neutral still of the identity}.
    """
    ident = sample_identity(identity_seed)
    wav = A.synth_speech(clip_seed, n_frames / fps + 0.1, sr)[: n_frames * sr // fps]
    drive = A.mouth_drive(wav, sr, fps, n_frames)
    motion = sample_motion(identity_seed * 100003 + clip_seed, n_frames, fps)
    frames = render_frames(ident, drive["open"], drive["bright"], motion, height, width)
    return {"frames": frames, "wav": wav, "open": drive["open"], "bright": drive["bright"], "db": drive["db"],
            "identity": ident, "reference": reference_image(ident, height, width)}


def reference_image(ident: Identity, height: int = HEIGHT, width: int = WIDTH) -> torch.Tensor:
    """Neutral still (mouth closed, eyes open, head centred). Returns (3, H, W) in [-1, 1]."""
    z = np.zeros(1, np.float32)
    return render_frames(ident, z, z + 0.3, still_motion(1), height, width)[0]
