"""Installs liveact the way a user does, `pip install --no-build-isolation .` (a real, non-editable install), into
scratch folders, twice:
1. the full build (CUDA kernels when torch and nvcc allow, as `make build`; it reuses the editable build's objects
   in build/obj-*, so it only links): the extension imports and reports its CUDA kernels when the editable build
   has them;
2. LIVEACT_SKIP_CUDA_BUILD=1 (the CPU-only build path) with LIVEACT_CPU_ARCH=x86-64-v3 (AVX2, no AVX-512: the
   kernels' portable branches, which the native build on this machine never compiles): the extension imports and
   reports its build, the package data (tiny avatar weights, demo image and speech) and the `liveact` console
   script are installed, and the CPU kernel tests of the ops with ISA-specific code pass against the references.
Run by `make test` (test-install)."""
import os
import pathlib
import shutil
import subprocess
import sys

root = pathlib.Path(__file__).resolve().parents[1]


def pip_install(target, what, **env_changes):
    """`pip install --no-build-isolation --no-deps --target target .`; the build objects persist in build/obj-*."""
    shutil.rmtree(target, ignore_errors=True)
    env = dict(os.environ, **env_changes)
    if env_changes.get("LIVEACT_SKIP_CUDA_BUILD"):
        env.pop("LIVEACT_REQUIRE_CUDA_BUILD", None)
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
                        "--target", str(target), str(root)], cwd=root, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"pip install --no-build-isolation . ({what}) failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")


# 1. the full build, non-editable: same CUDA kernels as the editable build this check runs beside
import liveact_kernels as editable  # noqa: E402  (the editable install `make build` made)
want_cuda = bool(editable.build_info().get("cuda_kernels"))
full = root / "build" / "install-check-full"
pip_install(full, "full build")
code = (f"import liveact_kernels as lk; i = lk.build_info(); assert lk.__file__.startswith({str(full)!r}), lk.__file__; "
        f"assert i['compiled'] and i['cuda_kernels'] == {want_cuda}, i; print('full install ok: cuda kernels', "
        "i['cuda_kernels'], i['cuda_archs'])")
r = subprocess.run([sys.executable, "-P", "-c", code], cwd=full, env=dict(os.environ, PYTHONPATH=str(full)),
                   capture_output=True, text=True)
print(r.stdout.strip())
if r.returncode != 0:
    sys.exit(f"the installed full build does not work:\n{r.stderr[-4000:]}")
shutil.rmtree(full, ignore_errors=True)   # 65 MB of device code: not kept

# 2. CPU only, portable AVX2 kernels
target = root / "build" / "install-check"
pip_install(target, "CPU only", LIVEACT_SKIP_CUDA_BUILD="1", LIVEACT_CPU_ARCH="x86-64-v3")

# -P: do not put the working directory first on sys.path, so that the installed copy, not the checkout, is used
run_env = dict(os.environ, PYTHONPATH=str(target), LIVEACT_TEST_INSTALLED=str(target))
code = f"""
import os, subprocess, sys, torch
import liveact_kernels as lk, liveact_model
from liveact_model.avatar import tiny
target = {str(target)!r}
assert lk.__file__.startswith(target) and liveact_model.__file__.startswith(target), (lk.__file__, target)
i = lk.build_info()
assert i['compiled'] and not i['cuda_kernels'] and i['cpu_arch'] == 'x86-64-v3', i
assert 'avx512f' not in i['cpu_features'], i['cpu_features']
for f in (tiny.VAE_FILE, tiny.DIT_FILE, 'demo_face.png', 'demo_speech.wav'):
    p = os.path.join(tiny.ASSETS, f)
    assert p.startswith(target) and os.path.getsize(p) > 0, p
x = torch.randn(4, 256)
torch.testing.assert_close(lk.rms_norm(x, backend='cpu'), lk.reference.rms_norm_ref(x))
out = subprocess.run([os.path.join(target, 'bin', 'liveact'), '--help'], capture_output=True, text=True)
assert out.returncode == 0 and 'generate' in out.stdout, (out.returncode, out.stdout, out.stderr)
print('install ok:', i['cpu_arch'], i['cpu_features'])
"""
r = subprocess.run([sys.executable, "-P", "-c", code], cwd=target, env=run_env, capture_output=True, text=True)
print(r.stdout.strip())
if r.returncode != 0:
    sys.exit(f"the installed package does not work:\n{r.stderr[-4000:]}")

# The ops whose CPU kernels have ISA-specific paths (AVX-512 / AMX vs AVX2), against the references.
tests = ["tests/test_fp8.py", "tests/test_attention.py", "tests/test_adaln.py", "tests/test_convkv.py"]
r = subprocess.run([sys.executable, "-P", "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-o", "pythonpath=",
                    "-m", "not slow and not triton", "-k", "not cuda", *tests], cwd=root, env=run_env)
sys.exit(r.returncode)
