"""The package imports, reports its build, and runs every op with backend="torch" even without _C."""
import subprocess
import sys

import torch

import liveact_kernels as lk


def test_public_surface():
    for name in lk.OPS + ("sageattn", "FP8Linear", "quantize_linears"):
        assert callable(getattr(lk, name)), name


def test_build_info_reports_compiled_extension():
    info = lk.build_info()
    assert info["compiled"], info.get("error")
    assert "openmp" in info["cpu_features"]
    assert "torch_version_built" in info and info["torch_version_built"] == torch.__version__.split("+")[0]


def test_import_without_compiled_extension(tmp_path):
    # Copy the Python sources only (no _C*.so) under another package name (an editable install's import hook
    # would otherwise win over the copy) and import that: the torch backend must work.
    import shutil
    import pathlib
    src = pathlib.Path(lk.__file__).parent
    dst = tmp_path / "liveact_kernels_nocompiled"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    code = ("import torch, liveact_kernels_nocompiled as lk; "
            "assert not lk.build_info()['compiled']; "
            "x = torch.randn(2, 4, 8); w = torch.ones(8); "
            "torch.testing.assert_close(lk.rms_norm(x, w), lk.reference.rms_norm_ref(x, w)); "
            "print(lk.available_backends('rms_norm'))")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "['torch']" in r.stdout
