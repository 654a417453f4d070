# The LiveAct DiT: Wan2.1-I2V blocks + MultiTalk-style audio cross-attention + ConvKV memory hooks, in one file.
# Module and parameter names match the official state dict (reference-model.md §1.2); every attention, norm,
# modulation, RoPE and compression call goes through liveact_kernels (backend selectable per model).
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

import liveact_kernels as ops
from .config import LiveActConfig, get_config


# ----------------------------------------------------------------------------------------------------------
# small pieces

def sinusoidal_embedding(dim: int, t: torch.Tensor) -> torch.Tensor:
    """Wan's float64 timestep embedding. t: (n,) -> (n, dim) = cat(cos, sin) of t·10000^(-k/(dim/2))."""
    half = dim // 2
    t = t.to(torch.float64)
    sinusoid = torch.outer(t, torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half))
    return torch.cat([torch.cos(sinusoid), torch.sin(sinusoid)], dim=1)


class RMSNorm(nn.Module):
    """RMSNorm over the full last dim (the q/k norm runs over all heads' channels before the head split)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, backend: str = "auto") -> torch.Tensor:
        return ops.rms_norm(x, self.weight, eps=self.eps, backend=backend)


def layer_norm(x: torch.Tensor, ln: Optional[nn.LayerNorm], eps: float, backend: str) -> torch.Tensor:
    """LayerNorm in fp32 through the kernel's modulate op with zero shift/scale. x: (B, L, D)."""
    zero = torch.zeros(x.shape[0], 1, x.shape[-1], dtype=torch.float32, device=x.device)
    w = None if ln is None else ln.weight
    b = None if ln is None else ln.bias
    return ops.adaln_modulate(x, zero, zero, eps=eps, norm="layer", weight=w, bias=b, backend=backend)


def rope_positions(block_index: int, num_frames: int, config: LiveActConfig, device) -> torch.Tensor:
    """Temporal RoPE positions of a block's frames: 0.. for block 0, the window's last slots after (§4.3)."""
    start = 0 if block_index == 0 else config.first_block_frames
    return torch.arange(start, start + num_frames, device=device)


# ----------------------------------------------------------------------------------------------------------
# attention modules

class SelfAttention(nn.Module):
    def __init__(self, cfg: LiveActConfig):
        super().__init__()
        d, g = cfg.dim, cfg.compress_group
        self.num_heads, self.head_dim, self.cfg = cfg.num_heads, cfg.head_dim, cfg
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.norm_q, self.norm_k = RMSNorm(d, cfg.eps), RMSNorm(d, cfg.eps)
        # depthwise Conv1d(k=s=group) in the checkpoint's layout [D, 1, group]; memory_proj_v is unused by the
        # official code (§12.1) but kept so the checkpoint loads; ConvKVMemory(use_v_proj=True) selects it.
        self.memory_proj_k = nn.Conv1d(d, d, g, stride=g, groups=d, bias=False)
        self.memory_proj_v = nn.Conv1d(d, d, g, stride=g, groups=d, bias=False)

    def forward(self, x, *, grid, positions, memory, step, layer, block_index, write, backend):
        """x: (B, S, D) with S = T·h·w; returns (B, S, D)."""
        B, S, _ = x.shape
        H, Dh = self.num_heads, self.head_dim
        q = self.norm_q(self.q(x), backend).view(B, S, H, Dh)
        k = self.norm_k(self.k(x), backend).view(B, S, H, Dh)
        v = self.v(x).view(B, S, H, Dh)
        # a memory with the official raw layout (ConvKVMemory(layout="raw")) takes q and k un-rotated and
        # applies RoPE itself at attention time (the slot positions change as frames move); otherwise rotate
        # both here at the block's slot positions (layout="rotated" keeps keys already rotated)
        raw = memory is not None and getattr(memory, "layout", "rotated") == "raw"
        if not raw:
            q = ops.rope3d(q, grid=grid, frame_positions=positions, theta=self.cfg.rope_theta,
                           split=self.cfg.rope_split, backend=backend)
            k = ops.rope3d(k, grid=grid, frame_positions=positions, theta=self.cfg.rope_theta,
                           split=self.cfg.rope_split, backend=backend)
        if memory is None:
            out = ops.attention(q, k, v, tensor_layout="NHD", backend=backend)
        else:
            extra = {"q_positions": positions} if raw else {}
            out = memory.attend(q, k, v, step=step, layer=layer, block_index=block_index, grid=grid,
                                weight_k=self.memory_proj_k.weight, weight_v=self.memory_proj_v.weight,
                                write=write, backend=backend, **extra)
        return self.o(out.flatten(2))


