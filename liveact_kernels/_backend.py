"""The one dispatcher: which backends exist, and which one runs a given call.

Backends: "cuda" (hand-written CUDA kernels in _C), "triton" (liveact_kernels/triton/<op>.py, on CUDA
tensors, or on CPU tensors under TRITON_INTERPRET=1), "cpu" (C++ kernels in _C), "torch" (reference.py).
"auto" picks cuda > triton > torch for CUDA tensors and cpu > torch for CPU tensors; the environment
variable LIVEACT_BACKEND replaces "auto" process-wide. An explicit backend that cannot run raises and says why.
"""
from __future__ import annotations

import importlib
import importlib.util
import os

import torch

BACKENDS = ("cuda", "triton", "cpu", "torch")

# Read once at import: the dispatcher runs inside torch.compile graphs, where environment reads and
# import attempts must not happen per call.
_ENV_BACKEND = os.environ.get("LIVEACT_BACKEND", "auto").strip().lower() or "auto"
TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

_C = None
_C_ERROR = None
if importlib.util.find_spec(f"{__package__}._C") is None:
    _C_ERROR = ("liveact_kernels._C is not built (run `pip install --no-build-isolation -e .` or "
                "`python setup.py build_ext --inplace`)")
else:
    try:
        from . import _C as _C  # noqa: F401  (importing registers the ops under torch.ops.liveact)
    except ImportError as e:  # recorded, reported when a compiled backend is requested
        _C_ERROR = f"{type(e).__name__}: {e}"

if _ENV_BACKEND not in BACKENDS + ("auto",):
    raise ValueError(f"LIVEACT_BACKEND must be one of {BACKENDS + ('auto',)}, got {_ENV_BACKEND!r}")

_TRITON_SPEC = importlib.util.find_spec("triton")

# op -> module under liveact_kernels/triton/ that holds its `<op>_fwd_triton` launcher
TRITON_MODULES = {
    "adaln_modulate": "adaln", "gated_residual": "adaln", "adaln_residual": "adaln", "rms_norm": "rms_norm",
    "rope3d": "rope3d", "convkv_compress": "convkv", "convkv_cache_update": "convkv", "causal_dwconv1d": "causal_dwconv1d",
    "causal_dwconv1d_update": "causal_dwconv1d", "quantize_fp8": "fp8", "dequantize_fp8": "fp8",
    "fp8_linear": "fp8_linear", "attention": "attention", "audio_cross_attention": "audio_cross_attention",
}
_triton_modules: dict[str, object] = {}
_kernel_cache: dict[tuple[str, str], bool] = {}


def compiled_extension():
    """The loaded `_C` module, or None (see `compiled_extension_error()`)."""
    return _C


def compiled_extension_error():
    return _C_ERROR


def build_info() -> dict:
    """Build information of the compiled extension (compiler, flags, CPU features, CUDA targets)."""
    if _C is None:
        return {"compiled": False, "error": _C_ERROR}
    info = dict(_C.build_info())
    info["compiled"] = True
    return info


def _has_kernel(op: str, key: str) -> bool:
    ck = (op, key)
    if ck not in _kernel_cache:
        ok = False
        if _C is not None:
            try:
                ok = torch._C._dispatch_has_kernel_for_dispatch_key(f"liveact::{op}_fwd", key)
            except RuntimeError:
                ok = False
        _kernel_cache[ck] = ok
    return _kernel_cache[ck]


def triton_launcher(op: str):
    """`<op>_fwd_triton` from liveact_kernels.triton.<module>, imported on first use (None if triton, the
    module or the launcher is missing). It takes the same arguments as torch.ops.liveact.<op>_fwd."""
    if op not in _triton_modules:
        fn = None
        name = TRITON_MODULES.get(op, op)
        if _TRITON_SPEC is not None:
            try:
                mod = importlib.import_module(f"{__package__}.triton.{name}")
                fn = getattr(mod, f"{op}_fwd_triton", None)
            except ModuleNotFoundError as e:
                if e.name not in (f"{__package__}.triton.{name}", f"{__package__}.triton"):
                    raise
        _triton_modules[op] = fn
    return _triton_modules[op]


def why_unavailable(op: str, backend: str, device: torch.device) -> str | None:
    """None if `backend` can run `op` on `device`, else the reason in words."""
    if backend == "torch":
        return None
    if backend == "cpu":
        if device.type != "cpu":
            return f"the 'cpu' backend runs on CPU tensors, got tensors on {device}"
        if _C is None:
            return f"the compiled extension liveact_kernels._C did not import ({_C_ERROR})"
        if not _has_kernel(op, "CPU"):
            return f"liveact._C has no CPU kernel for {op}"
        return None
    if backend == "cuda":
        if device.type != "cuda":
            return f"the 'cuda' backend runs on CUDA tensors, got tensors on {device}"
        if _C is None:
            return f"the compiled extension liveact_kernels._C did not import ({_C_ERROR})"
        if not _has_kernel(op, "CUDA"):
            return (f"liveact._C has no CUDA kernel for {op} (built with CUDA kernels: "
                    f"{bool(_C.build_info()['cuda_kernels'])})")
        return None
    if backend == "triton":
        if _TRITON_SPEC is None:
            return "triton is not installed"
        if device.type == "cpu" and not TRITON_INTERPRET:
            return "Triton kernels run on CUDA tensors, or on CPU tensors only under TRITON_INTERPRET=1"
        if device.type not in ("cpu", "cuda"):
            return f"Triton kernels do not run on {device}"
        if triton_launcher(op) is None:
            return f"there is no Triton kernel for {op}"
        return None
    return f"unknown backend {backend!r}; expected one of {BACKENDS + ('auto',)}"


def resolve(op: str, backend: str, device: torch.device) -> str:
    """The backend that runs `op` for tensors on `device`.

    backend: "auto" | "cuda" | "triton" | "cpu" | "torch".
    """
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {type(backend).__name__}")
    b = backend.lower()
    if b == "auto":
        b = _ENV_BACKEND
    if b == "auto":
        order = ("cuda", "triton", "torch") if device.type == "cuda" else ("cpu", "torch")
        for cand in order:
            if why_unavailable(op, cand, device) is None:
                return cand
        return "torch"
    reason = why_unavailable(op, b, device)
    if reason is not None:
        raise RuntimeError(f"{op}: backend={b!r} is not available: {reason}")
    return b


def launch(op: str, backend: str, *args) -> None:
    """Runs the compiled (cpu/cuda) or Triton kernel of `op` on preallocated outputs."""
    if backend == "triton":
        triton_launcher(op)(*args)
    else:
        getattr(torch.ops.liveact, f"{op}_fwd")(*args)


def available_backends(op: str, device: torch.device | str = "cpu") -> list[str]:
    device = torch.device(device)
    return [b for b in BACKENDS if why_unavailable(op, b, device) is None]


def register_fake(qualname: str):
    """torch.library.register_fake for an op of _C; a no-op when _C is absent (the ops do not exist then)."""
    def deco(fn):
        if _C is not None:
            torch.library.register_fake(qualname)(fn)
        return fn
    return deco
