# `python -m liveact_model.evaluate --minutes 2 --out docs/eval.json`: lip-sync proxy on held-out identities and
# clips, hour-scale stability (face Lab colour, face SSIM, KV bytes, RSS), NF/TF/DF comparison, FPS vs torch.
from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np
import torch

from .avatar import audio as A
from .avatar import metrics as M
from .avatar import render as R
from .avatar.tiny import ASSETS, DIT_FILE, VAE_FILE, AvatarVAE, load_dit
from .avatar.vae import TinyVideoVAE
from .generate import stream_frames


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc), bytes."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def lipsync(model, vae, n_ident: int = 3, seconds: float = 8.0, backend=None, seed: int = 0) -> dict:
    """Held-out identities x held-out clips: Pearson r between the mouth opening measured in the generated frames
    and the audio loudness (mapped as the renderer maps it). Also the same measure on the ground-truth render and
    on its VAE reconstruction (upper bounds of what the DiT can reach)."""
    ids = R.split_seeds("identity", "eval", n_ident)
    clips = R.split_seeds("clip", "eval", n_ident, start=5000)
    rows = []
    for i, c in zip(ids, clips):
        n = int(seconds * A.FPS)
        clip = R.make_clip(i, c, n)
        feats = A.logmel_features(clip["wav"], n_frames=n)
        gen = torch.cat([f for _, f, _, _ in stream_frames(model, vae, clip["reference"], feats, seed=seed,
                                                             backend=backend)], 1)[:, :n]
        box = R.mouth_box(clip["identity"])
        loud = A.loudness_to_open(clip["db"])[: gen.shape[1]]
        op = M.mouth_opening(gen, box, layout="cthw")
        gt = clip["frames"].permute(1, 0, 2, 3)
        with torch.no_grad():
            rec = vae.vae.decode(vae.vae.encode(gt[:, : 1 + 4 * ((n - 1) // 4)]))
        lag = M.lag_correlation(op, loud)
        rows.append({"identity": i, "clip": c, "frames": int(gen.shape[1]), "r": lag["r"],
                     "best_lag": lag["best_lag"], "r_best_lag": lag["r_best_lag"],
                     "r_ground_truth": M.pearson(M.mouth_opening(gt, box, layout="cthw"),
                                                 A.loudness_to_open(clip["db"])),
                     "r_vae_recon": M.pearson(M.mouth_opening(rec, box, layout="cthw"), loud[: rec.shape[1]])})
    return {"per_clip": rows, "r_mean": float(np.mean([r["r"] for r in rows])),
            "r_ground_truth_mean": float(np.mean([r["r_ground_truth"] for r in rows])),
            "r_vae_recon_mean": float(np.mean([r["r_vae_recon"] for r in rows])),
            "identities": ids, "clips": clips, "seconds_per_clip": seconds}


def audio_chunks(seed: int, minutes: float, chunk_s: float = 30.0):
    """Endless-speech generator: (features (S, 1, mels), loudness (S,)) per chunk of chunk_s seconds."""
    total = int(minutes * 60 * A.FPS)
    done, k = 0, 0
    while done < total:
        n = min(int(chunk_s * A.FPS), total - done)
        wav = A.synth_speech(seed * 7919 + k, n / A.FPS + 0.1)[: n * A.SAMPLE_RATE // A.FPS]
        yield A.logmel_features(wav, n_frames=n), A.loudness_to_open(A.frame_loudness(wav, n_frames=n))
        done, k = done + n, k + 1


def stability(model, vae, minutes: float, identity: int | None = None, backend=None, seed: int = 0,
              checkpoints=(1, 10, 30, 60), window_blocks: int = 4, progress: bool = True) -> dict:
    """Stream `minutes` of generated speech on one held-out identity. Per block: face mean Lab, face SSIM against
    the reference, mouth/loudness (for a late lip-sync check), KV bytes, RSS. Checkpoints beyond `minutes` are
    replaced by the stream's end."""
    ident_seed = identity if identity is not None else R.split_seeds("identity", "eval", 1, start=77)[0]
    ident = R.sample_identity(ident_seed)
    ref = R.reference_image(ident)
    fmask, fbox, mbox = M.face_mask(ident), R.face_box(ident), R.mouth_box(ident)
    loud_all = []

    def feats_iter():
        for f, l in audio_chunks(seed + 1, minutes):
            loud_all.append(l)
            yield f

    fps = A.FPS
    cps = sorted({min(float(c), minutes) for c in checkpoints})
    per_block, frame0 = [], 0
    rss0 = rss_bytes()
    mouth, t0 = [], time.time()
    st = {}
    gen = stream_frames(model, vae, ref, feats_iter(), seed=seed, backend=backend, stats=st)
    try:
        from tqdm import tqdm
        bar = tqdm(total=int(minutes * 60 * fps), unit="frame", desc=f"stream {minutes} min", disable=not progress)
    except ImportError:
        bar = None
    for idx, frames, g, d in gen:
        n = frames.shape[1]
        lab = M.face_lab(frames, fmask, layout="cthw").mean(0)
        ss = float(M.ssim(frames, ref, fbox, layout="cthw").mean())
        op = M.mouth_opening(frames, mbox, layout="cthw")
        mouth.append(op)
        per_block.append({"block": idx, "t_min": (frame0 + n) / fps / 60.0, "lab": lab.tolist(), "ssim": ss,
                          "rss": rss_bytes(), "kv": st["kv_bytes"], "sec": g + d})
        frame0 += n
        if bar is not None:
            bar.update(n)
    if bar is not None:
        bar.close()
    t_min = np.array([b["t_min"] for b in per_block])
    lab = np.array([b["lab"] for b in per_block])
    ss = np.array([b["ssim"] for b in per_block])
    rss = np.array([b["rss"] for b in per_block])
    kv = np.array([b["kv"] for b in per_block])
    first = t_min <= 1.0 + 1e-9
    later = {}
    for c in cps:
        i_end = int(np.searchsorted(t_min, c - 1e-9))
        i_end = min(i_end, len(t_min) - 1)
        sl = slice(max(0, i_end - window_blocks + 1), i_end + 1)
        later[f"{c:g}min"] = (lab[sl], ss[sl])
    lab_v = M.no_trend(lab[first], {k: v[0] for k, v in later.items()})
    ss_v = M.no_trend(ss[first], {k: v[1] for k, v in later.items()})
    mouth = np.concatenate(mouth)
    loud = np.concatenate(loud_all)[: len(mouth)]
    last = slice(max(0, len(mouth) - 60 * fps), len(mouth))
    return {"minutes": minutes, "identity": ident_seed, "blocks": len(per_block), "frames": int(frame0),
            "wall_seconds": time.time() - t0, "checkpoints_min": cps,
            "lab": lab_v, "ssim": ss_v, "stable": bool(lab_v["stable"] and ss_v["stable"]),
            "lipsync_r_first_minute": M.pearson(mouth[: 60 * fps], loud[: 60 * fps]),
            "lipsync_r_last_minute": M.pearson(mouth[last], loud[last]),
            "rss_mb_block2": float(rss[min(2, len(rss) - 1)] / 2**20), "rss_mb_end": float(rss[-1] / 2**20),
            "rss_mb_max_from_block2": float(rss[2:].max() / 2**20) if len(rss) > 2 else None,
            "rss_mb_start": rss0 / 2**20,
            "kv_bytes_block2": int(kv[min(2, len(kv) - 1)]), "kv_bytes_end": int(kv[-1]),
            "kv_flat_from_block2": bool(len(set(kv[2:].tolist())) <= 1),
            "block_ms_mean": 1000 * float(np.mean([b["sec"] for b in per_block]))}


def kv_flat(model, vae, blocks: int = 12, backend=None) -> dict:
    """KV-cache bytes of the pipeline's ConvKVMemory after each block (must not change from block 2 on)."""
    from .avatar.tiny import condition_from_image
    from .pipeline import LiveActPipeline
    cfg = model.config
    ident = R.sample_identity(R.split_seeds("identity", "eval", 1)[0])
    pipe = LiveActPipeline(model, backend=backend)
    cond = condition_from_image(vae, R.reference_image(ident)[None], cfg)
    pipe.start(image_latent=cond["image_latent"], clip=cond["clip"])
    n = pipe.block_frames(blocks - 1)[0] + pipe.block_frames(blocks - 1)[1]
    feats = A.logmel_features(A.synth_speech(3, n / A.FPS + 0.1), n_frames=n)
    sizes = []
    for _ in pipe.stream(feats, num_blocks=blocks):
        sizes.append(pipe.memory.nbytes)
    return {"kv_bytes_per_block": sizes, "flat_from_block2": len(set(sizes[2:])) == 1}


def fps(model, vae, blocks: int = 12, backends=("auto", "torch"), seed: int = 0) -> dict:
    """Video FPS (DiT + VAE decode, steady state: blocks 1..) for each kernel backend, in the same process."""
    ident = R.sample_identity(R.split_seeds("identity", "eval", 1)[0])
    ref = R.reference_image(ident)
    n = 21 + 32 * (blocks - 1)
    feats = A.logmel_features(A.synth_speech(9, n / A.FPS + 0.1), n_frames=n)
    out = {}
    for be in backends:
        times, frames = [], []
        for _, f, g, d in stream_frames(model, vae, ref, feats, seed=seed, backend=be, num_blocks=blocks):
            times.append(g + d)
            frames.append(f.shape[1])
        t, fr = sum(times[1:]), sum(frames[1:])
        out[be] = {"fps": fr / t, "block_ms_mean": 1000 * t / (len(times) - 1), "first_block_ms": 1000 * times[0]}
    if "auto" in out and "torch" in out:
        out["speedup_auto_vs_torch"] = out["auto"]["fps"] / out["torch"]["fps"]
    out["threads"] = torch.get_num_threads()
    return out


def load(dit: str, vae_path: str, backend="auto"):
    model, meta = load_dit(dit, backend=backend)
    return model, AvatarVAE(TinyVideoVAE.load(vae_path)), meta


def main(argv=None):
    p = argparse.ArgumentParser(prog="liveact eval", description="evaluate the tiny avatar")
    p.add_argument("--minutes", type=float, default=2.0, help="stability stream length (60 = the hour soak)")
    p.add_argument("--dit", default=os.path.join(ASSETS, DIT_FILE))
    p.add_argument("--vae", default=os.path.join(ASSETS, VAE_FILE))
    p.add_argument("--compare", nargs="*", default=[], metavar="NAME=PATH",
                   help="DiT weights trained at equal budget, e.g. nf=out/nf.safetensors tf=... df=...")
    p.add_argument("--compare-minutes", type=float, default=1.0)
    p.add_argument("--lipsync-identities", type=int, default=3)
    p.add_argument("--fps-blocks", type=int, default=12)
    p.add_argument("--skip", nargs="*", default=[], choices=["lipsync", "stability", "kv", "fps", "compare"])
    p.add_argument("--out", default="out/eval.json")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--check", action="store_true",
                   help="exit 1 unless KV bytes stay flat, the stream is stable and lip sync stays above the "
                        "regression floor (what CI runs)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    res = {"command": "python -m liveact_model.evaluate " + " ".join(argv if argv is not None else
                                                                       __import__("sys").argv[1:])}
    model, vae, meta = load(a.dit, a.vae)
    res["train_meta"] = meta
    if "lipsync" not in a.skip:
        res["lipsync"] = lipsync(model, vae, a.lipsync_identities)
        print("lipsync r (held-out):", round(res["lipsync"]["r_mean"], 3), flush=True)
    if "kv" not in a.skip:
        res["kv"] = kv_flat(model, vae)
        print("kv flat from block 2:", res["kv"]["flat_from_block2"], flush=True)
    if "stability" not in a.skip:
        res["stability"] = stability(model, vae, a.minutes)
        print("stable:", res["stability"]["stable"], flush=True)
    if "fps" not in a.skip:
        res["fps"] = fps(model, vae, a.fps_blocks)
        print("fps:", {k: v for k, v in res["fps"].items()}, flush=True)
    if a.compare and "compare" not in a.skip:
        table = {}
        for item in a.compare:
            name, path = item.split("=", 1)
            m, _, mt = load(path, a.vae)
            ls = lipsync(m, vae, a.lipsync_identities)
            st = stability(m, vae, a.compare_minutes, checkpoints=(a.compare_minutes,), progress=False)
            last = f"{a.compare_minutes:g}min"
            table[name] = {"train": mt, "lipsync_r": ls["r_mean"],
                           "lab_abs_dev_end": st["lab"]["checkpoints"][last]["abs_dev"],
                           "lab_allowed": st["lab"]["allowed"],
                           "ssim_first_minute": st["ssim"]["first_mean"][0],
                           "ssim_end": st["ssim"]["checkpoints"][last]["mean"][0],
                           "stable": st["stable"], "lipsync_r_last_minute": st["lipsync_r_last_minute"]}
            print(name, json.dumps(table[name]), flush=True)
        res["compare"] = table
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"wrote {a.out}")
    if a.check:
        failures = check(res)
        for f in failures:
            print("CHECK FAILED:", f, flush=True)
        if failures:
            raise SystemExit(1)
        print("eval checks passed", flush=True)


# Regression floor for the held-out lip-sync proxy: the shipped weights measure r = 0.773 (docs/eval.json, issue 6's
# target 0.6 reached; the VAE's own reconstruction measures 0.766, docs/avatar.md §5.1). Below 0.7 something broke.
LIPSYNC_FLOOR = 0.7


def check(res: dict) -> list:
    """What CI asserts on an evaluation result: no timed assertions, only properties of the stream."""
    out = []
    if "kv" in res and not res["kv"]["flat_from_block2"]:
        out.append(f"KV-cache bytes change after block 2: {res['kv']['kv_bytes_per_block']}")
    if "stability" in res:
        st = res["stability"]
        if not st["stable"]:
            out.append(f"colour/structure drift beyond the first minute's spread: lab {st['lab']}, ssim {st['ssim']}")
        if not st["kv_flat_from_block2"]:
            out.append(f"KV bytes {st['kv_bytes_block2']} at block 2 but {st['kv_bytes_end']} at the end")
    if "lipsync" in res and not res["lipsync"]["r_mean"] >= LIPSYNC_FLOOR:
        out.append(f"held-out lip-sync r = {res['lipsync']['r_mean']:.3f} < regression floor {LIPSYNC_FLOOR}")
    return out


if __name__ == "__main__":
    main()
