# LiveActPipeline: determinism, streamed input, samplers, audio CFG caches, edit prompts, audio windows,
# overlap decoding, kernel backend vs torch backend over 20 blocks, bad inputs.
import pytest
import torch

from liveact_kernels.testing import assert_close_to_ref
from liveact_model import ConvKVMemory
from liveact_model.pipeline import (LiveActPipeline, audio_windows, latent_size, make_i2v_condition, sample,
                                    sampler_step)
from _liveact_ref import single_thread, tiny_model  # noqa: F401

HW = (4, 4)


def _pipe(model=None, **kw):
    m = model or tiny_model()
    cfg = m.config
    g = torch.Generator().manual_seed(11)
    p = LiveActPipeline(m, **kw)
    p.start(image_latent=torch.randn(1, cfg.out_dim, cfg.window_frames, *HW, generator=g).to(m.dtype),
            text=torch.randn(1, 5, cfg.text_dim, generator=g).to(m.dtype),
            clip=torch.randn(1, cfg.clip_tokens, cfg.clip_dim, generator=g).to(m.dtype))
    return p


def _audio(frames, cfg, seed=12, dtype=torch.float32):
    return torch.randn(frames, cfg.audio_layers, cfg.audio_channels, generator=torch.Generator().manual_seed(seed)).to(dtype)


def test_deterministic_for_a_seed_and_reset():
    p = _pipe()
    a = [b.latents for b in p.stream(_audio(90, p.config))]
    p.reset()
    b = [b.latents for b in p.stream(_audio(90, p.config))]
    assert len(a) == 4 and all(torch.equal(x, y) for x, y in zip(a, b))
    p2 = _pipe(seed=7)
    c = [b.latents for b in p2.stream(_audio(90, p.config))]
    assert not torch.equal(a[0], c[0])


def test_streamed_chunks_equal_full_tensor_and_block_geometry():
    p = _pipe()
    feats = _audio(100, p.config)
    full = list(p.stream(feats))
    p.reset()
    chunked = list(p.stream(iter(feats.split(5))))
    assert [(b.index, b.frame_start, b.num_frames, b.valid_frames) for b in full] == \
        [(0, 0, 21, 21), (1, 21, 32, 32), (2, 53, 32, 32), (3, 85, 32, 15)]
    for a, b in zip(full, chunked):
        assert torch.equal(a.latents, b.latents)
    assert full[0].latents.shape == (1, 4, 6, *HW) and full[1].latents.shape == (1, 4, 8, *HW)


def test_sampler_formulas():
    x, v, eps = torch.randn(3, 5), torch.randn(3, 5), torch.randn(3, 5)
    # x0 + re-noise (§3.2): x0 = x - σv; x' = (1-σ')x0 + σ'ε
    out = sampler_step(x, v, 937.5, 833.3333333333334, noise=eps)
    s, s2 = 0.9375, 0.8333333333333334
    torch.testing.assert_close(out, (1 - s2) * (x - s * v) + s2 * eps)
    torch.testing.assert_close(sampler_step(x, v, 833.33, 0.0), x - 0.83333 * v)
    # Euler: x' = x - v (t - t')/1000
    torch.testing.assert_close(sampler_step(x, v, 1000, 937.5, method="euler"), x - v * 0.0625)
    # a perfect velocity model lands on x0 with either sampler
    x0 = torch.randn(2, 4)
    e = torch.randn(2, 4)
    g = torch.Generator().manual_seed(0)
    for method in ("x0", "euler"):
        def oracle(xt, t, i):
            s = t / 1000
            # reconstruct ε from x_t = (1-s)x0 + sε (s > 0 at every step the sampler calls)
            return (xt - (1 - s) * x0) / s - x0
        out = sample(oracle, e.clone(), (1000.0, 937.5, 833.33, 0.0), method=method, generator=g)
        torch.testing.assert_close(out, x0, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="sampler method"):
        sampler_step(x, v, 1, 0, method="ddim")


def test_euler_pipeline_differs_from_x0():
    a = [b.latents for b in _pipe().stream(_audio(30, tiny_model().config))]
    b = [b.latents for b in _pipe(sampler="euler").stream(_audio(30, tiny_model().config))]
    assert not torch.allclose(a[0], b[0])


def test_audio_cfg_caches_and_effect():
    p = _pipe(audio_cfg=1.7)
    assert p.null_memory is not None and p.null_memory.steps == (1, 2)   # no unused step-0 null cache (§12.11)
    a = [b.latents for b in p.stream(_audio(60, p.config))]
    q = _pipe()
    assert q.null_memory is None
    b = [b.latents for b in q.stream(_audio(60, q.config))]
    assert not torch.allclose(a[1], b[1])
    # audio skipped at step 0: features only reach the output through steps 1 and 2
    r = _pipe(audio_skip_steps=(0, 1, 2))
    c = [b.latents for b in r.stream(_audio(60, r.config))]
    r.reset()
    d = [b.latents for b in r.stream(_audio(60, r.config, seed=99))]
    assert all(torch.equal(x, y) for x, y in zip(c, d))


