# load_checkpoint: official diffusers layout (config.json keys, safetensors shards + index), single files,
# .pt through weights_only, and the readable diff for missing / unexpected / mis-shaped keys.
import json

import pytest
import torch
from safetensors.torch import save_file

from liveact_model import tiny
from liveact_model.checkpoint import CheckpointMismatchError, load_checkpoint, save_checkpoint
from liveact_model.config import OFFICIAL_CONFIG_JSON, LiveActConfig
from _liveact_ref import single_thread, tiny_cond, tiny_model  # noqa: F401


def _write_official_layout(path, sd, config_dict, n_shards=3):
    """Written independently of save_checkpoint: diffusers' file names, index {metadata, weight_map}."""
    keys = sorted(sd)
    chunks = [keys[i::n_shards] for i in range(n_shards)]
    weight_map = {}
    for i, ks in enumerate(chunks):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        save_file({k: sd[k].contiguous() for k in ks}, str(path / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in ks})
    (path / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": sum(v.numel() * v.element_size() for v in sd.values())},
         "weight_map": weight_map}))
    (path / "config.json").write_text(json.dumps(config_dict))


def _tiny_config_json():
    # the official config.json keys (with tiny values) plus the keys the official code hard-codes
    d = dict(OFFICIAL_CONFIG_JSON)
    t = tiny()
    for k in ("dim", "num_heads", "num_layers", "ffn_dim", "freq_dim", "in_dim", "out_dim", "text_len",
              "intermediate_dim", "output_dim", "context_tokens"):
        d[k] = getattr(t, k)
    d.update(text_dim=t.text_dim, clip_dim=t.clip_dim, clip_tokens=t.clip_tokens, audio_layers=t.audio_layers,
             audio_channels=t.audio_channels)
    return d


def test_official_config_json_parses_to_official_preset():
    cfg = LiveActConfig.from_dict(OFFICIAL_CONFIG_JSON)
    assert (cfg.dim, cfg.num_heads, cfg.num_layers, cfg.ffn_dim, cfg.in_dim, cfg.out_dim) == (5120, 40, 40, 13824, 36, 16)
    assert cfg.extra["_name_or_path"] == "/wan2.1_i2v_480p_lightx2v_memoryinit" and cfg.extra["weight_init"] is False


def test_sharded_official_layout_loads(tmp_path):
    src = tiny_model(seed=4, dtype=torch.bfloat16)
    sd = src.state_dict()
    _write_official_layout(tmp_path, sd, _tiny_config_json())
    m = load_checkpoint(str(tmp_path), dtype=torch.bfloat16)
    for k, v in m.state_dict().items():
        assert torch.equal(v, sd[k]), k
    assert m.config.extra["_name_or_path"] == OFFICIAL_CONFIG_JSON["_name_or_path"]
    # and it runs
    cond = tiny_cond(m.float())
    with torch.no_grad():
        assert torch.isfinite(m.forward_block(torch.randn(1, 4, 6, 8, 8), 1000.0, cond)).all()


def test_save_checkpoint_roundtrip_single_and_sharded(tmp_path):
    src = tiny_model(seed=2)
    save_checkpoint(src, str(tmp_path / "one"))
    save_checkpoint(src, str(tmp_path / "many"), max_shard_bytes=100_000)
    assert (tmp_path / "many" / "diffusion_pytorch_model.safetensors.index.json").exists()
    for d in ("one", "many"):
        m = load_checkpoint(str(tmp_path / d), dtype=torch.float32)
        assert all(torch.equal(v, src.state_dict()[k]) for k, v in m.state_dict().items())
    m = load_checkpoint(str(tmp_path / "one" / "diffusion_pytorch_model.safetensors"), dtype=torch.float32)
    assert m.config == src.config


def test_pt_file_weights_only(tmp_path):
    src = tiny_model(seed=3)
    torch.save(src.state_dict(), tmp_path / "w.pt")
    m = load_checkpoint(str(tmp_path / "w.pt"), config=tiny(), dtype=torch.float32)
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in m.state_dict().items())

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported"):
        load_checkpoint(str(tmp_path / "evil.pt"), config=tiny())


def test_mismatch_gives_readable_diff(tmp_path):
    sd = dict(tiny_model().state_dict())
    for i in range(tiny().num_layers):
        del sd[f"blocks.{i}.self_attn.memory_proj_k.weight"]       # missing in every block
    sd["blocks.0.extra_thing.weight"] = torch.zeros(3)               # unexpected
    sd["head.head.weight"] = torch.zeros(7, 64)                      # mis-shaped
    _write_official_layout(tmp_path, sd, _tiny_config_json(), n_shards=2)
    with pytest.raises(CheckpointMismatchError) as ei:
        load_checkpoint(str(tmp_path))
    msg = str(ei.value)
    assert "missing in checkpoint (1):" in msg and "blocks.{0-1}.self_attn.memory_proj_k.weight" in msg
    assert "unexpected in checkpoint (1):" in msg and "blocks.0.extra_thing.weight" in msg
    assert "head.head.weight: [7, 64] vs [16, 64]" in msg
    # non-strict drops unexpected keys but never accepts wrong shapes
    with pytest.raises(CheckpointMismatchError, match="shape mismatch"):
        load_checkpoint(str(tmp_path), strict=False)


def test_bad_checkpoint_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(str(tmp_path / "nope.safetensors"), config=tiny())
    (tmp_path / "x.bin2").write_text("")
    with pytest.raises(ValueError, match="unsupported checkpoint format"):
        load_checkpoint(str(tmp_path / "x.bin2"), config=tiny())
    (tmp_path / "d").mkdir()
    with pytest.raises(FileNotFoundError, match="no config given"):
        load_checkpoint(str(tmp_path / "d"))
