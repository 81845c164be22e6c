"""MusiCNN (Pons & Serra, 2019) in PyTorch, with the published weights shipped in the package.

The network is a line-by-line port of ``musicnn/models.py::build_musicnn``
(musicnn 0.1.0). Its pretrained weights (ISC licence, which allows
redistribution with the copyright notice: ``weights/LICENSE-musicnn.md``) ship
inside moodshift as ``weights/{MSD,MTT}_musicnn.safetensors`` (3.2 MB each),
converted once from the TensorFlow checkpoints of the ``musicnn`` wheel by
``scripts/convert_musicnn_weights.py`` with
:mod:`moodshift.audio.embedders.tf_checkpoint`; TensorFlow is never imported.
A musicnn checkpoint folder can still be given as ``checkpoint_dir``.

Architecture, for a batch of log-mel patches ``x`` of shape (B, 187, 96)::

    front-end  batch norm over the whole input (one channel), then
               timbral: conv (7 x 38) and (7 x 67) over time x mel, 204 filters each,
               temporal: conv (128|64|32 x 1), 51 filters each, TF 'same' padding;
               each: ReLU -> batch norm -> max over the mel axis  -> 561 channels x 187
    mid-end    three 1-D convs (k=7, 64 filters, ReLU -> BN), the last two residual;
               dense connection: concat(front, c1, c2, c3)        -> 753 channels x 187
    back-end   max and mean over time (interleaved per channel, as TF's concat +
               flatten does) -> BN -> dense 200 + ReLU -> BN = "penultimate"
               -> dense 50 -> sigmoid = tag scores

Batch norms are in inference mode (moving statistics, epsilon 1e-3: the TF
``layers.batch_normalization`` default). Max abs difference against the
original TensorFlow code on the reference clips: see
``tests/embedders/test_musicnn_reference.py``.

Preprocessing follows ``musicnn.extractor.batch_data``: 16 kHz, STFT with
n_fft 512 / hop 256 (librosa, centred), 96 Slaney mel bands of the power
spectrum, ``log10(10000 x + 1)``. musicnn casts the mel spectrogram to float16
before the log, which rounds it (~1e-3 relative) and overflows to ``inf`` on
very loud input; we stay in float32 throughout.

Whole tracks: 3 s patches (187 frames) every 2 s (125 frames), plus one
end-aligned patch when at least 1 s would otherwise be left out
(:func:`~moodshift.audio.embedders.base.window_starts`); tracks under 3 s are
zero-padded to 3 s. Outputs are averaged over the patches (as MULE does).
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file

from moodshift.audio.embedders.base import Embedder, resample, to_mono_float32, window_starts
from moodshift.audio.embedders.tf_checkpoint import read_checkpoint
from moodshift.errors import DependencyError, FileFormatError, InputError

__all__ = [
    "MODELS",
    "MSD_LABELS",
    "MTT_LABELS",
    "OUTPUT_DIMS",
    "MusicnnEmbedder",
    "MusicnnNet",
    "find_musicnn_checkpoint",
    "find_musicnn_weights",
    "log_mel",
]

SR = 16000
N_FFT = 512
HOP = 256
N_MELS = 96
PATCH_FRAMES = 187  # librosa.time_to_frames(3 s) + 1, as musicnn computes it
PATCH_HOP_S = 2.0
PATCH_S = 3.0
BN_EPS = 1e-3  # tf.compat.v1.layers.batch_normalization default

# copied from musicnn/configuration.py (musicnn 0.1.0) so the tag names need no import
MTT_LABELS: tuple[str, ...] = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock",
    "fast", "piano", "ambient", "beat", "violin", "vocal", "synth", "female", "indian",
    "opera", "male", "singing", "vocals", "no vocals", "harpsichord", "loud", "quiet",
    "flute", "woman", "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man",
    "classic", "choir", "voice", "new age", "dance", "male voice", "female vocal", "beats",
    "harp", "cello", "no voice", "weird", "country", "metal", "female voice", "choral",
)  # fmt: skip
MSD_LABELS: tuple[str, ...] = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
    "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists",
    "classic rock", "soul", "indie rock", "Mellow", "electronica", "80s", "folk", "90s",
    "chill", "instrumental", "punk", "oldies", "blues", "hard rock", "ambient", "acoustic",
    "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country",
    "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock",
    "60s", "rnb", "indie pop", "sad", "House", "happy",
)  # fmt: skip

MODELS: dict[str, tuple[str, ...]] = {"MSD_musicnn": MSD_LABELS, "MTT_musicnn": MTT_LABELS}
OUTPUT_DIMS: dict[str, int] = {"penultimate": 200, "max_pool": 753, "mean_pool": 753, "tags": 50}
Output = Literal["penultimate", "max_pool", "mean_pool", "tags"]

_MODEL_ALIASES = {
    "msd": "MSD_musicnn", "mtt": "MTT_musicnn",
    "msd_musicnn": "MSD_musicnn", "mtt_musicnn": "MTT_musicnn",
}  # fmt: skip


def _canonical_model(model: str) -> str:
    key = _MODEL_ALIASES.get(model.lower()) if isinstance(model, str) else None
    if key is None:
        raise InputError(
            f"unknown musicnn model {model!r}; choose 'MSD_musicnn' or 'MTT_musicnn' "
            "(the VGG and MSD_musicnn_big models are not supported)"
        )
    return key


# --------------------------------------------------------------------------- weights
#: Folder of the shipped safetensors weights (package data).
WEIGHTS_DIR = Path(str(resources.files("moodshift.audio.embedders") / "weights"))


def find_musicnn_weights(model: str = "MSD_musicnn") -> Path:
    """The safetensors weights of a musicnn model shipped inside moodshift.

    Parameters
    ----------
    model : {"MSD_musicnn", "MTT_musicnn"}

    Returns
    -------
    Path
        ``<package>/audio/embedders/weights/<model>.safetensors``.

    Raises
    ------
    DependencyError
        The file is missing (a broken or partial install).
    """
    model = _canonical_model(model)
    path = WEIGHTS_DIR / f"{model}.safetensors"
    if not path.is_file():
        raise DependencyError(
            f"the shipped musicnn weights {path} are missing: the moodshift install is "
            "incomplete; reinstall it (`pip install --force-reinstall moodshift`)"
        )
    return path


def find_musicnn_checkpoint(model: str = "MSD_musicnn") -> Path:
    """Directory of a checkpoint inside the installed ``musicnn`` package.

    The package is located without importing it (its modules import TensorFlow).

    Parameters
    ----------
    model : {"MSD_musicnn", "MTT_musicnn"}

    Returns
    -------
    Path
        Directory holding ``.index`` and ``.data-00000-of-00001``.

    Raises
    ------
    DependencyError
        The musicnn package (which ships the weights) is not installed.
    """
    model = _canonical_model(model)
    spec = importlib.util.find_spec("musicnn")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        d = Path(loc) / model
        if (d / ".index").is_file():
            return d
    raise DependencyError(
        f"the musicnn weights ({model}) are not installed; run "
        "`pip install --no-deps musicnn==0.1.0` (--no-deps: its TensorFlow and old-numpy "
        "requirements are not needed), or pass checkpoint_dir="
    )


def _bn(weights: Mapping[str, np.ndarray], layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    # Fold inference-mode batch norm into one scale and shift.
    gamma = weights[f"{layer}/gamma"].astype(np.float64)
    beta = weights[f"{layer}/beta"].astype(np.float64)
    mean = weights[f"{layer}/moving_mean"].astype(np.float64)
    var = weights[f"{layer}/moving_variance"].astype(np.float64)
    scale = gamma / np.sqrt(var + BN_EPS)
    shift = beta - mean * scale
    return (
        torch.from_numpy(scale.astype(np.float32)),
        torch.from_numpy(shift.astype(np.float32)),
    )


def _checkpoint_names() -> list[str]:
    names = []
    for i in range(11):
        layer = "batch_normalization" + (f"_{i}" if i else "")
        names += [f"{layer}/{p}" for p in ("gamma", "beta", "moving_mean", "moving_variance")]
    for i in range(8):
        layer = "conv2d" + (f"_{i}" if i else "")
        names += [f"{layer}/kernel", f"{layer}/bias"]
    names += ["dense/kernel", "dense/bias", "dense_1/kernel", "dense_1/bias"]
    return names


class MusicnnNet(torch.nn.Module):
    """The musicnn network (``build_musicnn`` with 64 mid-end filters, 200 back-end units).

    Variables are created in TF in this order, which fixes their checkpoint names:
    ``batch_normalization`` (input), ``conv2d``/``_1`` (timbral 7x38, 7x67) with
    ``batch_normalization_1``/``_2``, ``conv2d_2..4`` (temporal 128/64/32) with
    ``batch_normalization_3..5``, ``conv2d_5..7`` (mid-end) with
    ``batch_normalization_6..8``, ``batch_normalization_9`` (pooled), ``dense``,
    ``batch_normalization_10``, ``dense_1``.
    """

    def __init__(self, weights: Mapping[str, np.ndarray]) -> None:
        super().__init__()
        try:
            self._load(weights)
        except KeyError as exc:
            raise FileFormatError(
                f"checkpoint lacks musicnn variable {exc}; is it a musicnn (not VGG) model?"
            ) from exc

    def _load(self, w: Mapping[str, np.ndarray]) -> None:
        def conv2d(i: int) -> tuple[torch.Tensor, torch.Tensor]:
            layer = "conv2d" + (f"_{i}" if i else "")
            # TF HWIO (time, freq, in, out) -> torch OIHW
            k = torch.from_numpy(np.ascontiguousarray(w[f"{layer}/kernel"].transpose(3, 2, 0, 1)))
            return k, torch.from_numpy(w[f"{layer}/bias"].copy())

        def conv1d(i: int) -> tuple[torch.Tensor, torch.Tensor]:
            # Mid-end "conv2d" kernels span the whole feature axis with one input
            # channel: (7, C_in, 1, C_out) is a 1-D conv over time with C_in channels.
            layer = f"conv2d_{i}"
            k = w[f"{layer}/kernel"][:, :, 0, :].transpose(2, 1, 0)
            return torch.from_numpy(np.ascontiguousarray(k)), torch.from_numpy(
                w[f"{layer}/bias"].copy()
            )

        def reg(name: str, pair: tuple[torch.Tensor, torch.Tensor], kind: tuple[str, str]) -> None:
            a, b = pair
            self.register_buffer(f"{name}_{kind[0]}", a.float())
            self.register_buffer(f"{name}_{kind[1]}", b.float())

        reg("bn_in", _bn(w, "batch_normalization"), ("scale", "shift"))
        for j, name in enumerate(("t74", "t77", "s128", "s64", "s32")):
            reg(name, conv2d(j), ("weight", "bias"))
            reg(f"{name}_bn", _bn(w, f"batch_normalization_{j + 1}"), ("scale", "shift"))
        for j, name in enumerate(("mid1", "mid2", "mid3")):
            reg(name, conv1d(j + 5), ("weight", "bias"))
            reg(f"{name}_bn", _bn(w, f"batch_normalization_{j + 6}"), ("scale", "shift"))
        reg("pool_bn", _bn(w, "batch_normalization_9"), ("scale", "shift"))
        reg("dense", (torch.from_numpy(w["dense/kernel"].T.copy()),
                      torch.from_numpy(w["dense/bias"].copy())), ("weight", "bias"))  # fmt: skip
        reg("dense_bn", _bn(w, "batch_normalization_10"), ("scale", "shift"))
        reg("out", (torch.from_numpy(w["dense_1/kernel"].T.copy()),
                    torch.from_numpy(w["dense_1/bias"].copy())), ("weight", "bias"))  # fmt: skip
        if self.t74_weight.shape[2:] != (7, 38) or self.mid1_weight.shape != (64, 561, 7):
            raise FileFormatError(
                "checkpoint shapes do not match musicnn (64 mid-end filters, 200 back-end units)"
            )

    @classmethod
    def from_checkpoint(cls, prefix: str | Path) -> MusicnnNet:
        """Build the network from a TF checkpoint (a musicnn model directory)."""
        return cls(read_checkpoint(prefix, names=_checkpoint_names())).eval()

    @classmethod
    def from_safetensors(cls, path: str | Path) -> MusicnnNet:
        """Build the network from converted weights (TF variable names, float32).

        Raises
        ------
        FileFormatError
            The file is not a readable safetensors file of musicnn variables.
        """

        try:
            weights = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise FileFormatError(
                f"cannot read musicnn weights {path}: {exc}; reinstall moodshift"
            ) from exc
        return cls(weights).eval()

    def _branch(self, x: torch.Tensor, name: str, pad_t: tuple[int, int]) -> torch.Tensor:
        # TF computes max_freq(BN(ReLU(conv + bias))). BN is a per-channel affine
        # map and ReLU and +bias are monotonic, so the max over frequency can be
        # taken first: max for channels with a positive BN scale, min for negative
        # ones. Float rounding is monotonic too, so the reordering changes nothing
        # but speed: it skips three passes over the network's largest activation.
        z = F.conv2d(F.pad(x, (0, 0, *pad_t)), getattr(self, f"{name}_weight"))  # (B, C, T, F)
        zmin, zmax = torch.aminmax(z, dim=3)
        scale = getattr(self, f"{name}_bn_scale")[:, None]
        shift = getattr(self, f"{name}_bn_shift")[:, None]
        y = torch.where(scale >= 0, zmax, zmin) + getattr(self, f"{name}_bias")[:, None]
        return torch.relu(y) * scale + shift

    def _mid(self, x: torch.Tensor, name: str) -> torch.Tensor:
        y = torch.relu(F.conv1d(F.pad(x, (3, 3)), getattr(self, f"{name}_weight"),
                                getattr(self, f"{name}_bias")))  # fmt: skip
        return y * getattr(self, f"{name}_bn_scale")[:, None] + getattr(
            self, f"{name}_bn_shift")[:, None]  # fmt: skip

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run patches through the network.

        Parameters
        ----------
        x : Tensor, shape (B, T, 96)
            Log-mel patches (T = 187 for the trained 3 s input; other lengths work).

        Returns
        -------
        dict of str to Tensor
            ``penultimate`` (B, 200), ``max_pool`` (B, 753), ``mean_pool`` (B, 753),
            ``logits`` (B, 50) and ``tags`` (B, 50, sigmoid of the logits).
        """
        x = (x * self.bn_in_scale + self.bn_in_shift).unsqueeze(1)  # (B, 1, T, F)
        front = torch.cat(
            [
                self._branch(x, "t74", (3, 3)),
                self._branch(x, "t77", (3, 3)),
                # TF 'same' padding for an even kernel k puts (k-1)//2 before, k//2 after
                self._branch(x, "s128", (63, 64)),
                self._branch(x, "s64", (31, 32)),
                self._branch(x, "s32", (15, 16)),
            ],
            dim=1,
        )  # (B, 561, T)
        c1 = self._mid(front, "mid1")
        c2 = self._mid(c1, "mid2") + c1
        c3 = self._mid(c2, "mid3") + c2
        mid = torch.cat([front, c1, c2, c3], dim=1)  # (B, 753, T)
        max_pool = mid.amax(dim=2)
        mean_pool = mid.mean(dim=2)
        # TF concatenates (B, 753, 1) max and mean on the last axis and flattens,
        # so the dense layer sees them interleaved: max0, mean0, max1, mean1, ...
        flat = torch.stack([max_pool, mean_pool], dim=2).reshape(x.shape[0], -1)
        flat = flat * self.pool_bn_scale + self.pool_bn_shift
        dense = torch.relu(F.linear(flat, self.dense_weight, self.dense_bias))
        pen = dense * self.dense_bn_scale + self.dense_bn_shift
        logits = F.linear(pen, self.out_weight, self.out_bias)
        return {
            "penultimate": pen,
            "max_pool": max_pool,
            "mean_pool": mean_pool,
            "logits": logits,
            "tags": torch.sigmoid(logits),
        }


