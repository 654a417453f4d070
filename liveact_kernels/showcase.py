"""Kernel showcase (`python -m liveact_kernels.showcase`, run by `make demo`): build information, then for every op
the backends available here and the measured speed of the compiled `cpu` kernel against eager PyTorch (the
`torch` backend, i.e. reference.py) at a moderate shape. Runs in well under a minute on 2 cores."""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import liveact_kernels as lk
from liveact_kernels import _backend

BF16 = torch.bfloat16


def _mod(B, F, D):
    return 0.1 * torch.randn(B, F, D)


# op -> function building (args, kwargs) at a moderate LiveAct-like shape (scaled so each call takes milliseconds).
def _adaln_modulate():
    x = torch.randn(1, 2048, 3072).to(BF16)
    return (x, _mod(1, 4, 3072), _mod(1, 4, 3072)), {}


def _gated_residual():
    x = torch.randn(1, 2048, 3072).to(BF16)
    return (x, torch.randn_like(x), _mod(1, 4, 3072)), {}


def _adaln_residual():
    x = torch.randn(1, 2048, 3072).to(BF16)
    return (x, torch.randn_like(x), _mod(1, 4, 3072), _mod(1, 4, 3072), _mod(1, 4, 3072)), {}


def _rms_norm():
    return (torch.randn(2048, 5120).to(BF16), torch.randn(5120).to(BF16)), {}


def _rope3d():
    Fr, h, w = 2, 16, 32
    return (torch.randn(1, Fr * h * w, 40, 128).to(BF16),), {"grid": (Fr, h, w), "frame_positions": [0.0, 1.0]}


def _convkv_compress():
    return (torch.randn(1, 5 * 256, 40, 128).to(BF16), torch.randn(40 * 128, 1, 5)), {"group": 5}


def _causal_dwconv1d():
    return (torch.randn(1, 1024, 2048).to(BF16), torch.randn(1024, 4)), {"activation": "silu"}


def _causal_dwconv1d_update():
    return (torch.randn(64, 1024).to(BF16), torch.randn(64, 1024, 3).to(BF16), torch.randn(1024, 4)), {}


def _quantize_fp8():
    return (torch.randn(2048, 5120).to(BF16),), {"granularity": "token"}


def _dequantize_fp8():
    q, s = lk.quantize_fp8(torch.randn(2048, 5120).to(BF16), granularity="token", backend="torch")
    return (q, s, BF16), {}


def _attention():
    q = torch.randn(1, 40, 512, 128).to(BF16)
    return (q, torch.randn(1, 40, 1024, 128).to(BF16), torch.randn(1, 40, 1024, 128).to(BF16)), {}


def _audio_cross_attention():
    return (torch.randn(1, 4 * 256, 40, 128).to(BF16), torch.randn(1, 4, 32, 40, 128).to(BF16),
            torch.randn(1, 4, 32, 40, 128).to(BF16)), {"frame_len": 256}


def _fp8_linear():
    w = torch.randn(2048, 2048)
    wq, ws = lk.quantize_fp8(w, granularity="token", backend="torch")
    return (torch.randn(256, 2048).to(BF16), wq, ws), {}


CASES = {
    "adaln_modulate": ("[1, 2048, 3072] bf16, 4 frames", _adaln_modulate),
    "gated_residual": ("[1, 2048, 3072] bf16, 4 frames", _gated_residual),
    "adaln_residual": ("[1, 2048, 3072] bf16, 4 frames", _adaln_residual),
    "rms_norm": ("[2048, 5120] bf16", _rms_norm),
    "rope3d": ("[1, 1024, 40, 128] bf16", _rope3d),
    "convkv_compress": ("[1, 1280, 40, 128] bf16, group 5", _convkv_compress),
    "causal_dwconv1d": ("[1, 1024, 2048] bf16, width 4", _causal_dwconv1d),
    "causal_dwconv1d_update": ("[64, 1024] bf16, width 4", _causal_dwconv1d_update),
    "quantize_fp8": ("[2048, 5120] bf16, per token", _quantize_fp8),
    "dequantize_fp8": ("[2048, 5120] fp8, per token", _dequantize_fp8),
    "attention": ("q [1, 40, 512, 128] vs kv 1024, bf16", _attention),
    "audio_cross_attention": ("q [1, 1024, 40, 128], 4 frames x 32 audio tokens", _audio_cross_attention),
    "fp8_linear": ("[256, 2048] x fp8 [2048, 2048]", _fp8_linear),
}


def _median_ms(fn, reps: int, budget_s: float) -> float:
    fn()  # warm-up
    times, t_end = [], time.perf_counter() + budget_s
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
        if time.perf_counter() > t_end and len(times) >= 1:
            break
    return statistics.median(times)


def measure(op: str, reps: int = 5, budget_s: float = 1.5) -> str:
    """One line for `op`: the cpu kernel's and the reference's median ms and their ratio, or why there is none."""
    fn = getattr(lk, op, None)
    if fn is None:
        return "not exported by liveact_kernels"
    if _backend.why_unavailable(op, "cpu", torch.device("cpu")) is not None:
        return "no cpu kernel"
    if op not in CASES:
        return "cpu kernel present; no showcase input defined"
    desc, make = CASES[op]
    try:
        torch.manual_seed(0)
        args, kwargs = make()
        with torch.inference_mode():
            t_cpu = _median_ms(lambda: fn(*args, **kwargs, backend="cpu"), reps, budget_s)
            t_ref = _median_ms(lambda: fn(*args, **kwargs, backend="torch"), reps, budget_s)
    except Exception as e:  # an op still being written by its engineer must not stop the showcase
        return f"cpu kernel present; measurement failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
    return f"cpu {t_cpu:8.2f} ms  eager {t_ref:8.2f} ms  -> {t_ref / t_cpu:6.1f}x   ({desc}, median of <= {reps})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=5, help="timed runs per provider (median is reported)")
    ap.add_argument("--ops", nargs="*", default=None, help="subset of liveact_kernels.OPS")
    a = ap.parse_args(argv)
    info = lk.build_info()
    print(f"liveact_kernels {lk.__version__}  torch {torch.__version__}  threads {torch.get_num_threads()}")
    for k in sorted(info):
        print(f"  {k}: {info[k]}")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    ops = a.ops or list(lk.OPS)
    width = max(len(o) for o in ops)
    head = f"backends ({', '.join(devices)})"
    print(f"\n{'op':<{width}}  {head:<34}|  cpu kernel vs eager PyTorch (reference)")
    t0 = time.perf_counter()
    for op in ops:
        try:
            avail = "; ".join(f"{d}: {','.join(lk.available_backends(op, d)) or '-'}" for d in devices)
        except Exception as e:
            avail = f"? ({type(e).__name__})"
        print(f"{op:<{width}}  {avail:<34}|  {measure(op, a.reps)}", flush=True)
    print(f"\n(total {time.perf_counter() - t0:.1f} s; ratios are eager ms / cpu ms on this shared machine)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
