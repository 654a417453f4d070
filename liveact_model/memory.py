# ConvKVMemory: the step-indexed, fixed-size self-attention KV cache of LiveAct (reference-model.md §4):
# sinks + ConvKV-compressed slots + recent raw frames + the current block, updated in the official order.
from __future__ import annotations

from typing import Iterable, Optional

import torch

import liveact_kernels as ops
from .config import get_config

FP8 = torch.float8_e4m3fn


def _swap_pairs(x):
    # (a, b) -> (b, a) on RoPE channel pairs: swap ∘ R(θ) ∘ swap = R(−θ), so the forward rope3d kernel inverts
    return x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)


class ConvKVMemory:
    """K/V cache of `window_frames` frame slots per (denoising step, layer), constant size for any stream length.

    Layout (official, §4.2): [sinks | compressed | recent | current block]. Block 0 fills slots [0, F0); block 1
    fills [F0, W); every later block first compresses slots [s, s + c·g) into the c compressed slots (ConvKV,
    depthwise conv with kernel = stride = g), moves the last r frames of the previous block into the recent
    slots, then writes its own frames into [F0, W) and attends to all W slots.

    Keys are stored already rotated (RoPE at their slot position), so the attention consumes the cache as is,
    also in FP8 with per-(token, head) scales. Frames that move are re-rotated by the position delta, and the
    compression un-rotates its inputs first, which equals the official "store raw K, rotate every call" order.

    dtype: torch.bfloat16 / float16 / float32, or torch.float8_e4m3fn (+ fp32 scales [B, N, H, 1]).
    mode: "token" (checkpoint-compatible raster-order merge, §12.3) or "frame" (same token across frames).
    use_v_proj: compress V with memory_proj_v instead of the K kernel the official code uses (§12.1).
    differentiable: functional updates (no in-place writes) so gradients flow through unrolled blocks into
    memory_proj; buffers are then replaced, not overwritten.
    steps: denoising-step indices that get a cache (e.g. (1, 2) for the audio-CFG null caches).
    offload: keep the caches in host memory (pinned when CUDA is available) and compute on `device` from two
    device staging buffers: the layer in use and the next layer, prefetched on a side CUDA stream while the
    current layer computes; only the slots a block changes are copied back.
    """

    def __init__(self, config="official", *, steps: Optional[Iterable[int]] = None, num_layers: Optional[int] = None,
                 dtype=torch.bfloat16, device="cpu", mode: str = "token", use_v_proj: bool = False,
                 differentiable: bool = False, offload: bool = False):
        self.config = cfg = get_config(config)
        if mode not in ("token", "frame"):
            raise ValueError(f"ConvKVMemory: mode must be 'token' or 'frame', got {mode!r}")
        if dtype not in (torch.bfloat16, torch.float16, torch.float32, FP8):
            raise TypeError(f"ConvKVMemory: dtype must be bf16/fp16/fp32/float8_e4m3fn, got {dtype}")
        if differentiable and dtype == FP8:
            raise ValueError("ConvKVMemory: differentiable=True needs a floating dtype, not float8_e4m3fn")
        if differentiable and offload:
            raise ValueError("ConvKVMemory: offload=True cannot be combined with differentiable=True")
        self.steps = tuple(range(cfg.num_steps)) if steps is None else tuple(steps)
        self.num_layers = cfg.num_layers if num_layers is None else num_layers
        self.dtype, self.device = dtype, torch.device(device)
        self.mode, self.use_v_proj, self.differentiable = mode, use_v_proj, differentiable
        self.fp8 = dtype == FP8
        self.batch = self.frame_len = self._hw = None
        self.blocks = {s: 0 for s in self.steps}       # blocks committed per step
        self._k = self._v = self._ks = self._vs = None  # [step][layer] tensors
        self.offload = offload
        self._ring = None                               # offload: 2 device staging sets
        self._ring_key = [None, None]                   # (step, layer) held by each staging set
        self._ring_event = [None, None]
        self._side = None

    # ---- allocation / bookkeeping ----
    def allocate(self, batch: int, hw) -> None:
        """Allocate every buffer once: (batch, window_frames·h·w, H, Dh) per step and layer; hw = token grid."""
        cfg = self.config
        frame_len = hw[0] * hw[1]
        self.batch, self.frame_len, self._hw = batch, frame_len, tuple(hw)
        shape = (batch, cfg.window_frames * frame_len, cfg.num_heads, cfg.head_dim)

        store = torch.device("cpu") if self.offload else self.device
        pin = self.offload and torch.cuda.is_available()

        def buf(dt, shp):
            return {s: [torch.zeros(shp, dtype=dt, device=store, pin_memory=pin) for _ in range(self.num_layers)]
                    for s in self.steps}
        self._k, self._v = buf(self.dtype, shape), buf(self.dtype, shape)
        sshape = shape[:-1] + (1,)
        if self.fp8:
            self._ks, self._vs = buf(torch.float32, sshape), buf(torch.float32, sshape)
        if self.offload:
            def dev(dt, shp):
                return torch.zeros(shp, dtype=dt, device=self.device)
            self._ring = [{"k": dev(self.dtype, shape), "v": dev(self.dtype, shape),
                           "ks": dev(torch.float32, sshape) if self.fp8 else None,
                           "vs": dev(torch.float32, sshape) if self.fp8 else None} for _ in range(2)]
            self._ring_key = [None, None]
            if self.device.type == "cuda":
                self._side = torch.cuda.Stream(device=self.device)

    def reset(self) -> None:
        """Start a new stream; buffers stay allocated (their content is overwritten before it is read)."""
        self.blocks = {s: 0 for s in self.steps}
        self._ring_key = [None, None]

    # ---- offload: host store <-> device staging ----
    def _host(self, key):
        st, ly = key
        return {"k": self._k[st][ly], "v": self._v[st][ly], "ks": self._ks[st][ly] if self.fp8 else None,
                "vs": self._vs[st][ly] if self.fp8 else None}

    def _load(self, key, r):
        """Copy the host cache of (step, layer) into staging set r (on the side stream when on CUDA)."""
        ring, host = self._ring[r], self._host(key)
        if self._side is not None:
            self._side.wait_stream(torch.cuda.current_stream(self.device))   # r's previous write-back is done
            with torch.cuda.stream(self._side):
                for n in ring:
                    if ring[n] is not None:
                        ring[n].copy_(host[n], non_blocking=True)
                ev = torch.cuda.Event()
                ev.record(self._side)
            self._ring_event[r] = ev
        else:
            for n in ring:
                if ring[n] is not None:
                    ring[n].copy_(host[n])
        self._ring_key[r] = key

    def _stage(self, step, layer):
        """Point the (step, layer) cache entries at a device staging set; prefetch the next layer."""
        key = (step, layer)
        r = self._ring_key.index(key) if key in self._ring_key else None
        if r is None:
            r = 1 if self._ring_key[0] == (step, layer + 1) else 0   # keep a prefetched next layer
            self._load(key, r)
        if self._ring_event[r] is not None:
            torch.cuda.current_stream(self.device).wait_event(self._ring_event[r])
            self._ring_event[r] = None
        ring = self._ring[r]
        self._k[step][layer], self._v[step][layer] = ring["k"], ring["v"]
        if self.fp8:
            self._ks[step][layer], self._vs[step][layer] = ring["ks"], ring["vs"]
        return r

    def _unstage(self, step, layer, r, host, changed):
        """Copy the changed token range back to the host store and restore the host entries."""
        ring = self._ring[r]
        if changed is not None:
            nb = self._side is not None
            for n in ("k", "v", "ks", "vs"):
                if host[n] is not None:
                    host[n][:, changed].copy_(ring[n][:, changed], non_blocking=nb)
        self._k[step][layer], self._v[step][layer] = host["k"], host["v"]
        if self.fp8:
            self._ks[step][layer], self._vs[step][layer] = host["ks"], host["vs"]
        nxt = (step, layer + 1)
        if layer + 1 < self.num_layers and nxt not in self._ring_key:
            self._load(nxt, 1 - r)

    @property
    def nbytes(self) -> int:
        """Bytes of every cache buffer (host store + device staging when offloading)."""
        total = 0
        for store in (self._k, self._v, self._ks, self._vs):
            if store:
                total += sum(t.numel() * t.element_size() for ls in store.values() for t in ls)
        for ring in self._ring or ():
            total += sum(t.numel() * t.element_size() for t in ring.values() if t is not None)
        return total

    def commit(self, step: int, block_index: int) -> None:
        """Called by the model after all layers of a block wrote their K/V for `step`."""
        self.blocks[step] = block_index + 1

    # ---- storage helpers ----
    def _quant(self, x, be):
        if self.fp8:
            return ops.quantize_fp8(x, granularity="token_head", backend=be)
        return x.to(self.dtype), None

    def _deq(self, q, s, be):
        if self.fp8:
            return ops.dequantize_fp8(q, s, torch.float32, backend=be)
        return q.float()

    def _get(self, step, layer, a, b):
        # slots [a, b) of (k, v, k_scale, v_scale)
        fl = self.frame_len
        sl = slice(a * fl, b * fl)
        k, v = self._k[step][layer][:, sl], self._v[step][layer][:, sl]
        ks = self._ks[step][layer][:, sl] if self.fp8 else None
        vs = self._vs[step][layer][:, sl] if self.fp8 else None
        return k, v, ks, vs

    def _put(self, step, layer, a, k, v, ks, vs):
        fl = self.frame_len
        sl = slice(a * fl, a * fl + k.shape[1])
        if self.differentiable:
            def rep(buf, x):
                return torch.cat([buf[:, :sl.start], x, buf[:, sl.stop:]], dim=1)
            self._k[step][layer] = rep(self._k[step][layer], k)
            self._v[step][layer] = rep(self._v[step][layer], v)
        else:
            self._k[step][layer][:, sl].copy_(k)
            self._v[step][layer][:, sl].copy_(v)
            if self.fp8:
                self._ks[step][layer][:, sl].copy_(ks)
                self._vs[step][layer][:, sl].copy_(vs)

    def _rope(self, x, frames, positions, hw, be, inverse=False):
        cfg = self.config
        if inverse:
            x = _swap_pairs(x)
        y = ops.rope3d(x, grid=(frames, hw[0], hw[1]), frame_positions=positions, theta=cfg.rope_theta,
                       split=cfg.rope_split, backend=be)
        return _swap_pairs(y) if inverse else y

    # ---- the update ----
    def _compress_and_move(self, step, layer, hw, weight_k, weight_v, be):
        """New content of the compressed and recent slots for a block n >= 2 (§4.2 steps 1-3), pre-write.
        Returns (k, v) fp32 of c + r slots, keys rotated at their new slot positions."""
        cfg = self.config
        s, c, r, g, nb = cfg.num_sink, cfg.num_compressed, cfg.num_recent, cfg.compress_group, cfg.block_frames
        dev = self.device
        k, v, ks, vs = self._get(step, layer, s, s + c * g)
        k = self._deq(k, ks, be)
        v = self._deq(v, vs, be)
        # un-rotate the c·g source slots (positions s..s+c·g-1), compress groups of g slots into c slots
        src_pos = torch.arange(s, s + c * g, device=dev)
        k = self._rope(k, c * g, src_pos, hw, be, inverse=True)
        fl = self.frame_len
        kw = dict(group=g, mode=self.mode, frame_len=fl, backend=be)
        wv = weight_v if self.use_v_proj else weight_k
        parts_k, parts_v = [], []
        for j in range(c):
            sl = slice(j * g * fl, (j + 1) * g * fl)
            parts_k.append(ops.convkv_compress(k[:, sl], weight_k, **kw))
            parts_v.append(ops.convkv_compress(v[:, sl], wv, **kw))
        ck = self._rope(torch.cat(parts_k, 1), c, torch.arange(s, s + c, device=dev), hw, be)
        cv = torch.cat(parts_v, 1)
        # the previous block's last r frames move from slots [s+c+nb, W) to [s+c, s+c+r): rotate by -nb frames
        # along time only (a grid of (N, 1, 1) leaves the row/column channels untouched)
        mk, mv, mks, mvs = self._get(step, layer, s + c + nb, s + c + nb + r)
        mk = self._deq(mk, mks, be)
        N = mk.shape[1]
        mk = ops.rope3d(mk, grid=(N, 1, 1), frame_positions=torch.full((N,), -nb, device=dev),
                        theta=cfg.rope_theta, split=cfg.rope_split, backend=be)
        return torch.cat([ck, mk], 1), torch.cat([cv, self._deq(mv, mvs, be)], 1)

    def attend(self, q, k, v, *, step: int, layer: int, block_index: int, grid, weight_k, weight_v,
               write: bool = True, backend: str = "auto"):
        """q, k: (B, T·fl, H, Dh) already rotated at the block's slot positions; v: (B, T·fl, H, Dh).
        Updates the (step, layer) cache in the official order (compress, move, write) unless write=False, in
        which case the same keys are built transiently. Returns the attention output (B, T·fl, H, Dh)."""
        cfg = self.config
        be = backend
        if step not in self.blocks:
            raise ValueError(f"ConvKVMemory: no cache for step {step}; this memory holds steps {self.steps}")
        if block_index != self.blocks[step]:
            raise ValueError(f"ConvKVMemory: block_index={block_index} but step {step} has "
                             f"{self.blocks[step]} committed blocks (expected block_index={self.blocks[step]}; "
                             "call reset() to start a new stream)")
        T, h, w = grid
        fl = h * w
        if self._k is None or self.batch != q.shape[0] or self._hw != (h, w):
            if block_index != 0 and self._k is not None:
                raise ValueError(f"ConvKVMemory: batch/grid changed mid-stream to ({q.shape[0]}, {(h, w)}) "
                                 f"from ({self.batch}, {self._hw})")
            self.allocate(q.shape[0], (h, w))
        if q.device != self.device:
            raise ValueError(f"ConvKVMemory: q on {q.device}, memory computes on {self.device}")
        F0, W = cfg.first_block_frames, cfg.window_frames
        start = 0 if block_index == 0 else F0
        if not self.offload:
            return self._attend(q, k, v, step, layer, block_index, (h, w), T, start, weight_k, weight_v, write, be)
        host = self._host((step, layer))
        r = self._stage(step, layer)
        try:
            out = self._attend(q, k, v, step, layer, block_index, (h, w), T, start, weight_k, weight_v, write, be)
        finally:
            first = cfg.num_sink if block_index >= 2 else start
            changed = slice(first * fl, (start + T) * fl) if write else None
            self._unstage(step, layer, r, host, changed)
        return out

    def _attend(self, q, k, v, step, layer, block_index, hw, T, start, weight_k, weight_v, write, be):
        cfg = self.config
        h, w = hw
        new = None
        if block_index >= 2:
            new = self._compress_and_move(step, layer, (h, w), weight_k, weight_v, be)
        if write:
            if new is not None:
                self._put(step, layer, cfg.num_sink, *self._qkv(new[0], new[1], be))
            self._put(step, layer, start, *self._qkv(k, v, be))
            K, V, KS, VS = self._get(step, layer, 0, start + T)
        else:
            parts = [self._get(step, layer, 0, cfg.num_sink if new is not None else start)]
            if new is not None:
                parts.append(self._qkv(new[0], new[1], be))
            parts.append(self._qkv(k, v, be))
            K, V = torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)
            KS = torch.cat([p[2] for p in parts], 1) if self.fp8 else None
            VS = torch.cat([p[3] for p in parts], 1) if self.fp8 else None
        if self.fp8:
            return ops.attention(q, K, V, tensor_layout="NHD", k_scale=KS, v_scale=VS, backend=be)
        return ops.attention(q, K.to(q.dtype), V.to(q.dtype), tensor_layout="NHD", backend=be)

    def _qkv(self, k, v, be):
        kq, ks = self._quant(k, be)
        vq, vs = self._quant(v, be)
        return kq, vq, ks, vs

    # ---- inspection ----
    def read(self, step: int, layer: int, unrotate: bool = True):
        """Dequantised (k, v) of the filled slots, fp32 (B, n·fl, H, Dh); keys un-rotated (the official raw K)."""
        done = self.blocks[step]
        n = 0 if done == 0 else (self.config.first_block_frames if done == 1 else self.config.window_frames)
        k, v, ks, vs = self._get(step, layer, 0, n)
        k, v = self._deq(k, ks, "torch"), self._deq(v, vs, "torch")
        if unrotate and n:
            h_w = self._hw
            k = self._rope(k, n, torch.arange(n, device=k.device), h_w, "torch", inverse=True)
        return k, v
