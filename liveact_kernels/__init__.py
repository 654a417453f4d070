"""liveact_kernels: fused kernels for real-time audio-driven avatar video (SoulX-LiveAct).

Every op takes backend="auto" | "cuda" | "triton" | "cpu" | "torch" (env override LIVEACT_BACKEND);
reference.py holds the pure-PyTorch oracle of each op.
"""
from . import reference
from ._backend import available_backends, build_info
from .adaln import adaln_modulate, adaln_residual, gated_residual
from .attention import attention, sageattn
from .audio_cross_attention import audio_cross_attention
from .causal_dwconv1d import causal_dwconv1d, causal_dwconv1d_update
from .convkv import convkv_cache_update, convkv_compress
from .fp8 import dequantize_fp8, quantize_fp8
from .fp8_linear import FP8Linear, fp8_linear, quantize_linears
from .rms_norm import rms_norm
from .rope3d import rope3d

__version__ = "0.1.0"

OPS = ("adaln_modulate", "gated_residual", "adaln_residual", "rms_norm", "rope3d", "convkv_compress", "convkv_cache_update",
       "causal_dwconv1d", "causal_dwconv1d_update", "quantize_fp8", "dequantize_fp8", "attention",
       "audio_cross_attention", "fp8_linear")

__all__ = ["reference", "available_backends", "build_info", "OPS", "__version__", *OPS, "sageattn", "FP8Linear",
           "quantize_linears"]
