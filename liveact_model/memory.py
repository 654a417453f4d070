# ConvKVMemory: the step-indexed, fixed-size self-attention KV cache of LiveAct (reference-model.md §4):
# sinks + ConvKV-compressed slots + recent raw frames + the current block, updated in the official order.
from __future__ import annotations

from typing import Iterable, Optional

import torch

import liveact_kernels as ops
from liveact_kernels import _backend
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

    layout (default "raw" on every device):
    - "raw", the official layout (§4.1, §4.3): K stored after RMSNorm and before RoPE, V raw; q and k arrive
      un-rotated (the model checks `memory.layout`) with the query frame positions. Writing a block is one
      in-place `ops.convkv_cache_update` per (step, layer) (compress + slot moves + FP8 quantisation in one
      launch; FP8 scales come from the raw K and moved slots keep their bytes, as in the official code).
      write=False and differentiable=True build the same slots functionally (`ops.convkv_compress` +
      torch.cat; tests/test_memory.py checks they equal the kernel's bit for bit). Attention: when the
      attention backend resolves to "triton" (CUDA tensors, or CPU tensors with backend="triton" under
      TRITON_INTERPRET=1) and q is bf16/fp16, `liveact_kernels.triton.cache_attention` reads the cache as
      stored and applies RoPE to q and to every key while loading (no roped copy). Otherwise (cpu / torch /
      cuda backends, fp32 q, autograd) the fallback ropes q, and ropes the K window at slot positions 0..n-1
      into one scratch buffer allocated once and reused (FP8: K is dequantised into it; V stays FP8 and its
      scales go to ops.attention): this fallback materialises a roped copy of the K window on every call
      (the scratch, B·W·fl·H·Dh elements of q's dtype, is counted in `nbytes` once allocated). There is no
      hand-written CUDA attention kernel, so on CUDA tensors backend="auto" resolves the attention to "triton"
      and takes cache_attention (tests/test_memory.py checks the resolution).
    - "rotated": keys stored already rotated at their slot position, so the attention consumes the cache as
      is. For every block >= 2 the compression dequantises, un-rotates, compresses, re-rotates and
      re-quantises, and the moved recent slots are re-rotated by the position delta (and, FP8, re-quantised).
      Equal to the official order in exact arithmetic, not in rounding.
    Why "raw" is the default also on the CPU: measured on this 2-core machine (one core busy, 1 torch thread,
    steady-state blocks, min of 7 runs): tiny avatar pipeline (liveact_model/assets, 4 layers, 16 tokens per
    frame, 3 steps) fp32 cache 34.5 vs 38.3 ms/block (raw vs rotated), bf16 39.2 vs 44.5, fp8 39.1 vs 41.9;
    tiny preset (run_blocks, 64 tokens per frame) bf16 16.3 vs 17.7, fp8 17.8 vs 20.3. The raw update is one
    kernel call where the rotated one needs ~10 ops, which outweighs re-roping the 14-slot K window.

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
                 differentiable: bool = False, offload: bool = False, layout: Optional[str] = None):
        self.config = cfg = get_config(config)
        if layout is None:   # "raw" on every device: measured faster on the CPU too (class docstring)
            layout = "raw"
        if layout not in ("raw", "rotated"):
            raise ValueError(f"ConvKVMemory: layout must be 'raw' or 'rotated', got {layout!r}")
        self.layout = layout
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
        self._scratch = None                            # raw layout, non-Triton attention: roped-K window

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
        self._scratch = None

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
        """Bytes of every cache buffer (host store + device staging when offloading + the raw layout's roped-K
        scratch once the fallback attention has allocated it)."""
        total = 0
        for store in (self._k, self._v, self._ks, self._vs):
            if store:
                total += sum(t.numel() * t.element_size() for ls in store.values() for t in ls)
        for ring in self._ring or ():
            total += sum(t.numel() * t.element_size() for t in ring.values() if t is not None)
        if self._scratch is not None:
            total += self._scratch.numel() * self._scratch.element_size()
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
               write: bool = True, backend: str = "auto", q_positions=None):
        """q, k, v: (B, T·fl, H, Dh). layout="rotated": q and k already rotated at the block's slot positions;
        layout="raw": q and k un-rotated (k after RMSNorm, before RoPE), q_positions = the temporal RoPE
        positions of the block's T frames (default: the slot positions, 0.. for block 0, first_block_frames..
        after). Updates the (step, layer) cache in the official order (compress, move, write) unless
        write=False, in which case the same keys are built transiently. Returns the attention output
        (B, T·fl, H, Dh)."""
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
        if self.layout == "raw":
            if q_positions is None:
                q_positions = torch.arange(start, start + T, device=q.device)
            run = self._attend_raw
            args = (q, k, v, step, layer, block_index, (h, w), T, start, weight_k, weight_v, write, be, q_positions)
        else:
            run = self._attend
            args = (q, k, v, step, layer, block_index, (h, w), T, start, weight_k, weight_v, write, be)
        if not self.offload:
            return run(*args)
        host = self._host((step, layer))
        r = self._stage(step, layer)
        try:
            out = run(*args)
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

    # ---- raw layout (official: K after RMSNorm before RoPE, V raw; RoPE at attention time) ----
    def _update_kwargs(self, block_index, be):
        cfg = self.config
        return dict(frame_len=self.frame_len, group=cfg.compress_group, mode=self.mode, sinks=cfg.num_sink,
                    compressed=cfg.num_compressed, recent=cfg.num_recent, block=min(block_index, 2), backend=be)

    def _raw_window(self, step, layer, k, v, block_index, weight_k, weight_v, be):
        """Functional twin of ops.convkv_cache_update: the first n slots (k, v, k_scale, v_scale) the cache
        would hold after the update, built from ops.convkv_compress and torch.cat without writing anything
        (write=False, and the differentiable mode). FP8: the compressed slots and the new block get a fresh
        per-(token, head) scale, the moved recent slots keep their bytes and scales (as the kernel does)."""
        cfg = self.config
        s, c, r, g, nb = cfg.num_sink, cfg.num_compressed, cfg.num_recent, cfg.compress_group, cfg.block_frames
        fl = self.frame_len
        new = self._qkv(k, v, be)
        if block_index == 0:
            parts = [new]
        elif block_index == 1:
            parts = [self._get(step, layer, 0, cfg.first_block_frames), new]
        else:
            sk, sv, sks, svs = self._get(step, layer, s, s + c * g)
            if self.fp8:   # the kernel dequantises as q * scale in fp32 and accumulates in fp32
                sk, sv = self._deq(sk, sks, be), self._deq(sv, svs, be)
            wv = weight_v if self.use_v_proj else weight_k
            kw = dict(group=g, mode=self.mode, frame_len=fl, backend=be)
            ck = torch.cat([ops.convkv_compress(sk[:, j * g * fl:(j + 1) * g * fl], weight_k, **kw)
                            for j in range(c)], 1)
            cv = torch.cat([ops.convkv_compress(sv[:, j * g * fl:(j + 1) * g * fl], wv, **kw)
                            for j in range(c)], 1)
            parts = [self._get(step, layer, 0, s), self._qkv(ck, cv, be),
                     self._get(step, layer, s + c + nb, s + c + nb + r), new]
        K, V = torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)
        KS = torch.cat([p[2] for p in parts], 1) if self.fp8 else None
        VS = torch.cat([p[3] for p in parts], 1) if self.fp8 else None
        return K, V, KS, VS

    def _attend_raw(self, q, k, v, step, layer, block_index, hw, T, start, weight_k, weight_v, write, be, qpos):
        n = start + T
        fl = self.frame_len
        if self.differentiable or not write:
            K, V, KS, VS = self._raw_window(step, layer, k, v, block_index, weight_k, weight_v, be)
            if write:   # differentiable: replace the buffers (autograd keeps the old ones alive as needed)
                def rep(buf, x):
                    return torch.cat([x, buf[:, n * fl:]], 1) if n * fl < buf.shape[1] else x
                self._k[step][layer] = rep(self._k[step][layer], K)
                self._v[step][layer] = rep(self._v[step][layer], V)
        else:
            Kc, Vc = self._k[step][layer], self._v[step][layer]
            KSc = self._ks[step][layer] if self.fp8 else None
            VSc = self._vs[step][layer] if self.fp8 else None
            nk = k if self.fp8 else k.to(self.dtype)
            nv = v if self.fp8 else v.to(self.dtype)
            ops.convkv_cache_update(Kc, Vc, nk.contiguous(), nv.contiguous(), weight_k,
                                    weight_v if self.use_v_proj else None, k_scale=KSc, v_scale=VSc,
                                    **self._update_kwargs(block_index, be))
            K, V, KS, VS = Kc, Vc, KSc, VSc
        return self._raw_attention(q, K, V, KS, VS, n, hw, qpos, be)

    def _uses_cache_attention(self, q, K, be):
        if self.differentiable or q.requires_grad or q.dtype not in (torch.bfloat16, torch.float16):
            return False
        if K.dtype != q.dtype and K.dtype != FP8:
            return False
        try:
            return _backend.resolve("attention", be, q.device) == "triton"
        except RuntimeError:
            return False

    def _raw_attention(self, q, K, V, KS, VS, n, hw, qpos, be):
        """Attention of the un-rotated block queries over the first n raw slots (slot s at position s).
        K, V (and the scales) may hold more than n slots (the whole in-place buffer)."""
        cfg = self.config
        h, w = hw
        fl = h * w
        N = n * fl
        if self._uses_cache_attention(q, K, be):
            from liveact_kernels.triton.cache_attention import cache_attention
            return cache_attention(q, K, V, grid_hw=(h, w), q_frame_positions=qpos, k_scale=KS, v_scale=VS,
                                   num_kv_tokens=N, theta=cfg.rope_theta, split=cfg.rope_split)
        rope = dict(theta=cfg.rope_theta, split=cfg.rope_split, backend=be)
        qr = ops.rope3d(q, grid=(q.shape[1] // fl, h, w), frame_positions=qpos, **rope)
        kpos = torch.arange(n, device=q.device)
        Kw, Vw = K[:, :N], V[:, :N]
        KSw = KS[:, :N] if self.fp8 else None
        VSw = VS[:, :N] if self.fp8 else None
        if self.differentiable or torch.is_grad_enabled() and (Kw.requires_grad or q.requires_grad):
            Kd = self._deq(Kw, KSw, be).to(q.dtype) if self.fp8 else Kw.to(q.dtype)
            kr = ops.rope3d(Kd, grid=(n, h, w), frame_positions=kpos, **rope)
        else:
            # a roped copy of the K window, materialised per call into one reused scratch buffer
            B, _, H, Dh = K.shape
            full = B * cfg.window_frames * fl * H * Dh
            if (self._scratch is None or self._scratch.dtype != q.dtype or self._scratch.numel() != full
                    or self._scratch.device != q.device):
                self._scratch = torch.empty(full, dtype=q.dtype, device=q.device)
            kr = self._scratch[:B * N * H * Dh].view(B, N, H, Dh)
            if self.fp8:      # dequantise into the scratch (q * scale in fp32, rounded once), rope in place
                kr.copy_(Kw)  # exact: every e4m3 value is a bf16/fp16/fp32 value
                kr.mul_(KSw)  # the product is formed in fp32 (type promotion) and rounded once
                ops.rope3d(kr, grid=(n, h, w), frame_positions=kpos, out=kr, **rope)
            elif Kw.dtype == q.dtype:
                ops.rope3d(Kw, grid=(n, h, w), frame_positions=kpos, out=kr, **rope)
            else:
                kr.copy_(Kw)
                ops.rope3d(kr, grid=(n, h, w), frame_positions=kpos, out=kr, **rope)
        if self.fp8:
            return ops.attention(qr, kr, Vw, tensor_layout="NHD", v_scale=VSw, backend=be)
        return ops.attention(qr, kr, Vw.to(q.dtype), tensor_layout="NHD", backend=be)

    # ---- inspection ----
    def read(self, step: int, layer: int, unrotate: bool = True):
        """Dequantised (k, v) of the filled slots, fp32 (B, n·fl, H, Dh); keys un-rotated (the official raw K)."""
        done = self.blocks[step]
        n = 0 if done == 0 else (self.config.first_block_frames if done == 1 else self.config.window_frames)
        k, v, ks, vs = self._get(step, layer, 0, n)
        k, v = self._deq(k, ks, "torch"), self._deq(v, vs, "torch")
        if unrotate and n and self.layout == "rotated":
            h_w = self._hw
            k = self._rope(k, n, torch.arange(n, device=k.device), h_w, "torch", inverse=True)
        return k, v
