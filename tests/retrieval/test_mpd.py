"""A mood journey queued into a real MPD, started by the test on its own folder and port."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from moodshift.cli import main
from moodshift.errors import InputError
from moodshift.retrieval.mpd import parse_address, queue_in_mpd

MPD = shutil.which("mpd") or ("/usr/bin/mpd" if Path("/usr/bin/mpd").is_file() else None)
pytestmark = [
    pytest.mark.skipif(MPD is None, reason="needs MPD: apt-get install mpd (scripts/setup.sh)"),
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg to encode files"),
]
SR = 22050


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _encode(dst: Path, seed: int) -> None:
    """A few seconds of a chord with a tremolo, encoded by ffmpeg as the suffix says."""
    rng = np.random.default_rng(seed)
    t = np.arange(3 * SR) / SR
    base = 110.0 * 2 ** (seed / 7)
    y = sum(np.sin(2 * np.pi * base * r * t) for r in (1.0, 1.25, 1.5)) / 3
    y = 0.3 * y * (1 + 0.5 * np.sin(2 * np.pi * (1 + seed % 4) * t))
    y = y + 0.01 * rng.standard_normal(t.size)
    dst.parent.mkdir(parents=True, exist_ok=True)
    wav = dst.with_suffix(".src.wav")
    sf.write(wav, y.astype(np.float32), SR)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), str(dst)], check=True)
    wav.unlink()


@pytest.fixture(scope="module")
def mpd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """MPD on 127.0.0.1:<free port>, music in a temporary folder, no audio output."""
    from mpd import MPDClient

    home = tmp_path_factory.mktemp("mpd")
    music = home / "music"
    names = ["Library/Ann/01 Dawn.ogg", "Library/Ann/02 Noon.flac", "Library/Bo/03 Dusk.mp3",
             "Library/Bo/04 Night.ogg", "Library/Cy/05 Rain.flac", "Library/Cy/06 Sun.mp3",
             "Library/Dee/07 Wind.ogg", "Library/Dee/08 Snow.flac"]  # fmt: skip
    for i, rel in enumerate(names):
        _encode(music / rel, i + 1)
    port = _free_port()
    conf = home / "mpd.conf"
    conf.write_text(
        f'music_directory "{music}"\n'
        f'db_file "{home / "database"}"\n'
        f'log_file "{home / "log"}"\n'
        'bind_to_address "127.0.0.1"\n'
        f'bind_to_address "{home / "socket"}"\n'
        f'port "{port}"\n'
        'audio_output {\n  type "null"\n  name "silence"\n}\n'
    )
    proc = subprocess.Popen([MPD, "--no-daemon", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    client = MPDClient()
    deadline = time.monotonic() + 30
    while True:
        try:
            client.connect("127.0.0.1", port)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (home / "log").read_text() if (home / "log").is_file() else ""
                pytest.fail(f"mpd did not start: {log[-500:]}")
            time.sleep(0.1)
    client.update()
    while "updating_db" in client.status():
        time.sleep(0.05)
    assert len(client.listall()) >= len(names)
    client.close()
    client.disconnect()
    try:
        yield port, music
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _queue(port: int) -> list[str]:
    from mpd import MPDClient

    c = MPDClient()
    c.connect("127.0.0.1", port)
    try:
        return [s["file"] for s in c.playlistinfo()]
    finally:
        c.close()
        c.disconnect()


def _clear(port: int) -> None:
    from mpd import MPDClient

    c = MPDClient()
    c.connect("127.0.0.1", port)
    c.clear()
    c.close()
    c.disconnect()


def test_a_journey_is_queued_in_order(mpd_server: tuple[int, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    from moodshift.audio.library import embed_library
    from moodshift.synthetic import make_catalog
    from moodshift.training.train import TrainConfig, train

    port, music = mpd_server
    _clear(port)
    lib = tmp_path / "lib"
    cat, _ = embed_library(audio_dir=music / "Library", out=lib, embedder="features",
                           cache_dir=tmp_path / "cache", progress=False)  # fmt: skip
    synth = make_catalog(n=200, dim=cat.dim, seed=1, groups=True)
    synth.provenance = dict(cat.provenance)
    train(synth, config=TrainConfig(epochs=1, k=10, seed=0), progress=False).save(tmp_path / "m")
    seed = "Ann/01 Dawn.ogg"
    args = ["playlist", "--catalog", str(lib), "--model", str(tmp_path / "m"), "--track", seed,
            "--to", "happy", "--length", "5", "--max-per-artist", "0", "--json"]  # fmt: skip
    # Over TCP MPD does not tell its music folder: the "Library/" prefix is found by search.
    assert main([*args, "--mpd", f"127.0.0.1:{port}"]) == 0
    out = capsys.readouterr()
    journey = [t["audio_path"] for t in json.loads(out.out)["tracks"]]
    assert len(journey) >= 2 and f"queued {len(journey)} tracks in MPD at 127.0.0.1" in out.err
    expected = [Path(p).resolve().relative_to(music.resolve()).as_posix() for p in journey]
    assert _queue(port) == expected  # in the journey's order
    # A second journey is appended after the first; the music folder can also be given.
    assert main([*args, "--mpd", f"127.0.0.1:{port}", "--mpd-music-dir", str(music)]) == 0
    assert _queue(port) == expected * 2

    # MPD not running there: one clear line, exit 2.
    assert main([*args, "--mpd", f"127.0.0.1:{_free_port()}"]) == 2
    assert "cannot reach MPD at 127.0.0.1" in capsys.readouterr().err


def test_a_track_missing_from_mpd_is_a_clear_error(mpd_server: tuple[int, Path]) -> None:
    port, music = mpd_server
    _clear(port)
    root = music / "Library"
    late = root / "Dee" / "09 Added late.ogg"  # on disk, but MPD's database was not updated
    shutil.copy(root / "Dee/07 Wind.ogg", late)
    tracks = [{"track_id": "a", "audio_path": str(root / "Ann/01 Dawn.ogg")},
              {"track_id": "b", "audio_path": str(late)}]  # fmt: skip
    try:
        with pytest.raises(InputError, match=r"1 of 2 tracks are not in MPD's database.*update"):
            queue_in_mpd(address=f"127.0.0.1:{port}", tracks=tracks, audio_root=root)
        assert _queue(port) == []  # nothing queued
        with pytest.raises(InputError, match="no audio file under"):
            queue_in_mpd(address=f"127.0.0.1:{port}", audio_root=root,
                         tracks=[{"track_id": "x", "audio_path": "/etc/passwd"}])  # fmt: skip
        with pytest.raises(InputError, match="not inside MPD's music directory"):
            queue_in_mpd(address=f"127.0.0.1:{port}", tracks=tracks[:1], audio_root=root,
                         music_dir=root / "Ann")  # fmt: skip
    finally:
        late.unlink()


def test_through_the_local_socket_mpd_names_its_music_folder(mpd_server: tuple[int, Path]) -> None:
    port, music = mpd_server
    _clear(port)
    root = music / "Library"
    tracks = [
        {"track_id": r, "audio_path": str(root / r)} for r in ("Cy/05 Rain.flac", "Bo/03 Dusk.mp3")
    ]
    uris = queue_in_mpd(address=str(music.parent / "socket"), tracks=tracks, audio_root=root,
                        clear=True)  # fmt: skip
    assert uris == ["Library/Cy/05 Rain.flac", "Library/Bo/03 Dusk.mp3"] == _queue(port)


def test_addresses() -> None:
    assert parse_address("localhost:6601") == ("localhost", 6601)
    assert parse_address("media.lan") == ("media.lan", 6600)
    assert parse_address("[::1]:6602") == ("::1", 6602)
    assert parse_address("/run/mpd/socket") == ("/run/mpd/socket", None)
    with pytest.raises(InputError, match="port"):
        parse_address("host:http")
