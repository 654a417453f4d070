# Streaming Neighbor-Forcing inference: samplers, audio windowing, I2V conditioning, the block loop over a
# ConvKVMemory, and VAE decoding with the 3-latent overlap (reference-model.md §1.3, §3, §6).
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional, Protocol, Sequence

import torch

from .config import LiveActConfig
from .memory import ConvKVMemory
from .model import LiveActModel


# ----------------------------------------------------------------------------------------------------------
# samplers (usable without the pipeline)

def sampler_step(x, v, t, t_next, *, method: str = "x0", noise: Optional[torch.Tensor] = None,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One update from timestep t to t_next (both in [0, 1000]); Wan flow matching x_t = (1−σ)x0 + σε, v ≈ ε − x0.
    method "x0" (official HEAD, §3.2): x0 = x − σv, then x' = (1−σ')x0 + σ'ε with fresh noise ε (drawn from
    `generator` unless `noise` is given; none is drawn when σ' = 0). method "euler" (demo.py / pre-05-27):
    x' = x + (σ' − σ)v. x, v: any shape; computed in fp32, returned in x.dtype."""
    s, s2 = float(t) / 1000.0, float(t_next) / 1000.0
    xf, vf = x.float(), v.float()
    if method == "euler":
        return (xf + (s2 - s) * vf).to(x.dtype)
    if method != "x0":
        raise ValueError(f"sampler method must be 'x0' or 'euler', got {method!r}")
    x0 = xf - s * vf
    if s2 == 0.0:
        return x0.to(x.dtype)
    if noise is None:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32)
    return ((1.0 - s2) * x0 + s2 * noise.float()).to(x.dtype)


def sample(denoise: Callable[[torch.Tensor, float, int], torch.Tensor], x: torch.Tensor,
           timesteps: Sequence[float], *, method: str = "x0",
           generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Run the sampler: x starts as pure noise at timesteps[0]; denoise(x, t, step) returns v."""
    for i in range(len(timesteps) - 1):
        v = denoise(x, timesteps[i], i)
        x = sampler_step(x, v, timesteps[i], timesteps[i + 1], method=method, generator=generator)
    return x


# ----------------------------------------------------------------------------------------------------------
# geometry, conditioning, audio

def latent_size(width: int, height: int, config: LiveActConfig) -> tuple:
    """Pixel (width, height) -> latent (h8, w8); the pixel size must be a multiple of vae_stride·patch (16)."""
    mh = config.vae_stride[1] * config.patch_size[1]
    mw = config.vae_stride[2] * config.patch_size[2]
    if width <= 0 or height <= 0 or width % mw or height % mh:
        raise ValueError(f"resolution {width}x{height}: width must be a positive multiple of {mw} and height "
                         f"of {mh}")
    return height // config.vae_stride[1], width // config.vae_stride[2]


def make_i2v_condition(image_latent: torch.Tensor, config: LiveActConfig) -> torch.Tensor:
    """image_latent: (B, z, window_frames, h8, w8), the VAE latent of [reference image, gray frames] (§1.3).
    Returns y = cat[mask, latent]: (B, vae_scale + z, window_frames, h8, w8), mask 1 on latent frame 0 only."""
    if image_latent.dim() == 4:
        image_latent = image_latent[None]
    B, z, W, h, w = image_latent.shape
    if z != config.out_dim or W != config.window_frames:
        raise ValueError(f"image_latent: expected (B, {config.out_dim}, {config.window_frames}, h, w), got "
                         f"{tuple(image_latent.shape)}")
    msk = torch.zeros(B, config.vae_scale, W, h, w, dtype=image_latent.dtype, device=image_latent.device)
    msk[:, :, 0] = 1
    return torch.cat([msk, image_latent], dim=1)


def audio_windows(features: torch.Tensor, frames: range, window: int, total: Optional[int] = None) -> torch.Tensor:
    """features: (B, S, L, C) one feature per video frame -> (B, len(frames), window, L, C): frame f gathers
    clamp(f + [-window//2 .. window//2], 0, total-1) (§6 step 4; the clamp replicates the edges)."""
    S = features.shape[1] if total is None else total
    half = window // 2
    idx = torch.arange(frames.start, frames.stop, device=features.device)[:, None] + \
        torch.arange(-half, half + 1, device=features.device)[None, :]
    idx = idx.clamp(0, S - 1)
    return features[:, idx]