class I2VCrossAttention(nn.Module):
    """Text + CLIP-image cross-attention as two softmaxes summed (§5.4)."""

    def __init__(self, cfg: LiveActConfig):
        super().__init__()
        d = cfg.dim
        self.num_heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.q, self.o = nn.Linear(d, d), nn.Linear(d, d)
        self.norm_q = RMSNorm(d, cfg.eps)
        self.has_text, self.has_clip = cfg.has_text, cfg.has_clip
        if cfg.has_text:
            self.k, self.v = nn.Linear(d, d), nn.Linear(d, d)
            self.norm_k = RMSNorm(d, cfg.eps)
        if cfg.has_clip:
            self.k_img, self.v_img = nn.Linear(d, d), nn.Linear(d, d)
            self.norm_k_img = RMSNorm(d, cfg.eps)

    def context_kv(self, ctx_img, ctx_txt, backend):
        """ctx_*: (B, L, D) -> dict of (B, L, H, Dh); computed once per stream/edit prompt, not per step."""
        kv = {}
        if self.has_text:
            B, L, _ = ctx_txt.shape
            kv["k"] = self.norm_k(self.k(ctx_txt), backend).view(B, L, self.num_heads, self.head_dim)
            kv["v"] = self.v(ctx_txt).view(B, L, self.num_heads, self.head_dim)
        if self.has_clip:
            B, L, _ = ctx_img.shape
            kv["k_img"] = self.norm_k_img(self.k_img(ctx_img), backend).view(B, L, self.num_heads, self.head_dim)
            kv["v_img"] = self.v_img(ctx_img).view(B, L, self.num_heads, self.head_dim)
        return kv

    def forward(self, x, kv, backend):
        B, S, _ = x.shape
        q = self.norm_q(self.q(x), backend).view(B, S, self.num_heads, self.head_dim)
        out = None
        if self.has_text:
            out = ops.attention(q, kv["k"], kv["v"], tensor_layout="NHD", backend=backend)
        if self.has_clip:
            o_img = ops.attention(q, kv["k_img"], kv["v_img"], tensor_layout="NHD", backend=backend)
            out = o_img if out is None else out + o_img
        return self.o(out.flatten(2))


class AudioCrossAttention(nn.Module):
    """Per-latent-frame cross-attention to that frame's audio tokens (§5.5; MultiTalk SingleStreamAttention)."""

    def __init__(self, cfg: LiveActConfig):
        super().__init__()
        d = cfg.dim
        self.num_heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.q_linear = nn.Linear(d, d)
        self.kv_linear = nn.Linear(cfg.output_dim, 2 * d)
        self.proj = nn.Linear(d, d)

    def audio_kv(self, tokens):
        """tokens: (B, T, Na, C) -> k, v: (B, T, Na, H, Dh). K is the first D outputs of kv_linear, V the next D."""
        B, T, Na, _ = tokens.shape
        kv = self.kv_linear(tokens).view(B, T, Na, 2, self.num_heads, self.head_dim)
        return kv[:, :, :, 0], kv[:, :, :, 1]

    def forward(self, x, kv, *, frame_len, zero_first_frame, backend):
        B, S, _ = x.shape
        q = self.q_linear(x).view(B, S, self.num_heads, self.head_dim)
        o = ops.audio_cross_attention(q, kv[0], kv[1], frame_len=frame_len, frame_offset=0, backend=backend)
        o = self.proj(o.flatten(2))
        if zero_first_frame:
            # the official code zeroes the module output (after proj, whose bias is non-zero) for the
            # reference frame; a mask keeps this autograd-friendly
            keep = torch.ones(1, S, 1, dtype=o.dtype, device=o.device)
            keep[:, :frame_len] = 0
            o = o * keep
        return o


# ----------------------------------------------------------------------------------------------------------
# block, head, embedders

