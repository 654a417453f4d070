# In-memory pools of rendered talking-head clips (frames as uint8, audio features, mouth drive) for training the
# tiny VAE and DiT and for evaluation; identities and clips come from the deterministic train/eval seed split.
from __future__ import annotations

import numpy as np
import torch

from . import audio as A
from . import render as R


class ClipPool:
    """n_clips clips of n_frames frames each, rendered once.

    frames: (N, T, 3, H, W) uint8; feats: (N, T, 1, n_mels); open/db: (N, T); wavs: list of (T*sr/fps,);
    identities: list of Identity; refs: (N, 3, H, W) float in [-1, 1]; mouth_boxes: list of (y0, y1, x0, x1).
    """

    def __init__(self, n_clips: int, n_frames: int, split: str = "train", start: int = 0,
                 height: int = R.HEIGHT, width: int = R.WIDTH, progress: bool = False):
        ids = R.split_seeds("identity", split, n_clips, start)
        clips = R.split_seeds("clip", split, n_clips, start + 1000)
        self.n_frames, self.height, self.width = n_frames, height, width
        self.frames = torch.empty(n_clips, n_frames, 3, height, width, dtype=torch.uint8)
        self.feats, self.open, self.db, self.wavs, self.identities, self.mouth_boxes, refs = [], [], [], [], [], [], []
        it = range(n_clips)
        if progress:
            from tqdm import tqdm
            it = tqdm(it, desc=f"render {split} clips", leave=False)
        for i in it:
            c = R.make_clip(ids[i], clips[i], n_frames, height, width)
            self.frames[i] = to_uint8(c["frames"])
            self.feats.append(A.logmel_features(c["wav"], n_frames=n_frames))
            self.open.append(torch.from_numpy(c["open"]))
            self.db.append(torch.from_numpy(c["db"]))
            self.wavs.append(c["wav"])
            self.identities.append(c["identity"])
            self.mouth_boxes.append(R.mouth_box(c["identity"], height, width))
            refs.append(c["reference"])
        self.feats = torch.stack(self.feats)
        self.open = torch.stack(self.open)
        self.db = torch.stack(self.db)
        self.refs = torch.stack(refs)

    def __len__(self) -> int:
        return self.frames.shape[0]

    def video(self, i: int, start: int, n: int) -> torch.Tensor:
        """Clip i, frames [start, start+n) as float (3, n, H, W) in [-1, 1]."""
        return from_uint8(self.frames[i, start:start + n]).permute(1, 0, 2, 3)

    def mouth_weight(self, i: int, boost: float = 4.0) -> torch.Tensor:
        """(H, W) loss weight: 1 everywhere, 1 + boost inside the mouth box (where lip sync is decided)."""
        w = torch.ones(self.height, self.width)
        y0, y1, x0, x1 = self.mouth_boxes[i]
        w[y0:y1, x0:x1] += boost
        return w


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8, any shape."""
    return ((frames.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)


def from_uint8(frames: torch.Tensor) -> torch.Tensor:
    return frames.float() / 127.5 - 1.0