class VAE(Protocol):
    """Video VAE interface (Wan2.1 VAE or the tiny one): latents (B, z, T, h8, w8) <-> frames in [-1, 1]."""

    def encode_image(self, image: torch.Tensor, num_latent_frames: int) -> torch.Tensor:
        """image (B, 3, H, W) in [-1, 1] -> latent of [image, (num_latent_frames−1)·4 gray frames]."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, z, T, h8, w8) -> (B, 3, 1 + 4·(T−1), H, W), causal in time."""


class AudioEncoder(Protocol):
    def encode_audio(self, waveform: torch.Tensor, sample_rate: int, fps: float) -> torch.Tensor:
        """mono waveform (N,) -> features (S, layers, channels), one per video frame at fps."""


class Wav2Vec2Encoder:
    """Adapter for a local transformers Wav2Vec2 folder (e.g. chinese-wav2vec2-base): hidden states of all layers
    resampled to one feature per video frame (§6, without the tempo trick). Optional dependency."""

    def __init__(self, path: str, device="cpu"):
        try:
            from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model
        except ImportError as e:
            raise ImportError("Wav2Vec2Encoder needs the `transformers` package (pip install transformers); "
                              f"it is not installed ({e})") from e
        import os
        if not os.path.isdir(path):
            raise FileNotFoundError(f"Wav2Vec2Encoder: model folder {path!r} does not exist")
        self.fe = Wav2Vec2FeatureExtractor.from_pretrained(path, local_files_only=True)
        self.model = Wav2Vec2Model.from_pretrained(path, local_files_only=True).to(device).eval()
        self.device = device

    @torch.no_grad()
    def encode_audio(self, waveform, sample_rate, fps):
        import torch.nn.functional as F
        if sample_rate != 16000:
            raise ValueError(f"Wav2Vec2Encoder: expected 16 kHz audio, got {sample_rate} Hz (resample first)")
        iv = self.fe(waveform.cpu().numpy(), sampling_rate=16000, return_tensors="pt").input_values.to(self.device)
        hs = self.model(iv, output_hidden_states=True).hidden_states[1:]        # layers x (1, N50, C)
        feats = torch.stack(hs, dim=2)[0]                                        # (N50, L, C)
        n = int(len(waveform) / 16000 * fps)
        feats = F.interpolate(feats.permute(1, 2, 0), size=n, mode="linear", align_corners=True)
        return feats.permute(2, 0, 1).contiguous()


class WanVAEAdapter:
    """Adapter for the Wan2.1 VAE of the official Wan repository (`wan.modules.vae.WanVAE`, checkpoint
    `Wan2.1_VAE.pth`), if installed. Optional dependency; latents are normalised inside WanVAE (§1.3)."""

    def __init__(self, vae_pth: str, device="cpu"):
        try:
            from wan.modules.vae import WanVAE
        except ImportError as e:
            raise ImportError("WanVAEAdapter needs the Wan2.1 code (`wan` package with wan.modules.vae, from the "
                              f"Wan2.1 repository) on the Python path; it is not installed ({e})") from e
        import os
        if not os.path.isfile(vae_pth):
            raise FileNotFoundError(f"WanVAEAdapter: VAE checkpoint {vae_pth!r} does not exist")
        self.vae = WanVAE(vae_pth=vae_pth, device=device)
        self.device = device

    @torch.no_grad()
    def encode_image(self, image, num_latent_frames):
        # [reference image, (T-1)·4 gray (zero) frames] -> (B, 16, T, h8, w8), as generate.py builds y
        B, C, H, W = image.shape
        frames = 1 + (num_latent_frames - 1) * 4
        vids = [torch.cat([image[b][:, None], image.new_zeros(C, frames - 1, H, W)], dim=1) for b in range(B)]
        return torch.stack(self.vae.encode(vids))

    @torch.no_grad()
    def decode(self, latents):
        return torch.stack(self.vae.decode(list(latents))).clamp(-1, 1)


