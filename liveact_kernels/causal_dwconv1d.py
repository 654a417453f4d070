"""General causal depthwise 1D convolution with causal-conv1d's argument names and layout, for any width
and stride, with streaming state (initial/final states and a single-step update)."""
from __future__ import annotations

import torch

from . import _backend, reference
from ._autograd import kernel_with_ref_backward, needs_grad
from ._validate import FLOAT_DTYPES, check_choice, check_same_device, check_tensor

_ACTS = (None, "silu", "swish")


def causal_dwconv1d(x, weight, bias=None, *, stride=1, activation=None, initial_states=None,
                    return_final_states=False, backend="auto"):
    """out[:, :, t] = act(bias + sum_k weight[:, k] * xp[:, :, t*stride + k]), xp = cat(initial_states, x).

    x: (batch, channels, seqlen); weight: (channels, width); bias: (channels,) or None;
    initial_states: (batch, channels, width - 1) or None (zeros); activation: None | "silu" | "swish".
    Returns out (batch, channels, ceil(seqlen / stride)), and final_states (batch, channels, width - 1) when
    return_final_states. For streaming with stride > 1, every chunk's seqlen must be a multiple of stride.
    """
    op = "causal_dwconv1d"
    check_tensor(op, "x", x, ndim=3, dtypes=FLOAT_DTYPES)
    B, C, L = x.shape
    check_tensor(op, "weight", weight, ndim=2, dtypes=FLOAT_DTYPES)
    if weight.shape[0] != C or weight.shape[1] < 1:
        raise ValueError(f"{op}: weight must have shape ({C}, width>=1) for x {tuple(x.shape)}, got {tuple(weight.shape)}")
    W = weight.shape[1]
    check_tensor(op, "bias", bias, shape=(C,), dtypes=FLOAT_DTYPES, allow_none=True)
    check_tensor(op, "initial_states", initial_states, shape=(B, C, W - 1), dtypes=FLOAT_DTYPES, allow_none=True)
    check_choice(op, "activation", activation, _ACTS)
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"{op}: stride must be a positive int, got {stride!r}")
    if stride > 1 and (initial_states is not None or return_final_states) and L % stride:
        raise ValueError(f"{op}: streaming with stride={stride} needs seqlen to be a multiple of stride, got {L}")
    check_same_device(op, x=x, weight=weight, bias=bias, initial_states=initial_states)
    b = _backend.resolve(op, backend, x.device)
    if b == "torch":
        return reference.causal_dwconv1d_ref(x, weight, bias, stride=stride, activation=activation,
                                             initial_states=initial_states, return_final_states=return_final_states)
    Lo = (L + stride - 1) // stride

    def kernel(x, weight, bias, initial_states):
        out = x.new_empty((B, C, Lo))
        fs = x.new_empty((B, C, W - 1)) if return_final_states else None
        _backend.launch(op, b, x, weight.float().contiguous(), bias.float().contiguous() if bias is not None else None,
                        initial_states, stride, activation, out, fs)
        return (out, fs) if return_final_states else out

    if needs_grad(x, weight, bias, initial_states):
        return kernel_with_ref_backward(
            kernel, lambda x, w, bi, ini: reference.causal_dwconv1d_ref(
                x, w, bi, stride=stride, activation=activation, initial_states=ini,
                return_final_states=return_final_states), (x, weight, bias, initial_states))
    return kernel(x, weight, bias, initial_states)


def causal_dwconv1d_update(x, conv_state, weight, bias=None, activation=None, *, backend="auto"):
    """Streaming step: x (batch, channels) or (batch, channels, seqlen); conv_state (batch, channels,
    state_len >= width - 1) is shifted and updated in place. Returns out shaped like x."""
    op = "causal_dwconv1d_update"
    check_tensor(op, "x", x, ndim=(2, 3), dtypes=FLOAT_DTYPES)
    B, C = x.shape[:2]
    check_tensor(op, "weight", weight, ndim=2, dtypes=FLOAT_DTYPES)
    if weight.shape[0] != C:
        raise ValueError(f"{op}: weight must have shape ({C}, width), got {tuple(weight.shape)}")
    W = weight.shape[1]
    check_tensor(op, "conv_state", conv_state, ndim=3, dtypes=FLOAT_DTYPES)
    if conv_state.shape[0] != B or conv_state.shape[1] != C or conv_state.shape[2] < W - 1:
        raise ValueError(f"{op}: conv_state must have shape ({B}, {C}, >={W - 1}), got {tuple(conv_state.shape)}")
    check_tensor(op, "bias", bias, shape=(C,), dtypes=FLOAT_DTYPES, allow_none=True)
    check_choice(op, "activation", activation, _ACTS)
    check_same_device(op, x=x, conv_state=conv_state, weight=weight, bias=bias)
    b = _backend.resolve(op, backend, x.device)
    if b == "torch":
        return reference.causal_dwconv1d_update_ref(x, conv_state, weight, bias, activation)
    x3 = x[..., None] if x.dim() == 2 else x
    out = x3.new_empty(x3.shape)
    _backend.launch(op, b, x3, conv_state, weight.float().contiguous(),
                    bias.float().contiguous() if bias is not None else None, activation, out)
    return out[..., 0] if x.dim() == 2 else out


@_backend.register_fake("liveact::causal_dwconv1d_fwd")
def _causal_dwconv1d_fake(x, weight, bias, initial_states, stride, activation, out, final_states):
    return None


@_backend.register_fake("liveact::causal_dwconv1d_update_fwd")
def _causal_dwconv1d_update_fake(x, conv_state, weight, bias, activation, out):
    return None
