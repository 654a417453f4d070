"""Builds the extension with LIVEACT_SKIP_CUDA_BUILD=1 into a scratch folder and checks that it imports,
reports no CUDA kernels, and runs the CPU kernels. Run by `make test` (test-cpu-only-build)."""
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

root = pathlib.Path(__file__).resolve().parents[1]
env = dict(os.environ, LIVEACT_SKIP_CUDA_BUILD="1")
with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    build_temp = root / "build" / "cpu_only_tmp"  # kept between runs: ninja rebuilds only what changed
    r = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "-b", str(tmp / "lib"), "-t", str(build_temp)],
                       cwd=root, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"CPU-only build failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    assert "building the CPU extension only (LIVEACT_SKIP_CUDA_BUILD is set)" in r.stdout + r.stderr, r.stdout
    pkg = tmp / "pkg"
    shutil.copytree(root / "liveact_kernels", pkg / "liveact_kernels_cpuonly",  # renamed: see test_import.py
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    for so in (tmp / "lib" / "liveact_kernels").glob("_C*.so"):
        shutil.copy(so, pkg / "liveact_kernels_cpuonly")
    code = ("import torch, liveact_kernels_cpuonly as lk; i = lk.build_info(); "
            "assert i['compiled'] and not i['cuda_kernels'], i; "
            "x = torch.randn(4, 256); "
            "torch.testing.assert_close(lk.rms_norm(x, backend='cpu'), lk.reference.rms_norm_ref(x)); "
            "print('cpu-only build ok:', i['cpu_features'])")
    r = subprocess.run([sys.executable, "-c", code], cwd=pkg, capture_output=True, text=True)
    print(r.stdout.strip())
    if r.returncode != 0:
        sys.exit(f"CPU-only build does not work:\n{r.stderr[-4000:]}")
