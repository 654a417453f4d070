"""Frame layouts of the avatar metrics and video writer: a block of exactly 3 frames, (3, 3, H, W), is ambiguous
and was once read transposed (time taken for colour), which looked like a grey last block in the evaluation."""
import pytest
import torch

from liveact_model.avatar import metrics as M, render as R
from liveact_model.avatar.video_io import VideoWriter, read_video


def _three_frame_block():
    ident = R.sample_identity(R.split_seeds("identity", "eval", 1)[0])
    ref = R.reference_image(ident)                                      # (3, H, W) in [-1, 1]
    darker = [(ref + 1) * f - 1 for f in (1.0, 0.8, 0.6)]              # in [-1, 1], each frame darker
    return ident, ref, torch.stack(darker, dim=1)                       # (3 channels, 3 frames, H, W)


def test_three_frame_block_needs_and_honours_layout():
    ident, ref, block = _three_frame_block()
    with pytest.raises(ValueError, match="ambiguous.*layout"):
        M.face_lab(block, M.face_mask(ident))
    lab = M.face_lab(block, M.face_mask(ident), layout="cthw")
    lab_ref = M.face_lab(ref[:, None], M.face_mask(ident))[0]
    assert abs(lab[0] - lab_ref).max() < 1e-4                          # frame 0 is the reference itself
    assert lab[0, 0] > lab[1, 0] > lab[2, 0]                           # darker frames: lower L*
    ss = M.ssim(block, ref, R.face_box(ident), layout="cthw")
    assert abs(ss[0] - 1.0) < 1e-5 and ss.shape == (3,)
    tchw = M.mouth_opening(block.permute(1, 0, 2, 3), R.mouth_box(ident), layout="tchw")
    cthw = M.mouth_opening(block, R.mouth_box(ident), layout="cthw")
    assert (tchw == cthw).all()
    with pytest.raises(ValueError, match="layout must be"):
        M.face_lab(block, M.face_mask(ident), layout="thwc")


def test_video_writer_three_frame_block(tmp_path):
    _, ref, block = _three_frame_block()
    p = str(tmp_path / "v.mp4")
    with VideoWriter(p, 25, ref.shape[1], ref.shape[2]) as w:
        with pytest.raises(ValueError, match="ambiguous"):
            w.write(block)
        w.write(block, layout="cthw")
    frames, _ = read_video(p)
    assert frames.shape[0] == 3
    mean = frames.reshape(3, -1).mean(1)                                # brightness falls frame by frame
    assert mean[0] > mean[1] > mean[2], mean
