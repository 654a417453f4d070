# Talking-head generation with the bundled tiny avatar: `python -m liveact_model.generate --image X --audio Y
# --out Z.mp4`, or `--demo` (bundled image and clip -> out/demo.mp4 + contact sheet). Streams block by block.
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from .avatar import audio as A
from .avatar.tiny import ASSETS, HEIGHT, WIDTH, condition_from_image, load_avatar
from .avatar.video_io import VideoWriter, check_video_path, contact_sheet, load_image
from .pipeline import LiveActPipeline

DEMO_IMAGE = os.path.join(ASSETS, "demo_face.png")
DEMO_AUDIO = os.path.join(ASSETS, "demo_speech.wav")


def stream_frames(model, vae, image: torch.Tensor, feats: torch.Tensor, *, seed: int = 42,
                  backend: str | None = None, num_blocks: int | None = None, timesteps=None,
                  stats: dict | None = None):
    """Generate and decode block by block. image: (3, H, W) in [-1, 1]; feats: (S, 1, n_mels).

    Yields (block_index, frames (3, n, H, W), gen_seconds, decode_seconds); never holds more than one block.
    `stats`, if given, receives the KV-cache bytes of the stream's memory after each block ("kv_bytes").
    """
    cfg = model.config
    pipe = LiveActPipeline(model, seed=seed, backend=backend, timesteps=timesteps)
    cond = condition_from_image(vae, image[None], cfg)
    pipe.start(image_latent=cond["image_latent"], clip=cond["clip"])
    blocks = pipe.stream(feats, num_blocks=num_blocks)
    prev = None
    while True:
        t0 = time.perf_counter()
        b = next(blocks, None)
        if b is None:
            return
        t1 = time.perf_counter()
        with torch.no_grad():
            frames = vae.vae.decode_block(b.latents[0].float(), prev)
        t2 = time.perf_counter()
        prev = b.latents[0].float()
        if stats is not None:
            stats["kv_bytes"] = pipe.memory.nbytes
        yield b.index, frames[:, :b.valid_frames], t1 - t0, t2 - t1


def generate(image_path: str, audio_path: str, out: str, *, sheet: str | None = None, seed: int = 42,
             backend: str | None = None, upscale: int = 4, assets: str = ASSETS, quiet: bool = False) -> dict:
    """Write `out` (mp4 with the audio track) and optionally a contact sheet; return timing statistics."""
    t_start = time.perf_counter()
    check_video_path(out)                   # before any work
    image = load_image(image_path, HEIGHT, WIDTH)
    wav = A.load_audio(audio_path)
    if len(wav) < A.SAMPLE_RATE // A.FPS:
        raise ValueError(f"audio file {audio_path!r} is shorter than one video frame")
    feats = A.logmel_features(wav)
    model, vae, _ = load_avatar(assets, backend="auto" if backend is None else backend)
    t_ready = time.perf_counter()
    lat, n_frames, thumbs, labels = [], 0, [], []
    gen_s = dec_s = 0.0
    with VideoWriter(out, A.FPS, HEIGHT, WIDTH, audio=wav, sr=A.SAMPLE_RATE, upscale=upscale) as w:
        for idx, frames, g, d in stream_frames(model, vae, image, feats, seed=seed, backend=backend):
            w.write(frames, layout="cthw")
            gen_s, dec_s = gen_s + g, dec_s + d
            lat.append(g + d)
            for k in range(0, frames.shape[1], 8):
                if len(thumbs) < 48:
                    thumbs.append(frames[:, k].clone())
                    labels.append(f"{(n_frames + k) / A.FPS:.2f}s")
            n_frames += frames.shape[1]
            if not quiet:
                print(f"block {idx:4d}: {frames.shape[1]:2d} frames  latency {1000 * (g + d):7.1f} ms "
                      f"(DiT {1000 * g:6.1f} + VAE {1000 * d:5.1f})  -> {frames.shape[1] / (g + d):6.1f} FPS")
    if sheet:
        contact_sheet(sheet, [image] + thumbs, cols=8, upscale=2, labels=["reference"] + labels)
    total = time.perf_counter() - t_start
    stats = {"frames": n_frames, "seconds_of_video": n_frames / A.FPS, "blocks": len(lat),
             "block_latency_ms_mean": 1000 * float(np.mean(lat)), "block_latency_ms_max": 1000 * float(np.max(lat)),
             "first_block_latency_ms": 1000 * lat[0],
             "fps_generation": n_frames / (gen_s + dec_s), "fps_wall_incl_io": n_frames / (time.perf_counter() - t_ready),
             "setup_seconds": t_ready - t_start, "total_seconds": total, "backend": backend or "auto",
             "threads": torch.get_num_threads(), "out": out}
    if not quiet:
        print(json.dumps(stats, indent=1))
    return stats


def main(argv=None):
    p = argparse.ArgumentParser(prog="liveact generate", description="audio-driven talking head (tiny avatar)")
    p.add_argument("--image", help="reference face image (png/jpg/...); scaled and centre-cropped to 64x64")
    p.add_argument("--audio", help="speech audio (wav; other formats through PyAV)")
    p.add_argument("--out", default=None, help="output mp4 (default out/demo.mp4 with --demo)")
    p.add_argument("--demo", action="store_true", help="use the bundled image and speech clip")
    p.add_argument("--sheet", default=None, help="contact-sheet PNG (default next to --out)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--backend", default=None, help="kernel backend: auto (compiled CPU kernels) or torch")
    p.add_argument("--upscale", type=int, default=4, help="nearest-neighbour upscale of the 64x64 video")
    p.add_argument("--assets", default=ASSETS, help="folder with avatar_dit/avatar_vae safetensors")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.demo:
        a.image = a.image or DEMO_IMAGE
        a.audio = a.audio or DEMO_AUDIO
        a.out = a.out or os.path.join("out", "demo.mp4")
    if not (a.image and a.audio and a.out):
        p.error("--image, --audio and --out are required (or use --demo)")
    sheet = a.sheet or os.path.splitext(a.out)[0] + "_contact_sheet.png"
    try:
        generate(a.image, a.audio, a.out, sheet=sheet, seed=a.seed, backend=a.backend, upscale=a.upscale,
                 assets=a.assets)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"liveact generate: error: {e}")
    print(f"wrote {a.out} and {sheet}")


if __name__ == "__main__":
    main()
