# LiveActModel: official names/shapes, block math against an independent fp64 restatement, config rules,
# per-frame timesteps, bad inputs.
import math

import pytest
import torch
import torch.nn.functional as F

from liveact_model import LiveActConfig, LiveActModel, official, tiny
from liveact_model.config import get_config
from _liveact_ref import official_rope, single_thread, tiny_cond, tiny_model  # noqa: F401


def _official_meta():
    with torch.device("meta"):
        return LiveActModel("official")


def test_official_state_dict_names_and_shapes():
    sd = {k: tuple(v.shape) for k, v in _official_meta().state_dict().items()}
    expect = {  # reference-model.md §1.2
        "patch_embedding.weight": (5120, 36, 1, 2, 2), "patch_embedding.bias": (5120,),
        "text_embedding.0.weight": (5120, 4096), "text_embedding.2.weight": (5120, 5120),
        "time_embedding.0.weight": (5120, 256), "time_embedding.2.weight": (5120, 5120),
        "time_projection.1.weight": (30720, 5120), "time_projection.1.bias": (30720,),
        "img_emb.proj.0.weight": (1280,), "img_emb.proj.1.weight": (1280, 1280),
        "img_emb.proj.3.weight": (5120, 1280), "img_emb.proj.4.bias": (5120,),
        "blocks.0.modulation": (1, 6, 5120), "blocks.39.self_attn.q.weight": (5120, 5120),
        "blocks.0.self_attn.norm_q.weight": (5120,), "blocks.0.self_attn.norm_k.weight": (5120,),
        "blocks.0.self_attn.memory_proj_k.weight": (5120, 1, 5), "blocks.0.self_attn.memory_proj_v.weight": (5120, 1, 5),
        "blocks.0.norm3.weight": (5120,), "blocks.0.norm3.bias": (5120,),
        "blocks.0.cross_attn.k_img.weight": (5120, 5120), "blocks.0.cross_attn.norm_k_img.weight": (5120,),
        "blocks.0.ffn.0.weight": (13824, 5120), "blocks.0.ffn.2.weight": (5120, 13824),
        "blocks.0.audio_cross_attn.q_linear.bias": (5120,), "blocks.0.audio_cross_attn.kv_linear.weight": (10240, 768),
        "blocks.0.audio_cross_attn.proj.weight": (5120, 5120), "blocks.0.norm_x.weight": (5120,),
        "head.modulation": (1, 2, 5120), "head.head.weight": (64, 5120), "head.head.bias": (64,),
        "audio_proj.proj1.weight": (512, 46080), "audio_proj.proj1_vf.weight": (512, 73728),
        "audio_proj.proj2.weight": (512, 512), "audio_proj.proj3.weight": (24576, 512), "audio_proj.norm.weight": (768,),
    }
    for k, shp in expect.items():
        assert sd.get(k) == shp, f"{k}: {sd.get(k)} != {shp}"
    per_block = [k[len("blocks.0."):] for k in sd if k.startswith("blocks.0.")]
    assert len(per_block) == 42, sorted(per_block)     # 42 tensors per block in the §1.2 table
    assert not any(k.startswith("blocks.40.") for k in sd)
    # parameter counts [derived] in §1.2: Wan block 403.84M, audio add-on 60.32M, ConvKV 2 x 25.6k
    n = {k: math.prod(v) for k, v in sd.items()}
    blk = sum(v for k, v in n.items() if k.startswith("blocks.0."))
    audio = sum(v for k, v in n.items() if k.startswith("blocks.0.") and ("audio" in k or "norm_x" in k))
    conv = sum(v for k, v in n.items() if k.startswith("blocks.0.") and "memory_proj" in k)
    assert abs((blk - audio - conv) / 1e6 - 403.84) < 0.01 and abs(audio / 1e6 - 60.32) < 0.01 and conv == 51200
    assert abs(sum(n.values()) / 1e9 - 18.9) < 0.05


def test_config_rules():
    assert official().rope_split == (44, 42, 42) and official().head_dim == 128
    assert official().audio_vf_entries == 8 and official().window_frames == 14
    assert tiny().rope_split == (12, 10, 10)
    with pytest.raises(ValueError, match="dim"):
        LiveActConfig(dim=100, num_heads=3)
    with pytest.raises(ValueError, match="block_frames"):
        tiny().replace(block_frames=6)
    with pytest.raises(ValueError, match="in_dim"):
        tiny().replace(in_dim=10)
    with pytest.raises(ValueError, match="timesteps"):
        tiny().replace(timesteps=(1000, 500))
    with pytest.raises(ValueError, match="unknown preset"):
        get_config("huge")
    c = LiveActConfig.from_dict(tiny().to_dict())
    assert c == tiny()
    # a smaller memory layout: 1 sink, 1 compressed (group 3), 1 recent -> blocks of 3 then 2 frames
    small = tiny().replace(num_sink=1, num_compressed=1, num_recent=1, compress_group=3, first_block_frames=3,
                           block_frames=2, text_dim=0, clip_dim=0)
    assert small.window_frames == 5
    m = LiveActModel(small).init_weights(0)
    assert not any(k.startswith(("text_embedding", "img_emb")) or "cross_attn." in k and "audio" not in k
                   for k in m.state_dict())


