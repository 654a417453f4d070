"""Shared fixtures: fixed seeds, backend parametrisation that skips with the dispatcher's reason, and the
Triton interpreter's fp8-cast workaround (kernel-notes.md section 9)."""
import os
import random

import pytest
import torch

from liveact_kernels import _backend


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def torch_one_thread():
    """Runs a test module with one torch thread, restoring the previous count afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def require_backend(op: str, backend: str, device: str = "cpu"):
    """Skips (with the dispatcher's own reason) when `backend` cannot run `op` on `device`."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    reason = _backend.why_unavailable(op, backend, torch.device(device))
    if reason is not None:
        pytest.skip(reason)


def backend_device(backend: str) -> str:
    """The device a backend's tests run on here: CUDA tensors for cuda (and triton when a GPU exists)."""
    if backend == "cuda" or (backend == "triton" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


# Backends every op test runs against the reference: "cpu" (compiled C++), "cuda" and "triton" (skip with
# the reason where they cannot run: no GPU, or not under TRITON_INTERPRET=1).
KERNEL_BACKENDS = ("cpu", "cuda", "triton")


def pytest_configure(config):
    installed = os.environ.get("LIVEACT_TEST_INSTALLED")
    if installed:  # tests/check_install.py: the tests must exercise the installed copy, not the checkout
        import liveact_kernels
        assert liveact_kernels.__file__.startswith(installed), (liveact_kernels.__file__, installed)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        from liveact_kernels.triton import interpreter_fixes  # noqa: F401  (applies the documented workaround)


def pytest_collection_modifyitems(config, items):
    """Marks every case parametrised with backend="triton" as `triton`, so that `make test-triton`
    (TRITON_INTERPRET=1 pytest -m triton) runs the per-op tests' Triton cases through the interpreter."""
    for item in items:
        cs = getattr(item, "callspec", None)
        if cs is not None and cs.params.get("backend") == "triton":
            item.add_marker(pytest.mark.triton)