_NET_CACHE: dict[str, MusicnnNet] = {}
_NET_LOCK = threading.Lock()


def _load_net(source: Path) -> MusicnnNet:
    # One copy of the weights per process, however many embedders use them.
    key = str(Path(source).resolve())
    with _NET_LOCK:
        net = _NET_CACHE.get(key)
        if net is None:
            if Path(source).suffix == ".safetensors":
                net = MusicnnNet.from_safetensors(source)
            else:
                net = MusicnnNet.from_checkpoint(source)
            _NET_CACHE[key] = net
        return net


# --------------------------------------------------------------------------- preprocessing
@functools.lru_cache(maxsize=1)
def _mel_basis() -> np.ndarray:
    import librosa  # librosa is heavy: load on use

    return librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=N_MELS).astype(np.float32)


def log_mel(audio: np.ndarray) -> np.ndarray:
    """musicnn's log-mel spectrogram of 16 kHz mono audio, in float32.

    Parameters
    ----------
    audio : ndarray, shape (n,)
        Mono audio at 16 kHz.

    Returns
    -------
    ndarray, shape (1 + n // 256, 96), float32
        ``log10(10000 * mel_power + 1)``, frames first.
    """
    import librosa  # librosa is heavy: load on use

    y = np.ascontiguousarray(audio, dtype=np.float32)
    spec = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP)) ** 2  # (257, T), centred
    mel = _mel_basis() @ spec  # (96, T)
    return np.log10(10000.0 * mel + 1.0).T.astype(np.float32, copy=False)