def test_edit_prompts_replace_text_by_block_range():
    m = tiny_model()
    cfg = m.config
    a = [b.latents for b in _pipe(m).stream(_audio(120, cfg))]
    g = torch.Generator().manual_seed(11)   # the same conditioning as _pipe
    kw = dict(image_latent=torch.randn(1, cfg.out_dim, cfg.window_frames, *HW, generator=g),
              text=torch.randn(1, 5, cfg.text_dim, generator=g),
              clip=torch.randn(1, cfg.clip_tokens, cfg.clip_dim, generator=g))
    ed = LiveActPipeline(m)
    ed.start(**kw, edit_prompts=[(2, 3, torch.randn(1, 3, cfg.text_dim)), (2, 4, torch.randn(1, 3, cfg.text_dim))])
    b = [x.latents for x in ed.stream(_audio(120, cfg))]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])      # before the range: unchanged
    assert not torch.allclose(a[2], b[2])
    # inclusive ranges, first match wins
    assert ed._cond_for(3) is ed.edits[0][2] and ed._cond_for(4) is ed.edits[1][2] and ed._cond_for(5) is ed.cond


def test_audio_windows_clamp():
    f = torch.arange(10.0).view(1, 10, 1, 1)
    w = audio_windows(f, range(0, 3), 5)
    assert w[0, :, :, 0, 0].tolist() == [[0, 0, 0, 1, 2], [0, 0, 1, 2, 3], [0, 1, 2, 3, 4]]
    w = audio_windows(f, range(8, 10), 5)
    assert w[0, :, :, 0, 0].tolist() == [[6, 7, 8, 9, 9], [7, 8, 9, 9, 9]]


def test_i2v_condition_mask():
    cfg = tiny_model().config
    y = make_i2v_condition(torch.randn(2, cfg.out_dim, 14, 4, 4), cfg)
    assert y.shape == (2, cfg.cond_channels, 14, 4, 4)
    assert (y[:, :4, 0] == 1).all() and (y[:, :4, 1:] == 0).all()


