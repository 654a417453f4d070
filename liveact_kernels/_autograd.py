"""Autograd for ops that have a forward kernel but no backward kernel: the forward runs the kernel, the
backward differentiates the reference (recomputed from the saved inputs). Used when a caller needs
gradients (training); inference never takes this path."""
from __future__ import annotations

import torch


class _KernelFwdRefBwd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kernel_fn, ref_fn, n_tensors, *args):
        ctx.ref_fn = ref_fn
        ctx.n_tensors = n_tensors
        ctx.save_for_backward(*[a if torch.is_tensor(a) else None for a in args[:n_tensors]])
        ctx.rest = args[n_tensors:]
        with torch.no_grad():
            out = kernel_fn(*args)
        return out

    @staticmethod
    def backward(ctx, *grads):
        saved = ctx.saved_tensors
        inputs = [s.detach().requires_grad_(s.requires_grad) if s is not None else None
                  for s in saved]
        with torch.enable_grad():
            outs = ctx.ref_fn(*inputs, *ctx.rest)
        outs = outs if isinstance(outs, tuple) else (outs,)
        pairs = [(o, g) for o, g in zip(outs, grads) if g is not None and o.requires_grad]
        diff_in = [i for i in inputs if i is not None and i.requires_grad]
        gi = torch.autograd.grad([o for o, _ in pairs], diff_in, [g for _, g in pairs], allow_unused=True) \
            if pairs else [None] * len(diff_in)
        it = iter(gi)
        in_grads = [next(it) if (i is not None and i.requires_grad) else None for i in inputs]
        return (None, None, None, *in_grads, *([None] * len(ctx.rest)))


def needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(torch.is_tensor(t) and t.requires_grad for t in tensors)


def kernel_with_ref_backward(kernel_fn, ref_fn, tensors: tuple, rest: tuple = ()):
    """Runs kernel_fn(*tensors, *rest); gradients flow through ref_fn(*tensors, *rest)."""
    return _KernelFwdRefBwd.apply(kernel_fn, ref_fn, len(tensors), *tensors, *rest)
