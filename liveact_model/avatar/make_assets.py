# Regenerates the bundled demo inputs in liveact_model/assets/ (deterministic): a held-out identity's reference image and
# held-out speech clips. `python -m liveact_model.avatar.make_assets`.
from __future__ import annotations

import os

from . import audio as A
from . import render as R
from .tiny import ASSETS
from .video_io import save_image

DEMO_IDENTITY = R.split_seeds("identity", "eval", 1, start=300)[0]
DEMO_CLIPS = R.split_seeds("clip", "eval", 3, start=900)


def main(out: str = ASSETS) -> None:
    os.makedirs(out, exist_ok=True)
    save_image(os.path.join(out, "demo_face.png"), R.reference_image(R.sample_identity(DEMO_IDENTITY)))
    A.save_wav(os.path.join(out, "demo_speech.wav"), A.synth_speech(DEMO_CLIPS[0], 8.0))
    for k, c in enumerate(DEMO_CLIPS[1:]):
        A.save_wav(os.path.join(out, f"speech_{k + 1}.wav"), A.synth_speech(c, 4.0))
    print(f"identity {DEMO_IDENTITY}, clips {DEMO_CLIPS} -> {out}")


if __name__ == "__main__":
    main()
