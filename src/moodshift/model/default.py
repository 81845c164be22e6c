"""The model that ships with moodshift, used when no ``--model`` is given.

It lives in the package (``moodshift/model/default/``, a normal model folder
with ``TRAINED_ON.json`` saying what it was trained on) and is rebuilt
reproducibly by ``scripts/make_default_model.py``: the widened built-in corpus
(every genre, both GM soundfonts, the ``wide`` arranger, audio augmentation),
embedded with musicnn (MSD, penultimate), trained for transfer, with its
evidence fusion (tagger, musicnn's tag head, the catalogue's own labels).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moodshift.errors import DependencyError, EmbedderMismatchError
from moodshift.model.network import MoodshiftModel

#: Folder of the shipped model (package data).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default"
#: What the default model was trained on (written by scripts/make_default_model.py).
TRAINED_ON = "TRAINED_ON.json"


def default_model_dir() -> Path:
    """The shipped model's folder.

    Raises
    ------
    DependencyError
        When the folder is missing (a partial install, or a checkout where
        ``scripts/make_default_model.py`` has not been run).
    """
    if not (DEFAULT_MODEL_DIR / "model.safetensors").is_file():
        raise DependencyError(
            f"the default model is missing from {DEFAULT_MODEL_DIR}; reinstall moodshift, "
            "build it with `python scripts/make_default_model.py`, or give --model"
        )
    return DEFAULT_MODEL_DIR


def trained_on(folder: Path | None = None) -> dict[str, Any]:
    """The default model's ``TRAINED_ON.json`` (empty when absent)."""
    path = (folder or DEFAULT_MODEL_DIR) / TRAINED_ON
    return json.loads(path.read_text()) if path.is_file() else {}


def check_default_fits(catalog: Any, model: Any) -> None:
    """Refuse a catalogue whose embedder is not the default model's, naming the fix.

    Raises
    ------
    EmbedderMismatchError
    """
    mine = model.embedder.get("name")
    theirs = catalog.provenance.get("name")
    if mine and theirs and theirs != mine:
        raise EmbedderMismatchError(
            f"the catalogue was embedded with {theirs} but the default model needs {mine}; "
            f"re-embed it with `moodshift embed --embedder musicnn` or give --model trained "
            f"on {theirs} embeddings"
        )


def describe_default(folder: Path | None = None) -> str:
    """One line naming the default model and what it was trained on (said when it serves)."""
    folder = folder or default_model_dir()
    what = trained_on(folder).get("summary", "")
    return f"the default model {folder}" + (f" ({what})" if what else "")


def load_default_model(*, catalog: Any | None = None) -> MoodshiftModel:
    """The shipped model, checked against ``catalog``'s embedder when one is given.

    Raises
    ------
    DependencyError
        When the shipped folder is missing (:func:`default_model_dir`).
    EmbedderMismatchError
        When ``catalog`` was embedded otherwise (the message names the fix).
    """
    model = MoodshiftModel.load(default_model_dir())
    if catalog is not None:
        check_default_fits(catalog, model)
    return model
