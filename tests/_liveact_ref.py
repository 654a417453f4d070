# Test helpers for liveact_model: a tiny random model factory and an independent re-statement of the official
# KV-cache schedule (§4.2-4.3 of reference-model.md: raw K per slot, complex128 RoPE each call, F.conv1d ConvKV).
import math

import pytest

import torch
import torch.nn.functional as F

from liveact_model import LiveActModel, tiny


def tiny_model(seed=0, dtype=torch.float32, **overrides):
    cfg = tiny().replace(**overrides) if overrides else tiny()
    return LiveActModel(cfg).init_weights(seed).to(dtype)


def tiny_cond(model, batch=1, hw=(8, 8), seed=1):
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(batch, cfg.cond_channels, cfg.window_frames, *hw, generator=g)
    text = torch.randn(batch, 5, cfg.text_dim, generator=g)
    clip = torch.randn(batch, cfg.clip_tokens, cfg.clip_dim, generator=g)
    return model.prepare_condition(y=y, text=text, clip=clip)


def official_freqs(positions, grid_hw, head_dim, theta=10000.0):
    """complex128 RoPE table [len(positions)*h*w, head_dim/2], built like Wan's rope_params + causal_rope_apply."""
    d = head_dim
    split = (d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6))

    def params(pos, dim):
        om = 1.0 / torch.pow(torch.tensor(theta, dtype=torch.float64), torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        return torch.polar(torch.ones(len(pos), dim // 2, dtype=torch.float64), torch.outer(pos.double(), om))
    h, w = grid_hw
    f = len(positions)
    ft = params(torch.as_tensor(positions), split[0])[:, None, None].expand(f, h, w, -1)
    fh = params(torch.arange(h), split[1])[None, :, None].expand(f, h, w, -1)
    fw = params(torch.arange(w), split[2])[None, None, :].expand(f, h, w, -1)
    return torch.cat([ft, fh, fw], -1).reshape(f * h * w, 1, -1)


def official_rope(x, positions, grid_hw):
    """x: (B, f*h*w, H, Dh) -> rotated like the official complex128 rope_apply, returned in fp64."""
    B, N, H, D = x.shape
    xc = torch.view_as_complex(x.double().reshape(B, N, H, D // 2, 2))
    return torch.view_as_real(xc * official_freqs(positions, grid_hw, D)).reshape(B, N, H, D)


def official_unrope(x, positions, grid_hw):
    B, N, H, D = x.shape
    xc = torch.view_as_complex(x.double().reshape(B, N, H, D // 2, 2))
    return torch.view_as_real(xc * official_freqs(positions, grid_hw, D).conj()).reshape(B, N, H, D)


def official_compress(x, weight):
    """Φ as the official k_compress: x (B, 5*fl, H, Dh) -> view (B, D, 5*fl) -> depthwise Conv1d(k=5, s=5)."""
    B, N, H, D = x.shape
    y = F.conv1d(x.double().reshape(B, N, H * D).transpose(1, 2), weight.double(), stride=weight.shape[-1],
                 groups=H * D)
    return y.transpose(1, 2).reshape(B, N // weight.shape[-1], H, D)


class OfficialMemory:
    """Literal official single-GPU schedule for the 14-slot layout [S0 S1 | Ca Cb | Ra Rb | P0..P7].
    Same attend() interface as ConvKVMemory. layout="rotated": q/k arrive rotated (the model ropes them), so K
    is un-rotated to the raw value the official cache stores; layout="raw": q/k arrive un-rotated (the model
    passes them as to ConvKVMemory(layout="raw")). Every call re-rotates all slots at their slot index.
    dtype=None computes in fp64 throughout; dtype=torch.bfloat16 rounds like the official bf16 cache: raw K
    and V stored in bf16, compressed slots rounded to bf16, roped q and K cast to bf16 before the attention
    (which then runs in fp64 on those bf16 values)."""

    def __init__(self, dtype=None, layout="rotated"):
        self.slots = {}     # (step, layer) -> list of 14 (k_raw, v) per-slot tensors
        self.count = {}
        self.dtype, self.layout = dtype, layout

    def _r(self, x):
        return x.to(self.dtype).double() if self.dtype is not None else x.double()

    def attend(self, q, k, v, *, step, layer, block_index, grid, weight_k, weight_v, write=True, backend=None,
               q_positions=None):
        T, h, w = grid
        pos0 = 0 if block_index == 0 else 6
        qpos = list(range(pos0, pos0 + T))
        if self.layout == "raw":
            k_raw, qr = k.double(), self._r(official_rope(q, qpos, (h, w)))
        else:
            k_raw, qr = official_unrope(k, qpos, (h, w)), q.double()
        k_raw, vv = self._r(k_raw), self._r(v)
        fl = h * w
        cur = [(k_raw[:, i * fl:(i + 1) * fl], vv[:, i * fl:(i + 1) * fl]) for i in range(T)]
        slots = list(self.slots.get((step, layer), [None] * 14))
        if block_index == 0:
            slots[0:6] = cur
            n = 6
        elif block_index == 1:
            slots[6:14] = cur
            n = 14
        else:
            def phi(idx):
                ks = torch.cat([slots[i][0] for i in idx], 1)
                vs = torch.cat([slots[i][1] for i in idx], 1)
                # V uses the K kernel
                return self._r(official_compress(ks, weight_k)), self._r(official_compress(vs, weight_k))
            slots[2] = phi(range(2, 7))
            slots[3] = phi(range(7, 12))
            slots[4], slots[5] = slots[12], slots[13]
            slots[6:14] = cur
            n = 14
        if write:
            self.slots[(step, layer)] = slots
        K = self._r(official_rope(torch.cat([s[0] for s in slots[:n]], 1), list(range(n)), (h, w)))
        V = torch.cat([s[1] for s in slots[:n]], 1)
        qf = qr.permute(0, 2, 1, 3)
        s = qf @ K.permute(0, 2, 3, 1) / math.sqrt(q.shape[-1])
        o = s.softmax(-1) @ V.permute(0, 2, 1, 3)
        return o.permute(0, 2, 1, 3).to(q.dtype)

    def commit(self, step, block_index):
        self.count[step] = block_index + 1


def run_blocks(model, cond, memory, num_blocks, hw=(8, 8), steps=3, seed=5, batch=1, write=True):
    """Teacher-forced block loop: random latents and audio tokens per (block, step); returns v per block/step."""
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    outs = []
    for n in range(num_blocks):
        T = cfg.first_block_frames if n == 0 else cfg.block_frames
        tok = torch.randn(batch, T, cfg.context_tokens, cfg.output_dim, generator=g).to(model.dtype)
        for i in range(steps):
            x = torch.randn(batch, cfg.out_dim, T, *hw, generator=g)
            t = cfg.timesteps[i]
            with torch.no_grad():
                outs.append(model.forward_block(x, t, cond, memory, step=i, block_index=n,
                                                audio=None if i == 0 else tok, write_cache=write))
    return outs


@pytest.fixture(autouse=True)
def single_thread():
    # the tiny model runs ~1k small ops per block: on 2 shared cores OpenMP threads spin and cost ~50x
    # (measured: 200 ms vs 4 ms per block-step at load 4.5), so these tests run single-threaded
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
