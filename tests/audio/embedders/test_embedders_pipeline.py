"""embed_files: bad files are reported not fatal, caching, standardisation, processes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from moodshift.audio.embedders import (
    Embedder,
    Standardizer,
    embed_files,
    load_audio,
    register_embedder,
)
from moodshift.errors import AudioError, InputError


class RmsEmbedder(Embedder):
    """Cheap, picklable, counts its calls (per process)."""

    name = "test-rms"
    version = "1"
    dim = 2
    sample_rate = 16000
    calls = 0

    def embed(self, audio: np.ndarray, sr: int) -> np.ndarray:
        type(self).calls += 1
        return np.array([np.sqrt(np.mean(audio**2)), len(audio) / sr], dtype=np.float32)


class CrashingEmbedder(RmsEmbedder):
    """Kills its (worker) process on a 0.5 s file, like a segfaulting decoder would."""

    name = "test-crashing"

    def embed(self, audio: np.ndarray, sr: int) -> np.ndarray:
        if len(audio) == sr // 2:
            os._exit(3)
        return super().embed(audio, sr)


class FailingEmbedder(RmsEmbedder):
    name = "test-failing"

    def embed(self, audio: np.ndarray, sr: int) -> np.ndarray:
        if len(audio) / sr > 1.5:
            raise RuntimeError("boom")
        return super().embed(audio, sr)


@pytest.fixture
def files(write_wav, make_noise, tmp_path: Path) -> dict[str, Path]:
    f = {
        "good1": write_wav("good1.wav", make_noise(1.0, seed=1)),
        "good2": write_wav("good2.flac", make_noise(2.0, seed=2)),
        "stereo": write_wav("stereo.wav", np.stack([make_noise(1.0, seed=4)] * 2, axis=1)),
        "silent": write_wav("silent.wav", np.zeros(16000, np.float32)),
        "long": write_wav("long.wav", make_noise(3.0, seed=5)),
    }
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x10\x00\x00WAVEfmt garbage" * 10)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not audio")
    f["corrupt"] = tmp_path / "corrupt.wav"
    f["empty"] = tmp_path / "empty.wav"
    f["unsupported"] = tmp_path / "notes.txt"
    f["missing"] = tmp_path / "missing.wav"
    return f


def test_bad_files_reported_and_others_embedded(files: dict[str, Path]) -> None:
    order = ["good1", "corrupt", "empty", "silent", "unsupported", "long", "good2", "missing",
             "stereo"]  # fmt: skip
    RmsEmbedder.calls = 0
    run = embed_files([files[k] for k in order], embedder=RmsEmbedder(), max_duration_s=2.5,
                      progress=False)  # fmt: skip
    assert run.ok_indices.tolist() == [0, 6, 8]
    assert run.embeddings.shape == (3, 2) and run.embeddings.dtype == np.float32
    np.testing.assert_allclose(run.embeddings[:, 1], [1.0, 2.0, 1.0])
    reasons = dict(run.failures)
    assert len(reasons) == 6 and RmsEmbedder.calls == 3
    assert "cannot decode" in reasons[str(files["corrupt"])]
    assert "empty file" in reasons[str(files["empty"])]
    assert "silent" in reasons[str(files["silent"])]
    assert "unsupported file type '.txt'" in reasons[str(files["unsupported"])]
    assert "too long: 3.0 s" in reasons[str(files["long"])]
    assert "not found" in reasons[str(files["missing"])]
    assert run.provenance == RmsEmbedder().provenance()
    assert run.summary() == "3/9 files embedded (0 from cache), 6 skipped"


def test_embedder_exception_is_a_failure_not_a_crash(files: dict[str, Path]) -> None:
    run = embed_files([files["good2"], files["good1"]], embedder=FailingEmbedder(),
                      progress=False)  # fmt: skip
    assert run.ok_indices.tolist() == [1]
    assert run.failures == [(str(files["good2"]), "embedder error: RuntimeError: boom")]


def test_cache_hit_skips_embedder(files: dict[str, Path], tmp_path: Path, write_wav,
                                  make_noise) -> None:  # fmt: skip
    cache = tmp_path / "cache"
    paths = [files["good1"], files["good2"], files["corrupt"]]
    RmsEmbedder.calls = 0
    first = embed_files(paths, embedder=RmsEmbedder(), cache_dir=cache, progress=False)
    assert RmsEmbedder.calls == 2 and first.n_cached == 0
    second = embed_files(paths, embedder=RmsEmbedder(), cache_dir=cache, progress=False)
    assert RmsEmbedder.calls == 2 and second.n_cached == 2
    np.testing.assert_array_equal(first.embeddings, second.embeddings)
    assert len(second.failures) == 1
    # keyed by content: a renamed copy hits, a changed file misses
    copy = tmp_path / "renamed.wav"
    copy.write_bytes(files["good1"].read_bytes())
    changed = write_wav("good1.wav", make_noise(1.0, seed=99))
    third = embed_files([copy, changed], embedder=RmsEmbedder(), cache_dir=cache, progress=False)
    assert third.n_cached == 1 and RmsEmbedder.calls == 3
    # one folder per embedder provenance: another version does not see these entries
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 1
    assert (next(cache.iterdir()) / "provenance.json").is_file()

    class RmsV2(RmsEmbedder):
        version = "2"

    fourth = embed_files(paths[:1], embedder=RmsV2(), cache_dir=cache, progress=False)
    assert fourth.n_cached == 0 and len([p for p in cache.iterdir() if p.is_dir()]) == 2


def test_registered_custom_embedder_by_name(files: dict[str, Path]) -> None:
    register_embedder("test-rms", RmsEmbedder, overwrite=True)
    run = embed_files([files["good1"]], embedder="test-rms", progress=False)
    assert run.provenance["name"] == "test-rms" and run.embeddings.shape == (1, 2)
    with pytest.raises(InputError, match="unknown embedder"):
        embed_files([files["good1"]], embedder="no-such-embedder", progress=False)
    with pytest.raises(InputError, match="list"):
        embed_files(str(files["good1"]), embedder="test-rms", progress=False)


def test_empty_input_and_all_failed(files: dict[str, Path]) -> None:
    run = embed_files([], embedder=RmsEmbedder(), progress=False)
    assert run.embeddings.shape == (0, 2) and run.ok_indices.shape == (0,)
    run = embed_files([files["empty"]], embedder=RmsEmbedder(), progress=False)
    assert run.embeddings.shape == (0, 2) and len(run.failures) == 1


@pytest.mark.slow
def test_worker_processes_match_in_process_and_survive_crashes(
    files: dict[str, Path], write_wav, make_noise
) -> None:
    crash = write_wav("crash.wav", make_noise(0.5, seed=7))
    paths = [files["good1"], files["corrupt"], files["good2"], files["stereo"], crash]
    serial = embed_files(paths[:-1], embedder=RmsEmbedder(), progress=False)
    parallel = embed_files(paths, embedder=CrashingEmbedder(), workers=2, progress=False)
    assert parallel.ok_indices.tolist() == serial.ok_indices.tolist() == [0, 2, 3]
    np.testing.assert_array_equal(parallel.embeddings, serial.embeddings)
    assert parallel.failures[0] == serial.failures[0]
    assert parallel.failures[1][0] == str(crash)
    assert "worker process crashed" in parallel.failures[1][1]


def test_features_are_standardised_per_catalogue(files: dict[str, Path], write_wav,
                                                 make_chords) -> None:  # fmt: skip
    paths = [files["good1"], files["good2"], files["stereo"],
             write_wav("chords.wav", make_chords([[0, 4, 7], [5, 9, 12]]), sr=22050)]  # fmt: skip
    run = embed_files(paths, embedder="features", progress=False)
    assert run.embeddings.shape == (4, 72)
    assert np.isfinite(run.embeddings).all()
    np.testing.assert_allclose(run.embeddings.mean(axis=0), 0.0, atol=1e-4)
    std = Standardizer.from_provenance(run.provenance)
    raw = embed_files(paths[:1], embedder="features", progress=False, standardize=False)
    assert raw.provenance["standardizer"] is None
    np.testing.assert_allclose(std.apply(raw.embeddings), run.embeddings[:1], atol=1e-4)
    query = embed_files(paths[:1], embedder="features", progress=False, standardizer=std)
    np.testing.assert_allclose(query.embeddings, run.embeddings[:1], atol=1e-4)


def test_load_audio_errors(files: dict[str, Path]) -> None:
    y, sr = load_audio(files["stereo"])
    assert y.ndim == 1 and y.dtype == np.float32 and sr == 16000
    with pytest.raises(AudioError, match="silent"):
        load_audio(files["silent"])
    with pytest.raises(AudioError, match="too long"):
        load_audio(files["long"], max_duration_s=1.0)


class WarmingEmbedder(RmsEmbedder):
    """Records which process warmed it up (a file per call: the workers are other processes)."""

    name = "test-warming"

    def __init__(self, marks: Path) -> None:
        self.marks = marks

    def warm_up(self) -> None:
        (self.marks / f"warm-{os.getpid()}-{len(list(self.marks.iterdir()))}").touch()


@pytest.mark.slow
def test_the_parent_warms_the_embedder_once_before_workers_start(
    files: dict[str, Path], tmp_path: Path
) -> None:
    """Workers must find numba's cache written, not race to write it (a corrupt entry
    segfaulted every later librosa process)."""
    marks = tmp_path / "marks"
    marks.mkdir()
    run = embed_files([files["good1"], files["good2"]], embedder=WarmingEmbedder(marks),
                      workers=2, progress=False)  # fmt: skip
    assert run.ok_indices.tolist() == [0, 1]
    assert [p.name for p in marks.iterdir()] == [f"warm-{os.getpid()}-0"]