def _ln(x, w=None, b=None, eps=1e-6):
    return F.layer_norm(x, (x.shape[-1],), w, b, eps)


def _rms(x, w, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _attn(q, k, v):
    # q (B, Lq, H, d), k/v (B, Lk, H, d)
    s = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    return torch.einsum("bhqk,bkhd->bqhd", s.softmax(-1), v)


def _independent_forward(m, x, t, y, text, clip, tokens, block_index):
    """fp64 restatement of §5 for one block without memory (the block attends to itself)."""
    cfg = m.config
    P = {k: v.double() for k, v in m.state_dict().items()}
    H, d, D = cfg.num_heads, cfg.head_dim, cfg.dim
    lin = lambda z, name: F.linear(z, P[name + ".weight"], P[name + ".bias"])  # noqa: E731
    xin = torch.cat([x.double(), y.double()], 1)
    h = F.conv3d(xin, P["patch_embedding.weight"], P["patch_embedding.bias"], stride=cfg.patch_size)
    T, gh, gw = h.shape[2:]
    fl = gh * gw
    h = h.flatten(2).transpose(1, 2)
    half = cfg.freq_dim // 2
    tt = torch.tensor([float(t)], dtype=torch.float64)
    sinus = torch.outer(tt, torch.pow(10000.0, -torch.arange(half, dtype=torch.float64) / half))
    e = lin(F.silu(lin(torch.cat([sinus.cos(), sinus.sin()], 1), "time_embedding.0")), "time_embedding.2")
    e0 = lin(F.silu(e), "time_projection.1").view(1, 6, D)
    txt = F.pad(text.double(), (0, 0, 0, cfg.text_len - text.shape[1]))
    ctx_t = lin(F.gelu(lin(txt, "text_embedding.0"), approximate="tanh"), "text_embedding.2")
    c = _ln(clip.double(), P["img_emb.proj.0.weight"], P["img_emb.proj.0.bias"], 1e-5)
    c = lin(F.gelu(lin(c, "img_emb.proj.1")), "img_emb.proj.3")
    ctx_i = _ln(c, P["img_emb.proj.4.weight"], P["img_emb.proj.4.bias"], 1e-5)
    pos = list(range(0, T)) if block_index == 0 else list(range(6, 6 + T))
    tok = None if tokens is None else tokens.double()
    for i in range(cfg.num_layers):
        p = f"blocks.{i}."
        sm, cm, gm, sf, cf, gf = (P[p + "modulation"] + e0).chunk(6, 1)
        z = _ln(h) * (1 + cm) + sm
        q = _rms(lin(z, p + "self_attn.q"), P[p + "self_attn.norm_q.weight"]).view(1, -1, H, d)
        k = _rms(lin(z, p + "self_attn.k"), P[p + "self_attn.norm_k.weight"]).view(1, -1, H, d)
        v = lin(z, p + "self_attn.v").view(1, -1, H, d)
        o = _attn(official_rope(q, pos, (gh, gw)), official_rope(k, pos, (gh, gw)), v)
        h = h + lin(o.flatten(2), p + "self_attn.o") * gm
        z = _ln(h, P[p + "norm3.weight"], P[p + "norm3.bias"])
        q = _rms(lin(z, p + "cross_attn.q"), P[p + "cross_attn.norm_q.weight"]).view(1, -1, H, d)
        kt = _rms(lin(ctx_t, p + "cross_attn.k"), P[p + "cross_attn.norm_k.weight"]).view(1, -1, H, d)
        ki = _rms(lin(ctx_i, p + "cross_attn.k_img"), P[p + "cross_attn.norm_k_img.weight"]).view(1, -1, H, d)
        o = _attn(q, kt, lin(ctx_t, p + "cross_attn.v").view(1, -1, H, d)) + \
            _attn(q, ki, lin(ctx_i, p + "cross_attn.v_img").view(1, -1, H, d))
        h = h + lin(o.flatten(2), p + "cross_attn.o")
        if tok is not None:
            z = _ln(h, P[p + "norm_x.weight"], P[p + "norm_x.bias"])
            q = lin(z, p + "audio_cross_attn.q_linear").view(T, fl, H, d)             # batch = frames
            kv = lin(tok[0], p + "audio_cross_attn.kv_linear").view(T, -1, 2, H, d)
            o = _attn(q, kv[:, :, 0], kv[:, :, 1]).reshape(1, T * fl, D)
            a = lin(o, p + "audio_cross_attn.proj")
            if block_index == 0:
                a[:, :fl] = 0
            h = h + a
        z = _ln(h) * (1 + cf) + sf
        h = h + lin(F.gelu(lin(z, p + "ffn.0"), approximate="tanh"), p + "ffn.2") * gf
    sh, sc = (P["head.modulation"] + e[:, None]).chunk(2, 1)
    out = lin(_ln(h) * (1 + sc) + sh, "head.head")
    out = out.view(1, T, gh, gw, *cfg.patch_size, cfg.out_dim)
    return torch.einsum("bfhwpqrc->bcfphqwr", out).reshape(1, cfg.out_dim, T, gh * 2, gw * 2)


@pytest.mark.parametrize("block_index,with_audio", [(0, True), (3, True), (1, False)])
def test_block_matches_independent_fp64(block_index, with_audio):
    m = tiny_model()
    cfg = m.config
    g = torch.Generator().manual_seed(3)
    T = 6 if block_index == 0 else 8
    y = torch.randn(1, cfg.cond_channels, 14, 8, 8, generator=g)
    text, clip = torch.randn(1, 5, cfg.text_dim, generator=g), torch.randn(1, 5, cfg.clip_dim, generator=g)
    x = torch.randn(1, cfg.out_dim, T, 8, 8, generator=g)
    tok = torch.randn(1, T, cfg.context_tokens, cfg.output_dim, generator=g) if with_audio else None
    cond = m.prepare_condition(y=y, text=text, clip=clip)
    with torch.no_grad():
        out = m.forward_block(x, 937.5, cond, None, block_index=block_index, audio=tok)
    ys = y[:, :, :6] if block_index == 0 else y[:, :, 6:14]
    ref = _independent_forward(m, x, 937.5, ys, text, clip, tok, block_index)
    # fp32 model vs fp64 restatement: measured max |diff| ~2e-6 on outputs of magnitude ~1
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)


