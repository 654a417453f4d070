# Trains the tiny video autoencoder on rendered clips: `python -m liveact_model.avatar.train_vae --minutes 5`.
# L1 reconstruction with extra weight on the mouth box, a little latent noise so the decoder tolerates DiT errors.
from __future__ import annotations

import argparse
import math
import time

import torch
from tqdm import tqdm

from .data import ClipPool
from .vae import TinyVideoVAE


def train_vae(steps: int = 600, minutes: float | None = None, batch: int = 4, frames: int = 13, lr: float = 2e-3,
              n_clips: int = 96, clip_frames: int = 125, seed: int = 0, out: str | None = None,
              pool: ClipPool | None = None, progress: bool = True,
              init: str | None = None, decoder_only: bool = False,
              mouth_boost: float = 4.0) -> tuple[TinyVideoVAE, dict]:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    pool = pool or ClipPool(n_clips, clip_frames, "train", progress=progress)
    vae = TinyVideoVAE.load(init).train() if init else TinyVideoVAE()
    if decoder_only:
        # Fine-tune the decoder against a frozen encoder: latents (and their stored mean/std) stay exactly the
        # same, so a DiT trained on them remains valid.
        if not init:
            raise ValueError("decoder_only needs init weights")
        dec = [p for n, p in vae.named_parameters() if n.startswith("d_")]
        for n, p in vae.named_parameters():
            p.requires_grad_(n.startswith("d_"))
        params = dec
    else:
        params = list(vae.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    t0 = time.time()
    bar = tqdm(range(steps), desc="vae", disable=not progress)
    hist = []
    for step in bar:
        # Warm-up then cosine decay over whichever budget (steps or wall time) runs out first.
        frac = step / steps if minutes is None else max(step / steps, (time.time() - t0) / (minutes * 60))
        for grp in opt.param_groups:
            grp["lr"] = lr * min(1.0, (step + 1) / 30) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
        idx = torch.randint(len(pool), (batch,), generator=g)
        st = torch.randint(pool.n_frames - frames + 1, (batch,), generator=g)
        v = torch.stack([pool.video(int(i), int(s), frames) for i, s in zip(idx, st)])
        w = torch.stack([pool.mouth_weight(int(i), mouth_boost) for i in idx]).view(batch, 1, 1, *v.shape[-2:])
        if decoder_only:
            with torch.no_grad():
                z = vae.encode_raw(v)
        else:
            z = vae.encode_raw(v)
        zn = z + 0.05 * z.detach().std() * torch.randn(z.shape, generator=g)
        rec = vae.decode_raw(zn)
        loss = ((rec - v).abs() * w).mean() / w.mean() + 1e-4 * z.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        hist.append(float(loss))
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if minutes is not None and time.time() - t0 > minutes * 60:
            break
    # Per-channel latent statistics for normalisation (like the Wan wrapper's mean/std).
    if not decoder_only:
        with torch.no_grad():
            zs = torch.cat([vae.encode_raw(pool.video(i, 0, 1 + 4 * ((pool.n_frames - 1) // 4)).unsqueeze(0))
                            for i in range(min(len(pool), 32))], 0)
            vae.latent_mean.copy_(zs.mean((0, 2, 3, 4)))
            vae.latent_std.copy_(zs.std((0, 2, 3, 4)).clamp_min(1e-4))
    vae.eval()
    if out:
        vae.save(out)
    return vae, {"steps": len(hist), "loss_first": hist[0], "loss_last": sum(hist[-20:]) / len(hist[-20:]),
                 "seconds": time.time() - t0}


def main(argv=None):
    p = argparse.ArgumentParser(description="train the tiny avatar video autoencoder")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--minutes", type=float, default=None, help="stop early after this wall time")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--clips", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="liveact_model/assets/avatar_vae.safetensors")
    p.add_argument("--init", default=None, help="continue from these VAE weights")
    p.add_argument("--decoder-only", action="store_true", help="freeze the encoder (latents stay identical)")
    p.add_argument("--frames", type=int, default=13, help="frames per training clip (1 + 4k)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--mouth-boost", type=float, default=4.0,
                   help="L1 weight inside the mouth box is 1 + this (1 elsewhere)")
    a = p.parse_args(argv)
    # One thread: on the shared 2-core machine two threads wait on each other (measured 10x slower under load).
    torch.set_num_threads(a.threads)
    _, info = train_vae(a.steps, a.minutes, a.batch, a.frames, a.lr, n_clips=a.clips, seed=a.seed, out=a.out,
                        init=a.init, decoder_only=a.decoder_only, mouth_boost=a.mouth_boost)
    print(info)


if __name__ == "__main__":
    main()
