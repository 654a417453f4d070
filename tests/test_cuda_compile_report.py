"""The CUDA kernels compiled into liveact_kernels._C, read back from the binary (the triton wheel's cuobjdump):
every kernel exists for every architecture of build_info()["cuda_archs"], with zero register spills."""
import os

import pytest

from liveact_kernels import _backend

pytestmark = pytest.mark.triton   # runs in the `make test-triton` pass, next to the Triton compile test


def _so_and_archs():
    ext = _backend.compiled_extension()
    if ext is None:
        pytest.skip(f"liveact_kernels._C is not built: {_backend.compiled_extension_error()}")
    info = _backend.build_info()
    if not info.get("cuda_kernels"):
        if os.environ.get("LIVEACT_REQUIRE_CUDA_BUILD", "0") not in ("", "0"):
            pytest.fail("LIVEACT_REQUIRE_CUDA_BUILD is set but liveact_kernels._C has no CUDA kernels")
        pytest.skip("liveact_kernels._C was built without CUDA kernels (LIVEACT_SKIP_CUDA_BUILD or no toolkit)")
    pytest.importorskip("triton")
    from liveact_kernels.triton import aot
    return ext.__file__, aot.arch_names(info["cuda_archs"]), aot


def test_every_cuda_kernel_for_every_arch_without_spills():
    so, archs, aot = _so_and_archs()
    rows = aot.extension_resource_usage(so)
    assert rows, f"no device code found in {so}"
    by_arch = {}
    for r in rows:
        by_arch.setdefault(r["arch"], set()).add(r["function"])
    assert set(by_arch) == set(archs), f"cubins for {sorted(by_arch)}, build asked for {archs}"
    kernels = set().union(*by_arch.values())
    for a in archs:
        missing = kernels - by_arch[a]
        assert not missing, f"{a} lacks {sorted(missing)}"
    spills = [r for r in rows if r["local"] or r["stack"]]
    assert not spills, f"kernels with local memory / stack (spills): {spills}"


def test_parser_reads_split_lines():
    from liveact_kernels.triton import aot
    text = ("arch = sm_89\n Function _Z3fooPf:\n  REG:24 STACK:0 SHARED:128 LOCAL:0 CONSTANT[0]:408\n"
            " Function _Z3barPf:\n  REG:40 STACK:8 SHARED:0 LOCAL:4 CONSTANT[0]:408\n")
    assert aot.parse_resource_usage(text) == [
        {"arch": "sm_89", "function": "_Z3fooPf", "regs": 24, "stack": 0, "shared": 128, "local": 0},
        {"arch": "sm_89", "function": "_Z3barPf", "regs": 40, "stack": 8, "shared": 0, "local": 4}]
    assert aot.arch_names("8.0;8.9;9.0a") == ["sm_80", "sm_89", "sm_90a"]
