"""Ahead-of-time compilation of the shipped Triton kernels for sm_80 / sm_89 / sm_90 without a GPU.

Each entry of `specs()` calls a real launcher (`<op>_fwd_triton` or `cache_attention`) on meta tensors at one
of LiveAct's shapes while `JITFunction.run` is intercepted: the captured arguments give the exact signature,
the specialisations Triton's runtime would make (16-byte alignment "D", integer 1 as constexpr) and the launch
options of the configuration the launcher ships for that target. `compile_spec` then runs
`triton.compile(ASTSource(...), target=GPUTarget("cuda", cc, 32))` (kernel-notes.md section 9), and
`resource_usage` / `instruction_mix` read registers, shared memory, local memory (spills) and the
instructions of interest from the cubin (the wheel's cuobjdump) and the PTX.
Used by tests/test_triton_compile.py and scripts/gpu_compile_report.py.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import subprocess
import tempfile
from typing import Callable

import torch
import triton
from triton.backends.compiler import BaseBackend, GPUTarget
from triton.compiler import ASTSource

from . import _common

META = torch.device("meta")
# Shared memory a CTA may use (opt-in maximum), bytes: H100 227 KB, Ada 99 KB, A100 163 KB.
SMEM_LIMIT = {90: 232448, 89: 101376, 80: 166912}
H100_BW = 3.35e12
H100_PEAK = {"bf16": 989e12, "fp8": 1979e12}


@dataclasses.dataclass
class Launch:
    kernel: object          # triton JITFunction
    args: dict              # parameter name -> value
    options: dict           # num_warps, num_stages


@dataclasses.dataclass
class Spec:
    name: str               # unique, e.g. "attention[fp8]"
    op: str
    shape: str              # LiveAct shape in words
    run: Callable[[], None]  # calls the launcher on meta tensors
    targets: tuple          # compute capabilities
    flops: float = 0.0      # at `shape`
    bytes: float = 0.0
    precision: str = "bf16"  # tensor-core peak of the roofline: "bf16", "fp8" or "fp8+bf16" (QK fp8, PV bf16)
    launch_index: int = 0   # which captured launch (two-pass kernels launch twice)


@contextlib.contextmanager
def _capture(cc: int):
    """Records every JITFunction launch instead of running it; launchers size their tiles for `cc`."""
    launches = []
    orig = triton.runtime.jit.JITFunction.run

    def run(self, *args, grid, warmup, **kwargs):
        names = self.arg_names
        bound = dict(zip(names, args))
        opts = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
        bound.update(kwargs)
        launches.append(Launch(self, bound, opts))

    old_cc = _common.CC_OVERRIDE
    triton.runtime.jit.JITFunction.run = run
    _common.CC_OVERRIDE = cc
    try:
        yield launches
    finally:
        triton.runtime.jit.JITFunction.run = orig
        _common.CC_OVERRIDE = old_cc


def capture(spec: Spec, cc: int) -> Launch:
    with _capture(cc) as launches:
        spec.run()
    return launches[spec.launch_index]


def source(launch: Launch) -> ASTSource:
    """The ASTSource Triton's runtime would build for these arguments (types, alignment specialisation)."""
    from triton._C.libtriton import native_specialize_impl
    fn = launch.kernel
    signature, constexprs, attrs = {}, {}, {}
    for i, p in enumerate(fn.params):
        v = launch.args[p.name]
        if p.is_constexpr:
            signature[p.name] = "constexpr"
            constexprs[p.name] = v
            continue
        ty, key = native_specialize_impl(BaseBackend, v, False, True, True)
        signature[p.name] = ty
        if ty == "constexpr":
            constexprs[p.name] = key
        elif isinstance(key, str) and key:
            attrs[(i,)] = BaseBackend.parse_attr(key)
    return ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)


_CACHE: dict = {}


def compile_spec(spec: Spec, cc: int):
    """The compiled kernel of `spec` for sm_<cc> (cached for the process)."""
    key = (spec.name, cc)
    if key not in _CACHE:
        launch = capture(spec, cc)
        opts = {"num_warps": launch.options.get("num_warps", 4), "num_stages": launch.options.get("num_stages", 3)}
        _CACHE[key] = triton.compile(source(launch), target=GPUTarget("cuda", cc, 32), options=opts)
    return _CACHE[key]


