# Tests of the procedural avatar data: renderer, speech synthesis, log-mel features, wav IO and the split.
import numpy as np
import pytest
import torch

from liveact_model.avatar import audio as A
from liveact_model.avatar import metrics as M
from liveact_model.avatar import render as R


# one torch thread: on this 2-core machine two threads ran these models ~10x slower under load (docs/avatar.md)
pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_split_is_deterministic_and_disjoint():
    tr = R.split_seeds("identity", "train", 50)
    ev = R.split_seeds("identity", "eval", 10)
    assert tr == R.split_seeds("identity", "train", 50)
    assert not set(tr) & set(ev)
    assert all(R.is_heldout(s, "identity") for s in ev)
    # roughly 1 in HELDOUT_MOD held out
    frac = np.mean([R.is_heldout(s, "clip") for s in range(4000)])
    assert abs(frac - 1 / R.HELDOUT_MOD) < 0.02
    with pytest.raises(ValueError, match="split"):
        R.split_seeds("identity", "test", 3)


def test_render_shapes_range_and_determinism():
    c1 = R.make_clip(3, 9, 40)
    c2 = R.make_clip(3, 9, 40)
    f = c1["frames"]
    assert f.shape == (40, 3, R.HEIGHT, R.WIDTH) and f.dtype == torch.float32
    assert f.min() >= -1 and f.max() <= 1
    assert torch.equal(f, c2["frames"])
    assert not torch.equal(f, R.make_clip(4, 9, 40)["frames"])  # another identity looks different
    assert c1["wav"].shape == (40 * A.SAMPLE_RATE // A.FPS,)
    with pytest.raises(ValueError, match="length"):
        R.render_frames(c1["identity"], np.zeros(5), np.zeros(4), R.still_motion(5))


def test_mouth_follows_loudness_in_ground_truth():
    # The lip-sync measure must see the drive in rendered frames (upper bound for the generated video).
    for ident in R.split_seeds("identity", "eval", 2):
        c = R.make_clip(ident, 100 + ident, 150)
        op = M.mouth_opening(c["frames"], R.mouth_box(c["identity"]))
        r = M.pearson(op, A.loudness_to_open(c["db"]))
        assert r > 0.85, r


def test_closed_vs_open_mouth_measure():
    ident = R.sample_identity(5)
    m = R.still_motion(2)
    f = R.render_frames(ident, np.array([0.0, 1.0]), np.array([0.3, 0.3]), m)
    op = M.mouth_opening(f, R.mouth_box(ident))
    assert op[1] > op[0] + 2.0  # a wide-open mouth is several pixels taller


def test_speech_synth_has_pauses_and_voicing():
    w = A.synth_speech(7, 6.0)
    assert w.shape == (6 * A.SAMPLE_RATE,) and w.dtype == np.float32
    assert np.abs(w).max() <= 0.7001
    db = A.frame_loudness(w)
    assert db.shape == (150,)
    assert (db < -40).mean() > 0.05  # pauses exist
    assert (db > -25).mean() > 0.3  # and loud speech
    assert np.array_equal(w, A.synth_speech(7, 6.0))


def test_logmel_shape_and_loudness():
    w = A.synth_speech(1, 4.0)
    f = A.logmel_features(w)
    assert f.shape == (100, 1, A.N_MELS) and f.dtype == torch.float32
    db = A.frame_loudness(w)
    r = M.pearson(f[:, 0].mean(1).numpy(), db)
    assert r > 0.8, r  # features carry loudness (fixed normalisation)
    with pytest.raises(ValueError, match="1-D"):
        A.logmel_features(np.zeros((2, 100), np.float32))


def test_wav_roundtrip_and_errors(tmp_path):
    w = A.synth_speech(2, 1.0)
    p = tmp_path / "a.wav"
    A.save_wav(p, w)
    x = A.load_audio(p)
    assert np.abs(x - w).max() < 1e-3  # 16-bit quantisation
    x8 = A.load_audio(p, sr=8000)
    assert abs(len(x8) - len(w) // 2) <= 1
    with pytest.raises(FileNotFoundError):
        A.load_audio(tmp_path / "missing.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav file at all")
    with pytest.raises(ValueError, match="cannot read wav"):
        A.load_audio(bad)
    bad2 = tmp_path / "bad.mp3"
    bad2.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError):
        A.load_audio(bad2)
