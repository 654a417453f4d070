# Video and image IO for the avatar demo: streaming mp4 writer with an AAC audio track (PyAV), contact sheet PNG
# and reference-image loader (Pillow) with clear errors.
from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
import torch

SUPPORTED_IMAGES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
SUPPORTED_VIDEOS = (".mp4", ".mkv", ".mov")   # containers that take H.264 + AAC


def check_video_path(path: str) -> None:
    """Raises a ValueError naming the file when its extension is not a container we can write."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in SUPPORTED_VIDEOS:
        raise ValueError(f"output video {path!r}: unsupported container {ext or '(no extension)'!r}, expected one "
                         f"of {', '.join(SUPPORTED_VIDEOS)}")


def to_tchw(frames: torch.Tensor, layout: str | None = None) -> torch.Tensor:
    """(3, T, H, W) (layout "cthw", what the pipeline yields) or (T, 3, H, W) ("tchw") -> (T, 3, H, W), a view.
    layout=None infers it and refuses the ambiguous (3, 3, H, W): a block of exactly 3 frames was once read
    transposed (time taken for colour), which looked like a grey last block in the evaluation."""
    if frames.dim() != 4:
        raise ValueError(f"frames must be 4-D (3, T, H, W) or (T, 3, H, W), got shape {tuple(frames.shape)}")
    if layout is None:
        if frames.shape[0] == 3 and frames.shape[1] == 3:
            raise ValueError("frames of shape (3, 3, H, W) are ambiguous: pass layout='cthw' or 'tchw'")
        layout = "cthw" if frames.shape[0] == 3 and frames.shape[1] != 3 else "tchw"
    if layout == "cthw":
        frames = frames.permute(1, 0, 2, 3)
    elif layout != "tchw":
        raise ValueError(f"layout must be 'cthw', 'tchw' or None, got {layout!r}")
    if frames.shape[1] != 3:
        raise ValueError(f"frames need a channel axis of size 3 (layout {layout!r}), got shape {tuple(frames.shape)}")
    return frames


def _to_hwc_uint8(frames: torch.Tensor, layout: str | None = None) -> np.ndarray:
    """frames (see to_tchw) float in [-1, 1] or uint8 -> (T, H, W, 3) uint8."""
    frames = to_tchw(frames, layout)
    if frames.dtype != torch.uint8:
        frames = ((frames.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return frames.permute(0, 2, 3, 1).contiguous().cpu().numpy()


class VideoWriter:
    """Streaming mp4 writer (H.264 + optional AAC audio). Frames are encoded as they arrive.

    w = VideoWriter(path, fps, height, width, audio=wav, sr=16000, upscale=4)
    w.write(frames)  # frames: (3, T, H, W) or (T, 3, H, W) in [-1, 1], any T, called block by block
    w.close()        # muxes the audio up to the written video length
    """

    def __init__(self, path: str, fps: int, height: int, width: int, audio: np.ndarray | None = None,
                 sr: int = 16000, upscale: int = 1, crf: int = 18):
        import av
        if upscale < 1:
            raise ValueError(f"upscale must be >= 1, got {upscale}")
        check_video_path(path)
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        self.path, self.fps, self.h, self.w, self.up = path, int(fps), height, width, int(upscale)
        self.container = av.open(path, mode="w")
        self.vstream = self.container.add_stream("libx264", rate=self.fps)
        self.vstream.width, self.vstream.height = width * upscale, height * upscale
        self.vstream.pix_fmt = "yuv420p"
        self.vstream.options = {"crf": str(crf), "preset": "veryfast"}
        self.audio = None if audio is None else np.asarray(audio, np.float32)
        self.sr = sr
        self.astream = None
        if self.audio is not None:
            self.astream = self.container.add_stream("aac", rate=sr)
            self.astream.layout = "mono"
        self.n_frames = 0
        self._audio_pos = 0
        self._closed = False

    def write(self, frames: torch.Tensor, layout: str | None = None) -> None:
        """frames: one block, (3, T, H, W) (layout "cthw", the pipeline's) or (T, 3, H, W) ("tchw")."""
        import av
        arr = _to_hwc_uint8(frames, layout)
        if arr.shape[1:3] != (self.h, self.w):
            raise ValueError(f"frame size {arr.shape[1:3]} does not match the writer's ({self.h}, {self.w})")
        if self.up > 1:
            arr = arr.repeat(self.up, 1).repeat(self.up, 2)
        for img in arr:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            for pkt in self.vstream.encode(frame):
                self.container.mux(pkt)
            self.n_frames += 1
        self._write_audio_until(self.n_frames * self.sr // self.fps)

    def _write_audio_until(self, end: int) -> None:
        import av
        if self.astream is None:
            return
        end = min(end, len(self.audio))
        chunk = 1024  # AAC frame size
        while self._audio_pos + chunk <= end:
            a = self.audio[self._audio_pos:self._audio_pos + chunk]
            af = av.AudioFrame.from_ndarray(a.reshape(1, -1), format="flt", layout="mono")
            af.sample_rate = self.sr
            af.pts = self._audio_pos
            af.time_base = Fraction(1, self.sr)
            for pkt in self.astream.encode(af):
                self.container.mux(pkt)
            self._audio_pos += chunk

    def close(self) -> None:
        import av
        if self._closed:
            return
        self._closed = True
        if self.astream is not None:
            end = min(len(self.audio), self.n_frames * self.sr // self.fps)
            if end > self._audio_pos:  # pad the last partial AAC frame with silence
                a = np.zeros(1024, np.float32)
                a[: end - self._audio_pos] = self.audio[self._audio_pos:end]
                af = av.AudioFrame.from_ndarray(a.reshape(1, -1), format="flt", layout="mono")
                af.sample_rate, af.pts, af.time_base = self.sr, self._audio_pos, Fraction(1, self.sr)
                for pkt in self.astream.encode(af):
                    self.container.mux(pkt)
            for pkt in self.astream.encode(None):
                self.container.mux(pkt)
        for pkt in self.vstream.encode(None):
            self.container.mux(pkt)
        self.container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_video(path: str) -> tuple[np.ndarray, int]:
    """Read an mp4 back (for tests/eval): frames (T, H, W, 3) uint8 and the number of audio samples."""
    import av
    frames, n_audio = [], 0
    with av.open(path) as c:
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
    with av.open(path) as c:
        if c.streams.audio:
            for f in c.decode(audio=0):
                n_audio += f.samples
    return np.stack(frames), n_audio


def contact_sheet(path: str, frames: list[torch.Tensor], cols: int = 8, upscale: int = 2,
                  labels: list[str] | None = None) -> None:
    """Save a grid PNG. frames: list of (3, H, W) in [-1, 1] (or uint8)."""
    from PIL import Image, ImageDraw
    if not frames:
        raise ValueError("contact_sheet needs at least one frame")
    arr = _to_hwc_uint8(torch.stack([f if f.dim() == 3 else f[:, 0] for f in frames]), "tchw")
    n, h, w, _ = arr.shape
    cols = min(cols, n)
    rows = (n + cols - 1) // cols
    lab = 10 if labels else 0
    sheet = Image.new("RGB", (cols * w * upscale, rows * (h * upscale + lab)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i in range(n):
        r, c = divmod(i, cols)
        im = Image.fromarray(arr[i]).resize((w * upscale, h * upscale), Image.NEAREST)
        y = r * (h * upscale + lab)
        sheet.paste(im, (c * w * upscale, y + lab))
        if labels:
            draw.text((c * w * upscale + 2, y), labels[i], fill=(0, 0, 0))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    sheet.save(path)


def load_image(path: str, height: int, width: int) -> torch.Tensor:
    """Load an image, scale to cover (height, width) keeping the ratio, centre-crop (reference-model §1.3).

    Returns (3, height, width) float in [-1, 1].
    """
    from PIL import Image, UnidentifiedImageError
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path!r}")
    ext = os.path.splitext(path)[1].lower()
    if ext not in SUPPORTED_IMAGES:
        raise ValueError(f"unsupported image format {ext!r} for {path!r}; expected one of {SUPPORTED_IMAGES}")
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.load()
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read image {path!r}: {e}") from e
    w0, h0 = im.size
    s = max(width / w0, height / h0)
    nw, nh = max(width, round(w0 * s)), max(height, round(h0 * s))
    im = im.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - width) // 2, (nh - height) // 2
    im = im.crop((left, top, left + width, top + height))
    x = torch.from_numpy(np.asarray(im, np.uint8).copy()).permute(2, 0, 1).float()
    return x / 127.5 - 1.0


def save_image(path: str, img: torch.Tensor) -> None:
    """img: (3, H, W) in [-1, 1] -> PNG."""
    from PIL import Image
    arr = _to_hwc_uint8(img.unsqueeze(1), "cthw")[0]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(arr).save(path)
