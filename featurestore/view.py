"""The one join from the store to labels: features of stored rows + the current manifest's columns.

Every probe, protocol and report reads through :func:`load_view`, so they all see the same rows:
utterances stored in the group *and* present in the current manifest, in group row order, with
labels from the manifest as it is now (a relabelled corpus reuses its stored vectors).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from data_manifests.manifest import Manifest
from featurestore.layers import LayerChoice, layer_indices_for
from featurestore.provenance import Provenance
from featurestore.store import FeatureStore, StoreError, StoreGroup, StoreKey
from featurestore.verify import identity_changes

STATS = ("mean", "std", "mean+std")


@dataclass
class FeatureView:
    """Pooled features of one group joined with labels.

    X: (n, D) for one layer, (n, k, D) for several (``layers``); with ``stat="mean+std"`` the last
    axis is 2D (mean then std). ids, labels, speakers, genders, languages: (n,) str arrays.
    """

    key: StoreKey
    ids: np.ndarray
    X: np.ndarray
    labels: np.ndarray
    speakers: np.ndarray
    genders: np.ndarray
    languages: np.ndarray
    classes: list[str]
    layers: list[int]
    stat: str
    provenance: dict[str, Any] = field(default_factory=dict)  # flat summary the studies record with a result
    store_provenance: Provenance | None = None  # the group's provenance, typed

    def __len__(self) -> int:
        return int(self.ids.size)

    def subset(self, index: np.ndarray) -> FeatureView:
        """The rows ``index`` (indices or a boolean mask) of this view."""
        return FeatureView(self.key, self.ids[index], self.X[index], self.labels[index], self.speakers[index],
                           self.genders[index], self.languages[index], self.classes, self.layers, self.stat,
                           self.provenance, self.store_provenance)


def resolve_layers(group: StoreGroup, layers: Any) -> list[int]:
    """The stored layers (non-negative indices) that ``layers`` reads from ``group``: any choice of the one
    layer vocabulary (:class:`~featurestore.layers.LayerChoice`: ``last``, ``K``, ``best``, ``mean``,
    ``concat:3,6``, ``weighted``) or a list of layer numbers; :class:`~featurestore.layers.LayerError` else."""
    return layer_indices_for(layers, group.num_layers)


def view_group(group: StoreGroup, manifest: Manifest, layers: LayerChoice | int | str | list[int] = "last",
               stat: str = "mean") -> FeatureView:
    """Join ``group``'s pooled features (``layers``, ``stat``) with ``manifest``'s labels and speakers.

    ``layers``: see :func:`resolve_layers` (``mean``, ``best`` and ``weighted`` read every layer: X is
    ``(n, L, D)``; the mean itself is taken by the reader, e.g. ``classifiers.studies.views.layer_matrix``).

    Refuses an incomplete or damaged group, and one whose audio no longer matches the manifest.
    """
    if stat not in STATS:
        raise StoreError(f"unknown pooled statistic {stat!r}; use one of {STATS}")
    changes = identity_changes(group, manifest)
    if changes["audio_changed"]:
        raise StoreError(f"{group.key}: the audio of {len(changes['audio_changed'])} utterance(s) changed since "
                         f"extraction (e.g. {changes['audio_changed'][:3]}); re-extract with "
                         f"{group.extract_command()} --overwrite")
    chosen = resolve_layers(group, layers)
    parts = []
    for s in ("mean", "std") if stat == "mean+std" else (stat,):
        ids, values = group.pooled(layer=None if len(chosen) > 1 else chosen[0], stat=s)
        every = len(chosen) == group.num_layers and chosen == list(range(group.num_layers))
        parts.append(values[:, chosen] if len(chosen) > 1 and not every else values)
    X = np.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
    rows = {r["utt_id"]: r for r in manifest.rows}
    keep = np.array([u in rows for u in ids.tolist()], dtype=bool)
    ids, X = ids[keep], X[keep]
    if ids.size == 0:
        raise StoreError(f"{group.key}: no stored utterance is in the current manifest of {manifest.name!r}")
    column = lambda name: np.array([str(rows[u].get(name, "")) for u in ids.tolist()], dtype=str)  # noqa: E731
    prov = group.provenance
    model, noise = prov.model, prov.noise
    provenance = {
        "store_key": group.key.path, "corpus": manifest.name, "label_map": manifest.label_map_name,
        "label_map_digest": manifest.digest(), "audio_digest": manifest.audio_digest(),
        "model": model.name or None, "model_id": model.model_id or None, "weights_hash": model.weights_hash or None,
        "model_settings": dict(model.settings), "whisper_input": model.whisper_input,
        "condition": group.key.condition,
        "noise": dict(noise.spec) if noise is not None else None,
        "layers": chosen, "num_layers": group.num_layers, "stat": stat, "pooling": dict(prov.pooling) or None,
    }
    return FeatureView(key=group.key, ids=ids, X=X, labels=column("label"), speakers=column("speaker"),
                       genders=column("gender"), languages=column("language"), classes=manifest.classes,
                       layers=chosen, stat=stat, provenance=provenance, store_provenance=prov)


def load_view(store: FeatureStore, manifest: Manifest, model: str, layers: LayerChoice | int | str | list[int] = "last",
              stat: str = "mean", condition: str | None = "clean", **filters: Any) -> FeatureView:
    """:func:`view_group` of the one group of (``manifest``'s corpus, ``model``, ``condition``, settings).

    ``condition``: ``"clean"``, a condition key, or None (any; narrow noisy ones with the filters).
    ``filters``: ``whisper_input``, ``seed``, ``snr_db``, ``noise_seed``, ``noise`` (see
    :meth:`FeatureStore.find`); several matching groups or none give a StoreError that says why.
    """
    key = store.resolve(manifest.name, model, condition, **filters)
    return view_group(store.open(key), manifest, layers=layers, stat=stat)
