"""Shared helpers for the embedder tests: deterministic synthetic audio, nothing downloaded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


def _chord_progression(
    chords: list[list[int]], *, sr: int = 22050, chord_s: float = 1.0, root_hz: float = 261.63
) -> np.ndarray:
    """Harmonic tones for each chord (semitones above ``root_hz``), one after another."""
    t = np.arange(int(chord_s * sr)) / sr
    env = np.minimum(1.0, t / 0.01) * np.exp(-1.0 * t)
    parts = []
    for chord in chords:
        y = np.zeros_like(t)
        for semi in chord:
            f = root_hz * 2 ** (semi / 12)
            for h in range(1, 5):
                y += np.sin(2 * np.pi * f * h * t) / h
        parts.append(0.1 * y * env)
    return np.concatenate(parts).astype(np.float32)


def _noise(seconds: float, *, sr: int = 16000, seed: int = 0, level: float = 0.1) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(
        np.float32
    )


@pytest.fixture
def write_wav(tmp_path: Path) -> Callable[..., Path]:
    """Write float audio to ``tmp_path/name`` (16-bit PCM WAV unless the name says otherwise)."""

    def _write(name: str, audio: np.ndarray, sr: int = 16000) -> Path:
        path = tmp_path / name
        sf.write(path, audio, sr, subtype="PCM_16" if path.suffix == ".wav" else None)
        return path

    return _write


@pytest.fixture
def make_chords() -> Callable[..., np.ndarray]:
    """``make_chords([[0, 4, 7], ...], sr=..., chord_s=...)`` -> float32 audio."""
    return _chord_progression


@pytest.fixture
def make_noise() -> Callable[..., np.ndarray]:
    """``make_noise(seconds, sr=..., seed=..., level=...)`` -> float32 white noise."""
    return _noise
