"""One exception hierarchy for everything moodshift refuses to do.

Every error names the problem and the fix, so that the CLI can print the
message alone (exit code 2) without a traceback.
"""

from __future__ import annotations


class MoodshiftError(Exception):
    """Base class of every error moodshift raises on purpose."""


class InputError(MoodshiftError, ValueError):
    """A file or argument given by the user is malformed or inconsistent."""


class DataError(InputError):
    """The catalogue's contents are invalid (NaN rows, duplicates, tiny classes)."""


class FileFormatError(InputError):
    """A file is unreadable, truncated, of the wrong format or wrongly encoded."""


class DimensionMismatchError(InputError):
    """Two things that must share an embedding dimension do not."""


class EmbedderMismatchError(InputError):
    """Catalogue, model or index were made by different embedders."""


class UnknownLabelError(InputError, KeyError):
    """A mood (or other label value) that the catalogue or model does not know."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class UnknownTrackError(InputError, KeyError):
    """A track id that the catalogue does not hold."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class SweepError(InputError):
    """A strength sweep was asked for with unusable knob values (or an empty curve)."""


class TuneError(InputError):
    """The configuration search cannot run on this catalogue or with this grid."""


class NonFiniteQueryError(InputError):
    """A query vector became NaN or infinity (the model's output overflowed for this seed)."""

    def __init__(self) -> None:
        super().__init__(
            "the transformed query holds NaN or infinity (the model's output overflowed for "
            "this seed); try another seed or a lower strength, or retrain the model."
        )


class StaleArtifactError(MoodshiftError):
    """A saved index or model no longer matches the catalogue it was built from."""


class DependencyError(MoodshiftError, ImportError):
    """An optional dependency or system program needed for this step is missing."""


class AudioError(MoodshiftError):
    """An audio file could not be decoded or is unusable (empty, silent, too long)."""


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (at most 200 characters), for a one-line error."""
    return " ".join(str(exc).split())[:200] or type(exc).__name__
