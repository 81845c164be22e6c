"""Building a small corpus end to end: files, labels, determinism, resuming, errors."""

from __future__ import annotations

import csv
import os
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile as sf

from moodshift.audio.corpus import (
    LABEL_COLUMNS,
    MOODS,
    STYLES,
    build_corpus,
    default_soundfonts,
    instrument_name,
)
from moodshift.audio.corpus.render import APT_FIX
from moodshift.errors import DependencyError, InputError

needs_synth = pytest.mark.skipif(
    shutil.which("fluidsynth") is None or not default_soundfonts(),
    reason=f"fluidsynth binary or GM soundfonts missing (install with `{APT_FIX}`)",
)


def read_rows(labels: Path) -> list[dict[str, str]]:
    with open(labels, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@needs_synth
def test_columns_and_types(small_corpus, small_args):
    rows = read_rows(small_corpus)
    assert len(rows) == small_args["n"]
    header = list(rows[0])
    assert header[: len(LABEL_COLUMNS)] == list(LABEL_COLUMNS)
    assert all(c.startswith("meta_") for c in header[len(LABEL_COLUMNS) :])
    assert len({r["track_id"] for r in rows}) == len(rows)
    for r in rows:
        assert r["mood"] in MOODS
        assert r["genre"] in STYLES
        assert r["artist"].startswith("mel_") and r["group"].startswith("grp_")
        assert r["title"]
        instruments = r["instruments"].split("|")
        assert len(instruments) >= 2 and len(set(instruments)) == len(instruments)
        assert not Path(r["audio_path"]).is_absolute()
        float(r["meta_tempo"])
        float(r["meta_duration"])
        assert r["meta_soundfont"] in ("FluidR3_GM", "TimGM6mb")


@needs_synth
def test_groups_hold_all_moods_of_one_piece(small_corpus, small_args):
    groups = defaultdict(list)
    for r in read_rows(small_corpus):
        groups[r["group"]].append(r)
    assert len(groups) == small_args["n"] // 4
    for rows in groups.values():
        assert sorted(r["mood"] for r in rows) == sorted(MOODS)
        for col in (
            "genre",
            "instruments",
            "artist",
            "meta_soundfont",
            "meta_source",
            "meta_duration",
            "meta_key",
        ):
            assert len({r[col] for r in rows}) == 1, col


@needs_synth
def test_audio_is_complete_and_not_silent(small_corpus):
    root = small_corpus.parent
    for r in read_rows(small_corpus):
        audio, sr = sf.read(root / r["audio_path"])
        assert audio.ndim == 1
        assert len(audio) / sr == pytest.approx(float(r["meta_duration"]), abs=0.01)
        assert float(np.sqrt(np.mean(audio**2))) > 1e-3, r["track_id"]
        assert float(np.max(np.abs(audio))) <= 1.0


@needs_synth
def test_instruments_label_lists_every_instrument_heard(small_corpus):
    root = small_corpus.parent
    for r in read_rows(small_corpus):
        pm = pretty_midi.PrettyMIDI(str(root / r["meta_midi"]))
        heard = {instrument_name(i.program, is_drum=i.is_drum) for i in pm.instruments if i.notes}
        assert heard == set(r["instruments"].split("|"))


@needs_synth
def test_same_seed_same_labels_and_midi(small_corpus, small_args, tmp_path, melody_cache):
    other = build_corpus(tmp_path / "b", cache_dir=melody_cache, **small_args)
    assert read_rows(other) == read_rows(small_corpus)
    for r in read_rows(other):
        a = (small_corpus.parent / r["meta_midi"]).read_bytes()
        b = (other.parent / r["meta_midi"]).read_bytes()
        assert a == b, r["track_id"]


@needs_synth
def test_rerun_skips_finished_clips_only(small_args, tmp_path, melody_cache):
    out = tmp_path / "c"
    labels = build_corpus(out, cache_dir=melody_cache, **small_args)
    audio = sorted((out / "audio").glob("*.wav"))
    truncated, missing = audio[0], audio[1]
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])  # e.g. a copy that was cut short
    missing.unlink()
    leftover = out / "audio" / f".{missing.name}.abcd.render.tmp"  # a killed render
    leftover.write_bytes(b"RIFF")
    mtimes = {p: p.stat().st_mtime_ns for p in audio[2:]}
    os.utime(labels, ns=(0, 0))

    build_corpus(out, cache_dir=melody_cache, **small_args)

    assert {p: p.stat().st_mtime_ns for p in audio[2:]} == mtimes  # untouched
    assert truncated.stat().st_size == len(data)  # re-rendered in full
    assert missing.exists() and not leftover.exists()
    assert labels.stat().st_mtime_ns != 0


def test_missing_soundfont_names_the_fix(tmp_path):
    with pytest.raises(DependencyError, match="apt-get install fluidsynth"):
        build_corpus(tmp_path, n=4, soundfonts=[tmp_path / "missing.sf2"], progress=False)


@needs_synth
def test_bad_arguments(tmp_path):
    not_a_font = tmp_path / "font.txt"
    not_a_font.write_text("x")
    with pytest.raises(InputError):
        build_corpus(tmp_path, n=4, soundfonts=[not_a_font], progress=False)
    with pytest.raises(InputError):
        build_corpus(tmp_path, n=0, progress=False)
    with pytest.raises(InputError):
        build_corpus(tmp_path, n=4, clip_seconds=(5.0, 2.0), progress=False)
    with pytest.raises(InputError):
        build_corpus(tmp_path, n=4, moods_per_group=5, progress=False)
