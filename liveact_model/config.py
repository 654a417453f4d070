# LiveActConfig: sizes of the Wan2.1-I2V + audio DiT and the ConvKV memory layout; presets `official` and `tiny`.
# Field names follow the official diffusers config.json (reference-model.md §1.1) where one exists.
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LiveActConfig:
    # ---- DiT (config.json keys) ----
    dim: int = 5120
    num_heads: int = 40
    num_layers: int = 40
    ffn_dim: int = 13824
    freq_dim: int = 256
    in_dim: int = 36            # noisy latent (out_dim) + mask (vae_scale) + image latent (out_dim), or out_dim alone
    out_dim: int = 16           # latent channels
    text_len: int = 512
    eps: float = 1e-6
    # ---- fixed in the official code, configurable here ----
    patch_size: tuple = (1, 2, 2)
    text_dim: int = 4096        # 0 disables the text context (no text_embedding, no cross_attn.k/v)
    clip_dim: int = 1280        # 0 disables the CLIP image context (no img_emb, no cross_attn.k_img/v_img)
    clip_tokens: int = 257
    rope_theta: float = 10000.0
    vae_stride: tuple = (4, 8, 8)
    # ---- audio (config.json keys) ----
    audio_window: int = 5       # wav2vec frames gathered around each video frame (-2..+2)
    audio_layers: int = 12      # feature layout [frames, audio_layers, audio_channels]
    audio_channels: int = 768
    intermediate_dim: int = 512
    output_dim: int = 768       # audio token dim
    context_tokens: int = 32    # audio tokens per latent frame
    vae_scale: int = 4          # video frames per latent frame (temporal VAE stride)
    norm_output_audio: bool = True
    # ---- block-autoregressive schedule and ConvKV memory (reference-model.md §3.1, §4.2) ----
    first_block_frames: int = 6
    block_frames: int = 8
    num_sink: int = 2
    num_compressed: int = 2
    num_recent: int = 2
    compress_group: int = 5
    timesteps: tuple = (1000.0, 937.5, 833.3333333333334, 0.0)
    audio_skip_steps: tuple = (0,)   # steps whose forward skips the audio branch (official HEAD: step 0)
    model_type: str = "i2v"
    extra: dict = field(default_factory=dict, compare=False)  # unknown config.json keys, kept for round-trips

    def __post_init__(self):
        self.patch_size = tuple(int(p) for p in self.patch_size)
        self.vae_stride = tuple(int(s) for s in self.vae_stride)
        self.timesteps = tuple(float(t) for t in self.timesteps)
        self.audio_skip_steps = tuple(int(s) for s in self.audio_skip_steps)
        self.validate()

    # ---- derived sizes ----
    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def rope_split(self) -> tuple:
        # Wan's rule: temporal gets d - 4*(d//6) channels, rows and columns 2*(d//6) each (44/42/42 for d = 128).
        d = self.head_dim
        return (d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6))

    @property
    def window_frames(self) -> int:
        """Latent frame slots of the self-attention window (14 for the official layout)."""
        return self.first_block_frames + self.block_frames

    @property
    def cond_channels(self) -> int:
        """Channels of the I2V conditioning y (mask + image latent) concatenated to the noisy latent."""
        return self.in_dim - self.out_dim

    @property
    def audio_vf_entries(self) -> int:
        """Audio feature entries per later latent frame (official 8 = 3 + 2·1 + 3)."""
        half = self.audio_window // 2
        return 2 * (half + 1) + (self.vae_scale - 2)

    @property
    def num_steps(self) -> int:
        return len(self.timesteps) - 1

    @property
    def has_text(self) -> bool:
        return self.text_dim > 0

    @property
    def has_clip(self) -> bool:
        return self.clip_dim > 0

    def validate(self) -> None:
        def bad(name, msg):
            raise ValueError(f"LiveActConfig.{name}: {msg}")
        if self.dim % self.num_heads:
            bad("dim", f"expected a multiple of num_heads={self.num_heads}, got {self.dim}")
        if self.head_dim % 2 or self.head_dim < 12:
            bad("num_heads", f"head_dim={self.head_dim} must be even and >= 12 for the 3-axis RoPE")
        if sum(self.rope_split) != self.head_dim or any(s % 2 for s in self.rope_split):
            bad("num_heads", f"rope split {self.rope_split} does not tile head_dim={self.head_dim} in pairs")
        if self.cond_channels not in (0, self.out_dim + self.vae_scale):
            bad("in_dim", f"expected out_dim ({self.out_dim}) or 2*out_dim+vae_scale "
                f"({2 * self.out_dim + self.vae_scale}), got {self.in_dim}")
        if self.first_block_frames != self.num_sink + self.num_compressed + self.num_recent:
            bad("first_block_frames", f"must equal num_sink+num_compressed+num_recent="
                f"{self.num_sink + self.num_compressed + self.num_recent}, got {self.first_block_frames}")
        if self.block_frames != self.num_compressed * (self.compress_group - 1):
            bad("block_frames", f"the memory layout needs block_frames == num_compressed*(compress_group-1)="
                f"{self.num_compressed * (self.compress_group - 1)}, got {self.block_frames}")
        if self.block_frames < self.num_recent:
            bad("num_recent", f"must be <= block_frames={self.block_frames}, got {self.num_recent}")
        if len(self.timesteps) < 2 or self.timesteps[-1] != 0.0:
            bad("timesteps", f"expected a decreasing list ending at 0, got {self.timesteps}")
        if any(a <= b for a, b in zip(self.timesteps, self.timesteps[1:])):
            bad("timesteps", f"expected strictly decreasing values, got {self.timesteps}")
        if self.audio_window % 2 == 0:
            bad("audio_window", f"expected an odd window, got {self.audio_window}")
        if len(self.patch_size) != 3 or len(self.vae_stride) != 3:
            bad("patch_size", "patch_size and vae_stride must have 3 entries (t, h, w)")

    # ---- serialisation (config.json) ----
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        extra = d.pop("extra")
        d["patch_size"] = list(self.patch_size)
        d["vae_stride"] = list(self.vae_stride)
        d["timesteps"] = list(self.timesteps)
        d["audio_skip_steps"] = list(self.audio_skip_steps)
        d.update(extra)
        return d

    def to_json(self, path) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LiveActConfig":
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names}
        return cls(**known, extra=extra)

    @classmethod
    def from_json(cls, path) -> "LiveActConfig":
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def replace(self, **kw) -> "LiveActConfig":
        return dataclasses.replace(self, **kw)


