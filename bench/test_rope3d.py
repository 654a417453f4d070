"""rope3d at [1, 2048, 40, 128] bf16: the C++ CPU kernel against the official complex128 composition
(view_as_complex in float64, multiply by the precomputed complex table, view_as_real, cast), with the copy
bandwidth of the same bytes as the physical yardstick."""
import pytest
import torch

import liveact_kernels as lk
from liveact_kernels import reference
from _harness import copy_fn, run

SHAPES = [((2, 32, 32), 40, 128)]  # 2048 tokens


def _official_table(grid, pos, Dh, theta=10000.0):
    Fr, h, w = grid
    c = Dh // 2

    def rope_params(max_len, dim):
        f = torch.outer(torch.arange(max_len, dtype=torch.float64),
                        1.0 / torch.pow(theta, torch.arange(0, dim, 2).to(torch.float64).div(dim)))
        return torch.polar(torch.ones_like(f), f)

    freqs = torch.cat([rope_params(1024, Dh - 4 * (Dh // 6)), rope_params(1024, 2 * (Dh // 6)),
                       rope_params(1024, 2 * (Dh // 6))], dim=1)
    ft, fh, fw = freqs.split([c - 2 * (c // 3), c // 3, c // 3], dim=1)
    p = torch.as_tensor(pos, dtype=torch.long)
    return torch.cat([ft[p].view(Fr, 1, 1, -1).expand(Fr, h, w, -1), fh[:h].view(1, h, 1, -1).expand(Fr, h, w, -1),
                      fw[:w].view(1, 1, w, -1).expand(Fr, h, w, -1)], dim=-1).reshape(Fr * h * w, 1, -1)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"1x{s[0][0] * s[0][1] * s[0][2]}x{s[1]}x{s[2]}")
@pytest.mark.parametrize("provider", ["official_complex128", "cpu", "copy"])
def test_rope3d(benchmark, provider, shape):
    grid, H, Dh = shape
    dtype = torch.bfloat16
    N = grid[0] * grid[1] * grid[2]
    pos = [6, 7]
    x = torch.randn(1, N, H, Dh).to(dtype)
    nbytes = 2 * x.numel() * x.element_size()
    if provider == "cpu":
        torch.testing.assert_close(lk.rope3d(x, grid=grid, frame_positions=pos, backend="cpu").float(),
                                   reference.rope3d_ref(x, grid=grid, frame_positions=pos).float(), rtol=2e-2, atol=2e-2)
        out = torch.empty_like(x)
        fn, role = (lambda: lk.rope3d(x, grid=grid, frame_positions=pos, out=out, backend="cpu")), "kernel"
    elif provider == "official_complex128":  # Wan's rope_apply per call; the table is precomputed (model init)
        fi = _official_table(grid, pos, Dh)

        def fn():
            xc = torch.view_as_complex(x.to(torch.float64).reshape(1, N, H, -1, 2))
            return torch.view_as_real(xc * fi).flatten(3).to(dtype)
        role = "baseline"
    else:
        fn, role = copy_fn(nbytes), "copy"
    run(benchmark, fn, op="rope3d", provider=provider, shape=f"1x{N}x{H}x{Dh}", dtype=dtype, bytes_moved=nbytes,
        role=role)