class DiTBlock(nn.Module):
    def __init__(self, cfg: LiveActConfig):
        super().__init__()
        d = cfg.dim
        self.eps = cfg.eps
        self.modulation = nn.Parameter(torch.randn(1, 6, d) / d ** 0.5)
        self.self_attn = SelfAttention(cfg)
        self.has_cross = cfg.has_text or cfg.has_clip
        if self.has_cross:
            self.norm3 = nn.LayerNorm(d, eps=cfg.eps, elementwise_affine=True)
            self.cross_attn = I2VCrossAttention(cfg)
        self.ffn = nn.Sequential(nn.Linear(d, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, d))
        self.audio_cross_attn = AudioCrossAttention(cfg)
        self.norm_x = nn.LayerNorm(d, eps=cfg.eps, elementwise_affine=True)

    def forward(self, x, e0, *, ctx_kv, audio_kv, zero_first_audio, frame_len, backend, **attn_kw):
        """x: (B, S, D); e0: (B, Tt, 6, D) fp32 with Tt = 1 (per sample) or T (per latent frame)."""
        mod = self.modulation.float().unsqueeze(1) + e0              # (B, Tt, 6, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.unbind(2)
        B, D = x.shape[0], x.shape[-1]
        zero = torch.zeros(B, 1, D, dtype=torch.float32, device=x.device)
        one = torch.ones(B, 1, D, dtype=torch.float32, device=x.device)
        kw = dict(eps=self.eps, norm="layer", backend=backend)
        h = ops.adaln_modulate(x, shift_msa, scale_msa, **kw)
        y, gate = self.self_attn(h, backend=backend, **attn_kw), gate_msa
        # every residual add is fused with the norm that reads its result (adaln_residual): the stream of
        # x + y·gate -> norm is read and written once instead of twice
        if self.has_cross:
            x, h = ops.adaln_residual(x, y, gate, zero, zero, weight=self.norm3.weight, bias=self.norm3.bias, **kw)
            y, gate = self.cross_attn(h, ctx_kv, backend), one
        if audio_kv is not None:
            x, h = ops.adaln_residual(x, y, gate, zero, zero, weight=self.norm_x.weight, bias=self.norm_x.bias, **kw)
            y, gate = self.audio_cross_attn(h, audio_kv, frame_len=frame_len, zero_first_frame=zero_first_audio,
                                            backend=backend), one
        x, h = ops.adaln_residual(x, y, gate, shift_mlp, scale_mlp, **kw)
        return ops.gated_residual(x, self.ffn(h), gate_mlp, backend=backend)


class Head(nn.Module):
    def __init__(self, cfg: LiveActConfig):
        super().__init__()
        d = cfg.dim
        self.eps = cfg.eps
        self.modulation = nn.Parameter(torch.randn(1, 2, d) / d ** 0.5)
        self.head = nn.Linear(d, math.prod(cfg.patch_size) * cfg.out_dim)

    def forward(self, x, e, backend):
        """x: (B, S, D); e: (B, Tt, D) fp32, the time_embedding output (not e0, §5.2 step 5)."""
        mod = self.modulation.float().unsqueeze(1) + e.unsqueeze(2)   # (B, Tt, 2, D)
        shift, scale = mod.unbind(2)
        return self.head(ops.adaln_modulate(x, shift, scale, eps=self.eps, norm="layer", backend=backend))


