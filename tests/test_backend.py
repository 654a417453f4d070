"""The dispatcher: auto choice, explicit backends that cannot run, the env override, and torch.compile."""
import subprocess
import sys

import pytest
import torch

import liveact_kernels as lk
from liveact_kernels import _backend


def test_auto_prefers_compiled_cpu_kernel():
    assert _backend.resolve("rms_norm", "auto", torch.device("cpu")) == "cpu"


def test_explicit_unavailable_backend_raises_with_reason():
    x = torch.randn(2, 8)
    with pytest.raises(RuntimeError, match="backend='cuda' is not available: .*CUDA tensors"):
        lk.rms_norm(x, backend="cuda")
    with pytest.raises(RuntimeError, match="unknown backend"):
        lk.rms_norm(x, backend="metal")


def test_env_override_replaces_auto():
    code = ("import torch, liveact_kernels as lk; from liveact_kernels import _backend; "
            "print(_backend.resolve('rms_norm', 'auto', torch.device('cpu')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "LIVEACT_BACKEND": "torch"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "torch"
