"""Render MIDI to audio with the FluidSynth command-line synthesiser.

One ``fluidsynth`` process per clip: the synthesiser is single-threaded C, so a
pool of Python threads that each wait on a subprocess keeps every core busy
without pickling anything. FluidSynth writes float samples to a temporary file;
we mix to mono, cut to the exact clip length, fade out, limit peaks and write
16-bit PCM through an atomic rename, so an interrupted run never leaves a
clip that looks finished.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from moodshift._atomic import atomic_file
from moodshift.errors import AudioError, DependencyError, InputError

APT_FIX = "apt-get install fluidsynth fluid-soundfont-gm timgm6mb-soundfont"
SOUNDFONT_DIRS = (Path("/usr/share/sounds/sf2"), Path("/usr/share/soundfonts"))
DEFAULT_SOUNDFONTS = ("FluidR3_GM.sf2", "TimGM6mb.sf2")

# FluidSynth master gain per soundfont: TimGM6mb's samples are quieter than
# FluidR3's, and equalising them keeps loudness a cue of mood, not of soundfont.
GAIN = {"FluidR3_GM": 1.25, "TimGM6mb": 1.7}
DEFAULT_GAIN = 1.4
FADE_SECONDS = 0.25
PEAK = 0.98


def fluidsynth_binary() -> str:
    """Path of the ``fluidsynth`` program, or a DependencyError naming the fix."""
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise DependencyError(
            f"the fluidsynth program is needed to render the corpus; install it with `{APT_FIX}`"
        )
    return exe


def default_soundfonts() -> list[Path]:
    """The GM soundfonts found on this machine: FluidR3_GM and TimGM6mb."""
    found: dict[str, Path] = {}
    for name in DEFAULT_SOUNDFONTS:
        for folder in SOUNDFONT_DIRS:
            if (folder / name).is_file():
                found[name] = folder / name
                break
    if "TimGM6mb.sf2" not in found:
        # pretty_midi bundles TimGM6mb, a fallback when the Debian package is missing.
        with contextlib.suppress(ImportError):
            import pretty_midi  # pretty_midi is heavy: load on use

            bundled = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
            if bundled.is_file():
                found["TimGM6mb.sf2"] = bundled
    return [found[n] for n in DEFAULT_SOUNDFONTS if n in found]


def resolve_soundfonts(soundfonts: Sequence[str | os.PathLike[str]] | None) -> dict[str, Path]:
    """Map soundfont name (file stem, stored in the labels) to its path.

    Raises
    ------
    DependencyError
        When no soundfont is installed or a given file does not exist.
    InputError
        When a given file is not an ``.sf2``/``.sf3`` soundfont or two share a name.
    """
    if soundfonts is None:
        paths = default_soundfonts()
        if not paths:
            raise DependencyError(
                "no General MIDI soundfont found (looked for FluidR3_GM.sf2 and TimGM6mb.sf2 in "
                f"{', '.join(map(str, SOUNDFONT_DIRS))}); install them with `{APT_FIX}`"
            )
    else:
        if isinstance(soundfonts, (str, os.PathLike)):
            soundfonts = [soundfonts]
        paths = [Path(p) for p in soundfonts]
        if not paths:
            raise InputError("soundfonts is empty; pass None to use the installed GM soundfonts")
    out: dict[str, Path] = {}
    for p in paths:
        if not p.is_file():
            raise DependencyError(
                f"soundfont {str(p)!r} does not exist; install the GM soundfonts with "
                f"`{APT_FIX}` or pass existing .sf2 files"
            )
        if p.suffix.lower() not in (".sf2", ".sf3"):
            raise InputError(f"{str(p)!r} is not a soundfont (.sf2 or .sf3)")
        if p.stem in out:
            raise InputError(f"two soundfonts are named {p.stem!r}; names must be unique")
        out[p.stem] = p
    return out


def expected_frames(seconds: float, sample_rate: int) -> int:
    return round(seconds * sample_rate)


def clip_is_complete(path: str | os.PathLike[str], *, sample_rate: int, seconds: float) -> bool:
    """Whether ``path`` is a finished clip: readable, mono, right rate and length."""

    path = Path(path)
    frames = expected_frames(seconds, sample_rate)
    try:
        info = sf.info(str(path))
        size = path.stat().st_size
    except (RuntimeError, OSError, sf.LibsndfileError):
        return False
    # A header can promise more samples than a truncated file holds.
    return (
        info.samplerate == sample_rate
        and info.channels == 1
        and info.frames == frames
        and size >= 44 + 2 * frames
    )


def augment_audio(audio: np.ndarray, *, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One random production of a rendered clip: what differs between recordings.

    Varispeed (pitch and tempo together, +-0.6 semitone), a spectral tilt and
    a presence bump of a few dB (EQ), a synthetic room (exponentially decaying
    noise, 0.2-1.6 s), background noise at 28-55 dB SNR, and gain (-9..+2 dB).

    Parameters
    ----------
    audio : np.ndarray, shape (n,), float32
    sample_rate : int
    rng : np.random.Generator

    Returns
    -------
    np.ndarray, shape (m,), float32
        ``m`` is about ``n`` divided by the varispeed factor.
    """
    from scipy.signal import fftconvolve  # scipy.signal is heavy: load on use

    x = np.asarray(audio, dtype=np.float64)
    speed = 2 ** (rng.uniform(-0.6, 0.6) / 12)
    n_out = max(1, int(len(x) / speed))
    x = np.interp(np.arange(n_out) * speed, np.arange(len(x)), x)
    spec = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(len(x), 1.0 / sample_rate)
    octaves = np.log2(np.maximum(freqs, 20.0) / 1000.0)  # 0 at 1 kHz
    centre, width = rng.uniform(1.0, 3.0), rng.uniform(0.5, 1.5)  # bump, in octaves from 1 kHz
    gain_db = rng.uniform(-2.0, 2.0) * octaves + rng.uniform(-4, 4) * np.exp(
        -0.5 * ((octaves - centre) / width) ** 2
    )
    x = np.fft.irfft(spec * 10 ** (gain_db / 20), n=len(x))
    rt60 = rng.uniform(0.2, 1.6)
    t = np.arange(int(rt60 * sample_rate)) / sample_rate
    ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
    ir /= np.sqrt(np.sum(ir**2))
    wet = rng.uniform(0.0, 0.35)
    x = (1 - wet) * x + wet * fftconvolve(x, ir)[: len(x)]
    rms = np.sqrt(np.mean(x**2)) + 1e-9
    snr_db = rng.uniform(28, 55)
    x = x + rng.standard_normal(len(x)) * rms * 10 ** (-snr_db / 20)
    x *= 10 ** (rng.uniform(-9, 2) / 20)
    return x.astype(np.float32)


