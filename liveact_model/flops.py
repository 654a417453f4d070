# FLOPs per video frame and KV-cache bytes of a LiveAct config, counted by tracing the real model on the meta
# device with torch.utils.flop_counter, plus a labelled roofline *projection* of block time and FPS on H100/H200.
from __future__ import annotations

import argparse
import json
from typing import Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

from .config import get_config
from .memory import ConvKVMemory
from .model import LiveActModel
from .pipeline import latent_size

# Spec-sheet peaks (dense, no sparsity) of the SXM parts; not measured here (no GPU on this machine).
GPUS = {
    "H100": {"bf16": 989.4e12, "fp8": 1978.9e12, "hbm": 3.35e12},
    "H200": {"bf16": 989.4e12, "fp8": 1978.9e12, "hbm": 4.8e12},
}


def parse_size(size: str) -> tuple:
    """'512x512' or '720*416' (width x height, as the official --size) -> (width, height)."""
    for sep in ("x", "*", "X"):
        if sep in size:
            w, h = size.split(sep)
            return int(w), int(h)
    raise ValueError(f"size {size!r}: expected WIDTHxHEIGHT, e.g. 512x512")


def _count(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def analyze(config="official", size=(512, 512), *, audio_cfg: float = 1.0, batch: int = 1) -> dict:
    """Trace one steady-state block (block index >= 2: full 14-slot window, compression active) on the meta
    device, step by step, with the torch reference kernels (so attention is counted as matmuls).
    Returns FLOPs per block / per video frame, their breakdown, KV-cache bytes and weight bytes."""
    cfg = get_config(config)
    W, H = size
    h8, w8 = latent_size(W, H, cfg)
    be = "torch"
    with torch.device("meta"):
        model = LiveActModel(cfg, backend=be).to(torch.bfloat16)
    dev = torch.device("meta")
    nparams = sum(p.numel() for p in model.parameters())
    lin_params = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    steps = cfg.num_steps
    audio_steps = [i for i in range(steps) if i not in cfg.audio_skip_steps]
    mems = {}
    for name, dt in (("bf16", torch.bfloat16), ("fp8", torch.float8_e4m3fn)):
        m = ConvKVMemory(cfg, dtype=dt, device=dev)
        m.allocate(batch, (h8 // cfg.patch_size[1], w8 // cfg.patch_size[2]))
        mems[name] = m
    mem = mems["bf16"]
    fl = mem.frame_len
    y = torch.zeros(batch, cfg.cond_channels, cfg.window_frames, h8, w8, device=dev, dtype=torch.bfloat16)
    text = torch.zeros(batch, cfg.text_len, cfg.text_dim, device=dev, dtype=torch.bfloat16) if cfg.has_text else None
    clip = torch.zeros(batch, cfg.clip_tokens, cfg.clip_dim, device=dev, dtype=torch.bfloat16) if cfg.has_clip else None
    T = cfg.block_frames
    vf = T * cfg.vae_scale
    res = {"config": "custom" if not isinstance(config, str) else config, "size": f"{W}x{H}", "frame_tokens": fl,
           "block_latent_frames": T, "block_video_frames": vf, "params": nparams, "linear_params": lin_params}
    cond = [None]
    res["flops_per_stream_condition"] = _count(lambda: cond.__setitem__(0, model.prepare_condition(
        y=y, text=text, clip=clip, backend=be)))
    windows = torch.zeros(batch, vf, cfg.audio_window, cfg.audio_layers, cfg.audio_channels, device=dev,
                          dtype=torch.bfloat16)
    actx = [None]
    res["flops_audio_per_block"] = _count(lambda: actx.__setitem__(0, model.prepare_audio(
        model.audio_tokens(windows, has_first=False, backend=be), backend=be)))
    x = torch.zeros(batch, cfg.out_dim, T, h8, w8, device=dev)
    per_step = []
    for i in range(steps):
        mem.blocks[i] = 2                        # steady state: compress + full window
        a = actx[0] if i in audio_steps else None
        per_step.append(_count(lambda: model.forward_block(x, cfg.timesteps[i], cond[0], mem, step=i,
                                                           block_index=2, audio=a, backend=be)))
    res["flops_per_step"] = per_step
    cfg_extra = 0
    if audio_cfg != 1.0:
        for i in audio_steps:      # the null-audio pass costs one more forward on those steps
            cfg_extra += per_step[i]
        cfg_extra += res["flops_audio_per_block"]
    res["audio_cfg"] = audio_cfg
    block = sum(per_step) + res["flops_audio_per_block"] + cfg_extra
    res["flops_per_block"] = block
    res["flops_per_video_frame"] = block / vf
    res["forwards_per_block"] = steps + (len(audio_steps) if audio_cfg != 1.0 else 0)
    res["kv_cache_bytes"] = {k: m.nbytes * (2 if audio_cfg != 1.0 else 1) for k, m in mems.items()}
    # fp8 GEMM: Linear weights 1 byte, everything else (convs, norms, modulation) stays bf16
    res["weight_bytes"] = {"bf16": 2 * nparams, "fp8": lin_params + 2 * (nparams - lin_params)}
    return res


def project(res: dict, gpu: str, n_gpu: int, precision: str) -> dict:
    """Roofline *projection*, not a measurement: per forward, time = max(FLOPs / (n_gpu · peak),
    bytes / HBM bandwidth), bytes = all weights (replicated on every GPU under Ulysses SP) + that step's
    KV cache / n_gpu. Assumes 100 % of spec-sheet peak; excludes communication, VAE and encoders."""
    spec = GPUS[gpu]
    peak = spec[precision]
    n_fwd = res["forwards_per_block"]
    kv_step = res["kv_cache_bytes"][precision] / max(1, n_fwd)
    t = 0.0
    flops_fwd = res["flops_per_block"] / n_fwd
    for _ in range(n_fwd):
        t_c = flops_fwd / (n_gpu * peak)
        t_m = (res["weight_bytes"][precision] + kv_step / n_gpu) / spec["hbm"]
        t += max(t_c, t_m)
    return {"gpu": f"{n_gpu}x{gpu}", "precision": precision, "block_ms": 1e3 * t,
            "fps": res["block_video_frames"] / t, "bound": "compute" if flops_fwd / (n_gpu * peak) >=
            (res["weight_bytes"][precision] + kv_step / n_gpu) / spec["hbm"] else "memory"}


def _f(x: float, unit: str = "FLOP") -> str:
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3f} {prefix}{unit}"
    return f"{x:.0f} {unit}"


def format_table(res: dict) -> str:
    lines = [
        f"LiveAct FLOPs ({res['config']}, {res['size']}, {res['frame_tokens']} tokens/latent frame, "
        f"audio_cfg={res['audio_cfg']}) - counted with torch.utils.flop_counter on the meta device",
        f"  parameters                    {_f(res['params'], '')}",
        f"  FLOPs per step (block of {res['block_latent_frames']} latents = {res['block_video_frames']} frames): "
        + ", ".join(_f(f) for f in res["flops_per_step"]),
        f"  audio proj + audio K/V/block  {_f(res['flops_audio_per_block'])}",
        f"  FLOPs per block               {_f(res['flops_per_block'])}",
        f"  FLOPs per video frame         {_f(res['flops_per_video_frame'])}",
        f"  condition (once per stream)   {_f(res['flops_per_stream_condition'])}",
        f"  KV cache bf16 / fp8           {_f(res['kv_cache_bytes']['bf16'], 'B')} / "
        f"{_f(res['kv_cache_bytes']['fp8'], 'B')} (1 GPU; halved per GPU under 2-way SP)",
        f"  weights bf16 / fp8-GEMM       {_f(res['weight_bytes']['bf16'], 'B')} / {_f(res['weight_bytes']['fp8'], 'B')}",
        "",
        "PROJECTION (roofline at 100% of spec-sheet peak: H100/H200 SXM dense bf16 989 TFLOP/s, fp8 1979 TFLOP/s,",
        "HBM 3.35 / 4.8 TB/s; block_ms = sum over forwards of max(FLOPs/(n*peak), (weights + KV/n)/HBM);",
        "communication, VAE, encoders and kernel efficiency excluded - an upper bound on FPS, not a measurement)",
        f"  {'gpus':8s} {'precision':9s} {'block ms':>9s} {'FPS':>7s}  bound",
    ]
    for gpu in GPUS:
        for n in (1, 2):
            for prec in ("bf16", "fp8"):
                p = project(res, gpu, n, prec)
                lines.append(f"  {p['gpu']:8s} {prec:9s} {p['block_ms']:9.1f} {p['fps']:7.1f}  {p['bound']}")
    return "\n".join(lines)


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(prog="liveact flops", description=__doc__ or "FLOPs per frame of LiveAct")
    ap.add_argument("--preset", default="official", help="config preset (official, tiny)")
    ap.add_argument("--size", default="512x512", help="WIDTHxHEIGHT in pixels (multiple of 16)")
    ap.add_argument("--audio-cfg", type=float, default=1.0, help="audio CFG scale (>1 adds the null pass)")
    ap.add_argument("--json", action="store_true", help="print the raw numbers as JSON")
    a = ap.parse_args(argv)
    res = analyze(a.preset, parse_size(a.size), audio_cfg=a.audio_cfg)
    if a.json:
        res["projection"] = [project(res, g, n, p) for g in GPUS for n in (1, 2) for p in ("bf16", "fp8")]
        print(json.dumps(res, indent=2))
    else:
        print(format_table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
