"""Produce tests/fixtures/musicnn/reference.npz with the ORIGINAL musicnn + TensorFlow.

One-off script: the tests only read its output, and moodshift itself never
imports TensorFlow. It runs in a throwaway virtualenv, not the project's::

    python3.11 -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install "tensorflow-cpu==2.15.1" "numpy<2" "librosa==0.11.0" soundfile
    /tmp/tfvenv/bin/pip install --no-deps musicnn==0.1.0
    /tmp/tfvenv/bin/python scripts/make_musicnn_reference.py

What it stores, per clip ``c`` (synthesised here, deterministically) and per
model ``m`` in {MTT_musicnn, MSD_musicnn}:

``audio_<c>``
    The clip as int16 PCM at 16 kHz (the audio is quantised to int16 before
    anything else, so both sides see exactly ``audio / 32768``).
``<m>_<c>_{penultimate,max_pool,mean_pool,tags}``
    ``musicnn.extractor.extractor(wav, model=m, input_length=3, input_overlap=2)``
    outputs per window (windows start every 124 frames, musicnn's own
    ``time_to_frames(2 s)``), computed with the log-mel in float32. musicnn's
    ``batch_data`` casts the mel spectrogram to float16 before the log (which
    also overflows to inf for very loud input); the copy used here differs from
    the original only in that cast.
``<m>_<c>_f16_*``
    The same outputs from the untouched original code (float16 log-mel), to
    document how far that rounding moves things.
``starts_<c>``
    The first frame of every window.

All windows of a clip go through TensorFlow in one batch (``config.BATCH_SIZE``
is raised), because ``extractor()`` returns the first batch's penultimate
layer again for every later batch (musicnn 0.1.0 bug).

Clips shorter than 3 s are zero-padded to 3 s before TensorFlow sees them
(musicnn cannot handle them at all), which is what moodshift's embedder does.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import musicnn
import musicnn.extractor as mx
import tensorflow as tf
from musicnn import configuration as config

SR = 16000
OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "musicnn" / "reference.npz"
MODELS = ("MTT_musicnn", "MSD_musicnn")
OUTPUTS = ("penultimate", "max_pool", "mean_pool", "tags")


def _tone(freqs: list[float], dur: float, *, sr: int = SR, harmonics: int = 4) -> np.ndarray:
    t = np.arange(round(dur * sr)) / sr
    y = np.zeros_like(t)
    for f in freqs:
        for h in range(1, harmonics + 1):
            y += np.sin(2 * np.pi * f * h * t) / h
    env = np.minimum(1.0, t / 0.02) * np.exp(-1.5 * t)
    return y * env


def make_clips() -> dict[str, np.ndarray]:
    """Deterministic test clips, float64 in [-1, 1] before int16 quantisation."""
    rng = np.random.default_rng(20240611)
    clips: dict[str, np.ndarray] = {}

    # 5 s: A minor -> F major -> C major -> G major, one chord every 1.25 s
    chords = [
        [220.0, 261.63, 329.63],
        [174.61, 220.0, 261.63],
        [261.63, 329.63, 392.0],
        [196.0, 246.94, 293.66],
    ]
    clips["chords"] = np.concatenate([_tone(c, 1.25) for c in chords]) * 0.2

    # 4 s: kick + noisy snare/hi-hat pattern at 120 bpm over a bass line
    n = 4 * SR
    t = np.arange(n) / SR
    y = 0.3 * np.sin(2 * np.pi * 55.0 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))
    for i, start in enumerate(np.arange(0, 4.0, 0.25)):
        s = int(start * SR)
        m = min(n - s, int(0.2 * SR))
        tt = np.arange(m) / SR
        if i % 4 == 0:  # kick: falling sine
            y[s : s + m] += (
                0.9 * np.sin(2 * np.pi * (50 + 100 * np.exp(-30 * tt)) * tt) * np.exp(-12 * tt)
            )
        elif i % 4 == 2:  # snare: noise burst
            y[s : s + m] += 0.5 * rng.standard_normal(m) * np.exp(-25 * tt)
        else:  # hat: short bright noise
            hat = np.diff(rng.standard_normal(m + 1))
            y[s : s + m] += 0.15 * hat * np.exp(-80 * tt)
    clips["drums"] = np.clip(y, -1, 1)

    # 2.5 s: exponential chirp 100 Hz -> 6 kHz (shorter than one window)
    t = np.arange(int(2.5 * SR)) / SR
    k = np.log(6000 / 100) / 2.5
    clips["chirp"] = 0.5 * np.sin(2 * np.pi * 100 * (np.exp(k * t) - 1) / k)
    return clips


def _batch_data_float32(audio_file: str, n_frames: int, overlap: int):
    """musicnn.extractor.batch_data with the log-mel kept in float32 (only change)."""
    audio, sr = librosa.load(audio_file, sr=config.SR)
    audio_rep = librosa.feature.melspectrogram(
        y=audio, sr=sr, hop_length=config.FFT_HOP, n_fft=config.FFT_SIZE, n_mels=config.N_MELS
    ).T
    audio_rep = audio_rep.astype(np.float32)  # original: np.float16
    audio_rep = np.log10(10000 * audio_rep + 1)
    last_frame = audio_rep.shape[0] - n_frames + 1
    patches = [audio_rep[s : s + n_frames][None] for s in range(0, last_frame, overlap)]
    return np.concatenate(patches, axis=0), audio_rep


def run_extractor(wav: str, model: str, *, float32: bool) -> dict[str, np.ndarray]:
    original, batch_size = mx.batch_data, config.BATCH_SIZE
    if float32:
        mx.batch_data = _batch_data_float32
    # extractor() has a bug for every batch after the first: it unpacks the
    # penultimate layer into `backend_` but concatenates the stale `penultimate_`,
    # so later windows repeat the first one's. One batch for all windows avoids it.
    config.BATCH_SIZE = 1024
    try:
        taggram, _labels, feats = mx.extractor(
            wav, model=model, input_length=3, input_overlap=2, extract_features=True
        )
    finally:
        mx.batch_data, config.BATCH_SIZE = original, batch_size
    return {
        "penultimate": np.asarray(feats["penultimate"], np.float32),
        "max_pool": np.asarray(feats["max_pool"], np.float32),
        "mean_pool": np.asarray(feats["mean_pool"], np.float32),
        "tags": np.asarray(taggram, np.float32),
    }


def main() -> int:
    clips = make_clips()
    arrays: dict[str, np.ndarray] = {}
    stft = {"sr": SR, "n_fft": config.FFT_SIZE, "hop_length": config.FFT_HOP}
    n_frames = librosa.time_to_frames(3, **stft) + 1  # 187, as extractor() computes it
    hop = librosa.time_to_frames(2, **stft)  # 124
    with tempfile.TemporaryDirectory() as tmp:
        for name, y in clips.items():
            pcm = np.round(np.clip(y, -1, 1) * 32767).astype(np.int16)
            arrays[f"audio_{name}"] = pcm
            padded = np.pad(pcm, (0, max(0, 3 * SR - len(pcm))))
            wav = str(Path(tmp) / f"{name}.wav")
            sf.write(wav, padded, SR, subtype="PCM_16")
            total = 1 + len(padded) // config.FFT_HOP
            arrays[f"starts_{name}"] = np.arange(0, total - n_frames + 1, hop, dtype=np.int64)
            for model in MODELS:
                for f32, tag in ((True, ""), (False, "_f16")):
                    out = run_extractor(wav, model, float32=f32)
                    for key in OUTPUTS:
                        arrays[f"{model}_{name}{tag}_{key}"] = out[key]
                n_win = len(arrays[f"{model}_{name}_tags"])
                assert n_win == len(arrays[f"starts_{name}"]), (name, n_win)
    meta = {
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "librosa": librosa.__version__,
        "musicnn": getattr(musicnn, "__version__", "0.1.0"),
        "python": sys.version.split()[0],
        "n_frames": int(n_frames),
        "hop_frames": int(hop),
        "sr": SR,
        "clips": list(clips),
    }
    arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB)", meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
