"""Convert the pretrained MusiCNN weights to safetensors files shipped inside moodshift.

One-off script, run by a maintainer when the shipped weights must be rebuilt;
users never run it. It needs the ``musicnn`` wheel (which holds the original
TensorFlow checkpoints) but not TensorFlow: the checkpoints are read by
:mod:`moodshift.audio.embedders.tf_checkpoint`::

    pip install --no-deps musicnn==0.1.0
    PYTHONPATH=src python scripts/convert_musicnn_weights.py

Writes ``src/moodshift/audio/embedders/weights/{MSD,MTT}_musicnn.safetensors``:
the 50 trained variables of each checkpoint (not the 100 Adam slots), float32,
under their TensorFlow names, with the source and licence in the metadata.
The conversion is exact: the tensors hold the checkpoint's float32 values
unchanged (``tests/audio/embedders/test_embedders_musicnn_reference.py``
checks it when musicnn is installed). It also
writes ``weights/LICENSE-musicnn.md`` (the ISC licence, which requires the
copyright notice to travel with every copy).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

from moodshift._atomic import write_bytes, write_text
from moodshift.audio.embedders.musicnn import (
    WEIGHTS_DIR,
    _checkpoint_names,
    find_musicnn_checkpoint,
)
from moodshift.audio.embedders.tf_checkpoint import read_checkpoint

MODELS = ("MSD_musicnn", "MTT_musicnn")


def _licence_text() -> str:
    import importlib.metadata as md

    dist = md.distribution("musicnn")
    for f in dist.files or []:
        if f.name.upper().startswith("LICENSE"):
            return Path(dist.locate_file(f)).read_text()
    raise SystemExit("the musicnn wheel has no LICENSE file; cannot record the licence")


def convert(*, out_dir: Path) -> list[Path]:
    """Write one safetensors file per model; return their paths."""
    from safetensors.numpy import save

    written = []
    for model in MODELS:
        ckpt = find_musicnn_checkpoint(model)
        names = _checkpoint_names()
        w = read_checkpoint(ckpt, names=names, verify_checksums=True)
        tensors = {n: np.ascontiguousarray(w[n], dtype=np.float32) for n in names}
        data_sha = hashlib.sha256((ckpt / ".data-00000-of-00001").read_bytes()).hexdigest()
        meta = {
            "model": model,
            "source": "musicnn 0.1.0 (PyPI wheel), TensorFlow checkpoint " + model,
            "source_data_sha256": data_sha,
            "licence": "ISC; Copyright (c) Music Technology Group, Universitat Pompeu Fabra "
            "2019, code developed by Jordi Pons. See LICENSE-musicnn.md.",
            "paper": "Pons & Serra, musicnn: pre-trained convolutional neural networks for "
            "music audio tagging, ISMIR 2019 LBD",
        }
        path = out_dir / f"{model}.safetensors"
        write_bytes(path, save(tensors, metadata=meta))
        written.append(path)
    lic = out_dir / "LICENSE-musicnn.md"
    write_text(
        lic,
        "The files `MSD_musicnn.safetensors` and `MTT_musicnn.safetensors` in this folder are\n"
        "the pretrained weights of musicnn 0.1.0 (https://github.com/jordipons/musicnn),\n"
        "converted from its TensorFlow checkpoints without change of values. They are\n"
        "distributed under musicnn's licence, reproduced here:\n\n" + _licence_text(),
    )
    written.append(lic)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args()
    for p in convert(out_dir=args.out_dir):
        print(f"wrote {p} ({p.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
