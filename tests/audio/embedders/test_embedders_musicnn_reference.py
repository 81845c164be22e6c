"""The PyTorch musicnn port against the original TensorFlow musicnn.

``tests/fixtures/musicnn/reference.npz`` was made by
``scripts/make_musicnn_reference.py`` (TensorFlow 2.15.1, librosa 0.11.0,
musicnn 0.1.0) on three synthetic clips (chords 5 s, drums 4 s, chirp 2.5 s),
for MTT_musicnn and MSD_musicnn, every window.

Measured max abs difference, port vs TensorFlow with float32 log-mel (all clips,
both models; x86-64, torch 2.13 CPU):

    penultimate 1.2e-05   tags 1.3e-06   mean_pool 2.4e-05   max_pool 2.1e-04
    (max_pool values reach 138: relative 2.9e-06)

Tolerance asserted: ``|port - tf| <= 1e-4 + 1e-5 * max|tf|`` per output and clip.

Against the untouched original ``extractor()``, whose log-mel is rounded to
float16, differences are larger (penultimate 1.3e-04, tags 1.6e-05,
max_pool 9.4e-03): that is musicnn's own float16 rounding, which the port
deliberately does not reproduce; checked with a looser tolerance.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from moodshift.audio.embedders.musicnn import (
    MSD_LABELS,
    MTT_LABELS,
    MusicnnEmbedder,
    _checkpoint_names,
    find_musicnn_checkpoint,
    find_musicnn_weights,
    log_mel,
)
from moodshift.audio.embedders.tf_checkpoint import (
    _snappy_decompress,
    list_variables,
    read_checkpoint,
)
from moodshift.errors import FileFormatError, InputError

# The original TF checkpoints (only for the conversion and checkpoint-reader
# tests; the embedder itself runs on the weights shipped inside moodshift).
needs_musicnn_wheel = pytest.mark.skipif(
    importlib.util.find_spec("musicnn") is None,
    reason="needs the original checkpoints: pip install --no-deps musicnn==0.1.0",
)

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "musicnn" / "reference.npz"
MODELS = ("MTT_musicnn", "MSD_musicnn")
OUTPUTS = ("penultimate", "max_pool", "mean_pool", "tags")
ATOL, RTOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def meta(ref: dict[str, np.ndarray]) -> dict:
    return json.loads(ref["meta_json"].tobytes().decode())


def _clip(ref: dict[str, np.ndarray], name: str) -> np.ndarray:
    return ref[f"audio_{name}"].astype(np.float32) / 32768.0


def _ref_patches(ref: dict[str, np.ndarray], name: str) -> np.ndarray:
    # The reference uses musicnn's own window hop (124 frames), not ours (125).
    y = _clip(ref, name)
    y = np.pad(y, (0, max(0, 48000 - len(y))))
    spec = log_mel(y)
    return np.stack([spec[s : s + 187] for s in ref[f"starts_{name}"]])


@pytest.mark.parametrize("model", MODELS)
def test_port_matches_tensorflow(ref: dict, meta: dict, model: str) -> None:
    emb = MusicnnEmbedder(model=model)
    worst = {}
    for clip in meta["clips"]:
        out = emb.forward_patches(_ref_patches(ref, clip))
        for key in OUTPUTS:
            expected = ref[f"{model}_{clip}_{key}"]
            assert out[key].shape == expected.shape, (clip, key)
            diff = float(np.abs(out[key] - expected).max())
            tol = ATOL + RTOL * float(np.abs(expected).max())
            assert diff <= tol, f"{model} {clip} {key}: max abs diff {diff:.2e} > {tol:.2e}"
            worst[key] = max(worst.get(key, 0.0), diff)
            # vs the untouched float16-log-mel original: only musicnn's rounding differs
            f16 = ref[f"{model}_{clip}_f16_{key}"]
            loose = 2e-3 + 2e-4 * float(np.abs(f16).max())
            assert float(np.abs(out[key] - f16).max()) <= loose, (clip, key)
    assert worst["tags"] < 1e-4 and worst["penultimate"] < 1e-4


def test_whole_track_embedding_matches_reference(ref: dict) -> None:
    """embed() pads a 2.5 s clip to one 3 s window, exactly as the reference did."""
    emb = MusicnnEmbedder(model="MSD_musicnn", output="tags")
    got = emb.embed(_clip(ref, "chirp"), 16000)
    expected = ref["MSD_musicnn_chirp_tags"][0]
    assert got.shape == (50,) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # first window of a longer clip (window starts coincide at 0)
    win = emb.embed_windows(_clip(ref, "chords"), 16000)
    np.testing.assert_allclose(win["penultimate"][0], ref["MSD_musicnn_chords_penultimate"][0],
                               atol=1e-4)  # fmt: skip


def test_resampled_input_close_to_native(ref: dict) -> None:
    import librosa

    emb = MusicnnEmbedder(model="MSD_musicnn", output="tags")
    y16 = _clip(ref, "chords")
    y44 = librosa.resample(y16, orig_sr=16000, target_sr=44100, res_type="soxr_hq")
    # measured 1.6e-4: soxr resampling 16 -> 44.1 -> 16 kHz is nearly transparent
    np.testing.assert_allclose(emb.embed(y44, 44100), emb.embed(y16, 16000), atol=2e-3)


@needs_musicnn_wheel
def test_tag_names_match_musicnn() -> None:
    import musicnn.configuration as cfg  # plain constants, no TensorFlow import

    assert list(MTT_LABELS) == cfg.MTT_LABELS
    assert list(MSD_LABELS) == cfg.MSD_LABELS


def test_tag_names_and_dims() -> None:
    assert len(MTT_LABELS) == len(MSD_LABELS) == 50
    assert MSD_LABELS[-1] == "happy" and MSD_LABELS[-3] == "sad"
    for output, dim in {"penultimate": 200, "max_pool": 753, "mean_pool": 753, "tags": 50}.items():
        assert MusicnnEmbedder(output=output).dim == dim
    assert MusicnnEmbedder(model="mtt").tag_names[0] == "guitar"
    with pytest.raises(InputError, match="penultimate"):
        MusicnnEmbedder(output="logits")
    with pytest.raises(InputError, match="MSD_musicnn"):
        MusicnnEmbedder(model="MSD_vgg")


# ----------------------------------------------------------------- shipped weights
@pytest.mark.parametrize("model", MODELS)
def test_shipped_weights_are_complete_and_licensed(model: str) -> None:
    from safetensors import safe_open

    path = find_musicnn_weights(model)
    with safe_open(str(path), framework="numpy") as f:
        assert sorted(f.keys()) == sorted(_checkpoint_names())
        meta = f.metadata()
    assert meta["model"] == model and "ISC" in meta["licence"]
    licence = (path.parent / "LICENSE-musicnn.md").read_text()
    assert "Universitat Pompeu Fabra" in licence and "Permission to use, copy" in licence


@needs_musicnn_wheel
@pytest.mark.parametrize("model", MODELS)
def test_shipped_weights_equal_the_checkpoint(model: str) -> None:
    from safetensors.numpy import load_file

    shipped = load_file(str(find_musicnn_weights(model)))
    original = read_checkpoint(find_musicnn_checkpoint(model), names=_checkpoint_names())
    for name, value in original.items():
        assert shipped[name].dtype == np.float32
        np.testing.assert_array_equal(shipped[name], value, err_msg=name)


def test_broken_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "MSD_musicnn.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(FileFormatError, match="cannot read musicnn weights"):
        MusicnnEmbedder(checkpoint_dir=bad).net  # noqa: B018 (loading is the test)


# ----------------------------------------------------------------- checkpoint reader
@needs_musicnn_wheel
def test_checkpoint_reader_lists_and_verifies() -> None:
    ckpt = find_musicnn_checkpoint("MSD_musicnn")
    entries = list_variables(ckpt)
    assert len(entries) == 150  # 50 weights + 100 Adam slots
    assert entries["conv2d/kernel"].shape == (7, 38, 1, 204)
    assert entries["dense/kernel"].shape == (1506, 200)
    w = read_checkpoint(ckpt, names=["dense/kernel", "dense_1/bias"], verify_checksums=True)
    assert w["dense/kernel"].dtype == np.float32 and w["dense_1/bias"].shape == (50,)
    with pytest.raises(FileFormatError, match="lacks variables"):
        read_checkpoint(ckpt, names=["nope/kernel"])


@needs_musicnn_wheel
def test_checkpoint_reader_detects_corruption(tmp_path: Path) -> None:
    src = find_musicnn_checkpoint("MTT_musicnn")
    dst = tmp_path / "ckpt"
    shutil.copytree(src, dst)
    data = bytearray((dst / ".index").read_bytes())
    data[100] ^= 0xFF
    (dst / ".index").write_bytes(bytes(data))
    with pytest.raises(FileFormatError, match="checksum"):
        list_variables(dst)
    (dst / ".index").write_bytes(b"not a table at all" * 4)
    with pytest.raises(FileFormatError, match="magic"):
        list_variables(dst)
    with pytest.raises(FileFormatError, match="does not exist"):
        list_variables(tmp_path / "missing")


def test_snappy_decoder() -> None:
    # literal "abc" then a 9-byte overlapping copy at offset 3
    assert _snappy_decompress(b"\x0c\x08abc\x15\x03") == b"abc" * 4
    with pytest.raises(FileFormatError):
        _snappy_decompress(b"\x0c\x08abc\x15\x09")  # offset beyond output
