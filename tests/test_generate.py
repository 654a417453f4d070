# End to end with the shipped tiny avatar: generate an mp4 with sound from the bundled image and a short clip,
# clear errors for bad inputs, constant KV-cache bytes and a short eval run.
import json
import os

import numpy as np
import pytest
import torch

from liveact_model import evaluate, generate
from liveact_model.avatar import audio as A
from liveact_model.avatar.tiny import ASSETS, DIT_FILE, VAE_FILE, load_avatar
from liveact_model.avatar.video_io import read_video


# one torch thread: on this 2-core machine two threads ran these models ~10x slower under load (docs/avatar.md)
pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_weights_are_small():
    total = sum(os.path.getsize(os.path.join(ASSETS, f)) for f in (DIT_FILE, VAE_FILE))
    assert total < 20 * 2**20, total


def test_generate_mp4_with_audio(tmp_path):
    wav = A.load_audio(generate.DEMO_AUDIO)[: 3 * A.SAMPLE_RATE]  # 3 s: blocks 0..2 (compression runs)
    ap = str(tmp_path / "a.wav")
    A.save_wav(ap, wav)
    out = str(tmp_path / "o.mp4")
    st = generate.generate(generate.DEMO_IMAGE, ap, out, sheet=str(tmp_path / "s.png"), upscale=1, quiet=True)
    frames, n_audio = read_video(out)
    assert frames.shape == (75, 64, 64, 3) and st["frames"] == 75
    assert abs(n_audio - len(wav)) <= 1024
    assert os.path.getsize(tmp_path / "s.png") > 1000
    assert frames.std() > 5  # not a blank video


def test_generate_errors(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    with pytest.raises(ValueError, match="cannot read image"):
        generate.generate(str(bad), generate.DEMO_AUDIO, str(tmp_path / "o.mp4"), quiet=True)
    with pytest.raises(FileNotFoundError):
        generate.generate(generate.DEMO_IMAGE, str(tmp_path / "missing.wav"), str(tmp_path / "o.mp4"), quiet=True)
    with pytest.raises(SystemExit, match="error"):
        generate.main(["--image", str(bad), "--audio", generate.DEMO_AUDIO, "--out", str(tmp_path / "o.mp4")])
    with pytest.raises(ValueError, match=r"o\.txt.*unsupported container '\.txt'.*\.mp4"):
        generate.generate(generate.DEMO_IMAGE, generate.DEMO_AUDIO, str(tmp_path / "o.txt"), quiet=True)
    assert not (tmp_path / "o.txt").exists()


def test_kv_bytes_constant_and_short_stream():
    model, vae, _ = load_avatar()
    kv = evaluate.kv_flat(model, vae, blocks=5)
    assert kv["flat_from_block2"] and kv["kv_bytes_per_block"][2] > 0
    st = evaluate.stability(model, vae, minutes=0.25, checkpoints=(0.25,), progress=False)
    assert st["kv_flat_from_block2"]
    assert st["frames"] == int(0.25 * 60 * A.FPS)
    assert np.isfinite(st["ssim"]["first_mean"][0])
