"""Shared accuracy rules for tests and benchmarks (shipped, so that downstream stacks can reuse them).

The rule (kernel-notes.md, FlashAttention-3's test practice): a kernel's error against an fp32 reference
must be within k times the error of a same-precision PyTorch computation, plus an fp32 noise floor:
    max|out - ref32| <= k * max|ref_lowp - ref32| + atol_noise
where ref_lowp is the reference computed on the same low-precision inputs with its result rounded to the
output dtype, and atol_noise = 2 * max|(ref32 + 0.3 - 0.3) - ref32|. FP8 results are gated instead on cosine
similarity, relative L1 and range-normalised RMSE against the fp32 reference (SageAttention / TE practice).
"""
from __future__ import annotations

import torch

# Default k of the rule. 2 is FA3's value; an op that needs more says why next to its call.
K_DEFAULT = 2.0


def fp32_noise(ref32: torch.Tensor) -> float:
    r = ref32.float()
    return 2.0 * ((r + 0.3) - 0.3 - r).abs().max().item() if r.numel() else 0.0


def _report(out, ref, bad_mask, limit, err):
    idx = bad_mask.nonzero()[:5].tolist()
    n = int(bad_mask.sum())
    vals = [(i, float(out[tuple(i)]), float(ref[tuple(i)])) for i in idx]
    return (f"max abs err {err:.4g} > allowed {limit:.4g}; {n} of {out.numel()} elements off "
            f"(mean abs err {(out - ref).abs().mean().item():.4g}); first (index, got, want): {vals}")


def assert_close_to_ref(out: torch.Tensor, ref32: torch.Tensor, ref_lowp: torch.Tensor | None = None, *,
                        k: float = K_DEFAULT, atol: float | None = None, rtol: float | None = None):
    """Checks out against the fp32 reference.

    With ref_lowp: the FA3 rule above. Without: an rtol/atol table by out.dtype (torch.testing's defaults:
    fp32 1.3e-6/1e-5, bf16 1.6e-2/1e-5, fp16 1e-3/1e-5), unless atol/rtol are given.
    NaN and inf must sit at the same places in out and ref32.
    """
    o, r = out.float(), ref32.float()
    assert o.shape == r.shape, f"shape {tuple(o.shape)} != reference {tuple(r.shape)}"
    nan_o, nan_r = torch.isnan(o), torch.isnan(r)
    assert torch.equal(nan_o, nan_r), f"NaN placement differs: {int(nan_o.sum())} NaN in out, {int(nan_r.sum())} in ref"
    inf_o, inf_r = torch.isinf(o), torch.isinf(r)
    assert torch.equal(inf_o, inf_r) and torch.equal(o[inf_o], r[inf_r]), "inf placement differs"
    fin = torch.isfinite(r)
    o, r = torch.where(fin, o, 0.0), torch.where(fin, r, 0.0)
    if o.numel() == 0:
        return
    err_t = (o - r).abs()
    err = err_t.max().item()
    if ref_lowp is not None:
        lo = torch.where(fin, ref_lowp.float(), 0.0)
        limit = k * (lo - r).abs().max().item() + fp32_noise(r) + (atol or 0.0)
        # An fp32 output has no lower-precision yardstick (ref_lowp == ref32): allow torch.testing's fp32
        # rtol for summation-order differences (measured: rms_norm rows of 113 differ by 2 ulp).
        lim_t = limit + (1.3e-6 if out.dtype == torch.float32 else 0.0) * r.abs()
        bad = err_t > lim_t
        limit = lim_t.max().item()
    else:
        default = {torch.float32: (1.3e-6, 1e-5), torch.bfloat16: (1.6e-2, 1e-5), torch.float16: (1e-3, 1e-5)}
        rt, at = default.get(out.dtype, (1.3e-6, 1e-5))
        rt = rtol if rtol is not None else rt
        at = atol if atol is not None else at
        lim_t = at + rt * r.abs()
        bad = err_t > lim_t
        limit = (lim_t).max().item()
    assert not bool(bad.any()), _report(o, r, bad, limit, err)


def fp8_metrics(out: torch.Tensor, ref32: torch.Tensor) -> dict:
    """Cosine similarity, relative L1 and RMSE / (max - min of the reference), as in SageAttention and TE."""
    o, r = out.float().flatten(), ref32.float().flatten()
    cos = torch.nn.functional.cosine_similarity(o, r, dim=0).item() if o.numel() else 1.0
    rel_l1 = ((o - r).abs().sum() / r.abs().sum().clamp_min(1e-30)).item()
    rng = (r.max() - r.min()).item() if r.numel() else 1.0
    rmse = (o - r).square().mean().sqrt().item() if o.numel() else 0.0
    return {"cos": cos, "rel_l1": rel_l1, "rmse_over_range": rmse / max(rng, 1e-30)}


# FP8 e4m3 has a 3-bit mantissa: one rounding has relative error <= 2^-4 = 6.25%, ~1.8% RMS for uniform
# rounding. Gates for one quantisation step (attention over fp8 K/V, fp8 GEMM) sit well above that RMS
# and well below what a wrong kernel gives (cos ~ 0, rel_l1 ~ 1).
FP8_GATES = {"cos": 0.995, "rel_l1": 0.05, "rmse_over_range": 0.02}


def assert_fp8_close(out, ref32, gates: dict | None = None):
    g = dict(FP8_GATES, **(gates or {}))
    m = fp8_metrics(out, ref32)
    assert m["cos"] >= g["cos"] and m["rel_l1"] <= g["rel_l1"] and m["rmse_over_range"] <= g["rmse_over_range"], \
        f"FP8 accuracy {m} outside gates {g}"
    return m


def strided(x: torch.Tensor, dim: int = -1, pad: int = 3) -> torch.Tensor:
    """The same values as x, as a non-contiguous view into a wider buffer (padding along `dim`)."""
    dim = dim % x.dim()
    shape = list(x.shape)
    shape[dim] += pad
    buf = torch.full(shape, float("nan"), dtype=x.dtype, device=x.device) if x.is_floating_point() else \
        torch.zeros(shape, dtype=x.dtype, device=x.device)
    v = buf.narrow(dim, pad // 2 + 0, x.shape[dim])
    v.copy_(x)
    return v


def nan_like(x: torch.Tensor) -> torch.Tensor:
    """An output buffer pre-filled with NaN, so that a kernel that never wrote it fails the check."""
    return torch.full_like(x, float("nan"), memory_format=torch.contiguous_format)
