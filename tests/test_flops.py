# liveact_model.flops: the meta-device trace counts what the architecture implies, KV bytes match §4.1, CLI.
import torch

from liveact_model import ConvKVMemory, official, tiny
from liveact_model.flops import analyze, main, parse_size, project
from _liveact_ref import single_thread  # noqa: F401


def _expected_step_flops(cfg, S, Nk, with_audio, fl):
    # the dominant matmuls of one forward_block (reference-model.md §5), written out by hand as a cross-check
    D, Fd, L = cfg.dim, cfg.ffn_dim, cfg.num_layers
    per_layer = (4 * 2 * S * D * D + 4 * S * Nk * D                        # self-attn q,k,v,o + QK^T, PV
                 + 2 * 2 * S * D * D + 4 * S * (cfg.text_len + cfg.clip_tokens) * D   # cross q,o + 2 attentions
                 + 2 * 2 * S * D * Fd)                                     # FFN
    if with_audio:
        per_layer += 2 * 2 * S * D * D + 4 * S * cfg.context_tokens * D    # audio q, proj + attention
    # ConvKV: 2 compressions (K and V) of c·g slots into c, g MACs per output element
    per_layer += 2 * 2 * cfg.num_compressed * fl * D * cfg.compress_group
    embed = 2 * S * D * cfg.in_dim * 4 + 2 * S * D * 4 * cfg.out_dim       # patch embed + head
    time = 2 * (cfg.freq_dim * D + D * D + D * 6 * D)
    return L * per_layer + embed + time


def test_counted_flops_match_the_architecture():
    cfg = official().replace(num_layers=2)
    res = analyze(cfg, (512, 512))
    fl = 1024
    S, Nk = 8 * fl, 14 * fl
    for i, got in enumerate(res["flops_per_step"]):
        want = _expected_step_flops(cfg, S, Nk, i != 0, fl)
        assert abs(got - want) / want < 1e-3, (i, got, want)
    assert res["flops_per_video_frame"] == res["flops_per_block"] / 32


def test_kv_cache_bytes_match_reference_table():
    # §4.1 [derived]: bf16, 3 steps x 40 layers x (K+V), one GPU: fl=1024 -> 35.2 GB, fl=1170 -> 40.3 GB
    for hw, gb in (((32, 32), 35.2), ((26, 45), 40.3)):
        m = ConvKVMemory(official(), device="meta")
        m.allocate(1, hw)
        assert round(m.nbytes / 1e9, 1) == gb
        f8 = ConvKVMemory(official(), device="meta", dtype=torch.float8_e4m3fn)
        f8.allocate(1, hw)
        # fp8 halves the values and adds one fp32 scale per (token, head): (128 + 4) / 256 of bf16
        assert abs(f8.nbytes / m.nbytes - 132 / 256) < 1e-9


def test_projection_and_cli(capsys):
    res = analyze(tiny(), (64, 64), audio_cfg=1.7)
    assert res["forwards_per_block"] == 5
    p1, p2 = project(res, "H100", 1, "bf16"), project(res, "H100", 2, "bf16")
    assert p2["block_ms"] <= p1["block_ms"] and p1["fps"] > 0
    assert main(["--preset", "tiny", "--size", "64x64"]) == 0
    out = capsys.readouterr().out
    assert "PROJECTION" in out and "FLOPs per video frame" in out and "2xH200" in out
    assert parse_size("720*416") == (720, 416)


def test_cli_dispatch(capsys):
    from liveact_model import cli
    assert cli.main([]) == 0 and "flops" in capsys.readouterr().out
    assert cli.main(["nonsense"]) == 2
    assert "unknown command" in capsys.readouterr().err
    assert cli.main(["flops", "--preset", "tiny", "--size", "64x64", "--json"]) == 0
    assert '"flops_per_video_frame"' in capsys.readouterr().out
