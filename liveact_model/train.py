# Neighbor Forcing training of the LiveAct DiT (and the teacher-forcing / diffusion-forcing baselines) on the
# procedural avatar data: `python -m liveact_model.train --minutes 20 --out liveact_model/assets/avatar_dit.safetensors`.
from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch
from tqdm import tqdm

from .memory import ConvKVMemory
from .model import LiveActModel
from .pipeline import audio_windows, make_i2v_condition

MODES = ("nf", "tf", "df")


# ----------------------------------------------------------------------------------------------------------
# data: rendered clips -> VAE latents, I2V condition, "CLIP" tokens, audio features

class LatentDataset:
    """Pre-encoded training samples of `num_blocks` blocks each.

    x0: (N, z, T_lat, h, w) clean latents; image_latent: (N, z, window, h, w) latent of [reference, gray...];
    clip: (N, tokens, 4z); feats: (N, frames, 1, n_mels). The reference is the sample's first frame.
    mouth: optional (N, h, w) bool, the latent cells covering the clip's mouth box (the renderer knows where the
    mouth is drawn); `forcing_loss` weights those cells by 1 + mouth_weight when given.
    """

    def __init__(self, x0, image_latent, clip, feats, meta=None, mouth=None):
        self.x0, self.image_latent, self.clip, self.feats = x0, image_latent, clip, feats
        self.mouth = mouth
        self.meta = meta or {}

    def __len__(self):
        return self.x0.shape[0]

    @classmethod
    def build(cls, vae, cfg, num_blocks: int = 4, n_clips: int = 64, offsets=(0, 64, 128), split: str = "train",
              start: int = 0, progress: bool = True) -> "LatentDataset":
        from .avatar.data import ClipPool
        from .avatar.tiny import clip_tokens
        n_lat = cfg.first_block_frames + cfg.block_frames * (num_blocks - 1)
        n_vid = 1 + cfg.vae_scale * (n_lat - 1)
        pool = ClipPool(n_clips, n_vid + max(offsets), split, start=start, progress=progress)
        xs, ims, clips, feats, mouths = [], [], [], [], []
        h, w = pool.height // 8, pool.width // 8
        with torch.no_grad():
            for i in range(len(pool)):
                y0, y1, x0, x1 = pool.mouth_boxes[i]
                mcell = torch.zeros(h, w, dtype=torch.bool)
                mcell[y0 // 8:-(-y1 // 8), x0 // 8:-(-x1 // 8)] = True  # every latent cell the box touches
                for o in offsets:
                    mouths.append(mcell)
                    v = pool.video(i, o, n_vid).unsqueeze(0)
                    xs.append(vae.vae.encode(v)[0])
                    im = vae.encode_image(v[:, :, 0], cfg.window_frames)[0]
                    ims.append(im)
                    clips.append(clip_tokens(im[None, :, 0])[0])
                    feats.append(pool.feats[i, o:o + n_vid])
        return cls(torch.stack(xs), torch.stack(ims), torch.stack(clips), torch.stack(feats),
                   {"num_blocks": num_blocks, "split": split, "clips": n_clips, "offsets": list(offsets)},
                   mouth=torch.stack(mouths))


# ----------------------------------------------------------------------------------------------------------
# the objective

def block_layout(cfg, num_blocks: int):
    """[(latent_start, latent_len, video_start, video_len)] per block (21 then 32 video frames, §3.1)."""
    out, ls, vs = [], 0, 0
    for b in range(num_blocks):
        T = cfg.first_block_frames if b == 0 else cfg.block_frames
        nv = 1 + cfg.vae_scale * (T - 1) if b == 0 else cfg.vae_scale * T
        out.append((ls, T, vs, nv))
        ls, vs = ls + T, vs + nv
    return out


def draw_timesteps(cfg, shape, generator, sampling: str = "schedule") -> torch.Tensor:
    """Diffusion times in (0, 1000]: the sampler's own timesteps (default) or uniform."""
    if sampling == "schedule":
        ts = torch.tensor(cfg.timesteps[:-1], dtype=torch.float64)
        return ts[torch.randint(len(ts), shape, generator=generator)]
    if sampling == "uniform":
        return 1000.0 * (1.0 - torch.rand(shape, generator=generator, dtype=torch.float64))
    raise ValueError(f"t sampling must be 'schedule' or 'uniform', got {sampling!r}")


def forcing_loss(model: LiveActModel, batch: dict, mode: str, generator: torch.Generator,
                 t_sampling: str = "schedule", backend: str = "torch", mouth_weight: float = 0.0) -> torch.Tensor:
    """Flow-matching velocity MSE over all blocks of a clip, unrolled block by block through a differentiable
    ConvKVMemory (so memory_proj gets gradients once a clip has more than 2 blocks).

    mode "nf" (Neighbor Forcing): one time s per sample, every block noised to s with its own noise, the
    context K/V written from those noisy blocks (neighbours at the same noise level).
    mode "tf" (teacher forcing): the same noisy targets, but the context is written from the clean blocks (t=0).
    mode "df" (diffusion forcing): an independent time per block and sample; context from those noisy blocks.
    batch: x0 (B, z, T_lat, h, w), y (B, 4+z, window, h, w), clip (B, tokens, 4z), feats (B, frames, 1, mels),
    optional mouth (B, h, w) bool. With mouth_weight > 0 and a mouth mask, the squared error of the latent cells
    covering the mouth box counts 1 + mouth_weight times (normalised by the mean weight, so the loss keeps its
    scale): lip sync is decided in a few of the 64 cells and gets more of the gradient.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    cfg = model.config
    x0 = batch["x0"]
    B, T_lat = x0.shape[0], x0.shape[2]
    layout = block_layout(cfg, 1)
    nb = 1
    while layout[-1][0] + layout[-1][1] < T_lat:
        nb += 1
        layout = block_layout(cfg, nb)
    if layout[-1][0] + layout[-1][1] != T_lat:
        raise ValueError(f"x0 has {T_lat} latent frames, not a whole number of blocks "
                         f"({cfg.first_block_frames} + k·{cfg.block_frames})")
    cond = model.prepare_condition(y=batch["y"], clip=batch.get("clip"), backend=backend)
    memory = ConvKVMemory(cfg, steps=(0,), dtype=torch.float32, device=x0.device, differentiable=True)
    t_sample = draw_timesteps(cfg, (B,), generator, t_sampling)
    feats = batch["feats"]
    wgt = None
    if mouth_weight and batch.get("mouth") is not None:
        wgt = (1.0 + mouth_weight * batch["mouth"].float()).view(B, 1, 1, *batch["mouth"].shape[-2:])
        wgt = wgt / wgt.mean((1, 2, 3, 4), keepdim=True)
    total = 0.0
    for b, (ls, T, vs, nv) in enumerate(layout):
        xb = x0[:, :, ls:ls + T]
        t = draw_timesteps(cfg, (B,), generator, t_sampling) if mode == "df" else t_sample
        sig = (t / 1000.0).float().view(B, 1, 1, 1, 1)
        eps = torch.randn(xb.shape, generator=generator)
        xt = (1.0 - sig) * xb + sig * eps
        win = audio_windows(feats, range(vs, vs + nv), cfg.audio_window)
        tokens = model.audio_tokens(win, has_first=(b == 0), backend=backend)
        if mode == "tf":
            v = model.forward_block(xt, t, cond, memory, step=0, block_index=b, audio=tokens, write_cache=False,
                                    backend=backend)
            model.forward_block(xb, torch.zeros(B, dtype=torch.float64), cond, memory, step=0, block_index=b,
                                audio=tokens, write_cache=True, backend=backend)
        else:
            v = model.forward_block(xt, t, cond, memory, step=0, block_index=b, audio=tokens, write_cache=True,
                                    backend=backend)
        err = (v.float() - (eps - xb)) ** 2
        total = total + (torch.mean(err * wgt) if wgt is not None else torch.mean(err)) * T
    return total / T_lat


def make_batch(ds: LatentDataset, idx: torch.Tensor, cfg) -> dict:
    return {"x0": ds.x0[idx], "y": make_i2v_condition(ds.image_latent[idx], cfg), "clip": ds.clip[idx],
            "feats": ds.feats[idx], "mouth": None if ds.mouth is None else ds.mouth[idx]}


# ----------------------------------------------------------------------------------------------------------
# checkpoints (safetensors: model, AdamW state, train state)

def save_checkpoint(path: str, model, opt, step: int, args: dict) -> None:
    from safetensors.torch import save_file
    t = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in st:
                    t[f"optim.{names[id(p)]}.{key}"] = st[key].contiguous()
            if "step" in st:
                t[f"optim.{names[id(p)]}.step"] = torch.as_tensor(st["step"], dtype=torch.float32).reshape(1)
    meta = {"format": "liveact-train-ckpt", "step": str(step), "args": json.dumps(args),
            "config": json.dumps(model.config.to_dict())}
    tmp = path + ".tmp"
    save_file(t, tmp, metadata=meta)
    os.replace(tmp, path)


def load_checkpoint(path: str, model, opt) -> int:
    from safetensors import safe_open
    from safetensors.torch import load_file
    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != "liveact-train-ckpt":
        raise ValueError(f"{path!r} is not a training checkpoint (format={meta.get('format')!r})")
    t = load_file(path)
    model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")}, strict=True)
    for n, p in model.named_parameters():
        if f"optim.{n}.exp_avg" in t:
            opt.state[p] = {"exp_avg": t[f"optim.{n}.exp_avg"].clone(), "exp_avg_sq": t[f"optim.{n}.exp_avg_sq"].clone(),
                            "step": t[f"optim.{n}.step"].reshape(()).clone()}
    return int(meta["step"])


# ----------------------------------------------------------------------------------------------------------
# the loop

def lr_at(step: int, steps: int, lr: float, warmup: int = 50, frac: float | None = None) -> float:
    """Warm-up then cosine decay; `frac` (progress in [0, 1]) overrides step/steps (wall-time schedules)."""
    f = step / max(steps, 1) if frac is None else frac
    return lr * min(1.0, (step + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * min(f, 1.0)))


def train(model: LiveActModel, ds: LatentDataset, *, mode: str = "nf", steps: int = 1000, batch: int = 4,
          lr: float = 5e-4, weight_decay: float = 0.01, clip_grad: float = 1.0, seed: int = 0,
          t_sampling: str = "schedule", ckpt: str | None = None, ckpt_every: int = 200, resume: bool = False,
          minutes: float | None = None, bf16: bool = False, progress: bool = True, backend: str = "torch",
          stop_after: int | None = None, time_schedule: bool = False, mouth_weight: float = 0.0,
          warmup: int = 50) -> dict:
    """AdamW + cosine schedule + grad clipping; deterministic for a seed (every step draws its batch and noise
    from a generator seeded by (seed, step), so a resumed run continues identically). With time_schedule and
    `minutes`, the cosine follows max(step/steps, elapsed/minutes) so a wall-time budget still anneals the
    learning rate on a busy machine (then the stopping point, not the per-step computation, depends on speed).
    Returns a summary."""
    cfg = model.config
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.99))
    step0 = 0
    if resume and ckpt and os.path.isfile(ckpt):
        step0 = load_checkpoint(ckpt, model, opt)
    args = {"mode": mode, "steps": steps, "batch": batch, "lr": lr, "seed": seed, "t_sampling": t_sampling,
            "mouth_weight": mouth_weight}
    model.train()
    losses, t0 = [], time.time()
    bar = tqdm(range(step0, steps), initial=step0, total=steps, desc=f"train[{mode}]", disable=not progress,
               dynamic_ncols=True)
    done = step0
    for step in bar:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randint(len(ds), (batch,), generator=g)
        frac = None
        if time_schedule and minutes is not None:
            frac = max(step / steps, (time.time() - t0) / (minutes * 60))
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step, steps, lr, warmup=warmup, frac=frac)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = forcing_loss(model, make_batch(ds, idx, cfg), mode, g, t_sampling, backend, mouth_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        opt.step()
        losses.append(float(loss.detach()))
        done = step + 1
        bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.4f}", gnorm=f"{float(gn):.2f}")
        if ckpt and done % ckpt_every == 0:
            save_checkpoint(ckpt, model, opt, done, args)
        if minutes is not None and time.time() - t0 > minutes * 60:
            break
        if frac is not None and frac >= 1.0:
            break
        if stop_after is not None and done >= stop_after:  # simulated interruption (tests of --resume)
            break
    if ckpt:
        save_checkpoint(ckpt, model, opt, done, args)
    model.eval()
    n = max(1, min(20, len(losses) // 4))
    return {"mode": mode, "steps_done": done, "seconds": time.time() - t0,
            "loss_first": sum(losses[:n]) / n if losses else None,
            "loss_last": sum(losses[-n:]) / n if losses else None, "losses": losses}


def main(argv=None):
    from .avatar.tiny import ASSETS, DIT_FILE, VAE_FILE, AvatarVAE, avatar_config, save_dit
    from .avatar.vae import TinyVideoVAE
    p = argparse.ArgumentParser(prog="liveact train", description="Neighbor Forcing training of the tiny avatar DiT")
    p.add_argument("--mode", choices=MODES, default="nf", help="nf = Neighbor Forcing, tf = teacher forcing, "
                   "df = diffusion forcing")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--minutes", type=float, default=None, help="hard wall-time stop (the schedule uses --steps)")
    p.add_argument("--time-schedule", action="store_true",
                   help="anneal the learning rate over --minutes of wall time (busy machines)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--blocks", type=int, default=4, help="blocks per training clip (>= 3 trains memory_proj)")
    p.add_argument("--clips", type=int, default=64, help="rendered training clips (3 windows each)")
    p.add_argument("--t-sampling", choices=("schedule", "uniform"), default="schedule")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vae", default=os.path.join(ASSETS, VAE_FILE))
    p.add_argument("--ckpt", default="out/train_ckpt.safetensors", help="training checkpoint (model+optimizer)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CPU)")
    p.add_argument("--out", default=None, help="export fp16 weights for inference (e.g. liveact_model/assets/avatar_dit.safetensors)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--data-cache", default=None, help="save/load the encoded dataset here (shared by runs)")
    p.add_argument("--mouth-weight", type=float, default=0.0,
                   help="flow-matching error of the latent cells covering the mouth box counts 1 + this")
    p.add_argument("--init", default=None, help="start from these exported DiT weights (fresh AdamW, warm-up)")
    p.add_argument("--warmup", type=int, default=50, help="linear learning-rate warm-up steps")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.blocks < 1:
        raise ValueError(f"--blocks must be >= 1, got {a.blocks}")
    torch.manual_seed(a.seed)
    cfg = avatar_config()
    vae = AvatarVAE(TinyVideoVAE.load(a.vae))
    if a.data_cache and os.path.isfile(a.data_cache):
        d = torch.load(a.data_cache, weights_only=True)
        ds = LatentDataset(d["x0"], d["image_latent"], d["clip"], d["feats"], mouth=d.get("mouth"))
    else:
        ds = LatentDataset.build(vae, cfg, a.blocks, a.clips)
        if a.data_cache:
            torch.save({"x0": ds.x0, "image_latent": ds.image_latent, "clip": ds.clip, "feats": ds.feats,
                        "mouth": ds.mouth}, a.data_cache)
    if a.init:
        from .avatar.tiny import load_dit
        model = load_dit(a.init, backend="torch")[0]
        if model.config.to_dict() != cfg.to_dict():
            raise ValueError(f"--init {a.init!r} has a different config than avatar_config()")
    else:
        model = LiveActModel(cfg, backend="torch").init_weights(a.seed)
    os.makedirs(os.path.dirname(os.path.abspath(a.ckpt)), exist_ok=True)
    res = train(model, ds, mode=a.mode, steps=a.steps, batch=a.batch, lr=a.lr, seed=a.seed, t_sampling=a.t_sampling,
                ckpt=a.ckpt, resume=a.resume, minutes=a.minutes, bf16=a.bf16,
                time_schedule=a.time_schedule, mouth_weight=a.mouth_weight, warmup=a.warmup)
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        save_dit(model, a.out, {k: v for k, v in res.items() if k != "losses"} | {
            "blocks": a.blocks, "clips": a.clips, "mouth_weight": a.mouth_weight, "init": a.init, "lr": a.lr})
    print(json.dumps({k: v for k, v in res.items() if k != "losses"}))


if __name__ == "__main__":
    main()