def test_audio_proj_layout():
    # windows of video frames -> tokens: first frame uses its full window, each later latent frame the
    # entries (-2,-1,0 of its 1st frame; centre of 2nd, 3rd; 0,+1,+2 of its 4th) in that order
    m = tiny_model()
    cfg = m.config
    w = torch.randn(1, 9, cfg.audio_window, cfg.audio_layers, cfg.audio_channels)
    ap = m.audio_proj
    with torch.no_grad():
        tok = m.audio_tokens(w, has_first=True)
        first = F.relu(ap.proj1(w[0, 0].flatten()))
        later = []
        for j in range(2):
            f = w[0, 1 + 4 * j: 5 + 4 * j]
            ent = torch.stack([f[0, 0], f[0, 1], f[0, 2], f[1, 2], f[2, 2], f[3, 2], f[3, 3], f[3, 4]])
            later.append(F.relu(ap.proj1_vf(ent.flatten())))
        z = ap.proj3(F.relu(ap.proj2(torch.stack([first] + later)))).view(3, cfg.context_tokens, -1)
        ref = F.layer_norm(z, (cfg.output_dim,), ap.norm.weight, ap.norm.bias, 1e-5)
    assert tok.shape == (1, 3, cfg.context_tokens, cfg.output_dim)
    torch.testing.assert_close(tok[0], ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="multiple of vae_scale"):
        m.audio_tokens(w[:, :7], has_first=True)


def test_per_frame_timesteps_equal_per_sample():
    m = tiny_model()
    cond = tiny_cond(m)
    x = torch.randn(1, 4, 6, 8, 8)
    with torch.no_grad():
        a = m.forward_block(x, 500.0, cond, None, block_index=0)
        b = m.forward_block(x, torch.full((1, 6), 500.0), cond, None, block_index=0)
        c = m.forward_block(x, torch.tensor([500.0, 500, 500, 900, 900, 900])[None], cond, None, block_index=0)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_forward_block_bad_inputs():
    m = tiny_model()
    cond = tiny_cond(m)
    with pytest.raises(ValueError, match=r"x: expected \(B, 4, T, H, W\)"):
        m.forward_block(torch.randn(1, 3, 6, 8, 8), 1000.0, cond)
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        m.forward_block(torch.randn(1, 4, 6, 7, 8), 1000.0, cond)
    with pytest.raises(ValueError, match="audio tokens: expected"):
        m.forward_block(torch.randn(1, 4, 6, 8, 8), 1000.0, cond, audio=torch.randn(1, 6, 3, 32))
    with pytest.raises(ValueError, match="audio: expected tokens for 6 latent frames"):
        m.forward_block(torch.randn(1, 4, 6, 8, 8), 1000.0, cond, audio=torch.randn(1, 5, 4, 32))
    with pytest.raises(ValueError, match="t: expected"):
        m.forward_block(torch.randn(1, 4, 6, 8, 8), torch.ones(2, 3, 4), cond)
    with pytest.raises(TypeError, match="floating latent"):
        m.forward_block(torch.ones(1, 4, 6, 8, 8, dtype=torch.long), 1000.0, cond)
    with pytest.raises(ValueError, match="x: on meta"):
        m.forward_block(torch.randn(1, 4, 6, 8, 8, device="meta"), 1000.0, cond)
    with pytest.raises(ValueError, match="text: expected"):
        m.prepare_condition(y=cond.y, text=torch.randn(1, 5, 7), clip=torch.randn(1, 5, 32))
    with pytest.raises(TypeError, match="floating dtype"):
        m.prepare_condition(y=cond.y, text=torch.ones(1, 5, 32, dtype=torch.long), clip=torch.randn(1, 5, 32))