def tool(name: str) -> str:
    """Path of cuobjdump / nvdisasm / ptxas shipped inside the triton wheel."""
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


_RES = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)")


def parse_resource_usage(text: str) -> list[dict]:
    """Parses `cuobjdump --dump-resource-usage` output into [{arch, function, regs, stack, shared, local}]."""
    rows, arch = [], None
    for line in text.splitlines():
        m = re.search(r"arch = (sm_\w+)", line)
        if m:
            arch = m.group(1)
        m = re.search(r"Function ([^:\s]+):", line)
        r = _RES.search(line)
        if m and r:
            rows.append({"arch": arch, "function": m.group(1), "regs": int(r.group(1)), "stack": int(r.group(2)),
                         "shared": int(r.group(3)), "local": int(r.group(4))})
        elif m:
            rows.append({"arch": arch, "function": m.group(1), "pending": True})
        elif r and rows and rows[-1].get("pending"):
            rows[-1].update(regs=int(r.group(1)), stack=int(r.group(2)), shared=int(r.group(3)),
                            local=int(r.group(4)))
            rows[-1].pop("pending")
    return [r for r in rows if not r.get("pending")]


def resource_usage(compiled) -> dict:
    """Registers, static shared memory, stack and local memory (spills) of the cubin; dynamic shared memory
    from Triton's metadata."""
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(compiled.asm["cubin"])
        path = f.name
    try:
        out = subprocess.run([tool("cuobjdump"), "--dump-resource-usage", path], capture_output=True, text=True,
                             check=True).stdout
    finally:
        os.unlink(path)
    rows = parse_resource_usage(out)
    assert len(rows) == 1, out
    r = rows[0]
    r["dyn_shared"] = int(compiled.metadata.shared)
    r["spill_bytes"] = r["local"] + r["stack"]
    return r


def instruction_mix(compiled) -> dict:
    ptx = compiled.asm["ptx"]
    # strip predicates ("@%p1 ld.global.v4.b32 ...") so that every instruction starts with its opcode
    lines = [re.sub(r"^@!?%\w+\s+", "", ln.strip()) for ln in ptx.splitlines()]
    wgmma = [ln for ln in lines if ln.startswith("wgmma.mma_async")]
    return {
        "wgmma": len(wgmma),
        "wgmma_e4m3": sum("e4m3" in ln for ln in wgmma),
        "mma": sum(ln.startswith("mma.sync") for ln in lines),
        "mma_e4m3": sum(ln.startswith("mma.sync") and "e4m3" in ln for ln in lines),
        "ld.global.v4": sum(ln.startswith("ld.global") and ".v4" in ln for ln in lines),
        "cp.async": sum(ln.startswith("cp.async") and "bulk" not in ln for ln in lines),
        "tma": sum(ln.startswith("cp.async.bulk") for ln in lines),
        "cvt.e4m3": sum(ln.startswith("cvt") and "e4m3" in ln for ln in lines),
        "target": (re.search(r"\.target\s+(\S+)", ptx) or [None, None])[1],
    }


def roofline_ms(spec: Spec) -> dict:
    """H100 projection: max(bytes / 3.35 TB/s, flops / dense peak) in ms, and which bound applies."""
    t_mem = spec.bytes / H100_BW
    if spec.precision == "fp8+bf16":   # attention with e4m3 Q.K^T and bf16 P.V: half the FLOPs at each peak
        t_cmp = spec.flops / 2 / H100_PEAK["fp8"] + spec.flops / 2 / H100_PEAK["bf16"]
    else:
        t_cmp = spec.flops / H100_PEAK[spec.precision] if spec.flops else 0.0
    return {"mem_ms": t_mem * 1e3, "compute_ms": t_cmp * 1e3, "proj_ms": max(t_mem, t_cmp) * 1e3,
            "bound": "compute" if t_cmp > t_mem else "memory"}


