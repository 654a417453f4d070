# Speech-like audio for the tiny avatar: procedural formant synthesis, wav IO, per-frame loudness and log-mel
# features shaped [frames, layers=1, n_mels] (one feature row per video frame) for the model's AudioProj.
from __future__ import annotations

import math
import os
import wave

import numpy as np
import torch

SAMPLE_RATE = 16000
FPS = 25
N_MELS = 32
N_FFT = 1024
# Fixed (not per-utterance) normalisation so that loudness stays visible in the features: log-mel of the
# synthetic speech spans roughly [-11.5, 2]; this maps it to about [-1.5, 1.2].
LOGMEL_FLOOR = 1e-5
LOGMEL_SHIFT = 5.0
LOGMEL_SCALE = 4.0
# Mouth opening = clip((dB + DB_OFFSET) / DB_RANGE, 0, 1) of the frame RMS in dBFS.
DB_OFFSET = 34.0
DB_RANGE = 24.0

# Formants (Hz) and relative bandwidths of a few vowels (adult averages, rounded); "bright" = high F2.
_VOWELS = {
    "a": (750.0, 1250.0, 2600.0),
    "e": (500.0, 1850.0, 2600.0),
    "i": (300.0, 2250.0, 3000.0),
    "o": (480.0, 900.0, 2500.0),
    "u": (330.0, 800.0, 2300.0),
    "@": (520.0, 1450.0, 2500.0),
}
_VOWEL_KEYS = list(_VOWELS)


