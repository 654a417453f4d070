# Neighbor Forcing training: the objective in its three modes, gradients into memory_proj, loss reduction,
# determinism and resume from a safetensors checkpoint.
import pytest
import torch

from liveact_model.avatar.tiny import avatar_config
from liveact_model.model import LiveActModel
from liveact_model.train import LatentDataset, MODES, block_layout, forcing_loss, make_batch, train


# one torch thread: on this 2-core machine two threads ran these models ~10x slower under load (docs/avatar.md)
pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _dataset(num_blocks, n=2, seed=0):
    # Random latents/features with the avatar shapes: the objective's mechanics do not depend on the content.
    cfg = avatar_config(num_layers=2)
    g = torch.Generator().manual_seed(seed)
    lay = block_layout(cfg, num_blocks)
    T = lay[-1][0] + lay[-1][1]
    V = lay[-1][2] + lay[-1][3]
    ds = LatentDataset(torch.randn(n, cfg.out_dim, T, 8, 8, generator=g),
                       torch.randn(n, cfg.out_dim, cfg.window_frames, 8, 8, generator=g),
                       torch.randn(n, cfg.clip_tokens, cfg.clip_dim, generator=g),
                       torch.randn(n, V, 1, cfg.audio_channels, generator=g))
    return cfg, ds


def test_block_layout_matches_official_geometry():
    cfg = avatar_config()
    assert block_layout(cfg, 3) == [(0, 6, 0, 21), (6, 8, 21, 32), (14, 8, 53, 32)]


@pytest.mark.parametrize("mode", MODES)
def test_memory_proj_learned_only_when_compression_runs(mode):
    # With 2 blocks the window never compresses, so memory_proj gets no gradient; with 3 it must (NF unrolls
    # the clip through the differentiable ConvKV memory).
    for nb, expect in ((2, False), (3, True)):
        cfg, ds = _dataset(nb)
        m = LiveActModel(cfg, backend="torch").init_weights(0)
        loss = forcing_loss(m, make_batch(ds, torch.arange(2), cfg), mode, torch.Generator().manual_seed(0))
        loss.backward()
        g = m.blocks[0].self_attn.memory_proj_k.weight.grad
        has = g is not None and float(g.abs().sum()) > 0
        assert has == expect, (mode, nb)


def test_modes_differ_in_context():
    cfg, ds = _dataset(3)
    m = LiveActModel(cfg, backend="torch").init_weights(0)
    b = make_batch(ds, torch.arange(2), cfg)
    out = {md: float(forcing_loss(m, b, md, torch.Generator().manual_seed(1)).detach()) for md in MODES}
    assert out["nf"] != out["tf"] and out["nf"] != out["df"]


def test_training_reduces_loss_and_is_deterministic():
    cfg, ds = _dataset(3, n=2)
    runs = []
    for _ in range(2):
        m = LiveActModel(cfg, backend="torch").init_weights(0)
        r = train(m, ds, mode="nf", steps=30, batch=2, lr=2e-3, seed=3, progress=False)
        runs.append((r, m))
    (r, m), (r2, m2) = runs
    assert r["losses"] == r2["losses"]
    first, last = sum(r["losses"][:5]) / 5, sum(r["losses"][-5:]) / 5
    assert last < 0.8 * first, (first, last)


def test_resume_continues_identically(tmp_path):
    cfg, ds = _dataset(3, n=2)
    ck = str(tmp_path / "ck.safetensors")
    m_full = LiveActModel(cfg, backend="torch").init_weights(0)
    full = train(m_full, ds, steps=4, batch=1, seed=5, progress=False)
    m_a = LiveActModel(cfg, backend="torch").init_weights(0)
    train(m_a, ds, steps=4, batch=1, seed=5, ckpt=ck, stop_after=2, progress=False)
    m_b = LiveActModel(cfg, backend="torch").init_weights(1)  # different init: everything comes from the ckpt
    part = train(m_b, ds, steps=4, batch=1, seed=5, ckpt=ck, resume=True, progress=False)
    assert part["losses"] == full["losses"][2:]
    for (n, p), (_, q) in zip(m_full.named_parameters(), m_b.named_parameters()):
        assert torch.equal(p, q), n


def test_mouth_weight_reweights_cells_and_keeps_scale():
    # A uniform mask is a uniform weight: normalised by its mean it leaves the loss unchanged. A mask on a few
    # cells changes the loss, and weight 0 ignores the mask.
    cfg, ds = _dataset(2)
    m = LiveActModel(cfg, backend="torch").init_weights(0)
    b = make_batch(ds, torch.arange(2), cfg)
    assert b["mouth"] is None
    loss = lambda mw: float(forcing_loss(m, b, "nf", torch.Generator().manual_seed(2), mouth_weight=mw).detach())
    base = loss(0.0)
    b["mouth"] = torch.ones(2, 8, 8, dtype=torch.bool)
    assert loss(4.0) == pytest.approx(base, rel=1e-5)
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[:, 4:6, 2:6] = True
    b["mouth"] = mask
    assert loss(0.0) == base
    assert loss(4.0) != pytest.approx(base, rel=1e-4)
