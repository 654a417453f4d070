"""Ahead-of-time compilation of every shipped Triton kernel for sm_90 / sm_89 / sm_80 (non-FP8 kernels) without a
GPU (triton.compile + GPUTarget, at the configuration each launcher ships for that target and LiveAct's shapes),
asserting what the binaries show: wgmma with e4m3 operands in the FP8 attentions on sm_90, zero register
spills, shared memory within the target's limit. Needs no interpreter and no GPU."""
import pytest

pytestmark = pytest.mark.triton

triton = pytest.importorskip("triton")

from liveact_kernels.triton import aot  # noqa: E402

CASES = [(s, cc) for s in aot.specs() for cc in s.targets]
IDS = [f"{s.name}-sm_{cc}" for s, cc in CASES]


@pytest.mark.parametrize("spec,cc", CASES, ids=IDS)
def test_compiles_without_spills_and_fits_shared_memory(spec, cc):
    ck = aot.compile_spec(spec, cc)
    mix = aot.instruction_mix(ck)
    assert mix["target"] == (f"sm_{cc}a" if cc == 90 else f"sm_{cc}"), mix["target"]
    ru = aot.resource_usage(ck)
    assert ru["local"] == 0 and ru["stack"] == 0, f"{spec.name} sm_{cc} spills: {ru}"
    assert 0 < ru["regs"] <= 255
    assert ru["dyn_shared"] + ru["shared"] <= aot.SMEM_LIMIT[cc], f"{spec.name} sm_{cc} shared memory {ru}"


@pytest.mark.parametrize("name", ["attention[fp8 kv]", "attention[fp8 kv, fp8 pv]", "cache_attention[fp8]",
                                  "cache_attention[fp8, fp8 pv]", "fp8_linear"])
def test_fp8_kernels_use_wgmma_e4m3_on_sm90(name):
    spec = next(s for s in aot.specs() if s.name == name)
    mix = aot.instruction_mix(aot.compile_spec(spec, 90))
    assert mix["wgmma_e4m3"] > 0, mix
    ptx = aot.compile_spec(spec, 90).asm["ptx"]
    assert any("wgmma.mma_async" in ln and ".e4m3.e4m3" in ln for ln in ptx.splitlines())
    if "fp8 pv" in name:          # both dots in e4m3
        assert mix["wgmma"] == mix["wgmma_e4m3"], mix


@pytest.mark.parametrize("name", ["attention[fp8 kv]", "cache_attention[fp8]", "fp8_linear"])
def test_fp8_kernels_use_e4m3_mma_on_sm89(name):
    spec = next(s for s in aot.specs() if s.name == name)
    mix = aot.instruction_mix(aot.compile_spec(spec, 89))
    assert mix["mma_e4m3"] > 0 and mix["wgmma"] == 0, mix


@pytest.mark.parametrize("name", ["adaln_residual", "rms_norm", "rope3d", "convkv_compress[token]"])
def test_memory_bound_kernels_use_vector_loads(name):
    spec = next(s for s in aot.specs() if s.name == name)
    assert aot.instruction_mix(aot.compile_spec(spec, 90))["ld.global.v4"] > 0


def test_resource_usage_parser():
    text = ("Fatbin elf code:\n================\narch = sm_90a\ncode version = [1,8]\n"
            "Resource usage:\n Common:\n  GLOBAL:0\n Function _attn_fwd_kernel:\n"
            "  REG:253 STACK:16 SHARED:0 LOCAL:8 CONSTANT[0]:664 TEXTURE:0 SURFACE:0 SAMPLER:0\n")
    rows = aot.parse_resource_usage(text)
    assert rows == [{"arch": "sm_90a", "function": "_attn_fwd_kernel", "regs": 253, "stack": 16, "shared": 0,
                     "local": 8}]
