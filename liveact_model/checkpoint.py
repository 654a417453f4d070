# Checkpoint I/O in the official diffusers layout: config.json + safetensors (single file or shards with an
# index), or a .pt/.pth through torch.load(weights_only=True); strict key/shape checking with a readable diff.
from __future__ import annotations

import json
import os
import re
from typing import Optional

import torch

from .config import LiveActConfig, get_config
from .model import LiveActModel

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"


class CheckpointMismatchError(ValueError):
    """The checkpoint's keys or shapes differ from the model built from its config."""

    def __init__(self, source, missing, unexpected, mismatched):
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        super().__init__(format_diff(source, missing, unexpected, mismatched))


def _collapse(keys):
    # "blocks.0.x", "blocks.1.x", ... -> "blocks.{0-39}.x" so a systematic mismatch is one line
    groups = {}
    for k in keys:
        m = re.match(r"^(.*?blocks\.)(\d+)(\..*)$", k)
        if m:
            groups.setdefault((m.group(1), m.group(3)), []).append(int(m.group(2)))
        else:
            groups.setdefault((k, None), [])
    out = []
    for (a, b), idx in groups.items():
        if b is None:
            out.append(a)
        else:
            idx = sorted(idx)
            rng = f"{idx[0]}-{idx[-1]}" if idx == list(range(idx[0], idx[-1] + 1)) and len(idx) > 1 else \
                ",".join(map(str, idx))
            out.append(f"{a}{{{rng}}}{b}" if len(idx) > 1 else f"{a}{idx[0]}{b}")
    return out


def format_diff(source, missing, unexpected, mismatched, limit=20) -> str:
    lines = [f"checkpoint {source} does not match the model:"]

    def section(title, items):
        if not items:
            return
        lines.append(f"  {title} ({len(items)}):")
        for s in items[:limit]:
            lines.append(f"    {s}")
        if len(items) > limit:
            lines.append(f"    ... and {len(items) - limit} more")
    section("missing in checkpoint", _collapse(sorted(missing)))
    section("unexpected in checkpoint", _collapse(sorted(unexpected)))
    section("shape mismatch (checkpoint vs model)",
            [f"{k}: {list(a)} vs {list(b)}" for k, (a, b) in sorted(mismatched.items())])
    return "\n".join(lines)


def _read_safetensors(path, device="cpu"):
    from safetensors.torch import load_file
    return load_file(path, device=str(device))


def read_state_dict(path: str) -> dict:
    """All tensors of a checkpoint directory or file (see load_checkpoint)."""
    if os.path.isdir(path):
        idx = os.path.join(path, INDEX_NAME)
        single = os.path.join(path, WEIGHTS_NAME)
        if os.path.exists(idx):
            with open(idx) as f:
                index = json.load(f)
            if "weight_map" not in index:
                raise ValueError(f"{idx}: no 'weight_map' in the index file")
            sd = {}
            for shard in sorted(set(index["weight_map"].values())):
                shard_path = os.path.join(path, shard)
                if not os.path.exists(shard_path):
                    raise FileNotFoundError(f"{idx} names shard {shard!r}, which does not exist in {path}")
                part = _read_safetensors(shard_path)
                wrong = [k for k in part if index["weight_map"].get(k) != shard]
                if wrong:
                    raise ValueError(f"{shard_path}: tensors {wrong[:5]} are not mapped to this shard in {INDEX_NAME}")
                sd.update(part)
            absent = sorted(set(index["weight_map"]) - set(sd))
            if absent:
                raise ValueError(f"{idx} lists tensors missing from their shards: {absent[:10]}")
            return sd
        if os.path.exists(single):
            return _read_safetensors(single)
        files = [f for f in os.listdir(path) if f.endswith(".safetensors")]
        if len(files) == 1:
            return _read_safetensors(os.path.join(path, files[0]))
        raise FileNotFoundError(f"{path}: expected {INDEX_NAME}, {WEIGHTS_NAME} or one .safetensors file; "
                                f"found {sorted(os.listdir(path))}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    if path.endswith(".safetensors"):
        return _read_safetensors(path)
    if path.endswith((".pt", ".pth", ".bin")):
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise ValueError(f"{path}: expected a dict of tensors (a state dict)")
        return obj
    raise ValueError(f"{path}: unsupported checkpoint format (expected a directory, .safetensors, .pt or .pth)")


def check_state_dict(model: LiveActModel, sd: dict, source="<state dict>") -> None:
    """Raise CheckpointMismatchError listing missing, unexpected and mis-shaped keys."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    mismatched = {k: (tuple(sd[k].shape), want[k]) for k in want if k in sd and tuple(sd[k].shape) != want[k]}
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(source, missing, unexpected, mismatched)


def load_checkpoint(path: str, config=None, *, dtype=torch.bfloat16, device="cpu", strict: bool = True,
                    backend: str = "auto") -> LiveActModel:
    """Build a LiveActModel from a checkpoint and load its weights.
    path: a diffusers-style directory (config.json + diffusion_pytorch_model.safetensors, or shards with
    diffusion_pytorch_model.safetensors.index.json), a single .safetensors file, or a .pt/.pth state dict
    (read with torch.load(weights_only=True), never unpickling code). config: a LiveActConfig or preset name;
    default = the directory's config.json. Every key and shape is checked (strict=False skips only the
    missing/unexpected keys, never wrong shapes)."""
    if config is None:
        cj = os.path.join(path, "config.json") if os.path.isdir(path) else \
            os.path.join(os.path.dirname(path) or ".", "config.json")
        if not os.path.exists(cj):
            raise FileNotFoundError(f"no config given and no config.json next to {path}")
        config = LiveActConfig.from_json(cj)
    cfg = get_config(config)
    sd = read_state_dict(path)
    with torch.device("meta"):
        model = LiveActModel(cfg, backend=backend)
    try:
        check_state_dict(model, sd, path)
    except CheckpointMismatchError as e:
        if strict or e.mismatched:
            raise
        sd = {k: v for k, v in sd.items() if k not in e.unexpected}
        if e.missing:
            raise CheckpointMismatchError(path, e.missing, [], {}) from None
    sd = {k: v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device) for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval()


def save_checkpoint(model: LiveActModel, path: str, *, max_shard_bytes: Optional[int] = None) -> None:
    """Write config.json + safetensors in the official diffusers layout; shards + index when the weights
    exceed max_shard_bytes (default: one file)."""
    from safetensors.torch import save_file
    os.makedirs(path, exist_ok=True)
    cfg = dict(model.config.to_dict())
    cfg.setdefault("_class_name", "WanModel")
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    total = sum(v.numel() * v.element_size() for v in sd.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        save_file(sd, os.path.join(path, WEIGHTS_NAME), metadata={"format": "pt"})
        return
    shards, cur, size = [], {}, 0
    for k, v in sd.items():
        nb = v.numel() * v.element_size()
        if cur and size + nb > max_shard_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[k] = v
        size += nb
    shards.append(cur)
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(path, name), metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
    with open(os.path.join(path, INDEX_NAME), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
