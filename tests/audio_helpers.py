"""Tiny audio files for tests, written with the standard library (nothing downloaded)."""

from __future__ import annotations

import wave

import numpy as np


def write_tone(
    path, *, freq: float, seconds: float = 0.25, rate: int = 8000, amplitude: float = 0.3
) -> None:
    """A 16-bit mono sine WAV."""
    t = np.arange(int(seconds * rate)) / rate
    samples = (amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
