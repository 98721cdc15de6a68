"""Layer choices over stored features, read once and reused: what a probe trains on.

A layer choice (``layer`` in a probe configuration) is a :class:`~featurestore.layers.LayerChoice`
(``last``, K, ``best``, ``mean``, ``concat:3,6``, ``weighted``): the one vocabulary, shared with the
store's view (:func:`featurestore.view.resolve_layers`).

:func:`get_view` wraps :func:`featurestore.view.view_group` (the one join from store to labels)
with a cache, so that a sweep reads each group, and each manifest, once. :func:`layer_matrix`
turns a view into the ``(n, D')`` matrix of one choice.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from typing import Any

import numpy as np

from data_manifests.manifest import Manifest
from featurestore.conditions import ConditionChain
from featurestore.hints import extract_command
from featurestore.layers import LayerChoice, LayerError
from featurestore.store import FeatureStore, GroupNotFoundError, StoreGroup, StoreKey
from featurestore.view import FeatureView, view_group
from featurestore.workspace import Workspace

LAYER_WORDS: tuple[str, ...] = ("last", "best", "mean")
Cache = MutableMapping[Any, Any]


class ViewError(LayerError):
    """A layer choice or a view request that cannot be served as asked."""


def canonical_layer(value: Any) -> str | int:
    """``value`` as a canonical layer choice (:attr:`LayerChoice.value`): ``"last"``, ``"best"``, ``"mean"``,
    ``"weighted"``, an int, ``"concat:3,6"``; :class:`LayerError` (the one message) otherwise."""
    return LayerChoice.parse(value).value


def layer_indices(layer: Any, num_layers: int) -> list[int]:
    """The stored layers (non-negative indices) that a choice reads, given ``num_layers``
    (:meth:`LayerChoice.indices`: the one range check)."""
    return LayerChoice.parse(layer).indices(num_layers)


def layer_matrix(view: FeatureView, choice: str | int) -> np.ndarray:
    """The ``(n, D')`` features of ``choice`` from ``view``.

    ``choice``: a layer index (one of ``view.layers``; ``D' = D``), ``"mean"`` (mean over
    ``view.layers``; ``D' = D``) or ``"concat:a,b"`` (``D' = k·D``). ``D`` is 2× the encoder width
    for ``mean+std`` views. The result is float32 and may share memory with ``view.X``.
    """
    return choice_of_layers(view.X, view.layers, choice)


def choice_of_layers(X: np.ndarray, layers: list[int], choice: str | int) -> np.ndarray:
    """The ``(n, D')`` features of ``choice`` from pooled ``X`` (``(n, D)`` for one layer, ``(n, k, D)``
    for the ``k`` stored ``layers``), as :func:`layer_matrix` of a view holding them."""
    X = X if X.ndim == 3 else X[:, None, :]
    if isinstance(choice, (int, np.integer)):
        if int(choice) not in layers:
            raise ViewError(f"layer {choice} is not in this view (layers {layers})")
        return X[:, layers.index(int(choice))]
    if choice == "mean":
        return X.mean(axis=1, dtype=np.float32)
    if isinstance(choice, str) and choice.startswith("concat:"):
        wanted = [int(x) for x in choice.split(":")[1].split(",")]
        missing = [k for k in wanted if k not in layers]
        if missing:
            raise ViewError(f"layers {missing} are not in this view (layers {layers})")
        return X[:, [layers.index(k) for k in wanted]].reshape(X.shape[0], -1)
    raise ViewError(f"cannot build features for layer choice {choice!r} (give an index, mean or concat:a,b)")


def choice_matrix(view: FeatureView, choice: Any) -> np.ndarray:
    """The ``(n, D')`` features of a layer choice (any :class:`LayerChoice` value) from a view that holds
    the layers it reads (e.g. ``load_view(..., layers=choice)``): ``last`` / K one layer, ``mean`` the mean
    over every layer, ``concat:a,b`` side by side. ``best`` and ``weighted`` need a fit (a protocol), so
    :class:`ViewError` here."""
    parsed = LayerChoice.parse(choice)
    if parsed.kind in ("best", "weighted"):
        raise ViewError(f"layer {parsed.text} is chosen or weighted by a probe's fit; give last, a layer number, "
                        "mean or concat:a,b here")
    wanted = parsed.indices(int(view.provenance.get("num_layers") or max(view.layers) + 1))
    if parsed.kind == "mean":
        sub = view if view.layers == wanted else FeatureView(
            view.key, view.ids, layer_matrix_stack(view, wanted), view.labels, view.speakers, view.genders,
            view.languages, view.classes, wanted, view.stat, view.provenance)
        return layer_matrix(sub, "mean")
    if parsed.kind == "concat":
        return layer_matrix(view, "concat:" + ",".join(str(k) for k in wanted))
    return layer_matrix(view, wanted[0])


def layer_matrix_stack(view: FeatureView, layers: list[int]) -> np.ndarray:
    """``(n, k, D)`` features of ``layers`` (each one of ``view.layers``)."""
    missing = [k for k in layers if k not in view.layers]
    if missing:
        raise ViewError(f"layers {missing} are not in this view (layers {view.layers})")
    X = view.X if view.X.ndim == 3 else view.X[:, None, :]
    return X[:, [view.layers.index(k) for k in layers]]


def noise_filters(noise: dict[str, Any] | None, whisper_input: str | None = None,
                  model_seed: int | None = None) -> tuple[str | None, dict[str, Any]]:
    """``(condition, filters)`` for :meth:`FeatureStore.resolve`: clean; the group of a condition chain
    ``{condition: TEXT, noise_seed}`` by its condition key; or the noise-mixed group of ``noise``
    ``{noise, snr_db, noise_seed}``; narrowed by the model's recorded settings."""
    filters: dict[str, Any] = {"whisper_input": whisper_input, "seed": model_seed}
    if not noise:
        return "clean", filters
    if "condition" in noise:
        return side_chain(noise).key, filters
    filters.update(noise=noise["noise"], snr_db=noise["snr_db"], noise_seed=noise.get("noise_seed", 0))
    return None, filters


def side_chain(side: dict[str, Any]) -> ConditionChain:
    """The condition chain of a side ``{condition: TEXT, noise_seed: K}`` (TEXT: steps joined by ' > ', noise
    sources written in their noise steps, as :func:`classifiers.studies.protocols` makes it canonical)."""
    return ConditionChain.parse(str(side["condition"]), seed=int(side.get("noise_seed", 0)))


def condition_command(model: str, corpora: list[str], side: dict[str, Any], whisper_input: str | None = None,
                      model_seed: int | None = None) -> str:
    """The ``fs extract`` command that makes ``model``'s groups of ``corpora`` under the condition ``side``."""
    chain = side_chain(side)
    return extract_command(model, corpora, whisper_input=whisper_input, seed=model_seed,
                           conditions=[s.text for s in chain.steps], condition_seed=chain.seed)


def manifest_token(workspace: Workspace, name: str) -> tuple[Any, ...] | None:
    """A cheap identity of corpus ``name``'s manifest file as it is now (path, mtime, size); None if absent."""
    path = workspace.manifest_path(name)
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (str(path), st.st_mtime_ns, st.st_size)


def cached_manifest(workspace: Workspace, name: str, cache: Cache | None = None) -> Manifest:
    """``workspace.load_manifest(name)``, read once per version of the file when ``cache`` is given."""
    token = manifest_token(workspace, name)
    if cache is None or token is None:  # a missing manifest: load_manifest's error says how to add it
        return workspace.load_manifest(name)
    key = ("manifest", token)
    if key not in cache:
        cache[key] = workspace.load_manifest(name)
    return cache[key]


def cached_digest(workspace: Workspace, name: str, cache: Cache | None = None) -> str:
    """:meth:`Manifest.digest` of corpus ``name`` (labels, speakers, label map), once per file version."""
    token = manifest_token(workspace, name)
    key = ("digest", token)
    if cache is None or token is None or key not in (cache or {}):
        digest = cached_manifest(workspace, name, cache).digest()
        if cache is None or token is None:
            return digest
        cache[key] = digest
    return cache[key]


def resolve_group(store: FeatureStore, corpus: str, model: str, noise: dict[str, Any] | None = None,
                  whisper_input: str | None = None, model_seed: int | None = None,
                  cache: Cache | None = None) -> StoreGroup:
    """The one store group of (corpus, model, condition, settings), resolved once per cache.

    A missing condition raises the store's error, which prints the ``fs extract`` command that makes it.
    """
    condition, filters = noise_filters(noise, whisper_input, model_seed)
    key = ("group", store.url, corpus, model, condition, tuple(sorted(filters.items())))
    if cache is not None and key in cache:
        return cache[key]
    try:
        found: StoreKey = store.resolve(corpus, model, condition, **filters)
    except GroupNotFoundError as exc:
        if not noise or "condition" not in noise:
            raise
        chain = side_chain(noise)
        command = condition_command(model, [corpus], noise, whisper_input, model_seed)
        raise GroupNotFoundError(f"no group for corpus {corpus!r}, model {model!r} under condition {chain.text!r} "
                                 f"(seed {chain.seed}, key {chain.key}). Make it with: {command}") from exc
    group = store.open(found)
    if cache is not None:
        cache[key] = group
    return group


def get_view(store: FeatureStore, manifest: Manifest, group: StoreGroup, layers: list[int], stat: str = "mean",
             cache: Cache | None = None, manifest_id: str | None = None) -> FeatureView:
    """``group``'s pooled features of ``layers`` (``stat``) joined with ``manifest``, read once per cache.

    X is ``(n, D)`` for one layer, ``(n, k, D)`` for several. A request for some layers is served
    from a cached all-layers view of the same group when there is one (no store read).
    ``manifest_id`` identifies the manifest's labels in the cache key (default: its digest).
    """
    layers = [int(k) for k in layers]
    base = ("view", store.url, group.key.path, manifest.name, manifest_id or manifest.digest(), stat)
    if cache is None:
        return view_group(group, manifest, layers=layers, stat=stat)
    key = (*base, tuple(layers))
    if key in cache:
        return cache[key]
    every = (*base, tuple(range(group.num_layers)))
    if every in cache and len(layers) < group.num_layers:
        full: FeatureView = cache[every]
        X = full.X[:, layers[0]] if len(layers) == 1 else full.X[:, layers]
        provenance = {**full.provenance, "layers": layers}
        return FeatureView(full.key, full.ids, X, full.labels, full.speakers, full.genders, full.languages,
                           full.classes, layers, full.stat, provenance)
    cache[key] = view_group(group, manifest, layers=layers, stat=stat)
    return cache[key]