def render_clip(
    *,
    midi_path: str | os.PathLike[str],
    wav_path: str | os.PathLike[str],
    soundfont: str | os.PathLike[str],
    seconds: float,
    sample_rate: int = 22050,
    gain: float | None = None,
    binary: str | None = None,
    augment_seed: Sequence[int] | None = None,
) -> None:
    """Render one MIDI file to a mono 16-bit WAV of exactly ``seconds``.

    With ``augment_seed`` the audio is varied by :func:`augment_audio`.

    Raises
    ------
    AudioError
        When fluidsynth fails or produces silence.
    """

    wav_path = Path(wav_path)
    soundfont = Path(soundfont)
    binary = binary or fluidsynth_binary()
    gain = gain if gain is not None else GAIN.get(soundfont.stem, DEFAULT_GAIN)
    wav_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{wav_path.name}.", suffix=".render.tmp", dir=wav_path.parent
    )
    os.close(fd)
    try:
        cmd = [
            binary,
            "-ni",
            "-q",
            "-F",
            tmp,
            "-T",
            "wav",
            "-O",
            "float",
            "-r",
            str(sample_rate),
            "-g",
            f"{gain:.3f}",
            # Load only the samples the clip uses: FluidR3 is 140 MB.
            "-o",
            "synth.dynamic-sample-loading=1",
            "-o",
            "synth.cpu-cores=1",
            str(soundfont),
            str(midi_path),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            raise AudioError(
                f"fluidsynth failed on {midi_path} (exit {proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()[-500:]}"
            )
        try:
            data, sr = sf.read(tmp, dtype="float32", always_2d=True)
        except (RuntimeError, sf.LibsndfileError) as exc:
            raise AudioError(f"fluidsynth wrote no readable audio for {midi_path}: {exc}") from exc
        if sr != sample_rate:
            raise AudioError(f"fluidsynth rendered {sr} Hz instead of {sample_rate} Hz")
        audio = data.mean(axis=1)
        frames = expected_frames(seconds, sample_rate)
        if augment_seed is not None:
            audio = augment_audio(
                audio, sample_rate=sample_rate, rng=np.random.default_rng([*augment_seed, 29])
            )
        audio = np.pad(audio[:frames], (0, max(0, frames - len(audio))))
        fade = min(frames, int(FADE_SECONDS * sample_rate))
        if fade:
            audio[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        peak = float(np.max(np.abs(audio))) if frames else 0.0
        if peak < 1e-4:
            raise AudioError(f"fluidsynth rendered silence for {midi_path} with {soundfont.name}")
        if peak > PEAK:  # scale down rather than clip
            audio *= PEAK / peak
        with atomic_file(wav_path, "wb") as fh:
            os.fchmod(fh.fileno(), 0o644)  # mkstemp's 0600 would hide clips from other users
            sf.write(fh, audio, sample_rate, format="WAV", subtype="PCM_16")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