# ----------------------------------------------------------------------------------- LiveAct's shapes
# 720x416 video: latent grid h 26 x w 45 = 1170 tokens per frame; a block of 8 frames = 9360 query tokens;
# the 14-slot cache = 16380 keys; 40 heads x 128 = 5120 channels.
FL, HG, WG, H, DH, D = 1170, 26, 45, 40, 128, 5120
NQ, NK = 8 * FL, 14 * FL
BF16, FP32, FP8 = torch.bfloat16, torch.float32, torch.float8_e4m3fn


def _e(*shape, dtype=BF16):
    return torch.empty(*shape, dtype=dtype, device=META)


def _adaln(kind):
    from .adaln import adaln_modulate_fwd_triton, adaln_residual_fwd_triton, gated_residual_fwd_triton
    x, mod = _e(1, NQ, D), _e(1, 8, D, dtype=FP32)
    if kind == "modulate":
        return lambda: adaln_modulate_fwd_triton(x, mod, mod, None, None, 1e-6, False, _e(1, NQ, D))
    if kind == "gated":
        return lambda: gated_residual_fwd_triton(x, _e(1, NQ, D), mod, _e(1, NQ, D))
    return lambda: adaln_residual_fwd_triton(x, _e(1, NQ, D), mod, mod, mod, None, None, 1e-6, False,
                                             _e(1, NQ, D), _e(1, NQ, D))


def _rms():
    from .rms_norm import rms_norm_fwd_triton
    return lambda: rms_norm_fwd_triton(_e(NQ, D), _e(D, dtype=FP32), 1e-6, _e(NQ, D))


def _rope():
    from .rope3d import rope3d_fwd_triton
    t = [_e(8, 22, dtype=FP32), _e(8, 22, dtype=FP32), _e(HG, 21, dtype=FP32), _e(HG, 21, dtype=FP32),
         _e(WG, 21, dtype=FP32), _e(WG, 21, dtype=FP32)]
    return lambda: rope3d_fwd_triton(_e(1, NQ, H, DH), *t, _e(1, NQ, H, DH))


def _convkv(mode):
    from .convkv import convkv_compress_fwd_triton
    return lambda: convkv_compress_fwd_triton(_e(1, 5 * FL, H, DH), _e(D, 5, dtype=FP32), 5, mode, FL,
                                              _e(1, FL, H, DH))


def _cache_update(kind):
    from .convkv import convkv_cache_update
    cd = FP8 if kind == "fp8" else BF16
    sc = (lambda: _e(1, NK, H, 1, dtype=FP32)) if kind == "fp8" else (lambda: None)
    return lambda: convkv_cache_update(_e(1, NK, H, DH, dtype=cd), _e(1, NK, H, DH, dtype=cd), _e(1, NQ, H, DH),
                                       _e(1, NQ, H, DH), _e(D, 1, 5, dtype=FP32), frame_len=FL, k_scale=sc(),
                                       v_scale=sc(), block=2)


def _dwconv():
    from .causal_dwconv1d import causal_dwconv1d_fwd_triton
    return lambda: causal_dwconv1d_fwd_triton(_e(1, D, 4096), _e(D, 4, dtype=FP32), _e(D, dtype=FP32),
                                              _e(1, D, 3), 1, "silu", _e(1, D, 4096), _e(1, D, 3))


def _dwconv_update():
    from .causal_dwconv1d import causal_dwconv1d_update_fwd_triton
    return lambda: causal_dwconv1d_update_fwd_triton(_e(1, D, 1), _e(1, D, 3), _e(D, 4, dtype=FP32),
                                                     _e(D, dtype=FP32), "silu", _e(1, D, 1))


