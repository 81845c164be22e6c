"""Handcrafted whole-track descriptors (librosa): timbre, harmony, key/mode, tempo, loudness.

The vector mixes units (dB, Hz, BPM, correlations), so the embedder sets
``needs_standardization = True`` and :func:`~moodshift.audio.embedders.embed_files`
z-scores it per catalogue (see :class:`~moodshift.audio.embedders.Standardizer`).
:data:`FEATURE_NAMES` names every dimension.

One STFT (22.05 kHz, n_fft 2048, hop 512) feeds every descriptor, which keeps a
10 s clip well under 0.1 s on one core.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from moodshift.audio.embedders.base import Embedder, resample, to_mono_float32

__all__ = ["FEATURE_NAMES", "FeaturesEmbedder", "key_profile_scores"]

SR = 22050
N_FFT = 2048
HOP = 512
N_MFCC = 20
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

# Krumhansl & Kessler (1982) probe-tone profiles, tonic first.
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])

FEATURE_NAMES: tuple[str, ...] = (
    *(f"mfcc{i}_mean" for i in range(N_MFCC)),
    *(f"mfcc{i}_std" for i in range(N_MFCC)),
    *(f"chroma_{pc}" for pc in PITCH_CLASSES),
    "key_major_corr",  # best correlation with the 12 rotated major profiles
    "key_minor_corr",  # ... with the 12 minor profiles
    "mode",  # key_major_corr - key_minor_corr: > 0 major, < 0 minor
    "key_clarity",  # max of the two: how tonal the track is
    "key_fifths_cos",  # best key on the circle of fifths (minor keys at their relative
    "key_fifths_sin",  # major, so A minor sits with C major), scaled by key_clarity
    "tempo_bpm",
    "rms_db_mean",
    "rms_db_std",
    *(f"contrast{i}_mean" for i in range(7)),
    "centroid_hz_mean",
    "centroid_hz_std",
    "flatness_mean",
    "onset_rate_hz",
)


def _rotations(profile: np.ndarray) -> np.ndarray:
    # Row k: the profile of the key whose tonic is pitch class k.
    return np.stack([np.roll(profile, k) for k in range(12)])


_MAJOR_KEYS = _rotations(KK_MAJOR)
_MINOR_KEYS = _rotations(KK_MINOR)


def key_profile_scores(chroma_mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Krumhansl-Schmuckler key finding: Pearson correlation with the 24 key profiles.

    Parameters
    ----------
    chroma_mean : ndarray, shape (12,)
        Mean chroma, C first.

    Returns
    -------
    major, minor : ndarray, shape (12,) each
        Correlation with the major / minor key whose tonic is each pitch class;
        zeros when the chroma is flat (no tonal content).
    """
    c = np.asarray(chroma_mean, dtype=np.float64) - np.mean(chroma_mean)
    norm_c = np.linalg.norm(c)
    if norm_c < 1e-12:
        return np.zeros(12), np.zeros(12)

    def corr(keys: np.ndarray) -> np.ndarray:
        k = keys - keys.mean(axis=1, keepdims=True)
        return (k @ c) / (np.linalg.norm(k, axis=1) * norm_c)

    return corr(_MAJOR_KEYS), corr(_MINOR_KEYS)


class FeaturesEmbedder(Embedder):
    """Handcrafted librosa descriptors of a whole track, :data:`FEATURE_NAMES` order.

    Outputs the raw (unstandardised) 72-d vector; see the module docstring.
    """

    name = "features"
    version = "1"
    dim = len(FEATURE_NAMES)
    sample_rate = SR
    needs_standardization = True
    feature_names = FEATURE_NAMES

    def provenance(self) -> dict[str, Any]:
        prov = super().provenance()
        prov["options"] = {}
        return prov

    def warm_up(self) -> None:
        """Run every descriptor once on 3 s of noise, so librosa's numba cache is written once."""
        self.embed(np.random.default_rng(0).standard_normal(3 * SR).astype(np.float32) * 0.1, SR)

    def embed(self, audio: np.ndarray, sr: int) -> np.ndarray:
        """Descriptors of one whole track.

        Parameters
        ----------
        audio : ndarray, shape (n,)
            Mono audio at ``sr`` Hz.
        sr : int

        Returns
        -------
        ndarray, shape (72,), float32
            Finite values in :data:`FEATURE_NAMES` order.
        """
        import librosa  # librosa is heavy: load on use

        y = resample(to_mono_float32(audio), orig_sr=int(sr), target_sr=SR)
        if len(y) < N_FFT:
            y = np.pad(y, (0, N_FFT - len(y)))
        duration = len(y) / SR

        mag = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP))  # (1025, T)
        power = mag**2
        log_mel = librosa.power_to_db(librosa.feature.melspectrogram(S=power, sr=SR, n_mels=128))
        mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=N_MFCC)
        chroma = librosa.feature.chroma_stft(S=power, sr=SR)
        chroma_mean = chroma.mean(axis=1)
        major, minor = key_profile_scores(chroma_mean)
        best_major, best_minor = float(major.max()), float(minor.max())
        clarity = max(best_major, best_minor)
        # minor keys sit at their relative major (A minor with C major)
        tonic = int(major.argmax()) if best_major >= best_minor else (int(minor.argmax()) + 3) % 12
        angle = 2 * np.pi * ((tonic * 7) % 12) / 12  # position on the circle of fifths

        onset_env = librosa.onset.onset_strength(S=log_mel, sr=SR, hop_length=HOP)
        tempo = float(np.atleast_1d(
            librosa.feature.tempo(onset_envelope=onset_env, sr=SR, hop_length=HOP))[0])  # fmt: skip
        onsets = librosa.onset.onset_detect(
            onset_envelope=onset_env, sr=SR, hop_length=HOP, units="frames"
        )
        rms_db = librosa.amplitude_to_db(librosa.feature.rms(S=mag, frame_length=N_FFT)[0])
        contrast = librosa.feature.spectral_contrast(S=mag, sr=SR)
        centroid = librosa.feature.spectral_centroid(S=mag, sr=SR)[0]
        flatness = librosa.feature.spectral_flatness(S=mag)[0]

        vec = np.concatenate(
            [
                mfcc.mean(axis=1),
                mfcc.std(axis=1),
                chroma_mean,
                [
                    best_major,
                    best_minor,
                    best_major - best_minor,
                    clarity,
                    clarity * np.cos(angle),
                    clarity * np.sin(angle),
                    tempo,
                    rms_db.mean(),
                    rms_db.std(),
                ],
                contrast.mean(axis=1),
                [centroid.mean(), centroid.std(), flatness.mean(), len(onsets) / duration],
            ]
        ).astype(np.float32)
        # Silence or pathological input can give NaN (e.g. 0/0 correlations);
        # a catalogue must never hold NaN rows.
        return np.nan_to_num(vec, nan=0.0, posinf=0.0, neginf=0.0)
