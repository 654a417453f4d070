"""Ahead-of-time compilation of every shipped Triton kernel for sm_90 / sm_89 / sm_80 (non-FP8 kernels) without a
GPU (triton.compile + GPUTarget, at the configuration each launcher ships for that target and LiveAct's shapes),
asserting what the binaries show: wgmma with e4m3 operands in the FP8 kernels on sm_90, zero register spills,
shared memory within the target's limit. Needs no interpreter and no GPU: under TRITON_INTERPRET=1 (the
`make test-triton` pass) the sweep runs in a child process without it, since the interpreter replaces the
kernels' JITFunctions."""
import pytest

pytestmark = pytest.mark.triton

triton = pytest.importorskip("triton")

from liveact_kernels.triton import aot  # noqa: E402

CASES = [(s.name, cc) for s in aot.specs() for cc in s.targets]


@pytest.fixture(scope="module")
def sweep():
    return aot.collect_any()


@pytest.mark.parametrize("name,cc", CASES, ids=[f"{n}-sm_{cc}" for n, cc in CASES])
def test_compiles_without_spills_and_fits_shared_memory(sweep, name, cc):
    r = sweep[f"{name}@{cc}"]
    assert r["mix"]["target"] == (f"sm_{cc}a" if cc == 90 else f"sm_{cc}"), r["mix"]["target"]
    assert r["local"] == 0 and r["stack"] == 0, f"{name} sm_{cc} spills: {r}"
    assert 0 < r["regs"] <= 255
    assert r["dyn_shared"] + r["shared"] <= aot.SMEM_LIMIT[cc], f"{name} sm_{cc} shared memory: {r}"


@pytest.mark.parametrize("name", ["attention[fp8 kv, fp8 qk]", "attention[fp8 kv, fp8 qk+pv]", "cache_attention[fp8]",
                                  "cache_attention[fp8, fp8 pv]", "fp8_linear"])
def test_fp8_kernels_use_wgmma_e4m3_on_sm90(sweep, name):
    r = sweep[f"{name}@90"]
    assert r["mix"]["wgmma_e4m3"] > 0 and r["wgmma_e4m3_lines"] > 0, r["mix"]
    if "pv" in name or name == "fp8_linear":   # every dot in e4m3
        assert r["mix"]["wgmma"] == r["mix"]["wgmma_e4m3"], r["mix"]


@pytest.mark.parametrize("name", ["attention[bf16]", "cache_attention[bf16]", "audio_cross_attention"])
def test_bf16_attention_uses_wgmma_on_sm90_and_mma_on_sm80(sweep, name):
    assert sweep[f"{name}@90"]["mix"]["wgmma"] > 0
    assert sweep[f"{name}@80"]["mix"]["mma"] > 0


@pytest.mark.parametrize("name", ["attention[fp8 kv, fp8 qk]", "cache_attention[fp8]", "fp8_linear"])
def test_fp8_kernels_use_e4m3_mma_on_sm89(sweep, name):
    mix = sweep[f"{name}@89"]["mix"]
    assert mix["mma_e4m3"] > 0 and mix["wgmma"] == 0, mix


@pytest.mark.parametrize("name", ["adaln_residual", "rms_norm", "rope3d", "convkv_compress[token]"])
def test_memory_bound_kernels_use_vector_loads(sweep, name):
    assert sweep[f"{name}@90"]["mix"]["ld.global.v4"] > 0


def test_resource_usage_parser():
    text = ("Fatbin elf code:\n================\narch = sm_90a\ncode version = [1,8]\n"
            "Resource usage:\n Common:\n  GLOBAL:0\n Function _attn_fwd_kernel:\n"
            "  REG:253 STACK:16 SHARED:0 LOCAL:8 CONSTANT[0]:664 TEXTURE:0 SURFACE:0 SAMPLER:0\n")
    rows = aot.parse_resource_usage(text)
    assert rows == [{"arch": "sm_90a", "function": "_attn_fwd_kernel", "regs": 253, "stack": 16, "shared": 0,
                     "local": 8}]
