"""Installs liveact the way a user does, `pip install --no-build-isolation .` (a real, non-editable install), into
a scratch folder, with LIVEACT_SKIP_CUDA_BUILD=1 (the CPU-only build path) and LIVEACT_CPU_ARCH=x86-64-v3 (AVX2,
no AVX-512: the kernels' portable branches, which the native build on this machine never compiles). From that
install it checks: the extension imports and reports its build, the package data (tiny avatar weights, demo
image and speech) and the `liveact` console script are installed, and the CPU kernel tests of the ops with
ISA-specific code pass against the references. Run by `make test` (test-install)."""
import os
import pathlib
import shutil
import subprocess
import sys

root = pathlib.Path(__file__).resolve().parents[1]
target = root / "build" / "install-check"     # the build objects persist in build/obj-* (incremental rebuilds)
shutil.rmtree(target, ignore_errors=True)
env = dict(os.environ, LIVEACT_SKIP_CUDA_BUILD="1", LIVEACT_CPU_ARCH="x86-64-v3")
env.pop("LIVEACT_REQUIRE_CUDA_BUILD", None)
r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
                    "--target", str(target), str(root)], cwd=root, env=env, capture_output=True, text=True)
if r.returncode != 0:
    sys.exit(f"pip install --no-build-isolation . (CPU only) failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")

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