# --------------------------------------------------------------------------- embedder
class MusicnnEmbedder(Embedder):
    """Whole-track musicnn embeddings (3 s patches every 2 s, averaged).

    Parameters
    ----------
    model : {"MSD_musicnn", "MTT_musicnn"}, default "MSD_musicnn"
        Weights trained on the Million Song Dataset (50 Last.fm tags, several
        of them moods: happy, sad, Mellow, chill, beautiful, sexy, party) or on
        MagnaTagATune. MSD is the default: ~200k tracks vs ~26k, and mood tags.
    output : {"penultimate", "max_pool", "mean_pool", "tags"}, default "penultimate"
        ``penultimate``: the 200-d layer before the tag classifier (compact,
        tag-discriminative; the default). ``max_pool`` / ``mean_pool``: the
        753-d temporal poolings of the mid-end (more general, larger).
        ``tags``: the 50 tag probabilities (see :attr:`tag_names`).
    batch_size : int, default 2
        Patches per forward pass. Small batches are fastest on CPU: the largest
        activation is ~9 MB per patch, and bigger batches fall out of cache
        (measured single-thread: 0.041 s/patch at 1-2, 0.061 s at 16).
    checkpoint_dir : str or Path, optional
        A musicnn TF checkpoint directory to use instead of the weights shipped
        with moodshift (same values; see ``scripts/convert_musicnn_weights.py``).

    Notes
    -----
    The first call loads the weights (3.2 MB, tens of ms); they are shared by
    every embedder of the same model in the process. Torch uses its own
    intra-op threads (``torch.set_num_threads``).
    """

    version = "1"
    sample_rate = SR

    def __init__(
        self,
        *,
        model: str = "MSD_musicnn",
        output: Output = "penultimate",
        batch_size: int = 2,
        checkpoint_dir: str | Path | None = None,
    ) -> None:
        self.model = _canonical_model(model)
        if output not in OUTPUT_DIMS:
            raise InputError(
                f"unknown musicnn output {output!r}; choose one of {', '.join(OUTPUT_DIMS)}"
            )
        if int(batch_size) < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        self.output: str = output
        self.batch_size = int(batch_size)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.name = "musicnn-msd" if self.model == "MSD_musicnn" else "musicnn-mtt"
        self.dim = OUTPUT_DIMS[output]
        self._net: MusicnnNet | None = None

    # Processes get the options, not the weights; each loads its own copy lazily.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_net"] = None
        return state

    @property
    def tag_names(self) -> tuple[str, ...]:
        """Names of the 50 tags, in the order of the ``tags`` output."""
        return MODELS[self.model]

    @property
    def net(self) -> MusicnnNet:
        """The network (loaded on first use)."""
        if self._net is None:
            source = self.checkpoint_dir or find_musicnn_weights(self.model)
            self._net = _load_net(source)
        return self._net

    def tag_layer(self) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
        """The tag classifier on top of the ``penultimate`` output.

        Returns
        -------
        weight : ndarray, shape (50, 200), float32
        bias : ndarray, shape (50,), float32
        names : tuple of str
            ``sigmoid(penultimate @ weight.T + bias)`` are the tag probabilities.
        """
        net = self.net
        return (net.out_weight.detach().numpy().astype(np.float32),
                net.out_bias.detach().numpy().astype(np.float32), self.tag_names)  # fmt: skip

    def provenance(self) -> dict[str, Any]:
        prov = super().provenance()
        prov["options"] = {"model": self.model, "output": self.output}
        return prov

    def patches(self, audio: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
        """Log-mel patches of a whole track.

        Parameters
        ----------
        audio : ndarray, shape (n,)
            Mono audio at ``sr`` Hz.
        sr : int

        Returns
        -------
        patches : ndarray, shape (n_windows, 187, 96), float32
        starts_s : ndarray, shape (n_windows,), float64
            Window start times in seconds.
        """
        y = resample(to_mono_float32(audio), orig_sr=int(sr), target_sr=SR)
        win = int(PATCH_S * SR)
        if len(y) < win:
            y = np.pad(y, (0, win - len(y)))
        starts = window_starts(len(y), win=win, hop=int(PATCH_HOP_S * SR))
        spec = log_mel(y)
        frames = starts // HOP
        patches = np.stack([spec[f : f + PATCH_FRAMES] for f in frames])
        return patches, starts / SR

    @torch.inference_mode()
    def forward_patches(self, patches: np.ndarray) -> dict[str, np.ndarray]:
        """Run log-mel patches through the network in batches.

        Parameters
        ----------
        patches : ndarray, shape (n_windows, T, 96)

        Returns
        -------
        dict of str to ndarray
            As :meth:`MusicnnNet.forward`, each with a leading n_windows axis, float32.
        """
        net = self.net
        outs: dict[str, list[np.ndarray]] = {}
        x = torch.from_numpy(np.ascontiguousarray(patches, dtype=np.float32))
        for i in range(0, len(x), self.batch_size):
            for k, v in net(x[i : i + self.batch_size]).items():
                outs.setdefault(k, []).append(v.numpy())
        return {k: np.concatenate(v) for k, v in outs.items()}

    def embed_windows(self, audio: np.ndarray, sr: int) -> dict[str, np.ndarray]:
        """Every output for every window of a track.

        Returns
        -------
        dict of str to ndarray
            ``penultimate`` (W, 200), ``max_pool`` (W, 753), ``mean_pool`` (W, 753),
            ``logits`` (W, 50), ``tags`` (W, 50) and ``starts_s`` (W,).
        """
        patches, starts_s = self.patches(audio, sr)
        out = self.forward_patches(patches)
        out["starts_s"] = starts_s
        return out

    def embed(self, audio: np.ndarray, sr: int) -> np.ndarray:
        """The chosen output averaged over the track's windows: shape (dim,), float32."""
        out = self.embed_windows(audio, sr)[self.output]
        return out.mean(axis=0).astype(np.float32)

    def predict_tags(self, audio: np.ndarray, sr: int) -> dict[str, float]:
        """Track-level tag probabilities (window average), highest first."""
        scores = self.embed_windows(audio, sr)["tags"].mean(axis=0)
        order = np.argsort(-scores)
        return {self.tag_names[i]: float(scores[i]) for i in order}
