"""The study engine: one ledger-first ``run(config)`` for probes and fine-tuning runs.

    result = run(ProbeConfig(source="emodb", target="urdu", model="whisper"), store, workspace)

:func:`run` looks the configuration up in the workspace's results ledger by its key and the identity
of the data it reads (:func:`~classifiers.studies.result.result_identity`), answers from it when the
stored result is current (:func:`~classifiers.studies.result.is_current`), else computes it (the
probe, or the fine-tuning method the configuration names), stores it and returns it. ``fs probe``,
``fs finetune``, ``fs sweep`` (each cell) and the library all run through it.
"""

from __future__ import annotations

from typing import Any

from classifiers.studies.ledger import Ledger
from classifiers.studies.result import Result, is_current, result_identity
from classifiers.studies.views import Cache
from featurestore.store import FeatureStore
from featurestore.workspace import Workspace


def lookup(config: Any, identity: dict[str, Any], ledger: Ledger, study: str | None = None) -> Result | None:
    """The ledger's current result of ``config`` on the data ``identity`` names (tagged with ``study``
    when given), or None when it holds none or a stale one."""
    found = ledger.get(config.key(), identity)
    if found is None or not is_current(found, identity):
        return None
    if study:
        ledger.tag([ledger.row_key(config.key(), identity)], study)
    result = Result.from_record(found, config)
    result.from_ledger = True
    return result


def compute(config: Any, store: FeatureStore, workspace: Workspace, *, cache: Cache | None = None,
            device: str = "cpu", retrain: bool = False, progress: Any = None) -> Result:
    """``config``'s result computed from the store, never from the ledger: the probe
    (:func:`~classifiers.studies.protocols.run_probe`; ``progress`` a reporter factory) or a fine-tuning
    run (:func:`~classifiers.studies.finetune.run_finetune`; ``progress`` truthy shows training,
    ``retrain`` retrains seeds whose checkpoints exist, ``device`` where)."""
    if getattr(config, "method", None):
        from classifiers.studies.finetune import run_finetune

        return run_finetune(config, store, workspace, device=device, rerun=retrain, cache=cache,
                            progress=bool(progress))
    from classifiers.studies.protocols import run_probe

    return run_probe(config, store, workspace, views=cache, progress=progress)


def run(config: Any, store: FeatureStore, workspace: Workspace, *, rerun: bool = False, cache: Cache | None = None,
        ledger: Ledger | None | bool = True, study: str | None = None, device: str = "cpu",
        retrain: bool | None = None, progress: Any = None) -> Result:
    """The result of ``config`` (a :class:`~classifiers.studies.protocols.ProbeConfig` or
    :class:`~classifiers.studies.finetune.FinetuneConfig`), ledger first.

    ``ledger``: True (the workspace's), a :class:`Ledger`, or None/False (compute, store nothing).
    ``rerun``: compute even when the ledger holds a current result (and, unless ``retrain`` says
    otherwise, retrain fine-tuning checkpoints). ``study``: tag the row with this study. ``cache``: the
    views and fits shared across calls. A result computed here is stored before it is returned;
    ``Result.from_ledger`` says which way it came.
    """
    cache = {} if cache is None else cache
    book = Ledger.open(workspace) if ledger is True else None if ledger is False else ledger  # (len() 0 when empty)
    if getattr(config, "method", None) not in (None, "head"):
        from classifiers.studies.finetune import check_data

        check_data(config, store, workspace, cache)  # the checks of the frames this method needs come first
    identity = result_identity(config, store, workspace, cache)
    if book is not None and not rerun:
        found = lookup(config, identity, book, study)
        if found is not None:
            return found
    result = compute(config, store, workspace, cache=cache, device=device,
                     retrain=rerun if retrain is None else retrain, progress=progress)
    if book is not None:
        book.put(result.to_record(), study=study)
    return result
