"""Writes docs/gpu-compile-report.md from real compile results: every shipped Triton kernel compiled for
sm_80 / sm_89 / sm_90 (triton.compile + GPUTarget, no GPU needed) and the CUDA kernels embedded in the built
liveact_kernels._C (the triton wheel's cuobjdump), plus a labelled H100 roofline projection per kernel.

Usage: python scripts/gpu_compile_report.py [--out docs/gpu-compile-report.md]
"""
from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import triton  # noqa: E402

from liveact_kernels import _backend  # noqa: E402
from liveact_kernels.triton import aot  # noqa: E402


def _ptxas_version():
    try:
        out = subprocess.run([aot.tool("ptxas"), "--version"], capture_output=True, text=True).stdout
        return out.strip().splitlines()[-1]
    except OSError:
        return "unknown"


def _tile(r):
    t = " ".join(f"{k.replace('BLOCK_', 'B')}={v}" for k, v in r["tiles"].items())
    return f"{t} w={r['options'].get('num_warps', 4)} s={r['options'].get('num_stages', 3)}"


def triton_section(lines):
    lines += ["## Triton kernels (AOT, `triton.compile(ASTSource, GPUTarget('cuda', cc, 32))`)", "",
              "Registers and static shared memory from the cubin (`cuobjdump --dump-resource-usage`), dynamic shared "
              "memory from Triton's metadata, spills = LOCAL + STACK bytes of the cubin; instruction counts from the "
              "PTX (static counts in the code, not executed counts). `w`/`s`: warps/stages. Shapes are LiveAct's "
              "(720x416: 1170 tokens per frame, 8-frame block = 9360 queries, 14-slot cache = 16380 keys, 40 heads "
              "x 128).", "",
              "| kernel | target | tiles | regs | smem (B) | spills (B) | wgmma (e4m3) | mma.sync (e4m3) | "
              "ld.global.v4 | cp.async | cvt e4m3 |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    sweep = aot.collect_any()
    for spec in aot.specs():
        for cc in spec.targets:
            ru = sweep[f"{spec.name}@{cc}"]
            mix = ru["mix"]
            lines.append(f"| {spec.name} | {mix['target']} | {_tile(ru)} | {ru['regs']} | "
                         f"{ru['dyn_shared'] + ru['shared']} | {ru['spill_bytes']} | {mix['wgmma']} ({mix['wgmma_e4m3']})"
                         f" | {mix['mma']} ({mix['mma_e4m3']}) | {mix['ld.global.v4']} | {mix['cp.async']} | "
                         f"{mix['cvt.e4m3']} |")
    lines.append("")


def roofline_section(lines):
    lines += ["## H100 roofline projection (not a measurement)", "",
              "**Projection**, per kernel at the shape shown: `t = max(bytes / 3.35e12 B/s, flops / peak)` with "
              "peak = 989e12 (dense bf16) or 1979e12 (dense fp8) FLOP/s for tensor-core kernels (fp8+bf16: half the FLOPs "
              "at each peak, for e4m3 Q.K^T with bf16 P.V). Bytes count each "
              "tensor once from HBM (inputs read, outputs written); FLOPs of attention `4*B*H*Dh*Nq*Nk` (causal: "
              "`B*H*(2*Nk - Nq)*Nq*2*Dh`). Nobody has run these kernels on a GPU yet; `bench/test_gpu.py` "
              "measures them where one exists.", "",
              "| kernel | shape | bytes (MB) | GFLOP | peak used | memory ms | compute ms | projected ms | bound |",
              "|---|---|---|---|---|---|---|---|---|"]
    for spec in aot.specs():
        r = aot.roofline_ms(spec)
        peak = spec.precision if r["bound"] == "compute" else "-"
        lines.append(f"| {spec.name} | {spec.shape} | {spec.bytes / 1e6:.1f} | {spec.flops / 1e9:.2f} | {peak} | "
                     f"{r['mem_ms']:.4f} | {r['compute_ms']:.4f} | {r['proj_ms']:.4f} | {r['bound']} |")
    lines.append("")


def cuda_section(lines):
    lines += ["## CUDA kernels of liveact_kernels._C (`cuobjdump --dump-resource-usage` on the built extension)", ""]
    ext = _backend.compiled_extension()
    if ext is None:
        lines += [f"Not available: {_backend.compiled_extension_error()}", ""]
        return
    info = _backend.build_info()
    if not info.get("cuda_kernels"):
        lines += ["The extension was built without CUDA kernels.", ""]
        return
    rows = aot.extension_resource_usage(ext.__file__)
    names = aot.demangle(sorted({r["function"] for r in rows}))
    lines += [f"Extension: `{os.path.basename(ext.__file__)}`, cuda_archs `{info['cuda_archs']}`, "
              f"{len(names)} kernels x {len({r['arch'] for r in rows})} archs.", "",
              "| kernel | arch | regs | static smem (B) | stack (B) | local/spill (B) |", "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (names[r["function"]], r["arch"])):
        lines.append(f"| `{names[r['function']]}` | {r['arch']} | {r['regs']} | {r['shared']} | {r['stack']} | "
                     f"{r['local']} |")
    lines.append("")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                  "docs", "gpu-compile-report.md"))
    args = ap.parse_args()
    lines = ["# GPU compile report", "",
             f"Generated by `python scripts/gpu_compile_report.py` on "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC with triton {triton.__version__} "
             f"({_ptxas_version()}), on a machine without a GPU. Every number below comes from compiling the "
             f"shipped kernels; rerun the command to regenerate.", ""]
    triton_section(lines)
    roofline_section(lines)
    cuda_section(lines)
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {args.out} ({len(lines)} lines)")


if __name__ == "__main__":
    main()
