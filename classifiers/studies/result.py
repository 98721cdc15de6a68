"""One result type for probes and fine-tuning runs, and the identity of the data a result depends on.

:class:`Result` is what :func:`classifiers.studies.engine.run` returns (and the runners make): the
configuration, identity, per-seed metrics, the layer used, provenance, warnings, the per-utterance
predictions of every seed and the intervals they give. :meth:`Result.to_record` is its JSON record
(``fs probe --json``, the ledger's stored shape); :meth:`Result.from_record` reads one back, records of
older fs versions included (they lack ``identity``).

:func:`result_identity` is the one place a result's identity is computed: the store groups read and
their weights hashes (the ledger row), and per side a digest of what decides the numbers and nothing
else: the (utterance id, label, speaker, audio hash) rows of the corpus and its classes, never a path,
so moving a corpus folder keeps its ledger rows and a relabel makes exactly the rows reading it stale.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from classifiers.studies.intervals import add_intervals
from classifiers.studies.views import Cache, cached_digest, cached_manifest, manifest_token, resolve_group
from data_manifests.manifest import Manifest
from featurestore.store import FeatureStore
from featurestore.workspace import Workspace

ROLES: tuple[str, ...] = ("source", "target")
# Keys of a fine-tuning record that a probe's record lacks (None on a probe Result).
FINETUNE_KEYS: tuple[str, ...] = ("method", "checkpoints", "train_seconds", "training", "dev_uar_per_epoch")
# What a probe's fits learned per seed besides the probe (a record has them only when set): ``layer_weights``
# (--layer weighted: the softmax weight of each stored layer, mean over folds within a corpus), ``tuning``
# (--tune: per fold the best parameters and every candidate's fold UARs), ``shot_weights`` (--shot-weight:
# the weight used and every candidate's cross-validated UAR on the shots).
LEARNED_KEYS: tuple[str, ...] = ("layer_weights", "tuning", "shot_weights")


def data_digest(manifest: Manifest) -> str:
    """sha256 (hex, 16) of what a result reads from a corpus besides the store: per utterance (sorted by
    id) its id, label, speaker and audio hash, and the classes in order. Paths are left out."""
    h = hashlib.sha256(json.dumps(list(manifest.classes)).encode())
    for row in sorted(manifest.rows, key=lambda r: r["utt_id"]):
        h.update("\x1f".join(str(row.get(c, "")) for c in ("utt_id", "label", "speaker", "audio_sha256")).encode())
        h.update(b"\x1e")
    return h.hexdigest()[:16]


def _cached_data_digest(workspace: Workspace, corpus: str, cache: Cache) -> str:
    token = manifest_token(workspace, corpus)
    key = ("data-digest", token)
    if token is None or key not in cache:
        digest = data_digest(cached_manifest(workspace, corpus, cache))
        if token is None:
            return digest
        cache[key] = digest
    return cache[key]


def result_identity(config: Any, store: FeatureStore, workspace: Workspace, cache: Cache | None = None) -> dict[str, Any]:
    """What a result of ``config`` (probe or fine-tuning) depends on besides the configuration, without
    reading features: ``store_keys`` and ``weights_hashes`` of the groups read (the ledger row),
    ``data_digests`` per role (:func:`data_digest`: whether a stored result is current) and
    ``manifest_digests`` (only to judge results stored before ``data_digests`` existed)."""
    cache = {} if cache is None else cache
    keys, hashes, data, manifests = set(), set(), {}, {}
    for role in ROLES:
        corpora, noise = getattr(config, role), getattr(config, f"{role}_noise")
        for corpus in (corpora,) if isinstance(corpora, str) else corpora:  # a multi-source union: each part
            group = resolve_group(store, corpus, str(config.model), noise, config.whisper_input, config.model_seed,
                                  cache)
            keys.add(group.key.path)
            weights = group.provenance.model.weights_hash
            if weights:
                hashes.add(str(weights))
        data[role] = (_cached_data_digest(workspace, corpora, cache) if isinstance(corpora, str) else
                      {c: _cached_data_digest(workspace, c, cache) for c in corpora})
        manifests[role] = (cached_digest(workspace, corpora, cache) if isinstance(corpora, str) else
                           "+".join(cached_digest(workspace, c, cache) for c in corpora))
    return {"store_keys": sorted(keys), "weights_hashes": sorted(hashes), "data_digests": data,
            "manifest_digests": manifests}


def stored_identity(identity: dict[str, Any]) -> dict[str, Any]:
    """The part of an identity a record keeps (no manifest digest: it holds paths)."""
    return {k: identity[k] for k in ("store_keys", "weights_hashes", "data_digests") if k in identity}


def is_current(record: dict[str, Any], identity: dict[str, Any]) -> bool:
    """Whether a stored result record was computed from the data ``identity`` names (see
    :func:`result_identity`): by its ``data_digests``; a record of an older fs (without them) by the
    manifest digests its provenance recorded."""
    stored = (record.get("identity") or {}).get("data_digests")
    if stored is not None:
        return stored == identity.get("data_digests")
    prov = record.get("provenance") or {}
    return all((prov.get(role) or {}).get("label_map_digest") == digest
               for role, digest in identity.get("manifest_digests", {}).items())


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std())


def config_from_dict(data: dict[str, Any]) -> Any:
    """A :class:`~classifiers.studies.protocols.ProbeConfig`, or a
    :class:`~classifiers.studies.finetune.FinetuneConfig` when ``data`` names a fine-tuning ``method``."""
    if data.get("method"):
        from classifiers.studies.finetune import FinetuneConfig

        return FinetuneConfig.from_dict({k: v for k, v in data.items() if k != "classifier_params"})
    from classifiers.studies.protocols import ProbeConfig

    return ProbeConfig.from_dict(data)


@dataclass
class Result:
    """One probe's or fine-tuning run's outcome; :meth:`to_record` is its JSON record.

    ``uar_std`` is the population standard deviation over seeds. ``layer``: the layer used (an int,
    ``"mean"`` or a list for concat); for ``best`` a list with one entry per seed (within a corpus,
    each entry lists one layer per fold). ``layer_dev_uar``: for ``best``, the mean dev UAR of each
    layer; ``layer_choice``: what :func:`~classifiers.studies.layer_choice.best_layer_choice` makes of
    the picks. ``whisper_input``: the Whisper input mode of the groups read (None for other models).
    ``baseline``: few-shot target-only scores. ``identity``: see :func:`result_identity`.
    ``predictions`` / ``baseline_predictions``: one entry per seed (:mod:`classifiers.studies.intervals`).
    ``layer_weights`` / ``tuning`` / ``shot_weights``: per seed, what the probe's fits learned (:data:`LEARNED_KEYS`).
    Fine-tuning runs add ``method``, ``checkpoints``, ``train_seconds``, ``training`` and
    ``dev_uar_per_epoch`` (None for a probe). ``extra``: keys of a stored record this type does not name
    (kept, so a record read back is written back whole). ``from_ledger``: answered from the ledger.
    """

    config: Any
    uar_per_seed: list[float]
    layer: Any
    chance: float
    metrics: list[dict[str, Any]]
    provenance: dict[str, Any]
    n_train: list[int]
    identity: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None
    shots: list[dict[str, Any]] | None = None
    layer_dev_uar: dict[str, float] | None = None
    layer_dev_uar_per_seed: list[dict[str, float]] | None = None
    normalisation: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    whisper_input: str | None = None
    layer_choice: dict[str, Any] | None = None
    predictions: list[dict[str, Any]] | None = None
    baseline_predictions: list[dict[str, Any]] | None = None
    layer_weights: list[list[float]] | None = None
    tuning: list[list[dict[str, Any]]] | None = None
    shot_weights: list[dict[str, Any]] | None = None
    uar_ci95: list[float] | None = None
    uar_ci95_utterance: list[float] | None = None
    uncertainty: dict[str, str] | None = None
    method: str | None = None
    checkpoints: list[str] | None = None
    train_seconds: float | None = None
    training: list[dict[str, Any]] | None = None
    dev_uar_per_epoch: list[list[float | None]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    from_ledger: bool = False

    def __post_init__(self) -> None:
        if self.uar_ci95 is None and self.predictions:  # the intervals of the predictions, computed once
            record = add_intervals({"predictions": self.predictions, "baseline": self.baseline,
                                    "baseline_predictions": self.baseline_predictions})
            self.uar_ci95, self.uar_ci95_utterance = record.get("uar_ci95"), record.get("uar_ci95_utterance")
            self.uncertainty = record.get("uncertainty")

    @property
    def uar_mean(self) -> float:
        return _mean_std(self.uar_per_seed)[0]

    @property
    def uar_std(self) -> float:
        return _mean_std(self.uar_per_seed)[1]

    @property
    def config_key(self) -> str:
        return str(self.config.key())

    def per_class_recall(self) -> dict[str, float | None]:
        """Mean recall of each class over seeds (None for a class never in the test set)."""
        out: dict[str, float | None] = {}
        for label in self.metrics[0]["per_class_recall"]:
            values = [m["per_class_recall"].get(label) for m in self.metrics]
            values = [v for v in values if v is not None]
            out[label] = float(np.mean(values)) if values else None
        return out

    def to_record(self) -> dict[str, Any]:
        """The JSON record (the ledger's stored shape): ``config_key``, ``protocol``, ``uar_mean``,
        ``uar_std``, ``uar_per_seed``, ``layer``, ``chance``, ``per_class_recall``, ``metrics``, ``n_train``,
        ``config``, ``identity``, ``provenance``, ``baseline``, ``shots``, ``layer_dev_uar(_per_seed)``,
        ``layer_choice``, ``normalisation``, ``transductive``, ``warnings``, ``seconds``, ``whisper_input``,
        ``predictions``, ``baseline_predictions``, ``uar_ci95`` (with predictions), and for fine-tuning
        :data:`FINETUNE_KEYS`."""
        record: dict[str, Any] = {
            **self.extra,
            "config_key": self.config_key, "protocol": self.config.protocol, "whisper_input": self.whisper_input,
            "uar_mean": self.uar_mean, "uar_std": self.uar_std, "uar_per_seed": list(self.uar_per_seed),
            "layer": self.layer, "chance": self.chance, "per_class_recall": self.per_class_recall(),
            "metrics": self.metrics, "n_train": list(self.n_train), "config": self.config.to_dict(),
            "identity": self.identity, "provenance": self.provenance, "baseline": self.baseline, "shots": self.shots,
            "layer_dev_uar": self.layer_dev_uar, "layer_dev_uar_per_seed": self.layer_dev_uar_per_seed,
            "layer_choice": self.layer_choice,
            "normalisation": self.normalisation, "transductive": bool(self.normalisation.get("transductive")),
            "warnings": list(self.warnings), "seconds": self.seconds,
            "predictions": self.predictions, "baseline_predictions": self.baseline_predictions,
        }
        record.update({k: getattr(self, k) for k in LEARNED_KEYS if getattr(self, k) is not None})
        if self.uar_ci95 is not None:
            record.update(uar_ci95=self.uar_ci95, uar_ci95_utterance=self.uar_ci95_utterance,
                          uncertainty=self.uncertainty)
        if self.method is not None:
            record.update({k: getattr(self, k) for k in FINETUNE_KEYS})
        return record

    to_dict = to_record  # the name the probe's result had

    @classmethod
    def from_record(cls, record: dict[str, Any], config: Any = None) -> Result:
        """A result from its record (:meth:`to_record`, or a ledger row of this or an older fs); ``config``:
        its configuration when known (else read from the record)."""
        names = {f.name for f in fields(cls)} - {"config", "extra", "from_ledger"}
        derived = {"config_key", "protocol", "uar_mean", "uar_std", "per_class_recall", "transductive"}
        known = {k: v for k, v in record.items() if k in names}
        extra = {k: v for k, v in record.items() if k not in names and k not in derived and k != "config"
                 and not k.startswith("_") and k != "from_ledger"}
        known.setdefault("normalisation", {})
        if config is None or getattr(config, "method", None) == "head":  # head: stored as the probe it is
            config = config_from_dict(dict(record["config"]))
        return cls(config=config, extra=extra,
                   from_ledger=bool(record.get("from_ledger")), **known)