class MLPProj(nn.Module):
    """CLIP image embedder: LN -> Linear -> GELU -> Linear -> LN, with the official `proj.{0,1,3,4}` names."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, in_dim), nn.GELU(),
                                  nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim))

    def forward(self, x, backend):
        p = self.proj
        x = layer_norm(x, p[0], p[0].eps, backend)
        x = p[3](p[2](p[1](x)))
        return layer_norm(x, p[4], p[4].eps, backend)


class AudioProj(nn.Module):
    """Audio features -> per-latent-frame tokens (§6 step 6; MultiTalk AudioProjModel)."""

    def __init__(self, cfg: LiveActConfig):
        super().__init__()
        self.cfg = cfg
        per = cfg.audio_layers * cfg.audio_channels
        self.proj1 = nn.Linear(cfg.audio_window * per, cfg.intermediate_dim)
        self.proj1_vf = nn.Linear(cfg.audio_vf_entries * per, cfg.intermediate_dim)
        self.proj2 = nn.Linear(cfg.intermediate_dim, cfg.intermediate_dim)
        self.proj3 = nn.Linear(cfg.intermediate_dim, cfg.context_tokens * cfg.output_dim)
        self.norm = nn.LayerNorm(cfg.output_dim) if cfg.norm_output_audio else None

    def forward(self, windows: torch.Tensor, has_first: bool, backend: str = "auto") -> torch.Tensor:
        """windows: (B, V, audio_window, audio_layers, audio_channels), one window per video frame.
        has_first: the first entry is the reference video frame (V = 1 + vae_scale·(T-1)); else V = vae_scale·T.
        Returns tokens (B, T, context_tokens, output_dim)."""
        cfg = self.cfg
        B, V = windows.shape[:2]
        half, vs = cfg.audio_window // 2, cfg.vae_scale
        parts = []
        if has_first:
            parts.append(F.relu(self.proj1(windows[:, :1].flatten(2))))     # (B, 1, inter)
            windows = windows[:, 1:]
            V -= 1
        if V % vs:
            raise ValueError(f"AudioProj: expected a multiple of vae_scale={vs} later video frames, got {V}")
        if V:
            w = windows.reshape(B, V // vs, vs, *windows.shape[2:])
            first = w[:, :, 0, :half + 1]                                    # offsets -half..0
            mid = w[:, :, 1:-1, half]                                        # centre only
            last = w[:, :, -1, half:]                                        # offsets 0..+half
            vf = torch.cat([first, mid, last], dim=2)                        # (B, T', entries, L, C)
            parts.append(F.relu(self.proj1_vf(vf.flatten(2))))
        x = torch.cat(parts, dim=1)
        x = self.proj3(F.relu(self.proj2(x)))
        x = x.view(B, -1, cfg.context_tokens, cfg.output_dim)
        if self.norm is not None:
            x = layer_norm(x.flatten(1, 2), self.norm, self.norm.eps, backend).view_as(x)
        return x


# ----------------------------------------------------------------------------------------------------------
# conditioning containers

@dataclass
class Condition:
    """Per-stream conditioning, prepared once: I2V latent y and the per-layer text/image cross-attention K/V.
    y: (B, cond_channels, window_frames, h8, w8) or None; context_kv: one dict per layer or None."""
    y: Optional[torch.Tensor]
    context_kv: Optional[list]


@dataclass
class AudioContext:
    """Per-block audio K/V, prepared once per block and reused by every denoising step."""
    tokens: torch.Tensor          # (B, T, Na, C)
    kv: list                      # per layer (k, v), each (B, T, Na, H, Dh)


# ----------------------------------------------------------------------------------------------------------
# the model

class LiveActModel(nn.Module):
    def __init__(self, config="official", backend: str = "auto"):
        super().__init__()
        cfg = self.config = get_config(config)
        d = cfg.dim
        self.backend = backend
        self.patch_embedding = nn.Conv3d(cfg.in_dim, d, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        if cfg.has_text:
            self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, d), nn.GELU(approximate="tanh"),
                                                nn.Linear(d, d))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.num_layers))
        self.head = Head(cfg)
        if cfg.has_clip:
            self.img_emb = MLPProj(cfg.clip_dim, d)
        self.audio_proj = AudioProj(cfg)

    # ---- helpers ----
    @property
    def dtype(self):
        return self.patch_embedding.weight.dtype

    @property
    def device(self):
        return self.patch_embedding.weight.device

    def _backend(self, backend):
        return self.backend if backend is None else backend

    def init_weights(self, seed: int = 0, std: float = 0.02) -> "LiveActModel":
        """Random init for tests/training from scratch (the official weights come from load_checkpoint)."""
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("memory_proj_k.weight") or name.endswith("memory_proj_v.weight"):
                    # mean pooling (the official post_init value 1/group) plus a little noise
                    p.copy_(1.0 / p.shape[-1] + 0.05 * torch.randn(p.shape, generator=g))
                elif "norm" in name and name.endswith("weight") and p.dim() == 1:
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
                elif name.endswith("bias"):
                    p.copy_(0.02 * torch.randn(p.shape, generator=g))
                elif name.endswith("modulation"):
                    p.copy_(torch.randn(p.shape, generator=g) / self.config.dim ** 0.5)
                else:
                    fan_in = max(1, p[0].numel())
                    p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
        return self

    # ---- conditioning ----
    def prepare_condition(self, y=None, text=None, clip=None, backend=None) -> Condition:
        """y: (B, cond_channels, window_frames, h8, w8) mask+image latent (§1.3) or None for a T2V config;
        text: (B, L_txt <= text_len, text_dim) T5 features (zero-padded to text_len as the official code does);
        clip: (B, clip_tokens, clip_dim). Returns a Condition with the per-layer cross-attention K/V."""
        cfg, be = self.config, self._backend(backend)
        if cfg.cond_channels and y is None:
            raise ValueError(f"prepare_condition: y is required (in_dim={cfg.in_dim} includes "
                             f"{cfg.cond_channels} conditioning channels)")
        if y is not None:
            if y.dim() != 5 or y.shape[1] != cfg.cond_channels:
                raise ValueError(f"prepare_condition: y expected (B, {cfg.cond_channels}, frames, h, w), "
                                 f"got {tuple(y.shape)}")
        ctx_img = ctx_txt = None
        if cfg.has_text:
            if text is None:
                raise ValueError("prepare_condition: text features are required (config.text_dim > 0)")
            text = _check_feat("text", text, cfg.text_dim, self)
            if text.shape[1] > cfg.text_len:
                raise ValueError(f"prepare_condition: text has {text.shape[1]} tokens, max text_len={cfg.text_len}")
            text = F.pad(text, (0, 0, 0, cfg.text_len - text.shape[1]))
            ctx_txt = self.text_embedding(text.to(self.dtype))
        if cfg.has_clip:
            if clip is None:
                raise ValueError("prepare_condition: clip features are required (config.clip_dim > 0)")
            clip = _check_feat("clip", clip, cfg.clip_dim, self)
            ctx_img = self.img_emb(clip.to(self.dtype), be)
        kv = None
        if cfg.has_text or cfg.has_clip:
            kv = [blk.cross_attn.context_kv(ctx_img, ctx_txt, be) for blk in self.blocks]
        return Condition(y=y, context_kv=kv)

    def audio_tokens(self, windows, has_first: bool, backend=None) -> torch.Tensor:
        """windows: (B, V, audio_window, audio_layers, audio_channels) -> (B, T, context_tokens, output_dim)."""
        cfg = self.config
        exp = (cfg.audio_window, cfg.audio_layers, cfg.audio_channels)
        if windows.dim() != 5 or tuple(windows.shape[2:]) != exp:
            raise ValueError(f"audio windows: expected (B, V, {exp[0]}, {exp[1]}, {exp[2]}), got {tuple(windows.shape)}")
        return self.audio_proj(windows.to(self.dtype), has_first, self._backend(backend))

    def prepare_audio(self, tokens, backend=None) -> AudioContext:
        """tokens: (B, T, context_tokens, output_dim) -> per-layer audio K/V, computed once per block."""
        cfg = self.config
        if tokens.dim() != 4 or tokens.shape[2:] != (cfg.context_tokens, cfg.output_dim):
            raise ValueError(f"audio tokens: expected (B, T, {cfg.context_tokens}, {cfg.output_dim}), "
                             f"got {tuple(tokens.shape)}")
        tokens = tokens.to(self.dtype)
        return AudioContext(tokens, [blk.audio_cross_attn.audio_kv(tokens) for blk in self.blocks])

    # ---- forward ----
    def time_embed(self, t, batch: int):
        """t: number, (B,) or (B, T) timesteps in [0, 1000] -> e (B, Tt, D), e0 (B, Tt, 6, D), fp32."""
        t = torch.as_tensor(t, dtype=torch.float64, device=self.device)
        if t.dim() == 0:
            t = t.expand(batch)
        if t.dim() == 1:
            t = t[:, None]
        if t.dim() != 2 or t.shape[0] != batch:
            raise ValueError(f"t: expected a number, (B,) or (B, T) with B={batch}, got shape {tuple(t.shape)}")
        B, Tt = t.shape
        e = self.time_embedding(sinusoidal_embedding(self.config.freq_dim, t.reshape(-1)).to(self.dtype))
        e0 = self.time_projection(e).unflatten(1, (6, self.config.dim))
        return e.float().view(B, Tt, -1), e0.float().view(B, Tt, 6, -1)

    def forward_block(self, x, t, cond: Condition, memory=None, step: int = 0, block_index: int = 0,
                      audio=None, write_cache: bool = True, backend=None) -> torch.Tensor:
        """One denoising-step forward of one block.
        x: (B, out_dim, T, H8, W8) noisy latent (T = first_block_frames for block 0, block_frames after);
        t: timestep(s) in [0, 1000], a number, (B,) or (B, T) for per-frame noise levels;
        cond: from prepare_condition; memory: a ConvKVMemory (or None: attend to the block alone);
        step: denoising-step index (selects the memory's cache); block_index: 0, 1, 2, ... of the stream;
        audio: AudioContext, audio tokens (B, T, Na, C), or None to skip the audio branch (step 0);
        write_cache: persist this block's K/V in the memory (False: attend to memory + self only).
        Returns the velocity prediction v ≈ ε − x0, (B, out_dim, T, H8, W8) in the model dtype."""
        cfg, be = self.config, self._backend(backend)
        if x.dim() != 5 or x.shape[1] != cfg.out_dim:
            raise ValueError(f"x: expected (B, {cfg.out_dim}, T, H, W) latent, got {tuple(x.shape)}")
        if x.device != self.device:
            raise ValueError(f"x: on {x.device}, model on {self.device}")
        if not x.is_floating_point():
            raise TypeError(f"x: expected a floating latent, got {x.dtype}")
        B, _, T, Hl, Wl = x.shape
        pt, ph, pw = cfg.patch_size
        if Hl % ph or Wl % pw or T % pt:
            raise ValueError(f"x: latent (T, H, W)=({T}, {Hl}, {Wl}) not divisible by patch_size {cfg.patch_size}")
        if memory is not None:
            want = cfg.first_block_frames if block_index == 0 else cfg.block_frames
            if T != want:
                raise ValueError(f"x: block {block_index} needs {want} latent frames, got {T}")
        xin = x.to(self.dtype)
        if cfg.cond_channels:
            if cond.y is None:
                raise ValueError("cond.y is required by this config")
            y = cond.y
            if y.shape[2] != T:
                start = 0 if block_index == 0 else cfg.first_block_frames
                y = y[:, :, start:start + T]
            if y.shape[0] != B or y.shape[2:] != (T, Hl, Wl):
                raise ValueError(f"cond.y: expected (B={B}, {cfg.cond_channels}, {T}, {Hl}, {Wl}) for this "
                                 f"block, got {tuple(y.shape)}")
            xin = torch.cat([xin, y.to(self.dtype)], dim=1)
        h = self.patch_embedding(xin)                               # (B, D, T', h, w)
        grid = tuple(h.shape[2:])
        h = h.flatten(2).transpose(1, 2)                            # (B, S, D), frame-major tokens
        frame_len = grid[1] * grid[2]
        e, e0 = self.time_embed(t, B)
        positions = rope_positions(block_index, grid[0], cfg, x.device)
        if isinstance(audio, torch.Tensor):
            audio = self.prepare_audio(audio, be)
        if audio is not None and audio.tokens.shape[1] != grid[0]:
            raise ValueError(f"audio: expected tokens for {grid[0]} latent frames, got {audio.tokens.shape[1]}")
        for i, blk in enumerate(self.blocks):
            h = blk(h, e0, ctx_kv=None if cond.context_kv is None else cond.context_kv[i],
                    audio_kv=None if audio is None else audio.kv[i], zero_first_audio=(block_index == 0),
                    frame_len=frame_len, backend=be, grid=grid, positions=positions, memory=memory,
                    step=step, layer=i, block_index=block_index, write=write_cache)
        out = self.head(h, e, be)                                   # (B, S, pt·ph·pw·C)
        if memory is not None and write_cache:
            memory.commit(step, block_index)
        return self.unpatchify(out, grid)

    forward = forward_block

    def unpatchify(self, x, grid):
        """x: (B, f·h·w, pt·ph·pw·C) -> (B, C, f·pt, h·ph, w·pw)."""
        f, h, w = grid
        pt, ph, pw = self.config.patch_size
        c = self.config.out_dim
        x = x.view(x.shape[0], f, h, w, pt, ph, pw, c)
        x = torch.einsum("bfhwpqrc->bcfphqwr", x)
        return x.reshape(x.shape[0], c, f * pt, h * ph, w * pw)


def _check_feat(name, x, dim, model):
    if x.dim() == 2:
        x = x[None]
    if x.dim() != 3 or x.shape[-1] != dim:
        raise ValueError(f"{name}: expected (B, L, {dim}), got {tuple(x.shape)}")
    if x.device != model.device:
        raise ValueError(f"{name}: on {x.device}, model on {model.device}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating dtype, got {x.dtype}")
    return x
