"""The study's protocols on stored features: one configuration in, one result record out.

:func:`run_probe` runs a :class:`ProbeConfig` against the store:

- **cross-language** (``source != target``): train on all of the source, test on all of the target;
- **within-corpus** (``target == source``): leave-speakers-out folds, predictions pooled → UAR;
- **few-shot** (``shots > 0``): ``shots`` per class of the target join the training data and never
  the test set; the target-only baseline (the shots alone, same test set) is reported beside it;
- **noise**: ``source_noise`` / ``target_noise`` read the noise-mixed groups of the store;
- **best layer**: chosen per seed on a speaker-independent dev split of the training corpus only
  (the source; within a corpus, each fold's training speakers), never on test labels.

Every choice that changes a number is in the configuration, and :meth:`ProbeConfig.key` hashes it.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from classifiers.learners.metrics import chance_uar, evaluate, uar
from classifiers.learners.normalise import OWN_STATISTICS, TRANSDUCTIVE, _apply, _stats, normalise
from classifiers.learners.probes import ClassifierError, classifier_config, make_classifier
from classifiers.learners.splits import SplitError, speaker_dev_split, speaker_label_confound
from classifiers.studies import settings
from classifiers.studies.intervals import seed_predictions
from classifiers.studies.layer_choice import LayerChoice, LayerError, best_layer_choice
from classifiers.studies.protocol_registry import (
    ProtocolError,
    SeedSplits,
    align,
    check_compatible,
    derived_protocol,
    protocol_for,
    resolve_protocol,
)
from classifiers.studies.result import Result, result_identity, stored_identity
from classifiers.studies.views import (
    Cache,
    cached_digest,
    cached_manifest,
    get_view,
    layer_indices,
    layer_matrix,
    resolve_group,
)
from featurestore import __version__
from featurestore.errors import FsError
from featurestore.progress import Progress
from featurestore.store import FeatureStore
from featurestore.view import FeatureView
from featurestore.workspace import Workspace

STATS: tuple[str, ...] = settings.STATS
# layer choices the pooled-feature runner serves (``weighted``, learned layer weights, comes next)
PROBE_LAYERS: tuple[str, ...] = ("last", "index", "best", "mean", "concat", "weighted")
WEIGHTED = "weighted"  # the layer choice whose probe learns softmax layer weights on (n, L, D) features
# settings a configuration records only when they differ from these (keys of older configurations unchanged)
UNRECORDED_DEFAULTS: dict[str, Any] = {"tune": False, "shot_weight": "none", "shot_augment": False}
NOISE_KEYS: tuple[str, ...] = ("noise", "snr_db", "noise_seed")
CONDITION_KEYS: tuple[str, ...] = ("condition", "noise", "noise_seed")  # a side under any condition chain
# Classifiers whose fit does not depend on the seed: identical training data is fitted once per run/cache.
DETERMINISTIC = frozenset({"logreg", "ridge"})
# Makes a progress reporter: called with total=..., desc=..., unit=... (e.g. the Progress class itself).
ProgressFactory = Callable[..., Progress]


def _noise(value: Any, name: str) -> dict[str, Any] | None:
    if value in (None, {}, ""):
        return None
    if not isinstance(value, dict):
        raise ProtocolError(f"{name} must be a mapping {{noise: DIR, snr_db: 10, noise_seed: 0}}, got {value!r}")
    if "condition" in value:
        return _condition_side(value, name)
    unknown = sorted(set(value) - set(NOISE_KEYS))
    if unknown or not value.get("noise") or value.get("snr_db") is None:
        raise ProtocolError(f"{name} {value!r}: give noise (the folder used by `fs extract --noise`) and snr_db, "
                            f"optionally noise_seed; valid keys: {', '.join(NOISE_KEYS)}")
    try:
        return {"noise": _local(str(value["noise"]), path_only=True), "snr_db": float(value["snr_db"]),
                "noise_seed": int(value.get("noise_seed", 0))}
    except (TypeError, ValueError):
        raise ProtocolError(f"{name} {value!r}: snr_db must be a number and noise_seed an integer") from None


def _condition_side(value: dict[str, Any], name: str) -> dict[str, Any]:
    """``{condition: TEXT, noise: DIR (for a noise step without source=), noise_seed: K}`` made canonical:
    ``{condition: the chain's canonical text (noise source absolute, inside its step), noise_seed: K}``, so
    that ``telephone`` and its spelled-out defaults are one configuration; a lone noise step is today's
    ``{noise, snr_db, noise_seed}`` (the same configuration as ``--target-noise DIR --snr S``)."""
    from featurestore.conditions import ConditionChain, ConditionError

    unknown = sorted(set(value) - set(CONDITION_KEYS))
    if unknown or not isinstance(value.get("condition"), str):
        raise ProtocolError(f"{name} {value!r}: give condition (as `fs extract --condition` takes it, steps joined by "
                            f"' > '), optionally noise (DIR) and noise_seed; valid keys: {', '.join(CONDITION_KEYS)}")
    seed = value.get("noise_seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ProtocolError(f"{name} {value!r}: noise_seed must be an integer")
    noise = _local(str(value["noise"]), path_only=True) if value.get("noise") else None
    try:
        chain = ConditionChain.parse(value["condition"], seed=int(seed), noise=noise)
    except ConditionError as exc:
        raise ProtocolError(f"{name}: {exc}") from None
    spec = chain.noise_spec()
    if len(chain.steps) == 1 and spec is not None and (spec.layout, spec.environments, spec.channel) == ("auto", (), "ch01"):
        return {"noise": spec.source, "snr_db": spec.snr_db, "noise_seed": spec.seed}  # today's noise side: one key
    return {"condition": chain.text, "noise_seed": chain.seed}


def _local(text: str, path_only: bool = False) -> str:
    """A path that exists here as its absolute form (one key for ``./m`` and ``/abs/m``); else as given.

    Without ``path_only`` a bare name (a registry alias such as ``whisper``) is never taken for a path."""
    path = Path(text).expanduser()
    if (path_only or "/" in text or text.startswith((".", "~"))) and path.exists():
        return str(path.resolve())
    return text


def _int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ProtocolError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def source_corpora(source: str | Sequence[str]) -> tuple[str, ...]:
    """The corpora a configuration's ``source`` names: one name, or the several of a multi-source union."""
    return (source,) if isinstance(source, str) else tuple(source)


def _canonical_source(value: Any, target: Any, error: type[FsError]) -> str | tuple[str, ...]:
    """``source`` as a config keeps it: one name as itself (the key of single-source results is unchanged),
    several (a list, a tuple or ``"a,b"``) as their sorted tuple; the target may not be among several."""
    names = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise error(f"source must be a corpus name or several (emodb,ravdess), got {value!r}")
    unique = sorted(dict.fromkeys(n.strip() for n in names))
    if len(unique) == 1:
        return unique[0]
    if target in unique:
        raise error(f"the target {target!r} is among the sources {unique}; train on the other corpora only")
    return tuple(unique)


class Sides:
    """What source, target and shots make of a configuration (shared by probe and fine-tuning configs)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]  # the subclasses are dataclasses: fields(self) is typed
    source: str | tuple[str, ...]  # one corpus; a multi-source configuration (ProbeConfig) may hold several
    multi_source = False  # a configuration class whose runner trains on a union of corpora sets this
    target: str
    model: str | None
    shots: int
    source_noise: dict[str, Any] | None
    target_noise: dict[str, Any] | None

    @property
    def within(self) -> bool:
        """Within-corpus: source and target are the same corpus."""
        return self.source == self.target

    protocol: str | None  # a registered protocol's name; unset: derived (protocol_registry.resolve_protocol)

    def settings_dict(self) -> dict[str, Any]:
        """Every field (a dataclass's), the protocol only when it is not the one source, target and shots make
        (so configurations that name no protocol keep their keys)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if out.get("protocol") == derived_protocol(self):
            del out["protocol"]
        return out

    def _check_settings(self, error: type[FsError], skip: tuple[str, ...] = ()) -> None:
        """The shared validation, from the one settings table (:mod:`classifiers.studies.settings`): source,
        target and model are names (a local model folder as its absolute path: one key for ``./m`` and
        ``/abs/m``), every field that is a setting (except ``skip``) is checked and made canonical, the
        noise mappings are read and shots need a target other than the source. Refusals are ``error``."""
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        if self.multi_source:
            put("source", _canonical_source(self.source, self.target, error))
        for name in (("target", "model") if isinstance(self.source, tuple) else ("source", "target", "model")):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise error(f"{name} must be a non-empty name, got {getattr(self, name)!r}")
        put("model", _local(str(self.model)))
        mine = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        for name, value in settings.check_all(mine, error).items():
            put(name, value)
        for name in ("source_noise", "target_noise"):
            put(name, _noise(getattr(self, name), name))
        if self.within and self.shots:
            raise error(f"shots take target utterances into training, which needs a target other than the "
                        f"source ({self.source!r}); within a corpus use shots 0 (speaker folds)")
        try:
            put("protocol", resolve_protocol(self))
        except ProtocolError as exc:
            raise error(str(exc)) from None


@dataclass(frozen=True)
class ProbeConfig(Sides):
    """Everything that decides a probe's numbers (see the module docstring for the protocols).

    ``layer``: ``"last"`` | ``"best"`` | int | ``"mean"`` | ``"concat:3,6"``; ``stat``: pooled
    ``"mean"`` or ``"mean+std"``; ``norm``: ``none`` | ``source`` | ``corpus`` | ``speaker``;
    ``seeds``: n runs with seeds 0..n-1; ``shots``: target utterances per class added to training
    (0 = none); ``source_noise`` / ``target_noise``: None (clean) or ``{noise, snr_db, noise_seed}``;
    ``dev_fraction``: share of source speakers held out to choose the ``best`` layer.
    ``whisper_input`` / ``model_seed`` pick among groups of one model extracted with other settings.
    ``source``: one corpus, or a tuple of several (multi-source: trained on their union, each corpus
    normalised on its own, speaker ids prefixed by corpus; ``"a,b"`` and lists are made that tuple).
    """

    source: str | tuple[str, ...]
    target: str
    model: str
    whisper_input: str | None = None
    model_seed: int | None = None
    layer: str | int = "last"
    stat: str = "mean"
    classifier: str = "logreg"
    classifier_params: dict[str, Any] = field(default_factory=dict)
    norm: str = "none"
    seeds: int = 5
    shots: int = 0
    shots_speaker_disjoint: bool = False
    source_noise: dict[str, Any] | None = None
    target_noise: dict[str, Any] | None = None
    dev_fraction: float = 0.2
    protocol: str | None = None
    tune: bool = False
    shot_weight: str | float = "none"
    shot_augment: bool = False
    multi_source = True

    def __post_init__(self) -> None:
        self._check_settings(ProtocolError)
        try:
            LayerChoice.parse(self.layer).refuse_unless(PROBE_LAYERS, "the pooled-feature probe")
        except LayerError as exc:
            raise ProtocolError(str(exc)) from None
        if self.protocol != "few-shot":  # shots that are not trained on have no weight: one key
            object.__setattr__(self, "shot_weight", "none")
            object.__setattr__(self, "shot_augment", False)
        problem = learner_problem(self)
        if problem:
            raise ProtocolError(problem)

    def seed_list(self) -> list[int]:
        return list(range(self.seeds))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every setting (the ledger's ``config``; see :meth:`Sides.settings_dict`);
        the learner settings of :data:`UNRECORDED_DEFAULTS` only when set (older keys unchanged)."""
        return {k: v for k, v in self.settings_dict().items()
                if not (k in UNRECORDED_DEFAULTS and v == UNRECORDED_DEFAULTS[k])}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeConfig:
        """A config from a dict (a study file, the ledger); unknown keys raise :class:`ProtocolError`."""
        if not isinstance(data, dict):
            raise ProtocolError(f"a probe configuration must be a mapping, got {type(data).__name__}")
        valid = [f.name for f in fields(cls)]
        unknown = [k for k in data if k not in valid]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(str(k), valid, n=1)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ProtocolError(f"unknown probe setting(s) {', '.join(hints)}; valid keys: {', '.join(valid)}")
        missing = [k for k in ("source", "target", "model") if k not in data]
        if missing:
            raise ProtocolError(f"probe setting(s) {missing} missing; source, target and model are required")
        return cls(**data)

    def key(self) -> str:
        """sha256 (hex) of the canonical JSON of :meth:`to_dict`: equal settings, equal key."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def __hash__(self) -> int:
        return hash(self.key())


def shot_learner(config: ProbeConfig) -> bool:
    """Whether few-shot training goes through :class:`~classifiers.learners.shot_weighting.ShotWeightedClassifier`
    (a shot weight or feature augmentation asked for)."""
    return config.shot_weight != "none" or config.shot_augment


def learner_problem(config: ProbeConfig) -> str | None:
    """Why ``config``'s learner settings (norm coral, layer weighted, tune, shot_weight) cannot go together,
    in one line naming the fix; None when they can."""
    weighted = config.layer == WEIGHTED
    if config.norm == "coral" and config.within:
        return (f"norm coral aligns the source to another corpus's covariance; within {config.target!r} there is no "
                "shift to align: use --norm corpus")
    if weighted and config.classifier != "logreg":
        return (f"layer weighted learns its own linear probe (softmax layer weights and a linear layer), not "
                f"{config.classifier}; use --classifier logreg with it")
    if weighted and config.tune:
        return "--tune has no grid for the weighted-layer probe; give its parameters (lr, epochs, weight_decay) instead"
    if config.tune:
        from classifiers.learners.tuning import GRIDS

        if config.classifier not in GRIDS:
            return f"--tune has no grid for classifier {config.classifier!r}; grids exist for: {', '.join(GRIDS)}"
    if shot_learner(config):
        if weighted or config.classifier == "mlp":
            what = "the weighted-layer probe" if weighted else "the mlp classifier"
            flag = "--shot-weight" if config.shot_weight != "none" else "--shot-augment"
            return f"{flag} needs a classifier that takes sample weights, not {what}; use logreg, svm, ridge or lgbm"
        if config.shot_weight == "auto" and config.shots < 2:
            return (f"--shot-weight auto chooses the weight by cross-validation over the shots, which needs at least 2 "
                    f"shots per class (got {config.shots}); give a number or more shots")
    return None


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std())


# --------------------------------------------------------------------------- data sides


@dataclass
class _Side:
    """One corpus as read for a probe: its view, speaker groups unique across corpora, and features per
    layer choice (with corpus-level normalisation applied, computed once)."""

    corpus: str
    view: FeatureView
    norm: str
    _memo: dict[Any, np.ndarray] = field(default_factory=dict)
    parts: np.ndarray | None = None  # (n,) corpus of each row of a multi-source union (its speakers carry it)

    def __post_init__(self) -> None:
        self.labels = self.view.labels
        speakers = self.view.speakers.astype(str)
        self.groups = speakers if self.parts is not None else np.char.add(f"{self.corpus}:", speakers)
        prov = self.view.provenance
        # what the rows are: fits and selections are cached under it with row indices
        self.ident = (prov.get("store_key"), prov.get("label_map_digest"), self.view.stat, self.norm,
                      _array_digest(self.view.ids))

    def subset(self, rows: np.ndarray) -> _Side:
        """This corpus restricted to ``rows`` (a new side: its own identity and memo)."""
        return _Side(self.corpus, self.view.subset(rows), self.norm,
                     parts=None if self.parts is None else self.parts[rows])

    def matrix(self, choice: str | int) -> np.ndarray:
        """``(n, D')`` float32 features of ``choice`` (possibly a strided view of the stored array), for
        ``weighted`` every layer ``(n, L, D)``; ``corpus`` / ``speaker`` / ``coral`` modes standardise the
        whole corpus with its own (unlabelled) statistics here (per layer and dimension), once per choice."""
        if self.norm not in OWN_STATISTICS and isinstance(choice, (int, np.integer)):
            return layer_matrix(self.view, choice)  # a slice: no copy of every layer of a best-layer search
        if choice not in self._memo:
            X = self.view.X if choice == WEIGHTED else layer_matrix(self.view, choice)
            shape = X.shape
            X = X.reshape(len(X), -1)
            if self.norm in OWN_STATISTICS:
                # normalise() standardises each of its two sets with that set's own statistics;
                # only the first is wanted here, the one-row second set is a placeholder. A union is
                # standardised corpus by corpus.
                parts = np.zeros(len(X), dtype=int) if self.parts is None else self.parts
                X = np.array(X, dtype=np.float32)
                for part in np.unique(parts):
                    rows = np.flatnonzero(parts == part)
                    X[rows] = normalise(X[rows], X[rows[:1]], OWN_STATISTICS[self.norm],
                                        train_groups=self.groups[rows], test_groups=self.groups[rows[:1]])[0]
            self._memo[choice] = np.ascontiguousarray(X, dtype=np.float32).reshape(shape)
        return self._memo[choice]


def _union(sides: list[_Side]) -> _Side:
    """Several corpora's sides as one training side: rows concatenated, ids and speakers prefixed by corpus,
    each corpus normalised on its own (``parts``); provenance of the first with every part's under ``parts``."""
    views = [s.view for s in sides]
    prefixed = [lambda a, s=s: np.char.add(f"{s.corpus}:", a.astype(str)) for s in sides]
    cat = lambda name: np.concatenate([p(getattr(v, name)) for p, v in zip(prefixed, views)])  # noqa: E731
    first = views[0]
    prov = {**first.provenance, "store_key": "+".join(str(v.provenance.get("store_key")) for v in views),
            "label_map_digest": "+".join(str(v.provenance.get("label_map_digest")) for v in views),
            "parts": [{"corpus": s.corpus, **s.view.provenance} for s in sides]}
    view = FeatureView(first.key, cat("ids"), np.concatenate([v.X for v in views]),
                       np.concatenate([v.labels for v in views]), cat("speakers"),
                       np.concatenate([v.genders for v in views]), np.concatenate([v.languages for v in views]),
                       first.classes, first.layers, first.stat, prov, first.store_provenance)
    parts = np.concatenate([np.full(len(v), i) for i, v in enumerate(views)])
    return _Side("+".join(s.corpus for s in sides), view, sides[0].norm, parts=parts)


def _load_side(config: ProbeConfig, role: str, store: FeatureStore, workspace: Workspace, cache: Cache) -> _Side:
    corpora = config.source if role == "source" else config.target
    if isinstance(corpora, tuple):
        return _union([_load_corpus(config, corpus, role, store, workspace, cache) for corpus in corpora])
    return _load_corpus(config, corpora, role, store, workspace, cache)


def _load_corpus(config: ProbeConfig, corpus: str, role: str, store: FeatureStore, workspace: Workspace,
                 cache: Cache) -> _Side:
    noise = config.source_noise if role == "source" else config.target_noise
    manifest = cached_manifest(workspace, corpus, cache)
    group = resolve_group(store, corpus, config.model, noise, config.whisper_input, config.model_seed, cache)
    try:
        layers = layer_indices(config.layer, group.num_layers)
    except FsError as exc:
        raise ProtocolError(f"{group.key}: {exc}") from None
    view = get_view(store, manifest, group, layers, config.stat, cache, cached_digest(workspace, corpus, cache))
    return _Side(corpus, view, config.norm)


# --------------------------------------------------------------------------- the runner


def _digest(*arrays: np.ndarray | None) -> str:
    h = hashlib.sha1()
    for a in arrays:
        h.update(b"all" if a is None else np.ascontiguousarray(a, dtype=np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()


def _array_digest(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    return hashlib.sha1(f"{a.dtype.str}{a.shape}".encode() + a.tobytes()).hexdigest()


class _Runner:
    """Fits and layer selections of one probe, memoised in the shared cache."""

    def __init__(self, config: ProbeConfig, cache: Cache, classes: list[str]):
        self.config = config
        self.cache = cache
        self.classes = classes
        self.warnings: list[str] = []
        self.clf_ident = (config.classifier, json.dumps(config.classifier_params, sort_keys=True),
                          *((config.tune, config.shot_weight) if config.tune or config.shot_weight != "none" else ()),
                          *(("augment",) if config.shot_augment else ()))
        # seeded searches (tuning folds, shot-weight folds, the weighted probe's training) make fits seed-dependent
        self.deterministic = (config.classifier in DETERMINISTIC and not config.tune and config.shot_weight != "auto"
                              and config.layer != WEIGHTED)
        self._evaluated: dict[Any, dict[str, Any]] = {}
        self._predicted: dict[Any, tuple[np.ndarray, np.ndarray, dict[str, Any]]] = {}
        self._coral: dict[Any, Any] = {}
        self.progress: Progress | None = None
        self.where: dict[str, str] = {}  # shown beside the progress count: seed, fold

    def evaluate(self, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
        """:func:`~classifiers.learners.metrics.evaluate` over ``classes``, computed once per distinct
        (truth, prediction) pair: seeds of a deterministic classifier repeat the same predictions."""
        key = ("evaluate", _array_digest(y_true), _array_digest(y_pred))
        if key not in self._evaluated:
            self._evaluated[key] = evaluate(y_true, y_pred, labels=self.classes)
        return copy.deepcopy(self._evaluated[key])

    def _warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def _fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int, params: dict[str, Any],
             choice: str | int, shot_mask: np.ndarray | None = None) -> Any:
        """The probe fitted on ``X (n, D')`` (``(n, L, D)`` for ``weighted``), ``y``, speaker ``groups``; with
        ``shot_mask (n,)`` the target shots weighted by ``config.shot_weight`` (:class:`ShotWeightedClassifier`)."""
        config = self.config
        est = make_probe(config, seed, params, choice, shot_mask is not None)
        fit_kw: dict[str, Any] = {"groups": groups} if shot_mask is None else {"groups": groups, "shot_mask": shot_mask}
        try:
            return est.fit(X, y, **fit_kw)
        except (SplitError, ClassifierError, ValueError) as exc:  # ValueError: sklearn's fold checks on tiny sets
            if "dev_fraction" not in est.get_params() or np.unique(y).size < 2:
                raise ProtocolError(f"cannot train {config.classifier} on {X.shape[0]} utterances: {exc}") from None
            self._warn(f"{config.classifier}: no dev split possible on {X.shape[0]} training utterances ({exc}); "
                       "trained without one, keeping the last epoch")
            return make_probe(config, seed, {**params, "dev_fraction": 0.0}, choice).fit(X, y, groups=groups)

    def _tuned(self, part: tuple[_Side, np.ndarray | None], X: np.ndarray, choice: str | int,
               seed: int) -> dict[str, Any]:
        """``{"best_params", "cv_results"}`` of :func:`~classifiers.learners.tuning.tune` on the training part
        ``part`` (the source, or a fold's training speakers; its features ``X``), cached by its rows and seed."""
        from classifiers.learners.tuning import tune

        side, rows = part
        key = ("select", "tune", side.ident, _digest(rows), choice, self.clf_ident, seed)
        if key not in self.cache:
            labels = side.labels if rows is None else side.labels[rows]
            groups = side.groups if rows is None else side.groups[rows]
            try:
                best, results = tune(self.config.classifier, X, labels, groups, random_state=seed,
                                     fixed=self.config.classifier_params)
            except (SplitError, ClassifierError, ValueError) as exc:
                raise ProtocolError(f"--tune on {side.corpus!r} ({X.shape[0]} utterances): {exc}") from None
            self.cache[key] = {"best_params": best, "cv_results": results, "tuned_on": side.corpus}
        return self.cache[key]

    def tick(self, n: int = 1) -> None:
        """Count ``n`` fits done on the progress reporter (if any), showing where the run is."""
        if self.progress is not None:
            self.progress.update(n, **self.where)

    def _fit_key(self, train: list[tuple[_Side, np.ndarray | None]], choice: str | int, seed: int,
                 target: _Side | None = None) -> tuple[Any, ...]:
        aligned_to = target.ident if self.config.norm == "coral" and target is not None else None
        return ("fit", tuple((s.ident, _digest(i)) for s, i in train), choice, self.clf_ident,
                None if self.deterministic else seed, *((aligned_to,) if aligned_to else ()))

    def coral_align(self, train: list[tuple[_Side, np.ndarray | None]], X_train: np.ndarray, target: _Side,
                    choice: str | int) -> np.ndarray:
        """``X_train`` with the rows of every training part from another corpus than ``target`` (the source;
        not the shots) mapped onto the covariance of all of ``target``'s features (CORAL, label-free; per
        layer for ``weighted``). Each part's map is kept for this run."""
        from classifiers.learners.coral import CoralAligner

        out, start = X_train.copy(), 0
        for side, rows in train:
            n = len(side.labels) if rows is None else rows.size
            if side is not target:
                key = (side.ident, _digest(rows), target.ident, choice)
                X, T = X_train[start:start + n], target.matrix(choice)
                if key not in self._coral:
                    layers = range(X.shape[1]) if X.ndim == 3 else [None]
                    self._coral[key] = [CoralAligner().fit(X if k is None else X[:, k], T if k is None else T[:, k])
                                        for k in layers]
                maps = self._coral[key]
                out[start:start + n] = maps[0].transform(X) if X.ndim == 2 else \
                    np.stack([m.transform(X[:, k]) for k, m in enumerate(maps)], axis=1)
            start += n
        return out

    @staticmethod
    def train_matrix(train: list[tuple[_Side, np.ndarray | None]], choice: str | int) -> np.ndarray:
        """``(n, D')`` features of the rows ``train`` ((side, indices or None for all) parts), before
        ``source`` normalisation."""
        Xs = [s.matrix(choice) if i is None else s.matrix(choice)[i] for s, i in train]
        return Xs[0] if len(Xs) == 1 else np.concatenate(Xs)

    def estimator(self, train: list[tuple[_Side, np.ndarray | None]], X_train: np.ndarray, choice: str | int,
                  seed: int, memo: bool = True, target: _Side | None = None) -> Any:
        """The estimator fitted on ``X_train`` (the rows ``train``, normalised as the config says); with
        ``memo`` kept in the shared cache, keyed by the exact training rows, layer choice, classifier
        settings, unless deterministic the seed, and for ``coral`` the ``target`` aligned to."""
        return self.fitted(train, X_train, choice, seed, memo, target)[0]

    def fitted(self, train: list[tuple[_Side, np.ndarray | None]], X_train: np.ndarray, choice: str | int,
               seed: int, memo: bool = True, target: _Side | None = None) -> tuple[Any, dict[str, Any]]:
        """(:meth:`estimator`, what its fit learned besides: ``tuning`` (``--tune``: on the first training part,
        unless it is the ``target`` itself, the shots-only baseline), ``shot_weight`` (few-shot with
        ``--shot-weight``), ``layer_weights`` (``weighted``))."""
        key = self._fit_key(train, choice, seed, target)
        entry = self.cache.get(key) if memo else None
        if entry is None:
            y = np.concatenate([s.labels if i is None else s.labels[i] for s, i in train])
            groups = np.concatenate([s.groups if i is None else s.groups[i] for s, i in train])
            sizes = [len(s.labels) if i is None else i.size for s, i in train]
            info: dict[str, Any] = {}
            params = dict(self.config.classifier_params)
            if self.config.tune and train[0][0] is not target:
                info["tuning"] = self._tuned(train[0], X_train[:sizes[0]], choice, seed)
                params.update(info["tuning"]["best_params"])
            shot_mask = None
            if shot_learner(self.config) and len(train) > 1:  # few-shot: the parts after the source
                shot_mask = np.arange(len(y)) >= sizes[0]
            est = self._fit(X_train, y, groups, seed, params, choice, shot_mask)
            info.update(fit_record(est))
            entry = (est, info)
            if memo:
                self.cache[key] = entry
        return entry

    def fit_predict(self, train: list[tuple[_Side, np.ndarray | None]], test: tuple[_Side, np.ndarray | None],
                    choice: str | int, seed: int, memo: bool = True) -> np.ndarray:
        """Fit on the rows ``train`` ((side, indices or None for all) parts), predict ``test``: ``(m,)`` labels.

        With ``memo`` the fitted estimator (see :meth:`estimator`) and the predictions for this run
        (labels and class probabilities, see :meth:`proba`) are kept; the dev fits of
        :meth:`select_layer` pass ``memo=False``. Counts one fit done.
        """
        side, idx = test
        predicted = self._predicted_key(train, test, choice, seed)
        if memo and predicted in self._predicted:
            self.tick()
            return self._predicted[predicted][0]
        X_train = self.train_matrix(train, choice)
        X_test = side.matrix(choice) if idx is None else side.matrix(choice)[idx]
        if self.config.norm == "source":  # per layer and dimension for weighted (n, L, D) features
            a, b, _ = normalise(X_train.reshape(len(X_train), -1), X_test.reshape(len(X_test), -1), "source")
            X_train, X_test = a.reshape(X_train.shape), b.reshape(X_test.shape)
        elif self.config.norm == "coral":
            X_train = self.coral_align(train, X_train, side, choice)
        est, info = self.fitted(train, X_train, choice, seed, memo, side)
        pred = np.asarray(est.predict(X_test))
        if memo:  # the test predictions a result keeps: probabilities in ``classes`` order
            proba = np.zeros((pred.size, len(self.classes)))
            proba[:, [self.classes.index(c) for c in est.classes_]] = est.predict_proba(X_test)
            self._predicted[predicted] = (pred, proba, info)
        self.tick()
        return pred

    def _predicted_key(self, train: list[tuple[_Side, np.ndarray | None]], test: tuple[_Side, np.ndarray | None],
                       choice: str | int, seed: int) -> tuple[Any, ...]:
        return (self._fit_key(train, choice, seed, test[0]), test[0].ident, _digest(test[1]))

    def proba(self, train: list[tuple[_Side, np.ndarray | None]], test: tuple[_Side, np.ndarray | None],
              choice: str | int, seed: int) -> np.ndarray:
        """``(m, C)`` class probabilities (``classes`` order; 0 for a class the estimator never saw) of the
        :meth:`fit_predict` made with these arguments."""
        return self._predicted[self._predicted_key(train, test, choice, seed)][1]

    def fit_info(self, train: list[tuple[_Side, np.ndarray | None]], test: tuple[_Side, np.ndarray | None],
                 choice: str | int, seed: int) -> dict[str, Any]:
        """What the fit of that :meth:`fit_predict` learned besides the probe (see :meth:`fitted`)."""
        return self._predicted[self._predicted_key(train, test, choice, seed)][2]

    def select_layer(self, side: _Side, rows: np.ndarray | None, seed: int) -> tuple[int, dict[int, float]]:
        """The layer of best dev UAR on a speaker-independent dev split of ``side``'s ``rows`` (labels of
        no other rows are read), and the dev UAR of every layer.

        Cached by the split's exact rows (and the seed, unless the classifier is deterministic), so a
        split met again, for another target or seed, is not fitted again.
        """
        config = self.config
        split_key = ("dev-split", side.ident, _digest(rows), seed, config.dev_fraction)
        if split_key not in self.cache:
            picked = np.arange(len(side.labels)) if rows is None else rows
            try:
                train, dev = speaker_dev_split(side.groups[picked], side.labels[picked], config.dev_fraction, seed)
            except SplitError as exc:
                raise ProtocolError(f"--layer best needs a speaker-independent dev split of {side.corpus!r}: {exc}; "
                                    "or choose a fixed layer (--layer last or a number)") from None
            self.cache[split_key] = (picked[train], picked[dev])
        train, dev = self.cache[split_key]
        key = ("select", side.ident, _digest(train, dev), tuple(side.view.layers), self.clf_ident,
               None if self.deterministic else seed)
        if key in self.cache:
            self.tick(len(side.view.layers))  # the dev fits this selection stands for
            return self.cache[key]
        scores: dict[int, float] = {}
        for layer in side.view.layers:
            pred = self.fit_predict([(side, train)], (side, dev), layer, seed, memo=False)
            scores[layer] = uar(side.labels[dev], pred, labels=self.classes)
        best = max(scores, key=lambda k: scores[k])  # ties: the lowest layer
        self.cache[key] = (best, scores)
        return best, scores


def make_probe(config: ProbeConfig, seed: int, params: dict[str, Any] | None = None, choice: Any = None,
               shots_weighted: bool = False) -> Any:
    """The unfitted probe of ``config`` (``params``: its parameters, default the configured ones): the
    weighted-layer probe for ``weighted`` (``choice``, default the config's layer), else the configured
    classifier, wrapped in :class:`~classifiers.learners.shot_weighting.ShotWeightedClassifier` when
    ``shots_weighted`` (candidates: ``auto``'s, or the one weight given)."""
    params = dict(config.classifier_params if params is None else params)
    if (config.layer if choice is None else choice) == WEIGHTED:
        from classifiers.learners.layer_weights import WeightedLayerProbe

        try:
            return WeightedLayerProbe(random_state=seed).set_params(**params)
        except ValueError as exc:
            raise ProtocolError(f"layer weighted: bad parameter for the weighted-layer probe ({exc}); it takes "
                                "lr, epochs, batch_size, dev_fraction, weight_decay") from None
    est = make_classifier(config.classifier, seed, **params)
    if not shots_weighted:
        return est
    from classifiers.learners.shot_weighting import ShotWeightedClassifier

    weight = "1" if config.shot_weight == "none" else config.shot_weight  # none: the plain union (augmented)
    weights = None if weight == "auto" else [weight if weight == "balanced" else float(weight)]
    return ShotWeightedClassifier(est, weights=weights, random_state=seed, augment=config.shot_augment)


def fit_record(est: Any) -> dict[str, Any]:
    """What a fitted probe learned besides its weights, JSON-able: ``layer_weights`` (the weighted-layer
    probe's softmax weights, ``(L,)``), ``shot_weight`` (the weight used, every candidate's cross-validated
    shot UAR; ``inf`` written as ``"inf"``)."""
    out: dict[str, Any] = {}
    if hasattr(est, "layer_weights_"):
        out["layer_weights"] = [float(w) for w in est.layer_weights_]
    if hasattr(est, "weight_"):
        text = lambda w: "inf" if np.isinf(w) else float(w)  # noqa: E731
        out["shot_weight"] = {"weight": text(est.weight_),
                              "cv_uar": {str(text(w)): float(u) for w, u in est.choice_.scores.items()},
                              "n_folds": est.choice_.n_folds}
    return out


def _fixed_choice(layer: str | int, view: FeatureView) -> str | int:
    if layer == WEIGHTED:
        return WEIGHTED
    if layer == "mean" or (isinstance(layer, str) and layer.startswith("concat:")):
        return "mean" if layer == "mean" else "concat:" + ",".join(str(k) for k in view.layers)
    return view.layers[0]


def _confound(side: _Side, what: str) -> str | None:
    found = speaker_label_confound(side.view.speakers, side.labels)
    if found["confounded"]:
        return f"{side.corpus} ({what}): {found['message']}"
    return None


def _side_provenance(side: _Side) -> dict[str, Any]:
    prov = dict(side.view.provenance)
    prov["utterances"] = len(side.labels)
    return prov


@dataclass
class _SeedRun:
    """What one seed gives: metrics on the test set, training size, and the parts a protocol adds."""

    metrics: dict[str, Any]
    n_train: int
    layer: Any = None
    dev_uar: dict[str, float] | None = None
    shots: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None
    predictions: dict[str, Any] | None = None
    baseline_predictions: dict[str, Any] | None = None
    fits: list[dict[str, Any]] = field(default_factory=list)  # per fold, what the fit learned (Runner.fitted)
    baseline_fit: dict[str, Any] | None = None


def _every_seed(values: list[dict[str, Any] | None], what: str) -> list[dict[str, Any]]:
    """``values`` (one per seed) when every seed gave one: the part ``what`` that the protocol promises."""
    given = [v for v in values if v is not None]
    if len(given) != len(values):
        raise ProtocolError(f"{len(values) - len(given)} of {len(values)} seeds gave no {what}; the protocol must give "
                            "it for every seed")
    return given


def _predictions(runner: _Runner, side: _Side, rows: np.ndarray | None, seed: int, pred: np.ndarray,
                 proba: np.ndarray) -> dict[str, Any]:
    """One seed's predictions on ``side``'s ``rows`` (None: all) for the result record."""
    take = slice(None) if rows is None else rows
    return seed_predictions(seed, side.view.ids[take], side.view.speakers[take], side.labels[take], pred,
                            runner.classes, proba)


def _run_seed(runner: _Runner, splits: SeedSplits, fixed: str | int | None) -> _SeedRun:
    """Fit and test one seed's splits (any registered protocol): a ``best`` layer is chosen on the first
    training part of each fold (the source, or a fold's training speakers) by a dev split of it; pooled
    folds give one prediction per target utterance; a baseline is tested on the fold's test part."""
    seed = splits.seed
    for warning in splits.warnings:
        runner._warn(warning)
    preds, probas, layers, scores, fits = [], [], [], [], []
    choice: str | int
    for f, fold in enumerate(splits.folds):
        if splits.pooled:
            runner.where["fold"] = f"{f + 1}/{len(splits.folds)}"
        if fixed is None:
            choice, fold_scores = runner.select_layer(*fold.train[0], seed)
            layers.append(int(choice))
            scores.append(fold_scores)
        else:
            choice = fixed
        preds.append(runner.fit_predict(fold.train, fold.test, choice, seed))
        probas.append(runner.proba(fold.train, fold.test, choice, seed))
        fits.append(runner.fit_info(fold.train, fold.test, choice, seed))
    tgt, rows = splits.folds[0].test
    if splits.pooled:  # the folds' test parts partition the target: every utterance predicted once
        rows = None
        pred = np.empty(len(tgt.labels), dtype=tgt.labels.dtype)
        proba = np.zeros((len(tgt.labels), len(runner.classes)))
        for fold, fold_pred, fold_proba in zip(splits.folds, preds, probas):
            pred[fold.test[1]], proba[fold.test[1]] = fold_pred, fold_proba
    else:
        pred, proba = preds[0], probas[0]
    truth = tgt.labels if rows is None else tgt.labels[rows]
    run = _SeedRun(runner.evaluate(truth, pred), int(np.mean([fold.n_train for fold in splits.folds])),
                   predictions=_predictions(runner, tgt, rows, seed, pred, proba), shots=splits.shots, fits=fits)
    if fixed is None:
        run.layer = layers if splits.pooled else layers[0]
        run.dev_uar = {str(k): float(np.mean([s[k] for s in scores])) for k in scores[0]}
    if splits.baseline_train is not None:
        test = splits.folds[0].test
        base = runner.fit_predict(splits.baseline_train, test, choice, seed)
        base_proba = runner.proba(splits.baseline_train, test, choice, seed)
        run.baseline = runner.evaluate(truth, base)
        run.baseline_fit = runner.fit_info(splits.baseline_train, test, choice, seed)
        run.baseline_predictions = _predictions(runner, tgt, rows, seed, base, base_proba)
    return run


def _data_warnings(runner: _Runner, src: _Side, tgt: _Side) -> None:
    """Say where speaker and label are entangled in data a result depends on."""
    config = runner.config
    confound = _confound(src, "within-corpus") if config.within else \
        _confound(tgt, "few-shot target") if config.shots else None
    if confound:
        runner._warn(confound)
    if config.layer == "best" and not config.within and _confound(src, "best-layer dev split"):
        runner._warn(f"the best layer was chosen on a dev split of {config.source!r}, whose speakers and labels are "
                     "confounded: its dev UAR may reward speaker cues; compare with --layer last")
    if config.norm == "speaker":
        sides = [src] if config.within else [src, tgt]
        tangled = [side.corpus for side in sides if _confound(side, "speaker norm")]
        if tangled:
            runner._warn(f"speaker normalisation on {', '.join(tangled)}: where a speaker carries one label, "
                         "removing the speaker's mean removes the label too")


def baseline_wins_warning(shots: int, baseline_uar: float, source_plus_shots_uar: float) -> str:
    """The warning of a few-shot result whose target-only baseline beats source+shots (UARs in %, as tables)."""
    return (f"the target-only baseline ({shots} shots per class alone) scores UAR {100 * baseline_uar:.1f} %, above "
            f"source+shots ({100 * source_plus_shots_uar:.1f} %): the source data does not help here")


def _normalisation_info(norm: str) -> dict[str, Any]:
    info: dict[str, Any] = {"mode": norm, "transductive": norm in TRANSDUCTIVE}
    if norm == "corpus":
        info["note"] = "the target is standardised with statistics of its own unlabelled features"
    elif norm == "coral":
        info["note"] = ("each corpus is standardised with its own statistics, then the source is mapped onto the "
                        "covariance of the target's unlabelled features (CORAL)")
    elif norm == "speaker":
        info["note"] = "every speaker, test speakers included, is standardised with its own statistics"
    return info


def _fits_per_seed(config: ProbeConfig, src: _Side) -> int:
    """Fits one seed makes (a progress total): per fold, the dev fit of every layer for ``best`` and the
    probe itself; the protocol's baseline (few-shot: the target-only one) once."""
    protocol = protocol_for(config)
    dev = len(src.view.layers) if config.layer == "best" else 0
    return protocol.folds_per_seed(src) * (dev + 1) + (1 if protocol.baseline else 0)


def _progress(factory: ProgressFactory | None, config: ProbeConfig, src: _Side) -> Any:
    """A progress reporter of the probe's fits (``factory(total=, desc=, unit=)``), or a silent one."""
    total = config.seeds * _fits_per_seed(config, src)
    desc = f"probe {config.source}->{config.target} {Path(config.model).name} layer {config.layer}"
    if factory is None:
        return Progress(total, desc, "fit", enabled=False)
    return factory(total=total, desc=desc, unit="fit")


def run_probe(config: ProbeConfig, store: FeatureStore, workspace: Workspace,
              views: Cache | None = None, progress: ProgressFactory | None = None) -> Result:
    """Run ``config`` on ``store`` (labels from ``workspace``'s manifests) and return its result.

    ``views``: an optional dict-like cache shared across calls (a sweep): manifests, resolved
    groups and loaded :class:`~featurestore.view.FeatureView` s (keyed by store, group, corpus,
    label digest, statistic and layers), fitted estimators (keyed by the exact training rows,
    layer choice, classifier settings and, for seed-dependent classifiers, the seed) and
    best-layer selections. With it, each group is read once and a source model trained once for
    every target. ``progress``: makes a reporter of the fits done (seed, fold, ETA), e.g.
    :class:`featurestore.progress.Progress` itself: a bar on a terminal, plain lines in a log.
    Raises :class:`ProtocolError` (or the store's error, naming the ``fs extract`` command for a
    condition not extracted yet).
    """
    start = time.perf_counter()
    cache: Cache = views if views is not None else {}
    make_probe(config, 0)  # bad parameters fail before any read
    src = _load_side(config, "source", store, workspace, cache)
    tgt = _load_side(config, "target", store, workspace, cache)
    if config.within:
        src, tgt = align(src, tgt)
    tgt_m = cached_manifest(workspace, config.target, cache)
    for corpus in source_corpora(config.source):  # every part of a union against the target
        part = src if src.parts is None else _load_corpus(config, corpus, "source", store, workspace, cache)
        src_m = cached_manifest(workspace, corpus, cache)
        check_compatible(config, part, tgt, src_m.classes, tgt_m.classes, src_m.label_map_name, tgt_m.label_map_name)
    classes = list(cached_manifest(workspace, source_corpora(config.source)[0], cache).classes)
    runner = _Runner(config, cache, classes)
    missing = [c for c in classes if not np.any(tgt.labels == c)]
    if missing:
        runner._warn(f"target {config.target!r} has no utterance of class(es) {missing}: UAR averages the others")
    best = config.layer == "best"
    fixed = None if best else _fixed_choice(config.layer, src.view)
    protocol = protocol_for(config)
    runs = []
    with _progress(progress, config, src) as runner.progress:
        for seed in config.seed_list():
            runner.where["seed"] = f"{seed + 1}/{config.seeds}"
            runs.append(_run_seed(runner, protocol.splits(src, tgt, seed), fixed))
    runner.progress = None
    uars = [r.metrics["uar"] for r in runs]
    _data_warnings(runner, src, tgt)

    baseline = None
    if protocol.baseline:
        base_metrics = _every_seed([r.baseline for r in runs], "baseline")
        base_uars = [m["uar"] for m in base_metrics]
        mean, std = _mean_std(base_uars)
        baseline = {"uar_mean": mean, "uar_std": std, "uar_per_seed": base_uars,
                    "metrics": base_metrics, "beats_source_plus_shots": mean > float(np.mean(uars))}
        if config.layer == WEIGHTED:
            baseline["layer_weights"] = [r.baseline_fit["layer_weights"] for r in runs if r.baseline_fit]
        if baseline["beats_source_plus_shots"]:
            runner._warn(baseline_wins_warning(config.shots, mean, float(np.mean(uars))))
    dev_scores = _every_seed([r.dev_uar for r in runs], "dev UAR per layer") if best else None
    per_layer = {k: float(np.mean([d[k] for d in dev_scores])) for k in dev_scores[0]} if dev_scores else None
    if best:
        layer: Any = [r.layer for r in runs]
    else:
        layer = list(src.view.layers) if str(fixed).startswith("concat:") else fixed
    provenance = {"source": _side_provenance(src), "target": _side_provenance(tgt),
                  "model": {"name": config.model, "model_id": src.view.provenance.get("model_id"),
                            "settings": src.view.provenance.get("model_settings", {})},
                  "classifier": classifier_config(make_probe(config, 0)),
                  "classes": classes, "fs_version": __version__}
    mode = src.view.provenance.get("whisper_input")
    return Result(config=config, identity=stored_identity(result_identity(config, store, workspace, cache)),
                  uar_per_seed=uars, layer=layer, chance=chance_uar(classes),
                       metrics=[r.metrics for r in runs], provenance=provenance, n_train=[r.n_train for r in runs],
                       baseline=baseline,
                       shots=_every_seed([r.shots for r in runs], "shots") if runs[0].shots is not None else None,
                       layer_dev_uar=per_layer, layer_dev_uar_per_seed=dev_scores,
                       normalisation=_normalisation_info(config.norm), warnings=runner.warnings,
                       seconds=time.perf_counter() - start, whisper_input=str(mode) if mode else None,
                       layer_choice=best_layer_choice(layer, per_layer) if best and per_layer else None,
                       predictions=_every_seed([r.predictions for r in runs], "predictions"),
                       baseline_predictions=(_every_seed([r.baseline_predictions for r in runs], "baseline predictions")
                                             if protocol.baseline else None),
                       **_learned(runs))


def _learned(runs: list[_SeedRun]) -> dict[str, Any]:
    """The :data:`~classifiers.studies.result.LEARNED_KEYS` of a result, per seed, from what its fits learned:
    layer weights (mean over a seed's folds), tuning (one entry per fold), shot weights; absent ones left out."""
    out: dict[str, Any] = {}
    if all("layer_weights" in f for r in runs for f in r.fits):
        out["layer_weights"] = [np.mean([f["layer_weights"] for f in r.fits], axis=0).tolist() for r in runs]
    if all("tuning" in f for r in runs for f in r.fits):
        out["tuning"] = [[f["tuning"] for f in r.fits] for r in runs]
    if all("shot_weight" in f for r in runs for f in r.fits):
        out["shot_weights"] = [r.fits[0]["shot_weight"] for r in runs]
    return out


def source_dev_scores(config: ProbeConfig, store: FeatureStore, workspace: Workspace,
                      views: Cache | None = None) -> tuple[dict[int, float], list[str]]:
    """The dev UAR of every stored layer on seed 0's speaker-independent dev split of ``config``'s source
    (what ``--layer best`` chooses by; the target is not read), and the confound warning of that split."""
    cache: Cache = views if views is not None else {}
    src = _load_side(dataclasses.replace(config, layer="best"), "source", store, workspace, cache)
    runner = _Runner(config, cache, list(cached_manifest(workspace, source_corpora(config.source)[0], cache).classes))
    scores = runner.select_layer(src, None, 0)[1]
    confound = _confound(src, "dev split")
    warnings = [f"{confound}: its dev UAR may reward speaker cues"] if confound else []
    return {int(k): float(v) for k, v in scores.items()}, warnings


def target_outputs(config: ProbeConfig, store: FeatureStore, workspace: Workspace, views: Cache | None = None,
                   dev: bool = False) -> dict[str, np.ndarray]:
    """What a label-free target score reads of ``config``'s probe (seed 0, its fixed layer), never the target's
    labels: ``proba`` ``(n_t, C)`` class probabilities on every target utterance of the probe fitted on all of the
    source; with ``dev`` also ``dev_labels``, ``dev_pred`` ``(m,)`` of the probe fitted on seed 0's
    speaker-independent split of the source, and the layer's features ``dev_X (m, D)``, ``source_X (n_s, D)``,
    ``target_X (n_t, D)`` (own-statistics norms applied per corpus)."""
    cache: Cache = views if views is not None else {}
    src = _load_side(config, "source", store, workspace, cache)
    tgt = _load_side(config, "target", store, workspace, cache)
    runner = _Runner(config, cache, list(cached_manifest(workspace, source_corpora(config.source)[0], cache).classes))
    choice = _fixed_choice(config.layer, src.view)
    runner.fit_predict([(src, None)], (tgt, None), choice, 0)
    out = {"proba": runner.proba([(src, None)], (tgt, None), choice, 0)}
    if dev:
        try:
            train, held = speaker_dev_split(src.groups, src.labels, config.dev_fraction, 0)
        except SplitError as exc:
            raise ProtocolError(f"importance-weighted validation needs a speaker-independent dev split of "
                                f"{src.corpus!r}: {exc}") from None
        out.update(dev_labels=src.labels[held], dev_pred=runner.fit_predict([(src, train)], (src, held), choice, 0),
                   dev_X=src.matrix(choice)[held], source_X=src.matrix(choice), target_X=tgt.matrix(choice))
    return out


@dataclass
class FinalFit:
    """A configuration's probe fitted once for use on new audio (see :func:`fit_final`).

    ``estimator``: fitted, on features of ``choice`` (a layer index, ``"mean"`` or
    ``"concat:a,b"``) built from the stored ``layers`` with ``stat``; ``source_stats``: the
    training mean and std ``(D',)`` for ``source`` normalisation, else None; ``dev_uar``: the dev
    UAR per layer that chose a ``best`` layer; ``provenance``: the source side's view provenance.
    """

    estimator: Any
    choice: str | int
    layers: list[int]
    source_stats: tuple[np.ndarray, np.ndarray] | None
    classes: list[str]
    n_train: int
    seed: int
    dev_uar: dict[str, float] | None
    provenance: dict[str, Any]


def fit_final(config: ProbeConfig, store: FeatureStore, workspace: Workspace,
              views: Cache | None = None) -> FinalFit:
    """Fit ``config``'s probe once, to apply to new audio: seed 0, on all of the source (plus seed
    0's target shots for few-shot), the layer fixed by the config or, for ``best``, chosen on seed
    0's speaker-independent dev split of the source. Within a corpus this is the model trained on
    the whole corpus (the folds only estimate how well it does). With the ``views`` cache of
    :func:`run_probe`, the fit that run made for seed 0 is reused (no retraining).
    """
    cache: Cache = views if views is not None else {}
    seed = 0
    src = _load_side(config, "source", store, workspace, cache)
    classes = list(cached_manifest(workspace, source_corpora(config.source)[0], cache).classes)
    runner = _Runner(config, cache, classes)
    dev_uar = None
    choice: str | int
    if config.layer == "best":
        choice, scores = runner.select_layer(src, None, seed)
        dev_uar = {str(k): float(v) for k, v in scores.items()}
    else:
        choice = _fixed_choice(config.layer, src.view)
    train: list[tuple[_Side, np.ndarray | None]] = [(src, None)]
    if not config.within:  # the protocol's training parts of seed 0 (few-shot: the source and the shots)
        tgt = _load_side(config, "target", store, workspace, cache)
        train = protocol_for(config).splits(src, tgt, seed).folds[0].train
    if config.norm == "coral" or choice == WEIGHTED:
        raise ProtocolError(f"{'--norm coral' if config.norm == 'coral' else '--layer weighted'}: a probe for new "
                            "audio (fs predict) is not made for it yet; run the probe with --no-save-model")
    X = runner.train_matrix(train, choice)
    stats = _stats(X) if config.norm == "source" else None
    estimator = runner.estimator(train, X if stats is None else _apply(X, *stats), choice, seed)
    return FinalFit(estimator, choice, list(src.view.layers), stats, classes, int(X.shape[0]), seed, dev_uar,
                    dict(src.view.provenance))
