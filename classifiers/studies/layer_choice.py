"""Layer choices for studies: the one vocabulary (:class:`LayerChoice`, parsed once; defined on the store's
floor in :mod:`featurestore.layers` so that the store's view speaks it too) and what a result *used*,
told one way everywhere (probe output, ledger, reports).

Light on purpose (no numpy): ``fs results`` and the ledger read it without loading classifiers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from featurestore.layers import HELP, LayerChoice, LayerError, layer_indices_for

__all__ = ["HELP", "LayerChoice", "LayerError", "best_layer_choice", "layer_indices_for", "layer_label",
           "layer_used_text"]


def best_layer_choice(per_seed: Sequence[Any], dev_uar: dict[str, float]) -> dict[str, Any]:
    """What a ``--layer best`` result chose, in one record.

    ``per_seed``: the result's ``layer`` (one int per seed, or within a corpus one list of per-fold
    ints per seed); ``dev_uar``: mean dev UAR per layer (``{"0": 0.41, ...}``). Returns
    ``per_seed`` (a list of lists of ints), ``most_chosen`` (the layer picked most often over seeds
    and folds, ties to the higher mean dev UAR: the single "layer used" a table shows),
    ``times_chosen`` / ``choices`` (how often, out of how many picks) and ``best_mean_dev``
    (the layer of highest mean dev UAR, ties to the lowest; None without ``dev_uar``). The UAR
    itself uses each seed's (and fold's) own pick.
    """
    picks = [[int(k) for k in (entry if isinstance(entry, list) else [entry])] for entry in per_seed]
    counts = Counter(k for seed in picks for k in seed)
    most = max(sorted(counts), key=lambda k: (counts[k], dev_uar.get(str(k), float("-inf"))))
    best_dev = int(max(sorted(dev_uar, key=int), key=lambda k: dev_uar[k])) if dev_uar else None
    return {"per_seed": picks, "most_chosen": most, "times_chosen": counts[most], "choices": sum(counts.values()),
            "best_mean_dev": best_dev}


def layer_used_text(result: dict[str, Any]) -> str:
    """The layer a result used, as one table cell: ``12``, ``mean``, ``0,2`` (concat); for ``best``
    the most chosen layer (:func:`best_layer_choice`), with how often when the picks differ
    (``3 (9/10 picks)``); the picks themselves stay in ``result["layer"]``."""
    layer = result.get("layer")
    config = result.get("config") or {}
    if config.get("layer") == "best" and isinstance(layer, list) and layer:
        choice = result.get("layer_choice") or best_layer_choice(layer, result.get("layer_dev_uar") or {})
        times, of = choice["times_chosen"], choice["choices"]
        return str(choice["most_chosen"]) + ("" if times == of else f" ({times}/{of} picks)")
    if isinstance(layer, list):
        return ",".join(str(k) for k in layer)
    return "-" if layer is None else str(layer)


def layer_label(value: Any) -> str:
    """A configuration's layer choice in words for plots and titles (:attr:`LayerChoice.label`); a value
    that no longer parses (an old ledger row) as its text."""
    try:
        return LayerChoice.parse(value).label
    except LayerError:
        return str(value)
