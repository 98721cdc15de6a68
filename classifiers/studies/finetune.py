"""Fine-tuning against the store: the study's head, the CNN-LSTM and top-layer LoRA, in the probe's protocols.

:func:`run_finetune` runs a :class:`FinetuneConfig` and returns the probe's
:class:`~classifiers.studies.result.Result` with ``method``, ``checkpoints`` (one folder per trained
model), ``train_seconds``, ``training`` (best epoch and per-epoch history per seed) and
``dev_uar_per_epoch`` (per seed) set, so the ledger, ``fs results`` and ``fs report`` take it as they
take a probe; :func:`classifiers.studies.engine.run` runs it ledger first.
A best dev epoch that is the last one is warned about (train longer: ``--epochs``).

Methods:

- ``head``: the study's MLP head on pooled features; exactly :func:`~classifiers.studies.protocols.run_probe`
  with classifier ``mlp`` (the same ledger row as ``fs probe --classifier mlp``; no checkpoints).
- ``cnn-lstm``: :class:`~classifiers.learners.cnn_lstm.CNNLSTMClassifier` on stored log-mel frames
  (``fs extract --model logmel --frames 0``); ``norm`` ``none`` or ``corpus`` (per-corpus
  standardisation of every mel bin; transductive for the target, and the result says so).
- ``lora``: :class:`~classifiers.learners.lora.TopLayerLoRA` on layers ``from_layer+1..layer`` plus the
  head, from stored frames of layer ``from_layer`` (``fs extract --frames K``), streamed from the
  store in batches (a bounded cache keeps what fits; the layer is never read whole).

Protocols, as the probe's: cross-language (train on the source, test on all of the target);
few-shot (``shots`` per class of the target join training and never the test set, with the
target-only baseline); noise (``source_noise`` / ``target_noise`` read noise-mixed groups);
within-corpus uses **one** speaker-independent train/test split per seed (about a fifth of the
speakers tested), not the probe's five folds — cheaper for trained models; the result says so.
The best epoch is chosen on a speaker-independent dev split of the training data only.

Checkpoints go to ``<workspace>/checkpoints/<train_key>/seed<k>/`` (the configuration's key less its
number of seeds: a 5-seed run reuses the seeds of a 3-seed one) (``seed<k>-baseline/`` for
the few-shot baseline), each with ``run.json`` naming the configuration and the store groups it
was trained from and the digest of its training data (ids, labels, speakers, audio hashes, frame
counts, and each store group's key, creation time and content). A run that stops part-way (Ctrl-C,
SIGTERM: at the next batch) resumes from the seeds already saved; a checkpoint trained on other data
(relabelled manifest, changed audio, a group re-extracted with ``--overwrite``) is retrained, never
reused; a folder of another configuration is refused (``rerun`` retrains).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.learners.metrics import chance_uar, evaluate
from classifiers.learners.splits import SplitError, speaker_label_confound
from classifiers.learners.training import TrainingError, TrainingProgress
from classifiers.studies import settings
from classifiers.studies.intervals import seed_predictions
from classifiers.studies.layer_choice import LayerChoice, LayerError
from classifiers.studies.protocol_registry import (
    WITHIN_TEST_FRACTION,
    Part,
    ProtocolError,
    align,
    check_compatible,
    protocol_for,
)
from classifiers.studies.protocols import Sides, _local, baseline_wins_warning
from classifiers.studies.result import Result, result_identity, stored_identity
from classifiers.studies.views import Cache, cached_digest, cached_manifest, get_view, resolve_group
from featurestore import __version__
from featurestore.errors import FsError, Interrupted, Terminated
from featurestore.store import FeatureStore, StoreGroup
from featurestore.view import FeatureView
from featurestore.workspace import Workspace

METHODS: tuple[str, ...] = settings.METHODS
# layer choices the head runner serves (``weighted``, learned layer weights, comes next)
HEAD_LAYERS: tuple[str, ...] = ("last", "index", "best", "mean", "concat")
DEFAULT_MODEL = {"cnn-lstm": "logmel"}
CLASSIFIER_OF = {"head": "mlp", "cnn-lstm": "cnn-lstm", "lora": "lora"}
CHECKPOINTS_DIR = "checkpoints"
RUN_FILE = "run.json"
FRAME_CACHE_MB = int(os.environ.get("FS_FRAME_CACHE_MB", "1024"))
_NOISE_KEYS = ("noise", "snr_db", "noise_seed")
_HEAD_DEFAULTS = {"epochs": 5, "batch_size": 16, "lr": 1e-4, "head_hidden": 256}


class FinetuneError(FsError):
    """A fine-tuning run that cannot go as configured (settings, missing frames, foreign checkpoints)."""


def _int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise FinetuneError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not float(value) > 0:
        raise FinetuneError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _noise(value: Any, name: str) -> dict[str, Any] | None:
    if value in (None, {}, ""):
        return None
    if not isinstance(value, dict) or set(value) - set(_NOISE_KEYS) or not value.get("noise") \
            or value.get("snr_db") is None:
        raise FinetuneError(f"{name} {value!r}: give {{noise: DIR, snr_db: 10, noise_seed: 0}} (the folder and SNR "
                            "used by `fs extract --noise`)")
    return {"noise": _local(str(value["noise"]), path_only=True), "snr_db": float(value["snr_db"]),
            "noise_seed": int(value.get("noise_seed", 0))}


@dataclass(frozen=True)
class FinetuneConfig(Sides):
    """Everything that decides a fine-tuning run's numbers.

    ``method``: ``head`` | ``cnn-lstm`` | ``lora``. ``model``: as given to ``fs extract --model``
    (``cnn-lstm`` defaults to ``logmel``). ``layer``: the layer the head reads (``last`` or a
    number; ``head`` also takes the probe's choices). ``from_layer``: ``lora`` only, the stored
    frame layer the adapted layers start from. ``norm``: ``head`` as the probe's; ``cnn-lstm``
    ``none`` | ``corpus``; ``lora`` ``none``. ``epochs``, ``batch_size``, ``lr``: the recipe
    (Adam). ``rank``, ``alpha``, ``target_modules``: LoRA. ``head_hidden``: width of the head's
    hidden layer. ``max_frames``: CNN-LSTM crop (None: whole utterances). The rest as
    :class:`~classifiers.studies.protocols.ProbeConfig`. Settings a method does not use are fixed to None.
    """

    method: str
    source: str
    target: str
    model: str | None = None
    whisper_input: str | None = None
    model_seed: int | None = None
    layer: str | int = "last"
    from_layer: int | None = None
    norm: str = "none"
    seeds: int = 5
    shots: int = 0
    shots_speaker_disjoint: bool = False
    source_noise: dict[str, Any] | None = None
    target_noise: dict[str, Any] | None = None
    dev_fraction: float = 0.2
    epochs: int = 5
    batch_size: int = 16
    lr: float = 1e-4
    rank: int | None = 8
    alpha: float | None = 16.0
    target_modules: tuple[str, ...] | None = None
    head_hidden: int | None = 256
    max_frames: int | None = None
    protocol: str | None = None
    recipe: str | None = None

    def __post_init__(self) -> None:
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        if self.method not in METHODS:
            raise FinetuneError(str(settings.setting("method").refusal(self.method)))
        if not self.model:
            if self.method not in DEFAULT_MODEL:
                raise FinetuneError(f"method {self.method} needs --model (the model as given to `fs extract --model`)")
            put("model", DEFAULT_MODEL[self.method])
        self._apply_recipe(put)
        chosen_later = ("lr",) if self.recipe == "tuned" else ()  # the tuned recipe's lr is None: chosen on the dev split
        self._check_settings(FinetuneError, skip=chosen_later)  # the one settings table, as the probe's
        getattr(self, f"_check_{self.method.replace('-', '_')}")(put)

    def _check_head(self, put: Callable[[str, Any], None]) -> None:
        try:
            LayerChoice.parse(self.layer).refuse_unless(HEAD_LAYERS, "--method head")
        except LayerError as exc:
            raise FinetuneError(str(exc)) from None
        put("head_hidden", self.head_hidden if self.head_hidden is not None else settings.setting("head_hidden").default)
        for name in ("from_layer", "rank", "alpha", "target_modules", "max_frames"):
            put(name, None)

    def _apply_recipe(self, put: Callable[[str, Any], None]) -> None:
        """A named recipe (:data:`~classifiers.studies.settings.RECIPES`) sets epochs, batch size and lr; given beside it
        they must be their defaults or the recipe's own. ``paper`` is the defaults, so it leaves no name in the key."""
        if self.recipe is None:
            return
        if self.recipe not in settings.RECIPES:
            raise FinetuneError(str(settings.setting("recipe").refusal(self.recipe)))
        if self.recipe == "tuned" and self.method not in ("head", "cnn-lstm"):
            raise FinetuneError(f"--recipe tuned is for --method head and cnn-lstm; {self.method} takes --epochs and --lr")
        recipe = settings.RECIPES[self.recipe]
        given = [k for k in recipe if getattr(self, k) not in (settings.setting(k).default, recipe[k])]
        if given:
            flags = ", ".join(settings.setting(k).flag for k in given)
            raise FinetuneError(f"--recipe {self.recipe} sets epochs, batch size and lr; drop {flags} (or drop --recipe)")
        for name, value in recipe.items():
            put(name, value)
        if self.recipe == "paper":
            put("recipe", None)

    def _check_cnn_lstm(self, put: Callable[[str, Any], None]) -> None:
        if self.recipe == "tuned" and self.within:
            raise FinetuneError("--recipe tuned chooses epochs and lr on a dev split of the source, which within a "
                                "corpus holds the speakers tested; give --epochs and --lr (or --recipe paper)")
        if self.norm not in ("none", "corpus"):
            raise FinetuneError(f"the CNN-LSTM takes norm none or corpus (per-corpus log-mel statistics), got "
                                f"{self.norm!r}")
        if self.from_layer not in (None, 0):
            raise FinetuneError("--from-layer is for --method lora; the CNN-LSTM reads the stored log-mel frames "
                                "(layer 0)")
        put("layer", 0)
        for name in ("from_layer", "rank", "alpha", "target_modules", "head_hidden"):
            put(name, None)

    def _check_lora(self, put: Callable[[str, Any], None]) -> None:
        if self.from_layer is None:
            raise FinetuneError("--method lora needs --from-layer K: the layer whose frames are stored (`fs extract "
                                "--frames K`); layers K+1.. get adapters")
        try:
            LayerChoice.parse(self.layer).refuse_unless(("last", "index"), "--method lora (the head's layer)")
        except LayerError as exc:
            raise FinetuneError(str(exc)) from None
        if self.layer != "last" and int(self.layer) < 1:
            raise FinetuneError(f"layer {self.layer!r}: --method lora's head reads an adapted layer above "
                                "--from-layer; give last or a layer number >= 1")
        if self.norm != "none":
            raise FinetuneError(f"LoRA reads stored states as the encoder made them; norm must be none, got "
                                f"{self.norm!r}")
        for name in ("rank", "alpha", "head_hidden"):  # None: the table's default
            put(name, getattr(self, name) if getattr(self, name) is not None else settings.setting(name).default)
        put("max_frames", None)

    @property
    def classifier(self) -> str:
        """The name the ledger and reports show in the classifier column."""
        return CLASSIFIER_OF[self.method]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every setting (the ledger's ``config``), with ``classifier`` and ``stat``
        (derived) so that tables that group probes also group fine-tuning runs."""
        out = self.settings_dict()
        if out.get("recipe") is None:  # configurations without a recipe keep their keys
            del out["recipe"]
        out["target_modules"] = None if self.target_modules is None else list(self.target_modules)
        out.update(classifier=self.classifier, stat="mean")
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneConfig:
        """A config from a dict (a study file, the ledger); unknown keys raise :class:`FinetuneError`."""
        if not isinstance(data, dict):
            raise FinetuneError(f"a fine-tuning configuration must be a mapping, got {type(data).__name__}")
        data = {k: v for k, v in data.items() if k not in ("classifier", "stat")}
        valid = [f.name for f in fields(cls)]
        unknown = [k for k in data if k not in valid]
        if unknown:
            hints = [f"{k!r}" + (f" (did you mean {c[0]!r}?)" if (c := difflib.get_close_matches(str(k), valid, n=1))
                                 else "") for k in unknown]
            raise FinetuneError(f"unknown fine-tuning setting(s) {', '.join(hints)}; valid keys: {', '.join(valid)}")
        if "target_modules" in data and data["target_modules"] is not None:
            data["target_modules"] = tuple(data["target_modules"])
        return cls(**data)

    def key(self) -> str:
        """sha256 (hex) of the canonical JSON of :meth:`to_dict` (for ``head``: the probe's key)."""
        if self.method == "head":
            return self.probe_config().key()
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def train_key(self) -> str:
        """sha256 (hex) of the settings that decide one seed's model: :meth:`to_dict` less ``seeds``, so
        runs that differ only in their number of seeds share the checkpoints of their common seeds."""
        data = {k: v for k, v in self.to_dict().items() if k != "seeds"}
        return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def probe_config(self) -> Any:
        """``head`` as the :class:`~classifiers.studies.protocols.ProbeConfig` it is (classifier ``mlp``; only
        non-default recipe values become classifier parameters, so defaults share the probe's key)."""
        from classifiers.studies.protocols import ProbeConfig

        if self.method != "head":
            raise FinetuneError(f"method {self.method} is not a probe")
        names = {"epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "head_hidden": "hidden"}
        tuned = self.recipe == "tuned"  # the probe's --tune: GRIDS["mlp"] (lr x epochs) on source speaker folds
        params = {names[k]: getattr(self, k) for k, v in _HEAD_DEFAULTS.items()
                  if getattr(self, k) != v and not (tuned and k in ("epochs", "lr"))}
        try:
            return ProbeConfig(source=self.source, target=self.target, model=str(self.model),
                               whisper_input=self.whisper_input, model_seed=self.model_seed, layer=self.layer,
                               classifier="mlp", classifier_params=params, norm=self.norm, seeds=self.seeds,
                               shots=self.shots, shots_speaker_disjoint=self.shots_speaker_disjoint,
                               source_noise=self.source_noise, target_noise=self.target_noise,
                               dev_fraction=self.dev_fraction, protocol=self.protocol, tune=tuned)
        except ProtocolError as exc:
            raise FinetuneError(str(exc)) from None


# --------------------------------------------------------------------------- reading frames


class FrameCache:
    """Per-utterance frames of one store group and layer, read through :meth:`StoreGroup.frame_rows`
    in batches and kept in a least-recently-used cache bounded by ``max_bytes`` (the layer is never
    read whole; epochs after the first read only what did not fit)."""

    def __init__(self, group: StoreGroup, layer: int, max_bytes: int = FRAME_CACHE_MB * 2**20):
        self.read = partial(group.frame_rows, layer)
        self.max_bytes = max_bytes
        self._items: OrderedDict[int, np.ndarray] = OrderedDict()
        self._bytes = 0
        self.reads = 0

    def __call__(self, rows: np.ndarray) -> list[np.ndarray]:
        """``(T_i, D)`` float16 arrays of group rows ``rows``, in that order."""
        wanted = [int(r) for r in np.asarray(rows).ravel()]
        found = {r: self._items[r] for r in set(wanted) if r in self._items}
        missing = sorted(set(wanted) - set(found))
        fetched = dict(zip(missing, self.read(np.asarray(missing, dtype=np.int64)))) if missing else {}
        self.reads += len(missing)
        for r in found:
            self._items.move_to_end(r)
        for r, value in fetched.items():
            self._keep(r, value)
        found.update(fetched)
        return [found[r] for r in wanted]

    def _keep(self, row: int, value: np.ndarray) -> None:
        if row in self._items or value.nbytes > self.max_bytes:
            return
        self._items[row] = value
        self._bytes += value.nbytes
        while self._bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.nbytes


@dataclass
class _Side:
    """One corpus as a fine-tuning run reads it: labels and speakers from the view, frames from the group."""

    corpus: str
    group: StoreGroup
    view: FeatureView
    rows: np.ndarray  # (n,) group row of each view row
    lengths: np.ndarray  # (n,) frames per utterance of the frame layer
    frames: Callable[[np.ndarray], list[np.ndarray]]  # group rows -> arrays
    audio: np.ndarray  # (n,) sha256 of each utterance's audio, as extracted
    identity: str  # the group's key, creation and content (see _group_identity)

    @property
    def labels(self) -> np.ndarray:
        return self.view.labels

    @property
    def groups(self) -> np.ndarray:
        return np.char.add(f"{self.corpus}:", self.view.speakers.astype(str))

    def subset(self, index: np.ndarray) -> _Side:
        return _Side(self.corpus, self.group, self.view.subset(index), self.rows[index], self.lengths[index],
                     self.frames, self.audio[index], self.identity)


@dataclass
class Data:
    """Utterances drawn from one or more sides: ``labels``, ``groups`` (corpus:speaker), ``lengths``
    (frames) as (n,) arrays, and ``rows(indices) -> list of (T_i, D) arrays`` (streamed)."""

    parts: list[tuple[_Side, np.ndarray]]
    labels: np.ndarray = field(init=False)
    groups: np.ndarray = field(init=False)
    lengths: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.labels = np.concatenate([s.labels[i] for s, i in self.parts])
        self.groups = np.concatenate([s.groups[i] for s, i in self.parts])
        self.lengths = np.concatenate([s.lengths[i] for s, i in self.parts])
        self._starts = np.cumsum([0] + [i.size for _, i in self.parts])

    def __len__(self) -> int:
        return int(self.labels.size)

    def digest(self) -> str:
        """sha256 (hex) of everything in this set that decides a model trained on it: per utterance its
        id, label, speaker, audio hash and frame count, and the identity of each store group read."""
        h = hashlib.sha256()
        for side, idx in self.parts:
            h.update(side.identity.encode())
            for column in (side.view.ids, side.labels, side.groups, side.audio):
                h.update("\x1f".join(np.asarray(column)[idx].astype(str).tolist()).encode() + b"\x1e")
            h.update(np.ascontiguousarray(side.lengths[idx], dtype=np.int64).tobytes())
        return h.hexdigest()

    def rows(self, indices: np.ndarray) -> list[np.ndarray]:
        """Frames of utterances ``indices`` (positions in this set), one store read per part."""
        indices = np.asarray(indices, dtype=np.int64)
        part = np.searchsorted(self._starts, indices, side="right") - 1
        out: dict[int, np.ndarray] = {}
        for p in np.unique(part):
            side, idx = self.parts[p]
            where = np.flatnonzero(part == p)
            arrays = side.frames(side.rows[idx[indices[where] - self._starts[p]]])
            for w, a in zip(where, arrays):
                out[int(w)] = a
        return [out[i] for i in range(indices.size)]


# --------------------------------------------------------------------------- methods


class _Method:
    """How one method builds, trains, applies and saves its models."""

    def __init__(self, config: FinetuneConfig, device: str):
        self.config = config
        self.device = device
        self.recipe: dict[str, Any] = {"epochs": config.epochs, "batch_size": config.batch_size, "lr": config.lr}


    def make(self, seed: int, dev_fraction: float) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def fit(self, est: Any, data: Data, observer: Any = None) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def predict(self, est: Any, data: Data) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def save(self, est: Any, path: Path) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def load(self, path: Path, seed: int, dev_fraction: float) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError


class _CNNLSTM(_Method):
    """The CNN-LSTM on log-mel frames of layer 0; checkpoint = model.safetensors + config.json."""

    WEIGHTS = "model.safetensors"
    CONFIG = "config.json"


    def params(self, seed: int, dev_fraction: float) -> dict[str, Any]:
        c = self.config
        return {**self.recipe, "dev_fraction": dev_fraction,
                "seed": seed, "normalise": c.norm, "max_frames": c.max_frames}

    def make(self, seed: int, dev_fraction: float) -> Any:
        from classifiers.learners.cnn_lstm import CNNLSTMClassifier

        return CNNLSTMClassifier(**self.params(seed, dev_fraction), device=self.device)

    def fit(self, est: Any, data: Data, observer: Any = None) -> Any:
        return est.fit(data.rows(np.arange(len(data))), data.labels, data.groups, observer=observer)

    def predict(self, est: Any, data: Data) -> np.ndarray:
        # one call for the whole test set: corpus normalisation uses the statistics of what it is given
        return np.asarray(est.predict(data.rows(np.arange(len(data)))))

    def save(self, est: Any, path: Path) -> None:
        from safetensors.torch import save_file

        path.mkdir(parents=True, exist_ok=True)
        stats = None if est.train_stats_ is None else [s.tolist() for s in est.train_stats_]
        info = {"method": "cnn-lstm", "classes": est.classes_.tolist(), "n_mels": int(est.n_mels_),
                "train_stats": stats, "params": {k: v for k, v in self.params(est.seed, est.dev_fraction).items()}}
        (path / self.CONFIG).write_text(json.dumps(info, indent=1, sort_keys=True))
        save_file({k: v.detach().cpu().contiguous() for k, v in est.model_.state_dict().items()},
                  str(path / self.WEIGHTS))

    def load(self, path: Path, seed: int, dev_fraction: float) -> Any:
        from safetensors.torch import load_file

        from classifiers.learners.cnn_lstm import CNNLSTM

        info = json.loads((path / self.CONFIG).read_text())
        if info.get("method") != "cnn-lstm" or info.get("params") != self.params(seed, dev_fraction):
            raise FinetuneError(f"checkpoint {path} was made with other CNN-LSTM settings ({info.get('params')}); "
                                "remove it or run again with --rerun")
        est = self.make(seed, dev_fraction)
        est.classes_, est.n_mels_ = np.asarray(info["classes"]), int(info["n_mels"])
        stats = info.get("train_stats")
        est.train_stats_ = None if stats is None else tuple(np.asarray(s, dtype=np.float32) for s in stats)
        model = CNNLSTM(est.n_mels_, len(est.classes_), est.channels, est.first_kernel, est.lstm_units,
                        est.dense_units, est.dropout)
        model.load_state_dict(load_file(str(path / self.WEIGHTS)))
        est.model_ = model.to(self.device).eval()
        return est

    def describe(self) -> dict[str, Any]:
        est = self.make(0, self.config.dev_fraction)
        return {"name": "cnn-lstm", "class": "classifiers.learners.cnn_lstm.CNNLSTMClassifier",
                "params": {k: v for k, v in vars(est).items() if not k.endswith("_") and k not in ("seed",)}}


class _TopLoRA(_Method):
    """Top-layer LoRA from stored frames of ``from_layer``; checkpoint = TopLayerLoRA.save."""

    def __init__(self, config: FinetuneConfig, device: str, encoder: Any):
        super().__init__(config, device)
        self.encoder = encoder


    def make(self, seed: int, dev_fraction: float) -> Any:
        from classifiers.learners.lora import TopLayerLoRA

        c = self.config
        if c.from_layer is None or c.rank is None or c.alpha is None or c.head_hidden is None:
            raise FinetuneError("--method lora needs from_layer, rank, alpha and head_hidden; build the configuration "
                                "with FinetuneConfig(method='lora', ...), which fills them in")
        return TopLayerLoRA(self.encoder, from_layer=int(c.from_layer), rank=int(c.rank), alpha=float(c.alpha),
                            target_modules=c.target_modules, head_hidden=int(c.head_hidden), layer=c.layer,
                            epochs=c.epochs, batch_size=c.batch_size, lr=c.lr, seed=seed, dev_fraction=dev_fraction,
                            device=self.device, whisper_input=c.whisper_input or "trim")

    def fit(self, est: Any, data: Data, observer: Any = None) -> Any:
        return est.fit(data.rows, data.labels, data.groups, lengths=data.lengths, observer=observer)

    def predict(self, est: Any, data: Data) -> np.ndarray:
        return np.asarray(est.predict(data.rows, n=len(data), lengths=data.lengths))

    def save(self, est: Any, path: Path) -> None:
        est.save(path)

    def load(self, path: Path, seed: int, dev_fraction: float) -> Any:
        from classifiers.learners.lora import LoRAError

        try:
            return self.make(seed, dev_fraction).load(path)
        except LoRAError as exc:
            raise FinetuneError(f"{exc} (or run again with --rerun to retrain)") from None

    def describe(self) -> dict[str, Any]:
        est = self.make(0, self.config.dev_fraction).setup(["a", "b"])
        return {"name": "lora", "class": "classifiers.learners.lora.TopLayerLoRA", "params": est.config(),
                "targets": list(est.targets_)}


# --------------------------------------------------------------------------- loading and checks




def _group(config: FinetuneConfig, role: str, store: FeatureStore, cache: Cache) -> StoreGroup:
    corpus = config.source if role == "source" else config.target
    noise = config.source_noise if role == "source" else config.target_noise
    return resolve_group(store, corpus, str(config.model), noise, config.whisper_input, config.model_seed, cache)


def frames_command(group: StoreGroup, layer: int) -> str:
    """The ``fs extract`` command that adds frames of ``layer`` to ``group`` (keeping its other frame layers)."""
    from featurestore.hints import command_for_group

    return command_for_group(group.provenance, group.key.corpus, frames={*group.frame_layers, int(layer)},
                             extra=("--overwrite",))


def _frame_layer(config: FinetuneConfig) -> int:
    if config.method == "cnn-lstm":
        return 0
    if config.from_layer is None:
        raise FinetuneError(f"--method {config.method} reads no stored frames; frames are for --method lora "
                            "(--from-layer K) and cnn-lstm")
    return int(config.from_layer)


def _load_side(config: FinetuneConfig, role: str, store: FeatureStore, workspace: Workspace,
               cache: Cache) -> _Side:
    """The view (labels, speakers) and streamed frames of one corpus, after checking the group holds them."""
    corpus = config.source if role == "source" else config.target
    manifest = cached_manifest(workspace, corpus, cache)
    group = _group(config, role, store, cache)
    layer = _frame_layer(config)
    model = group.provenance.model
    family = model.family
    if config.method == "cnn-lstm" and family != "logmel":
        raise FinetuneError(f"the CNN-LSTM trains on log-mel frames, but {group.key} holds {family} states; use "
                            f"--model logmel (made by `fs extract --model logmel --corpus {corpus} --frames 0`)")
    if config.method == "lora":
        if family == "whisper" and model.whisper_input != "trim":
            from featurestore.hints import command_for_group

            raise FinetuneError(f"{group.key} was extracted with Whisper input {model.whisper_input!r}: "
                                "its frames are cut from a 30-s padded run, so replaying the top layers on them is "
                                "not the model's own computation. Use trim groups (--whisper-input trim), made by: "
                                f"{command_for_group(group.provenance, corpus, frames=[layer], whisper_input='trim')}")
        if group.num_layers < 2:
            raise FinetuneError(f"{group.key} holds {family} features with no transformer layer to adapt; LoRA "
                                "needs an encoder (e.g. --model whisper --whisper-input trim)")
        if not 0 <= layer <= group.num_layers - 2:
            raise FinetuneError(f"--from-layer {layer} is out of range: {group.key} has layers "
                                f"0..{group.num_layers - 1} (0 = input to the first transformer layer) and LoRA needs "
                                f"a layer above the stored one, so use 0..{group.num_layers - 2}")
    if layer not in group.frame_layers:
        what = "log-mel frames" if config.method == "cnn-lstm" else f"frame-level states of layer {layer}"
        raise FinetuneError(f"{group.key} holds no {what} (stored frame layers: {group.frame_layers or 'none'}); "
                            f"make them with: {frames_command(group, layer)}")
    view = get_view(store, manifest, group, [layer], "mean", cache, cached_digest(workspace, corpus, cache))
    position = {u: i for i, u in enumerate(group.utt_ids().tolist())}
    rows = np.array([position[u] for u in view.ids.tolist()], dtype=np.int64)
    offsets = group.frame_offsets(layer)
    lengths = (offsets[rows + 1] - offsets[rows]).astype(np.int64)
    key = ("frames", store.url, group.key.path, layer)
    if key not in cache:
        cache[key] = FrameCache(group, layer)
    audio = group.audio_hashes()[rows]
    return _Side(corpus, group, view, rows, lengths, cache[key], audio, _group_identity(group, view))


def _group_identity(group: StoreGroup, view: FeatureView) -> str:
    """sha256 (hex) of a store group's key, creation time and content (the pooled means of the frame
    layer, (n, D), which the frames decide): a group re-extracted with ``--overwrite`` gets another."""
    prov = group.provenance
    h = hashlib.sha256(json.dumps([group.key.path, prov.created or None, prov.model.weights_hash or None]).encode())
    h.update(np.ascontiguousarray(view.X).tobytes())
    return h.hexdigest()


def _method(config: FinetuneConfig, store: FeatureStore, device: str, cache: Cache) -> _Method:
    if config.method == "cnn-lstm":
        return _CNNLSTM(config, device)
    return _TopLoRA(config, device, _encoder(config, store, device, cache))


def _encoder(config: FinetuneConfig, store: FeatureStore, device: str, cache: Cache) -> Any:
    """The encoder of the source group, loaded by name; its weights must be the ones the store holds."""
    from featurestore.encoders import EncoderError, load_encoder

    group = _group(config, "source", store, cache)
    model = group.provenance.model
    key = ("encoder", model.model_id, model.weights_hash, device)
    if key in cache:
        return cache[key]
    try:
        encoder = load_encoder(str(config.model), device=device, seed=int(model.seed or 0),
                               whisper_input=model.whisper_input or "full")
    except EncoderError as exc:
        raise FinetuneError(f"LoRA needs the encoder itself: {exc}") from None
    if encoder.info.weights_hash != model.weights_hash:
        raise FinetuneError(f"the encoder loaded as {config.model!r} has weights {encoder.info.weights_hash[:12]}, "
                            f"but {group.key} was extracted with {model.weights_hash[:12]}; load the "
                            f"same weights (model directory or --model-seed) or re-extract the group")
    cache[key] = encoder
    return encoder


# --------------------------------------------------------------------------- checkpoints


def checkpoint_root(workspace: Workspace, config: FinetuneConfig) -> Path:
    """``<workspace>/checkpoints/<train_key>/``: one folder per seed (and per few-shot baseline); the
    key is :meth:`FinetuneConfig.train_key` (the configuration less its number of seeds)."""
    return Path(workspace.root) / CHECKPOINTS_DIR / config.train_key()


def _run_record(config: FinetuneConfig, identity: dict[str, Any], seed: int, role: str,
                data_digest: str) -> dict[str, Any]:
    return {"train_key": config.train_key(), "config": config.to_dict(), "seed": seed, "role": role,
            "store_keys": identity["store_keys"], "weights_hashes": identity["weights_hashes"],
            "data_digest": data_digest}


_FOREIGN = ("train_key", "seed", "role")  # another configuration's folder: refused
_STALE = ("data_digest", "store_keys", "weights_hashes")  # this configuration on other data: retrained


def _check_checkpoint(path: Path, expected: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """(saved run record of ``path``, None) when it holds this run's model; (None, why) when there is none
    or it was trained on other data (labels, audio, store group contents); FinetuneError when the
    folder is another configuration's."""
    record_path = path / RUN_FILE
    if not path.exists():
        return None, None
    if not record_path.is_file():
        raise FinetuneError(f"{path} exists but is not a fine-tuning checkpoint (no {RUN_FILE}); move it away")
    try:
        saved = json.loads(record_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FinetuneError(f"{record_path} is unreadable ({exc}); move {path} away or run again with --rerun to "
                            "retrain it") from None
    if not isinstance(saved, dict):
        raise FinetuneError(f"{record_path} is not a run record; move {path} away or run again with --rerun")
    diff = [k for k in _FOREIGN if saved.get(k) != expected[k]]
    if diff:
        detail = "; ".join(f"{k}: checkpoint {saved.get(k)!r}, this run {expected[k]!r}" for k in diff)
        raise FinetuneError(f"checkpoint {path} comes from another configuration ({detail}); move it away, or run "
                            "again with --rerun to retrain it")
    stale = [k for k in _STALE if saved.get(k) != expected[k]]
    if stale:
        what = {"data_digest": "other labels, speakers, audio or store-group contents",
                "store_keys": "other store groups", "weights_hashes": "other encoder weights"}
        return None, f"{path.name} was trained on {' and '.join(what[k] for k in stale)}; retrained"
    return saved, None


def _write_checkpoint(method: _Method, est: Any, path: Path, record: dict[str, Any]) -> None:
    """Save ``est`` and its run record into ``path`` atomically (a folder appears whole or not at all)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        method.save(est, tmp)
        (tmp / RUN_FILE).write_text(json.dumps(record, indent=1, sort_keys=True, default=str))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- running


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std())


def _side_provenance(side: _Side) -> dict[str, Any]:
    return {**side.view.provenance, "utterances": len(side.labels), "frame_layer": int(side.view.layers[0])}


class _Trainer:
    """Per-seed training with checkpoints, dev-split fallback, progress and warnings."""

    def __init__(self, config: FinetuneConfig, method: _Method, workspace: Workspace, identity: dict[str, Any],
                 rerun: bool, classes: list[str], progress: TrainingProgress):
        self.config, self.method, self.identity, self.rerun = config, method, identity, rerun
        self.root = checkpoint_root(workspace, config)
        self.classes = classes
        self.progress = progress
        self.warnings: list[str] = []
        self.checkpoints: list[str] = []
        self.training: list[dict[str, Any]] = []
        self.train_seconds = 0.0
        self.current = ""  # the run in training, for an interruption's message
        self.predictions: dict[str, list[dict[str, Any]]] = {}  # per part (see classifiers.studies.intervals), per seed

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def fit(self, data: Data, seed: int, role: str) -> Any:
        """A model trained on ``data`` (or loaded from its checkpoint, when that was trained on the same data)."""
        name = f"seed{seed}" if role == "model" else f"seed{seed}-{role}"
        path = self.root / name
        run = f"seed {seed}" if role == "model" else f"seed {seed} ({role})"
        expected = _run_record(self.config, self.identity, seed, role, data.digest())
        saved, stale = (None, None) if self.rerun else _check_checkpoint(path, expected)
        if stale:
            self.warn(f"checkpoint {stale}")
        if saved is not None:
            est = self.method.load(path, seed, saved["dev_fraction"])
            self.checkpoints.append(str(path))
            self.training.append({k: saved.get(k) for k in ("seed", "role", "best_epoch", "dev_split", "history",
                                                           "train_seconds", "n_train")} | {"resumed": True})
            self.train_seconds += float(saved.get("train_seconds") or 0.0)
            self.progress.skip(run, f"loaded from its checkpoint {path}")
            return est
        self.current = run
        start = time.perf_counter()
        dev_fraction = self.config.dev_fraction
        est = self.method.make(seed, dev_fraction)
        try:
            est = self.method.fit(est, data, self.progress.start(run))
        except (SplitError, TrainingError, ValueError) as exc:  # ValueError: sklearn's checks on tiny sets
            if np.unique(data.labels).size < 2:
                raise FinetuneError(f"cannot train {self.config.method} on {len(data)} utterances: {exc}") from None
            self.warn(f"{role} (seed {seed}): no speaker-independent dev split possible on {len(data)} training "
                      f"utterances ({exc}); trained without one, keeping the last epoch")
            dev_fraction = 0.0
            est = self.method.fit(self.method.make(seed, dev_fraction), data, self.progress.start(run))
        seconds = time.perf_counter() - start
        self.train_seconds += seconds
        record = {**expected, "dev_fraction": dev_fraction, "best_epoch": int(est.best_epoch_),
                  "dev_split": est.dev_split_, "history": est.history_, "train_seconds": seconds,
                  "n_train": len(data), "classes": [str(c) for c in est.classes_]}
        _write_checkpoint(self.method, est, path, record)
        self.checkpoints.append(str(path))
        self.training.append({k: record[k] for k in ("seed", "role", "best_epoch", "dev_split", "history",
                                                     "train_seconds", "n_train")} | {"resumed": False})
        self.current = ""
        return est

    def evaluate(self, tested: list[tuple[Any, Data]], seed: int, part: str = "predictions") -> dict[str, Any]:
        """Metrics of the models on their test sets ((model, data) per fold), predictions pooled; the
        per-utterance predictions are kept under ``part``."""
        pred = np.concatenate([self.method.predict(est, data) for est, data in tested])
        parts = [p for _, data in tested for p in data.parts]
        ids = np.concatenate([side.view.ids[i] for side, i in parts])
        speakers = np.concatenate([side.view.speakers[i] for side, i in parts])
        labels = np.concatenate([data.labels for _, data in tested])
        self.predictions.setdefault(part, []).append(seed_predictions(seed, ids, speakers, labels, pred,
                                                                      self.classes))
        return evaluate(labels, pred, labels=self.classes)

    def interrupted(self, exc: KeyboardInterrupt) -> Interrupted:
        """The account of a stop by Ctrl-C / SIGTERM: where it stopped and which checkpoints are kept."""
        signal = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
        c = self.config
        where = f" while training {self.current}" if self.current else ""
        return Interrupted(f"{signal}: stopped fine-tuning {c.method} {c.source} -> {c.target}{where}; "
                           f"{len(self.checkpoints)} finished model(s) kept in {self.root}/; re-run the same command "
                           "to resume from them", terminated=isinstance(exc, Terminated))

    def under_training(self) -> str | None:
        """A warning when the best dev epoch of some model was its last (it may be under-trained)."""
        epochs = self.method.recipe["epochs"]
        if self.config.recipe == "tuned":  # the epochs are the dev split's best already
            return None
        late = [t for t in self.training if t.get("best_epoch") == epochs and t.get("dev_split") != "none"]
        if not late:
            return None
        runs = ", ".join(str(t["seed"]) + ("" if t["role"] == "model" else f" ({t['role']})") for t in late)
        return (f"the best dev epoch was the last one ({epochs} of {epochs}) for seed(s) {runs}: the model may be "
                f"under-trained; train longer with --epochs {2 * epochs} (epochs: {2 * epochs} in a study file)")


def tune_recipe(config: FinetuneConfig, method: _Method, src: _Side) -> dict[str, Any]:
    """The ``tuned`` recipe: one model (seed 0) per learning rate of
    :data:`~classifiers.learners.tuning.RECIPE_GRIDS` trained for ``config.epochs`` on the source alone, each scored
    by dev UAR per epoch on its speaker-independent dev split; the (lr, epoch) of the best dev UAR (ties: the first lr,
    the earlier epoch) becomes ``method.recipe``. Returns the record kept in the result (every candidate's curve)."""
    from classifiers.learners.tuning import RECIPE_GRIDS

    data = _data([(src, None)])
    candidates, split = [], "none"
    for lr in RECIPE_GRIDS[config.method]["lr"]:
        method.recipe = {**method.recipe, "lr": lr, "epochs": config.epochs}
        try:
            est = method.fit(method.make(0, config.dev_fraction), data)
        except (SplitError, TrainingError, ValueError) as exc:
            est, split = None, str(exc)
        if est is None or est.dev_split_ == "none":
            raise FinetuneError(f"--recipe tuned needs a speaker-independent dev split of {src.corpus!r} "
                                f"({split}); give --epochs and --lr (or --recipe paper)")
        split = est.dev_split_
        curve = [h.get("dev_uar") for h in est.history_]
        best_epoch = int(est.best_epoch_)
        candidates.append({"lr": lr, "best_epoch": best_epoch, "dev_uar": curve[best_epoch - 1],
                           "dev_uar_per_epoch": curve})
    best = max(candidates, key=lambda c: c["dev_uar"])
    method.recipe = {**method.recipe, "lr": best["lr"], "epochs": best["best_epoch"]}
    return {"name": "tuned", "chosen": {"lr": best["lr"], "epochs": best["best_epoch"]}, "on": src.corpus,
            "dev_split": split, "max_epochs": config.epochs, "seed": 0, "candidates": candidates}


def dev_uar_per_epoch(training: list[dict[str, Any]] | None, role: str = "model") -> list[list[float | None]]:
    """Dev UAR of each epoch (0..1; None without a dev split), one list per seed of ``role``, from a
    result's ``training`` records."""
    return [[h.get("dev_uar") for h in t.get("history") or []] for t in training or [] if t.get("role") == role]


def _confound(side: _Side, what: str) -> str | None:
    found = speaker_label_confound(side.view.speakers, side.labels)
    return f"{side.corpus} ({what}): {found['message']}" if found["confounded"] else None


def _data(parts: list[Part]) -> Data:
    """A :class:`Data` of a protocol's parts (rows None: every row of the side)."""
    return Data([(side, np.arange(len(side.labels)) if rows is None else rows) for side, rows in parts])


def _run_seeds(config: FinetuneConfig, trainer: _Trainer, src: _Side, tgt: _Side) -> tuple[Any, ...]:
    """Train and test each seed on its protocol's splits (one split where the protocol allows it; pooled
    folds are trained one model each and scored together): (uars, metrics, n_train, baseline uars,
    baseline metrics, shots)."""
    protocol = protocol_for(config)
    uars, metrics, n_train = [], [], []
    shots: list[dict[str, Any]] = []
    base_uars, base_metrics = [], []
    for seed in range(config.seeds):
        splits = protocol.splits(src, tgt, seed, single_split=True)
        for warning in splits.warnings:
            trainer.warn(warning)
        if splits.baseline_train is not None:
            base = trainer.evaluate([(trainer.fit(_data(splits.baseline_train), seed, "baseline"),
                                      _data([splits.folds[0].test]))], seed, "baseline_predictions")
            base_uars.append(base["uar"])
            base_metrics.append(base)
        if splits.shots is not None:
            shots.append(splits.shots)
        roles = ["model"] if len(splits.folds) == 1 else [f"model-fold{f + 1}" for f in range(len(splits.folds))]
        trained = [(trainer.fit(_data(fold.train), seed, role), _data([fold.test]))
                   for fold, role in zip(splits.folds, roles)]
        result = trainer.evaluate(trained, seed)
        uars.append(result["uar"])
        metrics.append(result)
        n_train.append(int(np.mean([fold.n_train for fold in splits.folds])))
    return uars, metrics, n_train, base_uars, base_metrics, shots or None


def check_data(config: FinetuneConfig, store: FeatureStore, workspace: Workspace, cache: Cache | None = None) -> None:
    """Check that the store holds what ``config``'s method reads (groups, frames, input mode) for both
    sides; :class:`FinetuneError` naming the ``fs extract`` command that makes what is missing."""
    cache = {} if cache is None else cache
    if config.method != "head":
        for role in ("source", "target"):
            _load_side(config, role, store, workspace, cache)


def run_finetune(config: FinetuneConfig, store: FeatureStore, workspace: Workspace, *, device: str = "cpu",
                 rerun: bool = False, cache: Cache | None = None, progress: bool = False) -> Result:
    """Run ``config`` and return its :class:`~classifiers.studies.result.Result` (with ``method``,
    ``checkpoints``, ``train_seconds``, ``training``, ``dev_uar_per_epoch``); see the module docstring
    for the protocols.

    Does not touch the ledger (:func:`classifiers.studies.engine.run` does). ``device``: where to train (not part of the
    configuration; recorded in the provenance). ``rerun`` retrains seeds whose checkpoints exist.
    ``progress``: report seeds, epochs and dev UAR on stderr as training goes (a bar on a terminal).
    Every check (groups, frames, encoder weights, LoRA targets, layers) runs before any training or
    checkpoint write. Raises :class:`FinetuneError` (or the store's error, with the ``fs extract``
    command for a condition not extracted yet); Ctrl-C or SIGTERM stop training at the next batch
    and raise :class:`~featurestore.errors.Interrupted` (finished seeds' checkpoints are kept).
    """
    start = time.perf_counter()
    cache = {} if cache is None else cache
    if config.method == "head":
        from classifiers.studies.protocols import run_probe

        try:
            result = run_probe(config.probe_config(), store, workspace, views=cache)
        except ProtocolError as exc:
            raise FinetuneError(str(exc)) from None
        result.warnings.append("the head trains on pooled features in memory (fs probe --classifier mlp); no "
                               "checkpoints are kept")
        result.method, result.checkpoints, result.train_seconds = "head", [], result.seconds
        if config.recipe == "tuned":
            from classifiers.learners.tuning import GRIDS

            result.extra["recipe"] = {"name": "tuned", "grid": GRIDS["mlp"], "on": "leave-speakers-out folds of the "
                                      "source", "chosen": [[t["best_params"] for t in seed] for seed in result.tuning or []]}
        return result

    src = _load_side(config, "source", store, workspace, cache)
    tgt = _load_side(config, "target", store, workspace, cache)
    if config.within:
        src, tgt = align(src, tgt)
    src_m, tgt_m = cached_manifest(workspace, config.source, cache), cached_manifest(workspace, config.target, cache)
    try:
        check_compatible(config, src, tgt, list(src_m.classes), list(tgt_m.classes), src_m.label_map_name,
                         tgt_m.label_map_name)
    except ProtocolError as exc:
        raise FinetuneError(str(exc)) from None
    method = _method(config, store, device, cache)
    recipe = tune_recipe(config, method, src) if config.recipe == "tuned" else None
    classifier = method.describe()  # builds the model once: bad LoRA targets or layers fail here
    classes = list(src_m.classes)
    identity = result_identity(config, store, workspace, cache)
    runs = config.seeds * (2 if protocol_for(config).baseline else 1)
    bar = TrainingProgress(runs, method.recipe["epochs"], f"fine-tune {config.method} {config.source} -> {config.target}",
                           enabled=progress)
    trainer = _Trainer(config, method, workspace, identity, rerun, classes, bar)
    missing = [c for c in classes if not np.any(tgt.labels == c)]
    if missing:
        trainer.warn(f"target {config.target!r} has no utterance of class(es) {missing}: UAR averages the others")
    try:
        uars, metrics, n_train, base_uars, base_metrics, shots = _run_seeds(config, trainer, src, tgt)
    except ProtocolError as exc:
        bar.close(stopped=True)
        raise FinetuneError(str(exc)) from None
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM as Terminated: finished seeds stay saved
        bar.close(stopped=True)
        raise trainer.interrupted(exc) from None
    bar.close()
    late = trainer.under_training()
    if late:
        trainer.warn(late)
    if config.within:
        trainer.warn(f"within-corpus: one speaker-independent train/test split per seed (about "
                     f"{WITHIN_TEST_FRACTION:.0%} of the speakers tested), not the probe's {5} folds")
    confound = _confound(src, "within-corpus") if config.within else \
        _confound(tgt, "few-shot target") if config.shots else None
    if confound:
        trainer.warn(confound)
    baseline = None
    if base_uars:
        mean, std = _mean_std(base_uars)
        baseline = {"uar_mean": mean, "uar_std": std, "uar_per_seed": base_uars, "metrics": base_metrics,
                    "beats_source_plus_shots": mean > float(np.mean(uars))}
        if baseline["beats_source_plus_shots"]:
            trainer.warn(baseline_wins_warning(config.shots, mean, float(np.mean(uars))))
    transductive = config.method == "cnn-lstm" and config.norm == "corpus"
    normalisation: dict[str, Any] = {"mode": config.norm, "transductive": transductive}
    if transductive:
        normalisation["note"] = ("the test log-mel frames are standardised with the statistics of the whole test "
                                 "set (its own unlabelled frames)")
    model_prov = src.view.provenance
    provenance = {"source": _side_provenance(src), "target": _side_provenance(tgt),
                  "model": {"name": config.model, "model_id": model_prov.get("model_id"),
                            "settings": model_prov.get("model_settings", {})},
                  "classifier": classifier, "classes": classes, "fs_version": __version__, "device": device}
    layer = 0 if config.method == "cnn-lstm" else classifier["params"]["layer"]
    return Result(
        config=config, identity=stored_identity(identity), uar_per_seed=uars, layer=layer, chance=chance_uar(classes),
        metrics=metrics, n_train=n_train, provenance=provenance, baseline=baseline, shots=shots,
        normalisation=normalisation, warnings=trainer.warnings, seconds=time.perf_counter() - start,
        method=config.method, checkpoints=trainer.checkpoints, train_seconds=trainer.train_seconds,
        training=trainer.training, dev_uar_per_epoch=dev_uar_per_epoch(trainer.training),
        whisper_input=model_prov.get("model_settings", {}).get("whisper_input"),
        predictions=trainer.predictions.get("predictions"),
        baseline_predictions=trainer.predictions.get("baseline_predictions"), extra={"recipe": recipe} if recipe else {})
