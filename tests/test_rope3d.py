"""rope3d: CPU/CUDA/Triton kernels against the fp32 reference and against the official complex128
composition, strided inputs, NaN-prefilled outputs, opcheck, torch.compile, grads, bad input."""
import pytest
import torch

import liveact_kernels as lk
from liveact_kernels import reference
from liveact_kernels.testing import assert_close_to_ref, nan_like, strided
from conftest import KERNEL_BACKENDS, backend_device, require_backend

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def official_rope(x, grid, frame_positions, theta=10000.0):
    """Wan's rope_apply as the official code runs it: complex128 frequency tables (rope_params), the channel
    pairs viewed as complex numbers in float64, multiplied, viewed back as real and cast to x.dtype. The
    temporal table is indexed by each frame's position (causal_rope_apply's start_frame generalised)."""
    B, N, H, Dh = x.shape
    Fr, h, w = grid
    c = Dh // 2

    def rope_params(max_len, dim):
        f = torch.outer(torch.arange(max_len, dtype=torch.float64),
                        1.0 / torch.pow(theta, torch.arange(0, dim, 2).to(torch.float64).div(dim)))
        return torch.polar(torch.ones_like(f), f)

    d = Dh
    freqs = torch.cat([rope_params(64, d - 4 * (d // 6)), rope_params(64, 2 * (d // 6)),
                       rope_params(64, 2 * (d // 6))], dim=1)
    ft, fh, fw = freqs.split([c - 2 * (c // 3), c // 3, c // 3], dim=1)
    pos = torch.as_tensor(frame_positions, dtype=torch.long)
    fi = torch.cat([ft[pos].view(Fr, 1, 1, -1).expand(Fr, h, w, -1), fh[:h].view(1, h, 1, -1).expand(Fr, h, w, -1),
                    fw[:w].view(1, 1, w, -1).expand(Fr, h, w, -1)], dim=-1).reshape(N, 1, -1)
    xc = torch.view_as_complex(x.to(torch.float64).reshape(B, N, H, -1, 2))
    return torch.view_as_real(xc * fi).flatten(3)


def _ref_pair(x, grid, pos, split=None):
    ref32 = reference.rope3d_ref(x.float(), grid=grid, frame_positions=pos, split=split)
    lowp = reference.rope3d_ref(x, grid=grid, frame_positions=pos, split=split)
    return ref32, lowp


# (B, grid, H, Dh): single token, awkward grids (7 = 1x7x1, 113 tokens prime, 1170 = LiveAct's fl), Dh 128
# (Wan's 44/42/42 split) and 64 (24/20/20).
CASES = [(1, (1, 1, 1), 1, 128), (2, (1, 7, 1), 3, 64), (1, (1, 1, 113), 2, 128), (1, (2, 26, 45), 1, 128),
         (2, (3, 4, 5), 5, 128)]


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"B{c[0]}-g{'x'.join(map(str, c[1]))}-H{c[2]}-D{c[3]}")
def test_rope3d_fwd(backend, dtype, case):
    dev = backend_device(backend)
    require_backend("rope3d", backend, dev)
    B, grid, H, Dh = case
    x = torch.randn(B, grid[0] * grid[1] * grid[2], H, Dh, device=dev).to(dtype)
    pos = [6 + i for i in range(grid[0])]  # the current block's temporal positions
    out = nan_like(x)
    got = lk.rope3d(x, grid=grid, frame_positions=pos, out=out, backend=backend)
    assert got is out
    assert_close_to_ref(got, *_ref_pair(x, grid, pos))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS + ("torch",))  # torch: the public reference path
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16))
def test_rope3d_matches_official_complex128(backend, dtype):
    """The kernel (fp32 tables) against the official float64/complex128 composition: the rule's yardstick is
    the official result rounded to x.dtype, as the official code does."""
    dev = backend_device(backend)
    require_backend("rope3d", backend, dev)
    grid, pos = (14, 3, 4), list(range(14))  # the whole 14-slot key cache at slot positions 0..13
    x = torch.randn(1, 14 * 12, 4, 128, device=dev).to(dtype)
    off64 = official_rope(x.cpu(), grid, pos)
    ref32, lowp = off64.float(), off64.to(dtype)
    got = lk.rope3d(x, grid=grid, frame_positions=pos, backend=backend).cpu()
    # fp32: cos/sin are rounded to fp32 once (the official keeps float64), so the fp32 kernel sits ~1e-7
    # relative from the float64 truth: measured max 4.8e-7 absolute here, within 2 x 2^-21 x |x|max.
    atol = 2.0 ** -20 * x.abs().max().item() if dtype == torch.float32 else None
    assert_close_to_ref(got, ref32, lowp, atol=atol)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_rope3d_custom_split_positions_and_theta(backend):
    dev = backend_device(backend)
    require_backend("rope3d", backend, dev)
    x = torch.randn(1, 2 * 3 * 4, 2, 16, device=dev)
    pos = torch.tensor([2.0, 3.0])  # compressed slots' positions
    got = lk.rope3d(x, grid=(2, 3, 4), frame_positions=pos, theta=500.0, split=(4, 6, 6), backend=backend)
    want = reference.rope3d_ref(x, grid=(2, 3, 4), frame_positions=pos, theta=500.0, split=(4, 6, 6))
    assert_close_to_ref(got, want, want)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS + ("torch",))  # torch: the public reference path
def test_rope3d_strided_and_empty(backend):
    dev = backend_device(backend)
    require_backend("rope3d", backend, dev)
    grid, pos = (2, 3, 5), [0, 1]
    base = torch.randn(2, 30, 3, 128, device=dev).bfloat16()
    for x in (strided(base, dim=2), strided(base, dim=1), base.transpose(1, 2).contiguous().transpose(1, 2),
              strided(base, dim=-1)):
        assert not x.is_contiguous()
        assert_close_to_ref(lk.rope3d(x, grid=grid, frame_positions=pos, backend=backend), *_ref_pair(x, grid, pos))
    e = torch.empty(0, 30, 3, 128, device=dev)
    assert lk.rope3d(e, grid=grid, frame_positions=pos, backend=backend).shape == e.shape


def test_rope3d_opcheck():
    require_backend("rope3d", "cpu")
    x = torch.randn(2, 12, 3, 16)
    tables = reference.rope3d_tables((2, 2, 3), [0.0, 5.0], head_dim=16, split=(4, 6, 6))
    torch.library.opcheck(torch.ops.liveact.rope3d_fwd.default, (x, *tables, torch.empty_like(x)))


def test_rope3d_compiles_without_graph_break():
    require_backend("rope3d", "cpu")
    x = torch.randn(1, 24, 2, 128)
    f = torch.compile(lambda x: lk.rope3d(x, grid=(2, 3, 4), frame_positions=[4, 5]) * 2, fullgraph=True,
                      backend="inductor")
    torch.testing.assert_close(f(x), reference.rope3d_ref(x, grid=(2, 3, 4), frame_positions=[4, 5]) * 2,
                               rtol=1e-5, atol=1e-5)


def test_rope3d_grad_through_reference():
    require_backend("rope3d", "cpu")
    x = torch.randn(1, 12, 2, 64, requires_grad=True)
    kw = dict(grid=(1, 3, 4), frame_positions=[7])
    lk.rope3d(x, backend="cpu", **kw).square().sum().backward()
    g = x.grad.clone()
    x.grad = None
    reference.rope3d_ref(x, **kw).square().sum().backward()
    torch.testing.assert_close(g, x.grad)


def test_rope3d_bad_input():
    x = torch.randn(1, 12, 2, 128)
    with pytest.raises(ValueError, match=r"rope3d: grid \(2, 3, 4\) has 24 tokens but x has 12"):
        lk.rope3d(x, grid=(2, 3, 4), frame_positions=[0, 1])
    with pytest.raises(ValueError, match="rope3d: frame_positions must have 1 entries"):
        lk.rope3d(x, grid=(1, 3, 4), frame_positions=[0, 1])
    with pytest.raises(ValueError, match=r"rope3d: split must be 3 even sizes summing to head_dim 128"):
        lk.rope3d(x, grid=(1, 3, 4), frame_positions=[0], split=(42, 44, 44))
    with pytest.raises(TypeError, match="rope3d: x must have dtype"):
        lk.rope3d(x.to(torch.int32), grid=(1, 3, 4), frame_positions=[0])
    with pytest.raises(ValueError, match=r"rope3d: x must be 4-D"):
        lk.rope3d(x[0], grid=(1, 3, 4), frame_positions=[0])
