# The tiny avatar: its LiveActConfig (same model code as the official preset, small sizes), the VAE adapter for
# LiveActPipeline, conditioning from a reference image (I2V y + "CLIP" tokens from the reference latent), and
# loading of the bundled weights from liveact_model/assets/.
from __future__ import annotations

import json
import os

import torch
import torch.nn.functional as F

from ..config import LiveActConfig
from . import audio as A
from .vae import TinyVideoVAE

# Shipped inside the package (setup.py package_data), so a wheel install finds them too.
ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
VAE_FILE = "avatar_vae.safetensors"
DIT_FILE = "avatar_dit.safetensors"
HEIGHT = WIDTH = 64
Z_DIM = 16


def avatar_config(**over) -> LiveActConfig:
    """64x64 pixels -> 8x8 latents -> 4x4 = 16 tokens per latent frame; 14-frame window = 224 tokens."""
    kw = dict(dim=128, num_heads=2, num_layers=4, ffn_dim=384, freq_dim=64,
              in_dim=2 * Z_DIM + 4, out_dim=Z_DIM, text_len=1, text_dim=0,
              clip_dim=4 * Z_DIM, clip_tokens=16,  # reference latent, 2x2 patches -> 16 tokens of 64
              audio_window=5, audio_layers=1, audio_channels=A.N_MELS,
              intermediate_dim=128, output_dim=64, context_tokens=4, vae_scale=4,
              audio_skip_steps=())  # audio at every step: training always sees it (official HEAD skips step 0)
    kw.update(over)
    return LiveActConfig(**kw)


class AvatarVAE:
    """Adapter of TinyVideoVAE to the pipeline's VAE interface (encode_image / decode, batch-first)."""

    def __init__(self, vae: TinyVideoVAE):
        self.vae = vae.eval()

    @torch.no_grad()
    def encode_image(self, image: torch.Tensor, num_latent_frames: int) -> torch.Tensor:
        """image (B, 3, H, W) in [-1, 1] -> latent of [image, 4(n-1) gray frames]: (B, z, n, H/8, W/8)."""
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image: expected (B, 3, H, W), got {tuple(image.shape)}")
        B, _, H, W = image.shape
        video = torch.zeros(B, 3, 1 + 4 * (num_latent_frames - 1), H, W, dtype=image.dtype)
        video[:, :, 0] = image
        return self.vae.encode(video)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents.float())


def clip_tokens(image_latent0: torch.Tensor) -> torch.Tensor:
    """Reference latent frame (B, z, h, w) -> 2x2 patch tokens (B, h*w/4, 4z): the avatar's image context."""
    return F.pixel_unshuffle(image_latent0, 2).flatten(2).transpose(1, 2).contiguous()


def condition_from_image(vae: AvatarVAE, image: torch.Tensor, cfg: LiveActConfig) -> dict:
    """image (B, 3, H, W) -> {"image_latent": (B, z, window, h, w), "clip": (B, 16, 4z)} for pipe.start()."""
    lat = vae.encode_image(image, cfg.window_frames)
    return {"image_latent": lat, "clip": clip_tokens(lat[:, :, 0])}


def save_dit(model, path: str, meta: dict | None = None) -> None:
    from safetensors.torch import save_file
    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    md = {"config": json.dumps(model.config.to_dict()), "format": "liveact-avatar-dit"}
    if meta:
        md["train"] = json.dumps(meta)
    save_file(sd, path, metadata=md)


def load_dit(path: str, backend: str = "auto", dtype=torch.float32):
    from safetensors import safe_open
    from safetensors.torch import load_file
    from ..model import LiveActModel
    if not os.path.isfile(path):
        raise FileNotFoundError(f"avatar DiT weights not found: {path!r}")
    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != "liveact-avatar-dit":
        raise ValueError(f"{path!r} is not a liveact avatar DiT file (metadata format={meta.get('format')!r})")
    cfg = LiveActConfig.from_dict(json.loads(meta["config"]))
    m = LiveActModel(cfg, backend=backend)
    m.load_state_dict({k: v.to(dtype) for k, v in load_file(path).items()}, strict=True)
    return m.to(dtype).eval(), json.loads(meta.get("train", "{}"))


def load_avatar(assets: str = ASSETS, backend: str = "auto"):
    """Bundled (model, AvatarVAE, train_meta) from liveact_model/assets/."""
    vae = AvatarVAE(TinyVideoVAE.load(os.path.join(assets, VAE_FILE)))
    model, meta = load_dit(os.path.join(assets, DIT_FILE), backend=backend)
    return model, vae, meta