def synth_speech(seed: int, seconds: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Procedural speech-like audio: syllables (consonant onset + formant vowel) in phrases with pauses.

    Returns wav: (n_samples,) float32 in [-1, 1]. Deterministic for a seed.
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    f0_base = rng.uniform(95.0, 230.0)
    tract = rng.uniform(0.9, 1.15)  # formant scale (shorter tract -> higher formants)
    rate = rng.uniform(3.5, 6.0)  # syllables per second inside a phrase

    # Control tracks sampled per 5 ms then interpolated per sample.
    ctl_hz = 200
    m = int(math.ceil((seconds + 2.0) * ctl_hz))  # slack: the last syllable may overrun
    f0 = np.full(m, f0_base)
    formants = np.tile(np.array(_VOWELS["@"]) * tract, (m, 1))
    av = np.zeros(m)  # voiced amplitude
    an = np.zeros(m)  # noise amplitude
    nhp = np.zeros(m)  # 1 = sibilant (high-pass) noise, 0 = breathy/low noise

    t = rng.uniform(0.05, 0.4)
    while t < seconds:
        n_syl = int(rng.integers(3, 13))
        # Phrase-level declination of the pitch.
        for k in range(n_syl):
            if t >= seconds:
                break
            dur = rng.uniform(0.6, 1.5) / rate
            stress = 10 ** (rng.uniform(-6.0, 2.0) / 20.0)
            i0 = int(t * ctl_hz)
            # Consonant onset.
            c = rng.integers(0, 4)  # 0 none, 1 fricative, 2 plosive, 3 nasal
            cdur = 0.0
            if c == 1:
                cdur = rng.uniform(0.04, 0.10)
                j1 = int((t + cdur) * ctl_hz)
                an[i0:j1] = 0.25 * stress
                nhp[i0:j1] = rng.integers(0, 2)
            elif c == 2:
                cdur = rng.uniform(0.04, 0.07)
                jb = int((t + cdur) * ctl_hz)
                an[max(i0, jb - 3):jb] = 0.4 * stress
                nhp[max(i0, jb - 3):jb] = 1.0
            elif c == 3:
                cdur = rng.uniform(0.04, 0.08)
                j1 = int((t + cdur) * ctl_hz)
                av[i0:j1] = 0.15 * stress
                formants[i0:j1] = np.array((280.0, 1300.0, 2500.0)) * tract
            v0 = int((t + cdur) * ctl_hz)
            v1 = int((t + dur) * ctl_hz)
            if v1 > v0:
                vowel = _VOWELS[_VOWEL_KEYS[int(rng.integers(0, len(_VOWEL_KEYS)))]]
                L = v1 - v0
                env = np.ones(L)
                a = min(4, L)
                r = min(8, L)
                env[:a] *= np.linspace(0.2, 1.0, a)
                env[L - r:] *= np.linspace(1.0, 0.05, r)
                av[v0:v1] = stress * env
                formants[v0:v1] = np.array(vowel) * tract * rng.uniform(0.95, 1.05, size=3)
                # Pitch: declination across the phrase plus a small accent.
                decl = 1.0 - 0.15 * k / max(n_syl - 1, 1)
                f0[v0:v1] = f0_base * decl * (1.0 + 0.08 * (stress - 0.5)) * np.linspace(1.03, 0.97, L)
            t += dur
        t += rng.uniform(0.2, 0.9) if rng.random() < 0.85 else rng.uniform(0.9, 1.8)

    # Smooth the tracks (coarticulation) with a short moving average.
    ker = np.ones(5) / 5.0
    f0 = np.convolve(f0, ker, mode="same")
    av = np.convolve(av, np.ones(3) / 3.0, mode="same")
    formants = np.stack([np.convolve(formants[:, i], ker, mode="same") for i in range(3)], 1)
    tc = np.arange(m) / ctl_hz
    ts = np.arange(n) / sr
    f0_s = np.interp(ts, tc, f0)
    av_s = np.interp(ts, tc, av)
    an_s = np.interp(ts, tc, an)
    hp_s = np.interp(ts, tc, nhp)
    F = np.stack([np.interp(ts, tc, formants[:, i]) for i in range(3)], 0)  # (3, n)
    f0_s = f0_s * (1.0 + 0.01 * np.sin(2 * np.pi * 5.5 * ts + rng.uniform(0, 6.28)))  # vibrato/jitter

    # Voiced part: additive harmonics weighted by a formant envelope (vectorised over harmonics).
    phase = 2 * np.pi * np.cumsum(f0_s) / sr
    out = np.zeros(n)
    bw = np.array([90.0, 120.0, 170.0])[:, None]
    gains = np.array([1.0, 0.6, 0.25])[:, None]
    for k in range(1, 41):
        fk = k * f0_s
        amp = (gains / (1.0 + ((fk[None] - F) / bw) ** 2)).sum(0) / math.sqrt(k)
        amp[fk > 0.45 * sr] = 0.0
        out += amp * np.sin(k * phase)
    out *= av_s
    # Noise part: sibilant (first difference of white noise = high-pass) or breathy (smoothed white noise).
    white = rng.standard_normal(n + 1)
    hp = np.diff(white) * 0.5
    lp = np.convolve(white[:n], np.ones(4) / 4.0, mode="same")
    out += an_s * (hp_s * hp + (1.0 - hp_s) * lp)
    out += 0.002 * rng.standard_normal(n)  # room noise floor
    peak = np.max(np.abs(out)) + 1e-9
    return (0.7 * out / peak).astype(np.float32)


# ----------------------------------------------------------------------------- wav IO

SUPPORTED_AUDIO = (".wav",)


def load_audio(path: str | os.PathLike, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Load a PCM wav (8/16/24/32-bit, any rate, any channel count) as mono float32 at `sr`.

    Other containers (mp3, flac, ogg, m4a) are decoded with PyAV when it can; otherwise a ValueError says so.
    Returns wav: (n_samples,) float32.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"audio file not found: {path!r}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".wav":
        try:
            with wave.open(path, "rb") as w:
                ch, width, rate, nfr = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
                raw = w.readframes(nfr)
        except (wave.Error, EOFError) as e:
            why = str(e) or "truncated or malformed header"
            raise ValueError(f"cannot read wav file {path!r}: {why} (expected uncompressed PCM wav)") from e
        if width == 1:
            x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
        elif width == 2:
            x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
        elif width == 3:
            b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
            v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
            v = np.where(v >= 1 << 23, v - (1 << 24), v)
            x = v.astype(np.float32) / float(1 << 23)
        elif width == 4:
            x = np.frombuffer(raw, "<i4").astype(np.float32) / float(1 << 31)
        else:
            raise ValueError(f"unsupported wav sample width {width} bytes in {path!r} (expected 1, 2, 3 or 4)")
        x = x.reshape(-1, ch).mean(1)
    else:
        x, rate = _load_with_av(path)
    if x.size == 0:
        raise ValueError(f"audio file {path!r} contains no samples")
    return resample(x, rate, sr)


def _load_with_av(path: str) -> tuple[np.ndarray, int]:
    try:
        import av
    except ImportError as e:  # pragma: no cover - av is a pinned requirement
        raise ValueError(f"unsupported audio format {path!r}: only .wav without PyAV") from e
    try:
        with av.open(path) as c:
            if not c.streams.audio:
                raise ValueError(f"file {path!r} has no audio stream")
            st = c.streams.audio[0]
            rate = st.rate
            chunks = []
            for frame in c.decode(st):
                a = frame.to_ndarray().astype(np.float32)
                if frame.format.is_planar:
                    a = a.mean(0)
                else:
                    a = a.reshape(-1, frame.layout.nb_channels).mean(1)
                if frame.format.name.startswith("s16"):
                    a = a / 32768.0
                elif frame.format.name.startswith("s32"):
                    a = a / float(1 << 31)
                chunks.append(a)
    except av.error.FFmpegError as e:
        raise ValueError(f"cannot decode audio file {path!r}: {e} (supported: wav, or formats FFmpeg decodes)") from e
    if not chunks:
        raise ValueError(f"audio file {path!r} contains no samples")
    return np.concatenate(chunks), int(rate)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Linear-interpolation resampling (enough for loudness and a 32-band mel). x: (n,) -> (n*sr_out/sr_in,)."""
    if sr_in <= 0 or sr_out <= 0:
        raise ValueError(f"sample rates must be > 0, got sr_in={sr_in}, sr_out={sr_out}")
    x = np.asarray(x, np.float32)
    if sr_in == sr_out:
        return x
    n_out = int(round(len(x) * sr_out / sr_in))
    t = np.arange(n_out) * (sr_in / sr_out)
    return np.interp(t, np.arange(len(x)), x).astype(np.float32)


def save_wav(path: str | os.PathLike, wav: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write mono 16-bit PCM. wav: (n,) float in [-1, 1]."""
    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise ValueError(f"wav must be 1-D (mono), got shape {tuple(wav.shape)}")
    pcm = (np.clip(wav, -1.0, 1.0) * 32767.0).round().astype("<i2")
    with wave.open(os.fspath(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())


# ----------------------------------------------------------------------------- per-frame features

def num_frames(n_samples: int, sr: int = SAMPLE_RATE, fps: int = FPS) -> int:
    """Video frames covered by n_samples of audio (at least 1)."""
    return max(1, int(n_samples * fps // sr))


def frame_loudness(wav: np.ndarray, sr: int = SAMPLE_RATE, fps: int = FPS, n_frames: int | None = None) -> np.ndarray:
    """RMS level in dBFS of a 40 ms window centred on each video frame. Returns (n_frames,) float32."""
    wav = np.asarray(wav, np.float32)
    n_frames = num_frames(len(wav), sr, fps) if n_frames is None else n_frames
    half = int(0.02 * sr)
    centres = ((np.arange(n_frames) + 0.5) * sr / fps).astype(np.int64)
    padded = np.pad(wav, (half, half))
    c2 = np.concatenate([[0.0], np.cumsum(padded.astype(np.float64) ** 2)])
    lo = np.clip(centres, 0, len(padded) - 1)
    hi = np.clip(centres + 2 * half, 0, len(padded))
    ms = (c2[hi] - c2[lo]) / np.maximum(hi - lo, 1)
    return (10.0 * np.log10(ms + 1e-10)).astype(np.float32)


def loudness_to_open(db: np.ndarray) -> np.ndarray:
    """Map frame dBFS to a mouth-opening target in [0, 1]."""
    return np.clip((np.asarray(db) + DB_OFFSET) / DB_RANGE, 0.0, 1.0).astype(np.float32)


def _mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 50.0, fmax: float | None = None) -> torch.Tensor:
    fmax = sr / 2 if fmax is None else fmax
    def hz2mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)
    def mel2hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)
    mels = np.linspace(hz2mel(fmin), hz2mel(fmax), n_mels + 2)
    hz = mel2hz(mels)
    bins = np.fft.rfftfreq(n_fft, 1.0 / sr)
    fb = np.zeros((n_mels, len(bins)), np.float32)
    for i in range(n_mels):
        lo, c, hi = hz[i], hz[i + 1], hz[i + 2]
        up = (bins - lo) / (c - lo)
        down = (hi - bins) / (hi - c)
        fb[i] = np.maximum(0.0, np.minimum(up, down))
    fb /= np.maximum(fb.sum(1, keepdims=True), 1e-8)
    return torch.from_numpy(fb)


def logmel_features(wav: np.ndarray, sr: int = SAMPLE_RATE, fps: int = FPS, n_frames: int | None = None,
                    n_mels: int = N_MELS) -> torch.Tensor:
    """Log-mel features with one row per video frame (a 64 ms window centred on the frame).

    wav: (n_samples,) -> features: (n_frames, 1, n_mels) float32, fixed normalisation (see LOGMEL_*).
    """
    wav = np.asarray(wav, np.float32)
    if wav.ndim != 1:
        raise ValueError(f"wav must be 1-D (mono), got shape {tuple(wav.shape)}")
    if sr % fps != 0:
        raise ValueError(f"sample rate {sr} must be a multiple of fps {fps}")
    n_frames = num_frames(len(wav), sr, fps) if n_frames is None else n_frames
    hop = sr // fps
    # Centre each window on the middle of its video frame: pad so that frame f's window starts at f*hop+hop/2-n_fft/2.
    need = n_frames * hop + N_FFT
    left = N_FFT // 2 - hop // 2
    x = np.zeros(need, np.float32)
    seg = wav[: max(0, need - left)]
    x[left:left + len(seg)] = seg
    xt = torch.from_numpy(x)
    spec = torch.stft(xt, N_FFT, hop_length=hop, win_length=N_FFT, window=torch.hann_window(N_FFT),
                      center=False, return_complex=True)[:, :n_frames]
    power = spec.abs().pow(2) / N_FFT
    mel = _mel_filterbank(sr, N_FFT, n_mels) @ power  # (n_mels, n_frames)
    feat = (torch.log(mel + LOGMEL_FLOOR) + LOGMEL_SHIFT) / LOGMEL_SCALE
    return feat.T.contiguous().unsqueeze(1).float()


def mouth_drive(wav: np.ndarray, sr: int = SAMPLE_RATE, fps: int = FPS, n_frames: int | None = None) -> dict:
    """Per-frame mouth targets from audio: `open` (loudness, smoothed attack/release) and `bright` (F2 share).

    Returns {"open": (n,), "bright": (n,), "db": (n,)} float32 arrays.
    """
    db = frame_loudness(wav, sr, fps, n_frames)
    n = len(db)
    target = loudness_to_open(db)
    # One-pole smoothing: fast attack, slower release (a jaw does not snap shut).
    openv = np.zeros(n, np.float32)
    prev = 0.0
    for i in range(n):
        a = 0.75 if target[i] > prev else 0.45
        prev = prev + a * (target[i] - prev)
        openv[i] = prev
    # Coarse spectrum: share of 1-3 kHz energy against 250-1000 Hz (front vowels are brighter -> wider mouth).
    hop = sr // fps
    wav = np.asarray(wav, np.float32)
    bright = np.zeros(n, np.float32)
    win = 512
    freqs = np.fft.rfftfreq(win, 1.0 / sr)
    lo_band = (freqs >= 250) & (freqs < 1000)
    hi_band = (freqs >= 1000) & (freqs < 3000)
    hann = np.hanning(win).astype(np.float32)
    starts = np.clip((np.arange(n) + 0.5) * hop - win // 2, 0, max(len(wav) - win, 0)).astype(np.int64)
    if len(wav) >= win:
        frames = np.stack([wav[s:s + win] for s in starts]) * hann
        p = np.abs(np.fft.rfft(frames, axis=1)) ** 2
        lo = p[:, lo_band].sum(1)
        hi = p[:, hi_band].sum(1)
        bright = (hi / (lo + hi + 1e-9)).astype(np.float32)
    bright = np.convolve(bright, np.ones(3) / 3.0, mode="same").astype(np.float32)
    return {"open": openv, "bright": bright, "db": db}
