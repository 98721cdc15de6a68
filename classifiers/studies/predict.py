"""A probe result applied to new audio: the fitted probe saved with the result, and ``fs predict``.

``fs probe`` saves the probe it fitted (seed 0, see :func:`classifiers.studies.protocols.fit_final`) as
``<workspace>/results/models/<config_key>.joblib`` (written atomically), with everything needed
to make its features from audio: the encoder (name, weights hash, Whisper input mode, seed,
chunking), the stored layers, pooled statistic, layer choice and normalisation. Predicting then
decodes each file as extraction does, embeds it, pools it with the store's pooling and applies the
fitted probe; nothing is trained again.

Normalisation of new files: ``none`` as stored; ``source`` with the stored training statistics;
``corpus`` with the statistics of the files given together (at least two); ``speaker`` with each
speaker's files (the speakers given per file, else all files as one speaker; at least two each).

    saved = save_probe(workspace, saved_probe(config, fit_final(config, store, workspace)))
    rows = predict_files(load_probe(find_model(workspace, "3fa9c2")), ["a.wav", "b.wav"])
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.learners.normalise import _apply, standardise_set
from classifiers.studies.protocols import FinalFit, ProbeConfig
from classifiers.studies.views import choice_of_layers
from featurestore import __version__
from featurestore.errors import FsError
from featurestore.workspace import Workspace

MODELS_DIR = "models"
SAVED_FORMAT = 1
MIN_KEY = 6  # shortest config-key prefix accepted


class PredictError(FsError):
    """A saved probe that cannot be found, loaded or applied to the files given."""


@dataclass
class SavedProbe:
    """A fitted probe and how to make its input from audio (what ``fs predict`` loads).

    ``choice``: the layer choice (index, ``"mean"``, ``"concat:a,b"``) over the stored ``layers``;
    ``stat``: ``mean`` or ``mean+std``; ``norm``: the config's normalisation, ``source_stats`` its
    training mean and std ``(D',)`` for ``source``; ``encoder``: ``name``, ``model_id``,
    ``weights_hash``, ``settings`` (Whisper input mode, seed, chunking) of the store group trained on.
    """

    config: dict[str, Any]
    config_key: str
    estimator: Any
    choice: str | int
    layers: list[int]
    stat: str
    norm: str
    source_stats: tuple[np.ndarray, np.ndarray] | None
    classes: list[str]
    encoder: dict[str, Any]
    trained_on: dict[str, Any]
    fs_version: str = __version__
    format: int = SAVED_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def whisper_input(self) -> str | None:
        return self.encoder.get("settings", {}).get("whisper_input")


def saved_probe(config: ProbeConfig, fit: FinalFit) -> SavedProbe:
    """The record of ``fit`` (from :func:`~classifiers.studies.protocols.fit_final` on ``config``) to save."""
    prov = fit.provenance
    encoder = {"name": config.model, "model_id": prov.get("model_id"), "weights_hash": prov.get("weights_hash"),
               "settings": dict(prov.get("model_settings") or {}), "num_layers": prov.get("num_layers")}
    trained_on = {"source": config.source, "store_key": prov.get("store_key"), "n_train": fit.n_train,
                  "seed": fit.seed, "shots": config.shots, "dev_uar": fit.dev_uar,
                  "label_map": prov.get("label_map"), "label_map_digest": prov.get("label_map_digest")}
    return SavedProbe(config=config.to_dict(), config_key=config.key(), estimator=fit.estimator, choice=fit.choice,
                      layers=list(fit.layers), stat=config.stat, norm=config.norm, source_stats=fit.source_stats,
                      classes=list(fit.classes), encoder=encoder, trained_on=trained_on)


def models_dir(workspace: Workspace) -> Path:
    """``<workspace>/results/models``: one ``<config_key>.joblib`` per saved probe."""
    return workspace.results_dir / MODELS_DIR


def model_path(workspace: Workspace, config_key: str) -> Path:
    return models_dir(workspace) / f"{config_key}.joblib"


def save_probe(workspace: Workspace, saved: SavedProbe) -> Path:
    """Write ``saved`` to :func:`model_path` atomically (readers see the old file or the new one)."""
    import joblib

    path = model_path(workspace, saved.config_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        joblib.dump(saved, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def ensure_saved(config: ProbeConfig, identity: dict[str, Any], store: Any, workspace: Workspace,
                 views: Any = None, refit: bool = False) -> Path:
    """The saved probe of ``config`` computed from the data ``identity`` names (see
    :func:`~classifiers.studies.result.result_identity`): kept when the saved one matches it, else (or
    with ``refit``: the result was just computed) fitted with :func:`fit_final` and saved.
    With the ``views`` cache of the run that computed the result, seed 0's fit is reused."""
    from classifiers.studies.protocols import fit_final

    path = model_path(workspace, config.key())
    if not refit and path.is_file():
        try:
            if load_probe(path).extra.get("identity") == identity:
                return path
        except PredictError:
            pass  # a damaged or older file: fitted again below
    saved = saved_probe(config, fit_final(config, store, workspace, views))
    saved.extra["identity"] = identity
    return save_probe(workspace, saved)


def find_model(workspace: Workspace, key: str) -> Path:
    """The saved probe of ``key``: a ``.joblib`` path, a result's config key or a unique prefix of
    one (at least 6 characters, as ``fs results`` shows them), or a ledger row key."""
    given = Path(key).expanduser()
    if key.endswith(".joblib") or given.is_file():
        if not given.is_file():
            raise PredictError(f"no saved probe at {given}")
        return given
    text = key.strip().lower()
    if len(text) < MIN_KEY or any(c not in "0123456789abcdef" for c in text):
        raise PredictError(f"--result {key!r}: give a result's config key (or its first {MIN_KEY}+ characters, as "
                           "`fs results` shows them) or a .joblib file")
    folder = models_dir(workspace)
    found = sorted(folder.glob(f"{text}*.joblib")) if folder.is_dir() else []
    if not found:
        found = [model_path(workspace, k) for k in _config_keys_of_row(workspace, text)]
        found = [p for p in found if p.is_file()]
    if len(found) > 1:
        raise PredictError(f"--result {key!r} matches {len(found)} saved probes "
                           f"({', '.join(p.stem[:12] for p in found[:5])}); give more characters")
    if not found:
        raise PredictError(f"no saved probe for result {key!r} in {folder}; run the configuration with `fs probe` "
                           "(add --rerun if the ledger already holds it) to fit and save its probe, see `fs results` "
                           "for the keys")
    return found[0]


def _config_keys_of_row(workspace: Workspace, prefix: str) -> list[str]:
    """Config keys of ledger rows whose row key starts with ``prefix`` (none without a ledger)."""
    path = workspace.results_dir / "ledger.sqlite"
    if not path.is_file():
        return []
    from classifiers.studies.ledger import Ledger

    return sorted({r["config_key"] for r in Ledger.open(workspace).rows() if str(r.get("_row_key", "")).startswith(prefix)})


def load_probe(path: str | Path) -> SavedProbe:
    """The :class:`SavedProbe` in ``path``; a file of another kind or format is refused."""
    import joblib

    try:
        saved = joblib.load(path)
    except Exception as exc:  # unpickling raises anything: a damaged or foreign file
        raise PredictError(f"{path}: not a saved probe that this fs can read ({type(exc).__name__}: {exc}); "
                           "run the configuration again with `fs probe --rerun` to save it anew") from None
    if not isinstance(saved, SavedProbe) or getattr(saved, "format", None) != SAVED_FORMAT:
        raise PredictError(f"{path}: not a saved probe of format {SAVED_FORMAT}; run the configuration again with "
                           "`fs probe --rerun` to save it anew")
    return saved


def load_probe_encoder(saved: SavedProbe, device: str = "cpu") -> Any:
    """The encoder that made the probe's training features, with the weights the store recorded."""
    from featurestore.encoders import load_encoder

    info = saved.encoder
    settings = info.get("settings", {})
    encoder = load_encoder(str(info["name"]), device=device, seed=int(settings.get("seed") or 0),
                           whisper_input=settings.get("whisper_input") or "full",
                           chunk_seconds=settings.get("chunk_seconds"))
    if encoder.info.weights_hash != info.get("weights_hash"):
        raise PredictError(f"the encoder loaded as {info['name']!r} has weights {encoder.info.weights_hash[:12]}, but "
                           f"the probe was trained on features of weights {str(info.get('weights_hash'))[:12]} "
                           f"({saved.trained_on.get('store_key')}); make the same weights available under that name")
    return encoder


def embed_files(paths: Sequence[str | Path], encoder: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over each file's real frames of every layer: two ``(n, L, D)`` float32 arrays.

    Audio is decoded, down-mixed and resampled as extraction does; files are embedded one at a
    time (encoders are padding-exact, so a file's vector does not depend on its batch).
    """
    from featurestore.audio import decode_audio
    from featurestore.extract import pool_states

    means, stds = [], []
    for path in paths:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise PredictError(f"{path}: cannot read ({exc.strerror or exc})") from None
        wave, _ = decode_audio(raw, str(path), encoder.info.sample_rate)
        states = encoder.embed([wave])
        mean, std = pool_states(states.hidden, states.lengths)
        means.append(mean[0])
        stds.append(std[0])
    return np.stack(means), np.stack(stds)


def probe_features(saved: SavedProbe, mean: np.ndarray, std: np.ndarray,
                   speakers: Sequence[str] | None = None) -> np.ndarray:
    """The probe's input ``(n, D')`` from pooled ``(n, L, D)`` mean and std, built as for training:
    the stored layers with the statistic, the layer choice, then the normalisation."""
    parts = [mean[:, saved.layers]] + ([std[:, saved.layers]] if saved.stat == "mean+std" else [])
    X = np.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
    n = X.shape[0]
    X = np.ascontiguousarray(choice_of_layers(X, list(saved.layers), saved.choice), dtype=np.float32)
    if saved.norm == "source":
        if saved.source_stats is None:
            raise PredictError("this probe was trained with --norm source but its file holds no training statistics; "
                               "run the configuration again with `fs probe` to save it anew")
        return _apply(X, *saved.source_stats)
    if saved.norm == "corpus":
        if n < 2:
            raise PredictError("this probe was trained with --norm corpus: new files are standardised with their own "
                               "statistics, which needs at least 2 files given together (better: many)")
        return standardise_set(X)
    if saved.norm == "speaker":
        groups = np.array(list(speakers) if speakers else ["all"] * n)
        if groups.size != n:
            raise PredictError(f"--speaker was given {groups.size} times for {n} files; give one per file, in order")
        ids, counts = np.unique(groups, return_counts=True)
        few = [str(s) for s, c in zip(ids, counts) if c < 2]
        if few:
            raise PredictError(f"this probe was trained with --norm speaker: each speaker's files are standardised "
                               f"with that speaker's statistics, which needs at least 2 files per speaker "
                               f"(speaker(s) {', '.join(few)} have 1)")
        return standardise_set(X, groups)
    return X


def normalisation_note(saved: SavedProbe, speakers: Sequence[str] | None = None) -> str:
    """How the new files' features were normalised, in one phrase."""
    return {"none": "none",
            "source": "source: the probe's stored training statistics",
            "corpus": "corpus: the statistics of the files given together",
            "speaker": "speaker: each speaker's files with their own statistics" + (
                "" if speakers else " (all files taken as one speaker; give --speaker per file)")}[saved.norm]


def predict_files(saved: SavedProbe, paths: Sequence[str | Path], *, device: str = "cpu",
                  speakers: Sequence[str] | None = None, encoder: Any = None) -> list[dict[str, Any]]:
    """Label and class probabilities of each file: ``[{file, label, probabilities: {class: p}}]``."""
    if not paths:
        raise PredictError("give at least one audio file")
    encoder = encoder if encoder is not None else load_probe_encoder(saved, device)
    mean, std = embed_files(paths, encoder)
    X = probe_features(saved, mean, std, speakers)
    labels = np.asarray(saved.estimator.predict(X))
    proba = np.asarray(saved.estimator.predict_proba(X))
    classes = [str(c) for c in saved.estimator.classes_]
    return [{"file": str(path), "label": str(label), "probabilities": {c: float(v) for c, v in zip(classes, p)}}
            for path, label, p in zip(paths, labels, proba)]


def describe_saved(saved: SavedProbe) -> dict[str, Any]:
    """What ``fs predict`` prints about the probe it applies (JSON-able)."""
    c = saved.config
    return {"config_key": saved.config_key, "source": c.get("source"), "target": c.get("target"),
            "model": c.get("model"), "whisper_input": saved.whisper_input,
            "layer": c.get("layer"), "layer_used": saved.choice, "stat": saved.stat, "classifier": c.get("classifier"),
            "norm": saved.norm, "trained_on": {k: v for k, v in saved.trained_on.items() if k != "dev_uar"}}