class CausalToyVAE:
    """Deterministic causal stand-in: latent frame 0 -> 1 frame, each later latent -> 4 frames that depend
    on it and the previous latent, so overlap decoding must match a one-shot decode exactly."""

    def decode(self, z):
        first = z[:, :3, :1]
        later = [(z[:, :3, j:j + 1] + 0.5 * z[:, :3, j - 1:j]).repeat(1, 1, 4, 1, 1) * torch.arange(1., 5).view(1, 1, 4, 1, 1)
                 for j in range(1, z.shape[2])]
        return torch.cat([first] + later, dim=2).repeat_interleave(8, -1).repeat_interleave(8, -2)

    def encode_image(self, image, n):
        return torch.zeros(image.shape[0], 4, n, image.shape[2] // 8, image.shape[3] // 8)


def test_decode_stream_overlap_matches_one_shot():
    p = _pipe()
    vae = CausalToyVAE()
    blocks = list(p.stream(_audio(80, p.config)))
    chunks = list(p.decode_stream(iter(blocks), vae))
    assert [c.shape[2] for c in chunks] == [21, 32, 27]                   # last block trimmed to the audio
    full = vae.decode(torch.cat([b.latents for b in blocks], dim=2))[:, :, :80]
    torch.testing.assert_close(torch.cat(chunks, dim=2), full)


def test_start_from_image_with_vae():
    m = tiny_model()
    p = LiveActPipeline(m)
    p.start(image=torch.zeros(1, 3, 32, 32), vae=CausalToyVAE(), text=torch.randn(1, 2, 32), clip=torch.randn(1, 5, 32))
    assert p.cond.y.shape == (1, 8, 14, 4, 4)
    with pytest.raises(ValueError, match="resolution 40x32"):
        p.start(image=torch.zeros(1, 3, 32, 40), vae=CausalToyVAE(), text=torch.randn(1, 2, 32), clip=torch.randn(1, 5, 32))


def test_optional_adapters_fail_clearly(tmp_path):
    from liveact_model.pipeline import Wav2Vec2Encoder, WanVAEAdapter
    for cls, what in ((Wav2Vec2Encoder, "transformers"), (WanVAEAdapter, "wan")):
        try:
            cls(str(tmp_path / "missing"))
        except ImportError as e:
            assert what in str(e)
        except FileNotFoundError as e:       # the dependency is installed: the missing file is named instead
            assert "missing" in str(e)
        else:
            raise AssertionError(f"{cls.__name__} accepted a missing model")


def test_bad_inputs():
    cfg = tiny_model().config
    with pytest.raises(ValueError, match="resolution 500x512"):
        latent_size(500, 512, cfg)
    assert latent_size(720, 416, cfg) == (52, 90)
    p = _pipe()
    with pytest.raises(ValueError, match=r"audio features: expected \(frames, 2, 16\)"):
        next(p.stream(torch.randn(40, 12, 768)))
    with pytest.raises(TypeError, match="floating dtype"):
        next(p.stream(torch.ones(40, 2, 16, dtype=torch.int32)))
    with pytest.raises(ValueError, match="audio features: on meta"):
        next(p.stream(torch.randn(40, 2, 16, device="meta")))
    with pytest.raises(ValueError, match="empty"):
        next(p.stream(torch.randn(0, 2, 16)))
    with pytest.warns(UserWarning, match="shorter than the first block"):
        out = list(p.stream(torch.randn(10, 2, 16)))
    assert len(out) == 1 and out[0].valid_frames == 10
    with pytest.raises(ValueError, match="timesteps"):
        LiveActPipeline(tiny_model(), timesteps=(1000, 500, 600, 0))
    with pytest.raises(RuntimeError, match="call start"):
        next(LiveActPipeline(tiny_model()).stream(torch.randn(40, 2, 16)))
    with pytest.raises(ValueError, match="memory has no cache for denoising steps"):
        LiveActPipeline(tiny_model(), memory=ConvKVMemory(cfg, steps=(0,)))


def test_kernel_backend_matches_torch_backend_20_blocks():
    # the same bf16 stream through backend="auto" (compiled kernels where available) and backend="torch"
    m = tiny_model(dtype=torch.bfloat16)
    feats = _audio(21 + 19 * 32, m.config, dtype=torch.bfloat16)
    fast = [b.latents for b in _pipe(m, backend="auto").stream(feats)]
    ref = [b.latents for b in _pipe(m, backend="torch").stream(feats)]
    m32 = tiny_model(dtype=torch.float32)
    hi = [b.latents for b in _pipe(m32, backend="torch").stream(feats.float())]
    assert len(fast) == 20
    for n, (a, b, c) in enumerate(zip(fast, ref, hi)):
        # tolerance rule (liveact_kernels.testing, kernel-notes): the fast path's error against the fp32
        # stream is at most 2x that of the bf16 torch reference (plus the fp32 noise floor)
        assert_close_to_ref(a, c, ref_lowp=b)


def test_stream_equals_offline_loop_over_the_official_cache():
    # LiveActPipeline.stream (its block geometry, audio windows, noise order, x0 + re-noise sampler, audio skipped
    # at step 0, ConvKVMemory) against an offline loop written here from reference-model.md §3 over the
    # independent official-style cache of _liveact_ref (complex128 RoPE of every slot per call, F.conv1d ConvKV)
    from _liveact_ref import OfficialMemory
    model = tiny_model()                                   # fp32 end to end
    cfg = model.config
    p = _pipe(model, seed=5)
    audio = _audio(21 + 32 * 3 - 7, cfg)                   # 4 blocks; the last one padded (25 of 32 frames)
    got = [b.latents for b in p.stream(audio)]
    assert len(got) == 4
    mem = OfficialMemory(layout=p.memory.layout)
    g = torch.Generator().manual_seed(5)
    half, S = cfg.audio_window // 2, audio.shape[0]
    ts = [1000.0, 937.5, 833.3333333333334, 0.0]
    assert [round(t, 3) for t in p.timesteps] == [round(t, 3) for t in ts]
    for n in range(4):
        first, nf, T = (0, 21, 6) if n == 0 else (21 + 32 * (n - 1), 32, 8)
        idx = (torch.arange(first, first + nf)[:, None] + torch.arange(-half, half + 1)[None]).clamp(0, S - 1)
        with torch.no_grad():
            actx = model.prepare_audio(model.audio_tokens(audio[idx][None], has_first=n == 0))
            x = torch.randn((1, cfg.out_dim, T, *HW), generator=g)
            for i in range(3):
                v = model.forward_block(x, ts[i], p.cond, mem, step=i, block_index=n,
                                        audio=None if i == 0 else actx).float()
                s, s2 = ts[i] / 1000, ts[i + 1] / 1000
                x0 = x - s * v
                x = x0 if s2 == 0 else (1 - s2) * x0 + s2 * torch.randn(x.shape, generator=g)
        # fp32 both ways; the official cache re-ropes in fp64: measured max |diff| of the order of 1e-6
        torch.testing.assert_close(got[n], x, rtol=1e-4, atol=1e-4, msg=f"block {n}")
