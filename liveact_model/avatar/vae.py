# Tiny causal video autoencoder with Wan's strides (temporal 4, spatial 8): 1 + 4k frames <-> 1 + k latents.
# The decoder's temporal receptive field is 2 latents back, so decoding with the 3-latent overlap (reference-model
# §3.6) reproduces the kept frames of a full decode exactly.
from __future__ import annotations

import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

T_STRIDE = 4
S_STRIDE = 8


class _Res(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, c)
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.norm2 = nn.GroupNorm(8, c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))


class TinyVideoVAE(nn.Module):
    """encode: video (B, 3, 1+4k, H, W) in [-1, 1] -> latent (B, z, 1+k, H/8, W/8), normalised per channel.
    decode: latent (B, z, L, H/8, W/8) -> video (B, 3, 1+4(L-1), H, W) in [-1, 1].

    The first latent of every decode call stands for one frame (as in Wan's causal VAE); every other latent
    stands for 4 frames. Latent channels are normalised with stored per-channel mean/std (like the Wan wrapper).
    """

    def __init__(self, z_dim: int = 16, ch: int = 32, lat_ch: int = 96):
        super().__init__()
        self.z_dim, self.ch, self.lat_ch = z_dim, ch, lat_ch
        # Encoder, per frame: space-to-depth 4 -> conv -> stride-2 conv -> residual at H/8.
        self.e_in = nn.Conv2d(3 * 16, ch, 3, padding=1)
        self.e_down = nn.Conv2d(ch, 2 * ch, 4, stride=2, padding=1)
        self.e_res = _Res(2 * ch)
        # Temporal grouping: 4 frames' features stacked on channels; causal k=2 conv over latents.
        self.e_norm = nn.GroupNorm(8, 2 * ch)
        self.e_group = nn.Conv2d(4 * 2 * ch, lat_ch, 1)
        self.e_time = nn.Conv3d(lat_ch, lat_ch, (2, 3, 3), padding=(0, 1, 1))
        self.e_out = nn.Conv2d(lat_ch, z_dim, 1)
        # Decoder: z -> causal k=3 conv over latents -> residual -> 4 frames' features -> upsample.
        self.d_in = nn.Conv2d(z_dim, lat_ch, 1)
        self.d_time = nn.Conv3d(lat_ch, lat_ch, (3, 3, 3), padding=(0, 1, 1))
        self.d_res = _Res(lat_ch)
        self.d_norm = nn.GroupNorm(8, lat_ch)
        self.d_split = nn.Conv2d(lat_ch, 4 * 2 * ch, 1)
        self.d_norm2 = nn.GroupNorm(8, 2 * ch)
        self.d_norm3 = nn.GroupNorm(8, ch)
        self.d_res2 = _Res(2 * ch)
        self.d_up = nn.Conv2d(2 * ch, ch * 4, 3, padding=1)  # pixel shuffle 2 -> ch at H/4
        self.d_mid = nn.Conv2d(ch, ch, 3, padding=1)
        self.d_out = nn.Conv2d(ch, 3 * 16, 3, padding=1)  # pixel shuffle 4 -> 3 at H
        self.register_buffer("latent_mean", torch.zeros(z_dim))
        self.register_buffer("latent_std", torch.ones(z_dim))

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _check_video(v: torch.Tensor) -> None:
        if v.dim() != 5 or v.shape[1] != 3:
            raise ValueError(f"video must be (B, 3, T, H, W), got shape {tuple(v.shape)}")
        if (v.shape[2] - 1) % T_STRIDE:
            raise ValueError(f"video frames must be 1 + 4k, got T={v.shape[2]}")
        if v.shape[3] % S_STRIDE or v.shape[4] % S_STRIDE:
            raise ValueError(f"video height/width must be multiples of 8, got {tuple(v.shape[3:])}")

    def _norm(self, z):
        return (z - self.latent_mean.view(1, -1, 1, 1, 1)) / self.latent_std.view(1, -1, 1, 1, 1)

    def _denorm(self, z):
        return z * self.latent_std.view(1, -1, 1, 1, 1) + self.latent_mean.view(1, -1, 1, 1, 1)

    # ------------------------------------------------------------------ encode
    def encode_raw(self, video: torch.Tensor) -> torch.Tensor:
        self._check_video(video)
        B, _, T, H, W = video.shape
        # Causal first-frame padding: frame 0 is repeated 3 times so that it fills a group of 4 on its own.
        v = torch.cat([video[:, :, :1].expand(-1, -1, T_STRIDE - 1, -1, -1), video], 2)
        L = v.shape[2] // T_STRIDE
        f = v.permute(0, 2, 1, 3, 4).reshape(B * L * 4, 3, H, W)
        f = F.pixel_unshuffle(f, 4)
        f = F.silu(self.e_in(f))
        f = F.silu(self.e_norm(self.e_res(self.e_down(f))))  # (B*L*4, 2ch, H/8, W/8)
        f = f.view(B * L, 4 * 2 * self.ch, H // 8, W // 8)
        g = self.e_group(f).view(B, L, self.lat_ch, H // 8, W // 8).permute(0, 2, 1, 3, 4)
        g = F.pad(g, (0, 0, 0, 0, 1, 0))  # causal: latent j sees j-1, j
        g = F.silu(self.e_time(g)).permute(0, 2, 1, 3, 4).reshape(B * L, self.lat_ch, H // 8, W // 8)
        z = self.e_out(g).view(B, L, self.z_dim, H // 8, W // 8).permute(0, 2, 1, 3, 4)
        return z.contiguous()

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """video: (B, 3, 1+4k, H, W) or (3, 1+4k, H, W) -> normalised latent (B, z, 1+k, H/8, W/8) (batch kept)."""
        squeeze = video.dim() == 4
        if squeeze:
            video = video.unsqueeze(0)
        z = self._norm(self.encode_raw(video))
        return z[0] if squeeze else z

    # ------------------------------------------------------------------ decode
    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        B, C, L, h, w = z.shape
        g = F.silu(self.d_in(z.permute(0, 2, 1, 3, 4).reshape(B * L, C, h, w)))
        g = g.view(B, L, self.lat_ch, h, w).permute(0, 2, 1, 3, 4)
        g = F.pad(g, (0, 0, 0, 0, 2, 0))  # causal: latent j sees j-2..j
        g = F.silu(self.d_time(g)).permute(0, 2, 1, 3, 4).reshape(B * L, self.lat_ch, h, w)
        g = self.d_res(g)
        f = self.d_split(F.silu(self.d_norm(g))).view(B * L * 4, 2 * self.ch, h, w)
        f = self.d_res2(f)
        f = F.pixel_shuffle(self.d_up(F.silu(self.d_norm2(f))), 2)
        f = F.silu(self.d_norm3(self.d_mid(F.silu(f))))
        x = F.pixel_shuffle(self.d_out(f), 4)  # (B*L*4, 3, H, W)
        x = x.view(B, L * 4, 3, h * 8, w * 8).permute(0, 2, 1, 3, 4)
        # The first latent of the call decodes to one frame (the last of its 4 identical slots).
        return x[:, :, T_STRIDE - 1:]

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """latent: (B, z, L, h, w) or (z, L, h, w) -> video (B, 3, 1+4(L-1), 8h, 8w) clamped to [-1, 1]."""
        squeeze = latent.dim() == 4
        if squeeze:
            latent = latent.unsqueeze(0)
        if latent.dim() != 5 or latent.shape[1] != self.z_dim:
            raise ValueError(f"latent must be (B, {self.z_dim}, L, h, w), got shape {tuple(latent.shape)}")
        x = self.decode_raw(self._denorm(latent.to(self.latent_std.dtype))).clamp(-1.0, 1.0)
        return x[0] if squeeze else x

    def decode_block(self, latent: torch.Tensor, prev_latent: torch.Tensor | None, overlap: int = 3) -> torch.Tensor:
        """Streaming decode with the 3-latent overlap rule (reference-model §3.6).

        latent: (z, T, h, w) current block; prev_latent: (z, T', h, w) previous block or None (first block).
        Returns frames (3, n, H, W): 1 + 4(T-1) frames for the first block, 4T afterwards.
        """
        if prev_latent is None:
            return self.decode(latent)
        ctx = prev_latent[:, -overlap:]
        x = self.decode(torch.cat([ctx, latent], 1))
        return x[:, 1 + T_STRIDE * (ctx.shape[1] - 1):]

    # ------------------------------------------------------------------ IO
    def config(self) -> dict:
        return {"z_dim": self.z_dim, "ch": self.ch, "lat_ch": self.lat_ch}

    def save(self, path: str) -> None:
        from safetensors.torch import save_file
        sd = {k: v.detach().contiguous().to(torch.float16) if v.is_floating_point() and "latent_" not in k else
              v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(sd, path, metadata={"config": json.dumps(self.config()), "format": "liveact-tiny-vae"})

    @classmethod
    def load(cls, path: str, dtype=torch.float32) -> "TinyVideoVAE":
        from safetensors import safe_open
        from safetensors.torch import load_file
        if not os.path.isfile(path):
            raise FileNotFoundError(f"VAE weights not found: {path!r}")
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != "liveact-tiny-vae":
            raise ValueError(f"{path!r} is not a liveact tiny VAE file (metadata format={meta.get('format')!r})")
        m = cls(**json.loads(meta["config"]))
        sd = {k: v.to(dtype) for k, v in load_file(path).items()}
        m.load_state_dict(sd, strict=True)
        return m.eval()