def _quant(gs, n):
    from .fp8 import quantize_fp8_fwd_triton
    return lambda: quantize_fp8_fwd_triton(_e(n), gs, _e(n, dtype=FP8), _e(n // gs, dtype=FP32))


def _dequant():
    from .fp8 import dequantize_fp8_fwd_triton
    n = NK * H * DH
    return lambda: dequantize_fp8_fwd_triton(_e(n, dtype=FP8), _e(n // DH, dtype=FP32), DH, _e(n))


def _fp8_linear():
    from .fp8_linear import fp8_linear_fwd_triton
    return lambda: fp8_linear_fwd_triton(_e(NQ, D, dtype=FP8), _e(NQ, 1, dtype=FP32), _e(13824, D, dtype=FP8),
                                         _e(13824, dtype=FP32), _e(13824, dtype=FP32), _e(NQ, 13824))


def _attention(kv, qk_fp8=False, pv_fp8=False, causal=False):
    from .attention import attention_fwd_triton
    kvd = FP8 if kv == "fp8" else BF16
    sc = _e(1, NK, H, 1, dtype=FP32) if kv == "fp8" else None
    return lambda: attention_fwd_triton(_e(1, NQ, H, DH), _e(1, NK, H, DH, dtype=kvd), _e(1, NK, H, DH, dtype=kvd),
                                        sc, sc, causal, DH ** -0.5, _e(1, NQ, H, DH), _e(1, H, NQ, dtype=FP32),
                                        qk_fp8=qk_fp8, pv_fp8=pv_fp8)


def _cache_attention(kv, pv_fp8=False):
    from .cache_attention import cache_attention
    kvd = FP8 if kv == "fp8" else BF16
    sc = _e(1, NK, H, 1, dtype=FP32) if kv == "fp8" else None
    return lambda: cache_attention(_e(1, NQ, H, DH), _e(1, NK, H, DH, dtype=kvd), _e(1, NK, H, DH, dtype=kvd),
                                   k_scale=sc, v_scale=sc, grid_hw=(HG, WG), q_frame_positions=range(6, 14),
                                   pv_fp8=pv_fp8)


def _audio():
    from .audio_cross_attention import audio_cross_attention_fwd_triton
    return lambda: audio_cross_attention_fwd_triton(_e(1, NQ, H, DH), _e(1, 14, 32, H, DH), _e(1, 14, 32, H, DH),
                                                    FL, 6, False, DH ** -0.5, _e(1, NQ, H, DH))


ALL = (80, 89, 90)
FP8_TARGETS = (89, 90)


@functools.lru_cache(maxsize=1)
def specs() -> tuple:
    """The shipped kernels at LiveAct's shapes, with the bytes and FLOPs the roofline projection uses."""
    el = NQ * D
    attn_flops = 4.0 * H * DH * NQ * NK
    return (
        Spec("adaln_modulate", "adaln_modulate", "x [1, 9360, 5120] bf16", _adaln("modulate"), ALL,
             flops=10 * el, bytes=4 * el),
        Spec("gated_residual", "gated_residual", "x [1, 9360, 5120] bf16", _adaln("gated"), ALL,
             flops=2 * el, bytes=6 * el),
        Spec("adaln_residual", "adaln_residual", "x [1, 9360, 5120] bf16", _adaln("residual"), ALL,
             flops=12 * el, bytes=8 * el),
        Spec("rms_norm", "rms_norm", "x [9360, 5120] bf16", _rms(), ALL, flops=4 * el, bytes=4 * el),
        Spec("rope3d", "rope3d", "x [1, 9360, 40, 128] bf16", _rope(), ALL, flops=3 * el, bytes=4 * el),
        Spec("convkv_compress[token]", "convkv_compress", "x [1, 5850, 40, 128] bf16 -> 1170 tokens",
             _convkv("token"), ALL, flops=10 * FL * D, bytes=12 * FL * D),
        Spec("convkv_compress[frame]", "convkv_compress", "x [1, 5850, 40, 128] bf16 -> 1170 tokens",
             _convkv("frame"), ALL, flops=10 * FL * D, bytes=12 * FL * D),
        Spec("convkv_cache_update[fp8]", "convkv_cache_update", "K+V fp8 caches [1, 16380, 40, 128], block >= 2",
             _cache_update("fp8"), FP8_TARGETS, flops=2 * 2 * 10 * FL * D,
             bytes=2 * (12 * FL * D * 1 + 12 * FL * D * 1 + 8 * FL * D * 2)),
        Spec("convkv_cache_update[bf16]", "convkv_cache_update", "K+V bf16 caches [1, 16380, 40, 128], block >= 2",
             _cache_update("bf16"), ALL, flops=2 * 2 * 10 * FL * D,
             bytes=2 * (12 * FL * D * 2 + 12 * FL * D * 2 + 8 * FL * D * 2)),
        Spec("causal_dwconv1d", "causal_dwconv1d", "x [1, 5120, 4096] bf16, W 4, SiLU", _dwconv(), ALL,
             flops=12 * D * 4096, bytes=4 * D * 4096),
        Spec("causal_dwconv1d_update", "causal_dwconv1d_update", "x [1, 5120, 1], state 3, W 4", _dwconv_update(),
             ALL, flops=12 * D, bytes=2 * D * 8 + 4 * D * 5),
        Spec("quantize_fp8[token_head]", "quantize_fp8", "K cache [16380*40, 128] bf16", _quant(DH, NK * D),
             FP8_TARGETS, flops=3 * NK * D, bytes=3 * NK * D + 4 * NK * H),
        Spec("quantize_fp8[tensor].amax", "quantize_fp8", "x [9360*5120] bf16, one scale", _quant(el, el),
             FP8_TARGETS, flops=el, bytes=2 * el),
        Spec("quantize_fp8[tensor].quant", "quantize_fp8", "x [9360*5120] bf16, one scale", _quant(el, el),
             FP8_TARGETS, flops=2 * el, bytes=3 * el, launch_index=1),
        Spec("dequantize_fp8", "dequantize_fp8", "K cache [16380, 40, 128] fp8 -> bf16", _dequant(), FP8_TARGETS,
             flops=NK * D, bytes=3 * NK * D + 4 * NK * H),
        Spec("fp8_linear", "fp8_linear", "[9360, 5120] x [13824, 5120]^T fp8 -> bf16", _fp8_linear(), FP8_TARGETS,
             flops=2.0 * NQ * D * 13824, bytes=NQ * D + 13824 * D + 2 * NQ * 13824, precision="fp8"),
        Spec("attention[bf16]", "attention", "q [1, 9360, 40, 128] vs k/v [1, 16380, 40, 128] bf16",
             _attention("bf16"), ALL, flops=attn_flops, bytes=2 * (2 * NQ + 2 * NK) * D, precision="bf16"),
        Spec("attention[bf16,causal]", "attention", "q [1, 9360, 40, 128] vs k/v [1, 16380, 40, 128] bf16",
             _attention("bf16", causal=True), ALL, flops=1.0 * H * (2 * NK - NQ) * NQ * 2 * DH,
             bytes=2 * (2 * NQ + 2 * NK) * D, precision="bf16"),
        Spec("attention[fp8 kv]", "attention", "q bf16 [1, 9360, 40, 128] vs fp8 k/v [1, 16380, 40, 128], exact "
             "dequantisation (the op's default)", _attention("fp8"), FP8_TARGETS, flops=attn_flops,
             bytes=2 * 2 * NQ * D + 2 * NK * D, precision="bf16"),
        Spec("attention[fp8 kv, fp8 qk]", "attention", "as attention[fp8 kv], Q.K^T in e4m3 (qk_fp8=True)",
             _attention("fp8", qk_fp8=True), FP8_TARGETS, flops=attn_flops, bytes=2 * 2 * NQ * D + 2 * NK * D,
             precision="fp8+bf16"),
        Spec("attention[fp8 kv, fp8 qk+pv]", "attention", "as attention[fp8 kv], both dots in e4m3",
             _attention("fp8", qk_fp8=True, pv_fp8=True), FP8_TARGETS, flops=attn_flops, bytes=2 * 2 * NQ * D + 2 * NK * D,
             precision="fp8"),
        Spec("cache_attention[fp8].k_mean", "cache_attention", "pre-pass: sum of roped fp8 keys [1, 16380, 40, 128]",
             _cache_attention("fp8"), FP8_TARGETS, flops=8 * NK * D, bytes=NK * D + 4 * NK * H),
        Spec("cache_attention[fp8]", "cache_attention", "q bf16 [1, 9360, 40, 128] vs fp8 cache 14 x 1170 tokens",
             _cache_attention("fp8"), FP8_TARGETS, flops=attn_flops, bytes=2 * 2 * NQ * D + 2 * NK * D,
             precision="fp8+bf16", launch_index=1),
        Spec("cache_attention[fp8, fp8 pv]", "cache_attention", "as cache_attention[fp8], P.V in e4m3",
             _cache_attention("fp8", pv_fp8=True), FP8_TARGETS, flops=attn_flops, bytes=2 * 2 * NQ * D + 2 * NK * D,
             precision="fp8", launch_index=1),
        Spec("cache_attention[bf16]", "cache_attention", "q bf16 [1, 9360, 40, 128] vs bf16 cache 14 x 1170",
             _cache_attention("bf16"), ALL, flops=attn_flops, bytes=2 * (2 * NQ + 2 * NK) * D, precision="bf16"),
        Spec("audio_cross_attention", "audio_cross_attention", "q [1, 9360, 40, 128] bf16, 8 frames x 32 audio tokens",
             _audio(), ALL, flops=4.0 * H * DH * 32 * NQ, bytes=2 * 2 * NQ * D + 2 * 2 * 8 * 32 * D),
    )


# ------------------------------------------------------------------------ CUDA kernels of liveact_kernels._C
def arch_names(cuda_archs: str) -> list[str]:
    """TORCH_CUDA_ARCH_LIST style "8.0;8.9;9.0a" -> ["sm_80", "sm_89", "sm_90a"] (+PTX suffixes dropped)."""
    out = []
    for a in re.split(r"[;\s,]+", cuda_archs.strip()):
        a = a.replace("+PTX", "")
        if a:
            out.append("sm_" + a.replace(".", ""))
    return out


def extension_resource_usage(so_path: str) -> list[dict]:
    """Per (arch, kernel) registers / stack / shared / local of every cubin embedded in the built extension."""
    out = subprocess.run([tool("cuobjdump"), "--dump-resource-usage", so_path], capture_output=True, text=True)
    if out.returncode != 0:
        if "does not contain device code" in (out.stderr + out.stdout):
            return []
        raise RuntimeError(f"cuobjdump failed on {so_path}: {out.stderr.strip()}")
    return parse_resource_usage(out.stdout)


def demangle(names: list[str]) -> dict:
    try:
        r = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True)
        return dict(zip(names, r.stdout.splitlines()))
    except (OSError, subprocess.CalledProcessError):
        return {n: n for n in names}


# ------------------------------------------------------------------------------ whole-sweep, as JSON
def collect() -> dict:
    """Compiles every spec for every target; returns {"<name>@<cc>": {regs, stack, shared, local, dyn_shared,
    spill_bytes, mix, wgmma_e4m3_lines}}. Must run without TRITON_INTERPRET (real JITFunctions)."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("aot.collect() compiles real kernels: run it without TRITON_INTERPRET=1 "
                           "(collect_in_subprocess() does that)")
    res = {}
    for spec in specs():
        for cc in spec.targets:
            ck = compile_spec(spec, cc)
            r = resource_usage(ck)
            launch = capture(spec, cc)
            r["mix"] = instruction_mix(ck)
            r["wgmma_e4m3_lines"] = sum("wgmma.mma_async" in ln and ".e4m3.e4m3" in ln
                                        for ln in ck.asm["ptx"].splitlines())
            r["options"] = dict(launch.options)
            r["tiles"] = {k: v for k, v in launch.args.items()
                          if isinstance(v, int) and (k.startswith("BLOCK") or k in ("ROWS", "GROUP_M", "NA", "BT"))}
            res[f"{spec.name}@{cc}"] = r
    return res


def collect_in_subprocess() -> dict:
    """collect() in a child interpreter without TRITON_INTERPRET (the parent may run the interpreter tests)."""
    import json
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    p = subprocess.run([sys.executable, "-m", "liveact_kernels.triton.aot"], capture_output=True, text=True,
                       env=env, cwd=root)
    if p.returncode != 0:
        raise RuntimeError(f"AOT compile sweep failed:\n{p.stderr[-4000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def collect_any() -> dict:
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return collect_in_subprocess()
    return collect()


if __name__ == "__main__":
    import json
    print(json.dumps(collect()))