@dataclass
class BlockOutput:
    index: int                    # block index in the stream
    latents: torch.Tensor         # (B, z, T, h8, w8) final (x0) latents of the block
    frame_start: int              # first video frame this block covers
    num_frames: int               # video frames of this block (21 for block 0, 32 after)
    valid_frames: int             # frames backed by real audio (< num_frames only in a padded last block)


# ----------------------------------------------------------------------------------------------------------
# the pipeline

class LiveActPipeline:
    """Block-autoregressive streaming generation on a LiveActModel + ConvKVMemory.

    pipe = LiveActPipeline(model); pipe.start(y=..., text=..., clip=...)
    for block in pipe.stream(audio_features): ...      # latents as soon as each block is done
    for frames in pipe.decode_stream(pipe.stream(audio), vae): ...   # decoded frames, never all in memory
    """

    def __init__(self, model: LiveActModel, memory: Optional[ConvKVMemory] = None, *,
                 timesteps: Optional[Sequence[float]] = None, sampler: str = "x0", audio_cfg: float = 1.0,
                 audio_skip_steps: Optional[Sequence[int]] = None, seed: int = 42, backend: Optional[str] = None,
                 memory_dtype=None, memory_mode: str = "token", use_v_proj: bool = False):
        self.model = model
        cfg = self.config = model.config
        self.timesteps = tuple(float(t) for t in (timesteps or cfg.timesteps))
        if len(self.timesteps) < 2 or self.timesteps[-1] != 0 or any(
                a <= b for a, b in zip(self.timesteps, self.timesteps[1:])):
            raise ValueError(f"timesteps: expected strictly decreasing values ending at 0, got {self.timesteps}")
        if sampler not in ("x0", "euler"):
            raise ValueError(f"sampler must be 'x0' or 'euler', got {sampler!r}")
        self.sampler, self.audio_cfg, self.seed = sampler, float(audio_cfg), seed
        self.num_steps = len(self.timesteps) - 1
        self.audio_skip = set(cfg.audio_skip_steps if audio_skip_steps is None else audio_skip_steps)
        self.backend = backend
        mdt = memory_dtype or model.dtype
        if memory is None:
            memory = ConvKVMemory(cfg, steps=range(self.num_steps), dtype=mdt, device=model.device,
                                  mode=memory_mode, use_v_proj=use_v_proj)
        missing = set(range(self.num_steps)) - set(memory.steps)
        if missing:
            raise ValueError(f"memory has no cache for denoising steps {sorted(missing)}")
        self.memory = memory
        self.cfg_steps = [i for i in range(self.num_steps) if i not in self.audio_skip]
        # audio CFG's null pass has its own caches, only for the steps where it runs (official allocates all)
        self.null_memory = None
        if self.audio_cfg != 1.0 and self.cfg_steps:
            self.null_memory = ConvKVMemory(cfg, steps=self.cfg_steps, dtype=memory.dtype, device=memory.device,
                                            mode=memory.mode, use_v_proj=memory.use_v_proj, layout=memory.layout)
        self._started = False

    # ---- stream set-up ----
    def reset(self):
        """Forget the stream (memory counters, RNG); buffers stay allocated."""
        self.memory.reset()
        if self.null_memory is not None:
            self.null_memory.reset()
        self.generator = torch.Generator(device=self.model.device).manual_seed(self.seed)
        self._block = 0
        self._prev_latent = None

    @torch.no_grad()
    def start(self, *, y=None, image_latent=None, image=None, vae: Optional[VAE] = None, text=None, clip=None,
              edit_prompts: Optional[Sequence] = None, seed: Optional[int] = None):
        """Begin a stream. Conditioning (§1.3): y (B, 4+z, window_frames, h8, w8), or image_latent (B, z, window,
        h8, w8) from which the mask is built, or image (B, 3, H, W) in [-1, 1] encoded with vae.encode_image.
        text: (B, L_txt, text_dim) T5 features; clip: (B, clip_tokens, clip_dim).
        edit_prompts: [(first_block, last_block, text_features), ...], inclusive block ranges; for a block
        inside a range the text context is replaced by that prompt's (first match wins, §3.7)."""
        cfg, m = self.config, self.model
        if seed is not None:
            self.seed = seed
        if cfg.cond_channels and y is None:
            if image_latent is None:
                if image is None or vae is None:
                    raise ValueError("start: give y, image_latent, or image together with vae")
                if image.dim() != 4 or image.shape[1] != 3:
                    raise ValueError(f"image: expected (B, 3, H, W) in [-1, 1], got {tuple(image.shape)}")
                latent_size(image.shape[3], image.shape[2], cfg)
                image_latent = vae.encode_image(image, cfg.window_frames)
            y = make_i2v_condition(image_latent, cfg)
        if y is not None:
            if y.device != m.device:
                raise ValueError(f"y: on {y.device}, model on {m.device}")
            if y.shape[2] != cfg.window_frames:
                raise ValueError(f"y: expected {cfg.window_frames} latent frames, got {y.shape[2]}")
            self.latent_hw = tuple(y.shape[3:])
        self.cond = m.prepare_condition(y=y, text=text, clip=clip, backend=self.backend)
        self.batch = self.cond.y.shape[0] if self.cond.y is not None else 1
        self.edits = []
        for rng in edit_prompts or []:
            a, b, feats = rng
            self.edits.append((int(a), int(b), m.prepare_condition(y=y, text=feats, clip=clip, backend=self.backend)))
        # the null-audio tokens are a constant (zeroed features through audio_proj, §3.3): computed once
        self._null_audio = {}
        self.reset()
        self._started = True

    def _cond_for(self, n):
        for a, b, c in self.edits:
            if a <= n <= b:
                return c
        return self.cond

    # ---- block geometry ----
    def block_frames(self, n: int) -> tuple:
        """(first video frame, number of video frames) of block n: 21 then 32 for the official layout."""
        cfg = self.config
        f0 = (cfg.first_block_frames - 1) * cfg.vae_scale + 1
        if n == 0:
            return 0, f0
        bv = cfg.block_frames * cfg.vae_scale
        return f0 + (n - 1) * bv, bv

    def num_blocks(self, num_video_frames: int) -> int:
        """Blocks needed to cover num_video_frames (the official count can fall 11 frames short, §12.12)."""
        f0, bv = self.block_frames(0)[1], self.config.block_frames * self.config.vae_scale
        return 1 + max(0, math.ceil((num_video_frames - f0) / bv))

    def _check_audio(self, feats):
        cfg = self.config
        if not isinstance(feats, torch.Tensor):
            raise TypeError(f"audio features: expected a torch.Tensor, got {type(feats).__name__}")
        if not feats.is_floating_point():
            raise TypeError(f"audio features: expected a floating dtype, got {feats.dtype}")
        if feats.dim() == 3:
            feats = feats[None]
        exp = (cfg.audio_layers, cfg.audio_channels)
        if feats.dim() != 4 or tuple(feats.shape[2:]) != exp:
            raise ValueError(f"audio features: expected (frames, {exp[0]}, {exp[1]}) or (B, frames, {exp[0]}, "
                             f"{exp[1]}), got {tuple(feats.shape)}")
        if feats.device != self.model.device:
            raise ValueError(f"audio features: on {feats.device}, model on {self.model.device}")
        if feats.shape[0] not in (1, self.batch):
            raise ValueError(f"audio features: batch {feats.shape[0]} does not match the condition batch {self.batch}")
        return feats.expand(self.batch, *feats.shape[1:])

    # ---- generation ----
    def stream(self, audio_features, num_blocks: Optional[int] = None) -> Iterator[BlockOutput]:
        """audio_features: (S, layers, channels) or (B, S, layers, channels), one feature per video frame, or an
        iterable of such chunks (streamed input: a block starts once its frames + the window look-ahead exist).
        Yields BlockOutput per block. Audio shorter than the first block is padded (edge-replicated) with a
        warning; the last block is padded to a full block and reports valid_frames."""
        if not self._started:
            raise RuntimeError("LiveActPipeline.stream: call start(...) first")
        cfg = self.config
        half = cfg.audio_window // 2
        if isinstance(audio_features, torch.Tensor):
            chunks, feats, done = iter(()), self._check_audio(audio_features), True
        else:
            chunks, feats, done = iter(audio_features), None, False
        n = self._block
        base = 0                                            # absolute video frame of feats[:, 0]
        while num_blocks is None or n < num_blocks:
            start, nf = self.block_frames(n)
            need = start + nf + half                        # frames incl. look-ahead for the windows
            while not done and (feats is None or base + feats.shape[1] < need):
                try:
                    c = self._check_audio(next(chunks))
                    feats = c if feats is None else torch.cat([feats, c], dim=1)
                except StopIteration:
                    done = True
            S = 0 if feats is None else base + feats.shape[1]
            if S == 0:
                raise ValueError("audio features: empty")
            if start >= S and num_blocks is None:
                return
            if n == 0 and S < nf:
                warnings.warn(f"audio has {S} frames, shorter than the first block ({nf} frames): padded by "
                              "repeating the last feature", stacklevel=2)
            valid = max(0, min(nf, S - start))
            # positions relative to feats; the lower clamp only matters while base == 0
            windows = audio_windows(feats, range(start - base, start - base + nf), cfg.audio_window,
                                    total=S - base)
            yield self._generate_block(n, windows, start, nf, valid)
            n += 1
            # streamed input: drop features no later window can reach, so an hour-long stream stays flat
            keep_from = self.block_frames(n)[0] - half
            if not done and keep_from > base:
                feats = feats[:, keep_from - base:]
                base = keep_from

    @torch.no_grad()
    def _generate_block(self, n, windows, start, nf, valid) -> BlockOutput:
        cfg, m, be = self.config, self.model, self.backend
        T = cfg.first_block_frames if n == 0 else cfg.block_frames
        h, w = self.latent_hw
        cond = self._cond_for(n)
        tokens = m.audio_tokens(windows, has_first=(n == 0), backend=be)
        actx = m.prepare_audio(tokens, backend=be)
        nctx = None
        if self.null_memory is not None:
            key = n == 0
            if key not in self._null_audio:
                self._null_audio[key] = m.prepare_audio(
                    m.audio_tokens(torch.zeros_like(windows), has_first=key, backend=be), backend=be)
            nctx = self._null_audio[key]
        g = self.generator
        x = torch.randn((self.batch, cfg.out_dim, T, h, w), generator=g, device=m.device, dtype=torch.float32)
        for i in range(self.num_steps):
            t = self.timesteps[i]
            audio_on = i not in self.audio_skip
            v = m.forward_block(x, t, cond, self.memory, step=i, block_index=n,
                                audio=actx if audio_on else None, backend=be).float()
            if nctx is not None and audio_on:
                v0 = m.forward_block(x, t, cond, self.null_memory, step=i, block_index=n, audio=nctx,
                                     backend=be).float()
                v = v0 + self.audio_cfg * (v - v0)
            x = sampler_step(x, v, t, self.timesteps[i + 1], method=self.sampler, generator=g)
        self._block = n + 1
        return BlockOutput(n, x, start, nf, valid)

    # ---- decoding ----
    def decode_stream(self, blocks: Iterable[BlockOutput], vae: VAE, overlap: int = 3) -> Iterator[torch.Tensor]:
        """Decode blocks as they arrive (§3.6): block 0 alone; block n >= 1 with the previous block's last
        `overlap` latents as warm-up context, dropping their 1 + (overlap−1)·vae_scale re-decoded frames.
        Yields (B, 3, frames, H, W) in [-1, 1] per block, trimmed to the frames backed by audio."""
        prev = None
        vs = self.config.vae_scale
        for b in blocks:
            if prev is None:
                frames = vae.decode(b.latents)
            else:
                frames = vae.decode(torch.cat([prev[:, :, -overlap:], b.latents], dim=2))
                frames = frames[:, :, 1 + (overlap - 1) * vs:]
            if frames.shape[2] != b.num_frames:
                raise ValueError(f"VAE decode returned {frames.shape[2]} frames for block {b.index}, "
                                 f"expected {b.num_frames}")
            prev = b.latents
            yield frames[:, :, :b.valid_frames]
