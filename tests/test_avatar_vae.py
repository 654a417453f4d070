# Tiny video VAE and avatar IO/metrics: strides, overlap decoding (reference-model §3.6), save/load, mp4 with
# audio, contact sheet, image loader errors, SSIM/Lab sanity.
import numpy as np
import pytest
import torch

from liveact_model.avatar import metrics as M
from liveact_model.avatar import render as R
from liveact_model.avatar.vae import TinyVideoVAE
from liveact_model.avatar.video_io import VideoWriter, contact_sheet, load_image, read_video, save_image


# one torch thread: on this 2-core machine two threads ran these models ~10x slower under load (docs/avatar.md)
pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_strides_and_bad_input():
    vae = TinyVideoVAE().eval()
    with torch.no_grad():
        z = vae.encode(torch.zeros(1, 3, 21, 64, 64))
        assert z.shape == (1, 16, 6, 8, 8)
        assert vae.decode(z).shape == (1, 3, 21, 64, 64)
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        vae.encode(torch.zeros(1, 3, 20, 64, 64))
    with pytest.raises(ValueError, match="multiples of 8"):
        vae.encode(torch.zeros(1, 3, 5, 60, 64))


def test_overlap_decode_equals_full_decode():
    # The decoder looks 2 latents back, so 3 overlap latents give exactly the full decode's kept frames.
    torch.manual_seed(0)
    vae = TinyVideoVAE().eval()
    z = torch.randn(16, 30, 8, 8)
    with torch.no_grad():
        full = vae.decode(z)
        parts = [vae.decode_block(z[:, :6], None), vae.decode_block(z[:, 6:14], z[:, :6]),
                 vae.decode_block(z[:, 14:22], z[:, 6:14]), vae.decode_block(z[:, 22:30], z[:, 14:22])]
    assert [p.shape[1] for p in parts] == [21, 32, 32, 32]
    # fp32 conv results differ only by summation order between the two batch shapes
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=0, atol=1e-5)


def test_save_load_roundtrip(tmp_path):
    vae = TinyVideoVAE()
    vae.latent_mean.fill_(0.5)
    p = str(tmp_path / "v.safetensors")
    vae.save(p)
    v2 = TinyVideoVAE.load(p)
    assert torch.equal(v2.latent_mean, vae.latent_mean)
    for (n, a), (_, b) in zip(vae.state_dict().items(), v2.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)  # weights are stored fp16
    bad = tmp_path / "x.safetensors"
    from safetensors.torch import save_file
    save_file({"a": torch.zeros(1)}, str(bad))
    with pytest.raises(ValueError, match="not a liveact tiny VAE"):
        TinyVideoVAE.load(str(bad))


def test_mp4_with_audio_streaming(tmp_path):
    p = str(tmp_path / "o.mp4")
    wav = (0.1 * np.sin(np.arange(16000 * 2) * 0.05)).astype(np.float32)
    c = R.make_clip(1, 1, 50)
    with VideoWriter(p, 25, 64, 64, audio=wav, upscale=2) as w:
        w.write(c["frames"][:21].permute(1, 0, 2, 3))  # (3, T, H, W), block by block
        w.write(c["frames"][21:50])  # (T, 3, H, W)
    frames, n_audio = read_video(p)
    assert frames.shape == (50, 128, 128, 3)
    assert abs(n_audio - 32000) <= 1024  # audio cut at the video length (one AAC frame of padding)
    err = np.abs(frames[10, ::2, ::2].astype(float) - ((c["frames"][10].permute(1, 2, 0) + 1) * 127.5).numpy())
    assert err.mean() < 8  # H.264 at crf 18


def test_image_loader_and_errors(tmp_path):
    ref = R.reference_image(R.sample_identity(3))
    p = str(tmp_path / "f.png")
    save_image(p, ref)
    x = load_image(p, 64, 64)
    assert x.shape == (3, 64, 64)
    assert (x - ref).abs().max() < 2 / 255 + 1e-6
    y = load_image(p, 32, 48)  # scale to cover, centre crop
    assert y.shape == (3, 32, 48)
    with pytest.raises(FileNotFoundError):
        load_image(str(tmp_path / "none.png"), 64, 64)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read image"):
        load_image(str(bad), 64, 64)
    txt = tmp_path / "a.txt"
    txt.write_text("x")
    with pytest.raises(ValueError, match="unsupported image format"):
        load_image(str(txt), 64, 64)
    contact_sheet(str(tmp_path / "s.png"), [ref, ref], labels=["a", "b"])
    assert (tmp_path / "s.png").stat().st_size > 100


def test_ssim_and_lab_sanity():
    ident = R.sample_identity(2)
    ref = R.reference_image(ident)
    box = R.face_box(ident)
    assert abs(float(M.ssim(ref[None], ref, box)[0]) - 1.0) < 1e-5
    noisy = (ref + 0.3 * torch.randn_like(ref)).clamp(-1, 1)
    assert float(M.ssim(noisy[None], ref, box)[0]) < 0.7
    white = torch.ones(1, 3, 64, 64)
    lab = M.face_lab(white, M.face_mask(ident))[0]
    np.testing.assert_allclose(lab, [100.0, 0.0, 0.0], atol=0.05)
    v = M.no_trend(np.array([1.0, 1.1, 0.9]), {"10min": np.array([1.05]), "60min": np.array([2.0])})
    assert v["checkpoints"]["10min"]["within"] and not v["checkpoints"]["60min"]["within"] and not v["stable"]