# The official config.json lists only the DiT/audio keys; the rest are the official code's fixed values.
OFFICIAL_CONFIG_JSON = {
    "_class_name": "WanModel", "_name_or_path": "/wan2.1_i2v_480p_lightx2v_memoryinit", "model_type": "i2v",
    "dim": 5120, "num_heads": 40, "num_layers": 40, "ffn_dim": 13824, "freq_dim": 256, "in_dim": 36,
    "out_dim": 16, "text_len": 512, "eps": 1e-6, "audio_window": 5, "intermediate_dim": 512, "output_dim": 768,
    "context_tokens": 32, "vae_scale": 4, "norm_input_visual": True, "norm_output_audio": True,
    "weight_init": False,
}


def official() -> LiveActConfig:
    return LiveActConfig.from_dict(OFFICIAL_CONFIG_JSON)


def tiny() -> LiveActConfig:
    """A few-hundred-kB model with the official block/memory layout, for CPU tests and the embedded demo."""
    return LiveActConfig(
        dim=64, num_heads=2, num_layers=2, ffn_dim=128, freq_dim=32, in_dim=12, out_dim=4, text_len=8,
        text_dim=32, clip_dim=32, clip_tokens=5, audio_window=5, audio_layers=2, audio_channels=16,
        intermediate_dim=32, output_dim=32, context_tokens=4, vae_scale=4,
    )


PRESETS = {"official": official, "tiny": tiny}


def get_config(name_or_config) -> LiveActConfig:
    if isinstance(name_or_config, LiveActConfig):
        return name_or_config
    if name_or_config not in PRESETS:
        raise ValueError(f"unknown preset {name_or_config!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name_or_config]()
