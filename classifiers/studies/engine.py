"""The study engine: one ledger-first ``run(config)`` for probes and fine-tuning runs.

    result = run(ProbeConfig(source="emodb", target="urdu", model="whisper"), store, workspace)

:func:`run` looks the configuration up in the workspace's results ledger by its key and the identity
of the data it reads (:func:`~classifiers.studies.result.result_identity`), answers from it when the
stored result is current (:func:`~classifiers.studies.result.is_current`), else computes it (the
probe, or the fine-tuning method the configuration names), stores it and returns it. ``fs probe``,
``fs finetune``, ``fs sweep`` (each cell) and the library all run through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

from classifiers.studies.ledger import Ledger
from classifiers.studies.result import Result, is_current, result_identity
from classifiers.studies.views import Cache, resolve_group
from featurestore.errors import FsError
from featurestore.store import FeatureStore
from featurestore.workspace import Workspace

GridSetting = tuple[Any, str, str]  # (layer, norm, classifier): one candidate of a selection grid


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


# --------------------------------------------------------------------------- model selection without target labels
def lto_corpora(config: Any, store: FeatureStore, workspace: Workspace, cache: Cache) -> list[str]:
    """The workspace's corpora with clean groups of ``config``'s model (and input mode, seed), in name order."""
    found = []
    for name in sorted(workspace.corpus_names()):
        try:
            resolve_group(store, name, str(config.model), None, config.whisper_input, config.model_seed, cache)
        except FsError:
            continue
        found.append(name)
    return found


def target_facts(workspace: Workspace, target: str) -> Any:
    """Label-free facts about ``target``: its speaker ids, the task's class count (the label map's, not the
    labels) and its layout's design declaration (:data:`~data_manifests.layouts.registry.SPEAKERS_COVER_CLASSES`)."""
    from classifiers.studies.selection import TargetFacts
    from data_manifests.layouts.registry import speakers_cover_classes

    manifest = workspace.load_manifest(target)
    return TargetFacts.from_speakers(manifest.column("speaker"), len(manifest.classes),
                                     speakers_cover_classes(manifest.layout))


def candidate_config(config: Any, setting: tuple[Any, str, str], **sides: Any) -> Any:
    """``config`` with a candidate ``(layer, norm, classifier)`` (the classifier's parameters kept only for the
    configured classifier) and, in ``sides``, other fields (source, target, seeds...)."""
    layer, norm, classifier = setting
    params = config.classifier_params if classifier == config.classifier else {}
    return replace(config, layer=layer, norm=norm, classifier=classifier, classifier_params=params, **sides)


def target_score(config: Any, setting: GridSetting, rule: str, store: FeatureStore, workspace: Workspace,
                 cache: Cache) -> float:
    """The label-free score ``rule`` (entropy, snd, iwcv; higher is better) of ``config``'s probe with the candidate
    ``setting``, trained on the source (seed 0, clean, no shots) and read on the target's features only."""
    from classifiers.learners import target_scores
    from classifiers.studies.protocols import target_outputs

    probe = candidate_config(config, setting, seeds=1, shots=0, source_noise=None, target_noise=None, protocol=None)
    out = target_outputs(probe, store, workspace, cache, dev=rule == "iwcv")
    if rule == "entropy":
        return target_scores.prediction_entropy(out["proba"])
    if rule == "snd":
        return target_scores.soft_neighbourhood_density(out["proba"])
    return target_scores.importance_weighted_uar(out["dev_labels"], out["dev_pred"], out["dev_X"], out["source_X"],
                                                 out["target_X"])


def select(config: Any, rule: str, store: FeatureStore, workspace: Workspace, *, on: Sequence[str] | None = None,
           grid: dict[str, Any] | None = None, cache: Cache | None = None, ledger: Ledger | None | bool = True,
           study: str | None = None) -> Any:
    """Choose ``config``'s layer, normalisation and classifier from ``grid`` by ``rule`` without reading the
    target's labels: a :class:`~classifiers.studies.selection.Selection`.

    ``lto``: each candidate's mean UAR (1 seed, clean, no shots, ledger first) over the ordered pairs among
    the other corpora extracted with the model (``on`` names them; a multi-source config scores each as target
    from all the remaining ones); ``source``: the candidate's dev UAR on a speaker-independent split of the
    source; ``entropy``, ``snd``, ``iwcv``: a label-free score of the candidate trained on the source, read on the
    target's features (:func:`target_score`). All exclude speaker normalisation unless the target's label-free
    facts allow it."""
    from classifiers.studies.protocols import source_corpora, source_dev_scores
    from classifiers.studies.selection import TARGET_RULES, Grid, SelectionError, select_lto, select_source, select_target_aware

    cache = {} if cache is None else cache
    declared = Grid.parse(grid)
    first = source_corpora(config.source)[0]
    group = resolve_group(store, first, str(config.model), None, config.whisper_input, config.model_seed, cache)
    candidates = declared.candidates(group.num_layers, config.classifier)
    facts = target_facts(workspace, config.target)
    if rule == "lto":
        corpora = lto_corpora(config, store, workspace, cache)

        def score(setting: Any, source: Any, target: str) -> float:
            probe = candidate_config(config, setting, source=source, target=target, seeds=1, shots=0,
                                     source_noise=None, target_noise=None, protocol=None)
            return run(probe, store, workspace, cache=cache, ledger=ledger, study=study).uar_mean

        mode = "loco" if isinstance(config.source, tuple) else "pairs"
        chosen = select_lto(candidates, corpora, config.target, score, on=on, facts=facts, mode=mode)
    elif rule == "source":
        dev: dict[tuple[str, str], dict[int, float]] = {}
        warnings: list[str] = []
        # the dev split scores stored layers
        scored_layers = [c for c in candidates if isinstance(cast(GridSetting, c.setting)[0], int)]
        unscored = {c.setting: "the source rule scores single stored layers on its dev split"
                    for c in candidates if c not in scored_layers}
        if not scored_layers:
            raise SelectionError("--select source scores single stored layers; give layer numbers in the grid")
        candidates = scored_layers

        def dev_score(setting: Any) -> float:
            layer, norm, classifier = setting
            if (norm, classifier) not in dev:
                probe = candidate_config(config, (layer, norm, classifier), seeds=1)
                dev[(norm, classifier)], said = source_dev_scores(probe, store, workspace, cache)
                warnings.extend(w for w in said if w not in warnings)
            return dev[(norm, classifier)][int(layer)]

        chosen = select_source(candidates, config.source, dev_score, facts)
        chosen.warnings = warnings
        chosen.excluded.update(unscored)
    elif rule in TARGET_RULES:
        def target_aware(setting: Any) -> float:
            return target_score(config, cast(GridSetting, setting), rule, store, workspace, cache)

        chosen = select_target_aware(rule, candidates, config.source, config.target, target_aware, facts)
    else:
        raise SelectionError(f"unknown selection rule {rule!r}; use lto, source, {', '.join(TARGET_RULES)}")
    chosen.target = config.target
    chosen.grid = declared.to_dict(group.num_layers, config.classifier)
    return chosen


def run_selected(config: Any, rule: str, store: FeatureStore, workspace: Workspace, *,
                 on: Sequence[str] | None = None, grid: dict[str, Any] | None = None, **kwargs: Any) -> Result:
    """:func:`select` the setting, then :func:`run` it on ``config``'s pair (its seeds, shots, noise): the
    result (the chosen configuration's, ledger first) carries ``extra["selection"]`` (the grid, every
    candidate's scores, the exclusions and the choice)."""
    kwargs.setdefault("cache", {})
    chosen = select(config, rule, store, workspace, on=on, grid=grid, cache=kwargs["cache"],
                    ledger=kwargs.get("ledger", True), study=kwargs.get("study"))
    result = run(candidate_config(config, chosen.chosen), store, workspace, **kwargs)
    result.extra = {**result.extra, "selection": chosen.to_dict()}
    book = kwargs.get("ledger", True)
    if book:
        keep_selection(result, Ledger.open(workspace) if book is True else book, kwargs.get("study"))
    return result


def keep_selection(result: Result, book: Ledger, study: str | None = None) -> None:
    """Write ``result`` (with ``extra["selection"]``) to its ledger row, so the row says which rule chose it; the
    row's per-utterance predictions are kept (read back when ``result`` came from the ledger without them)."""
    from classifiers.studies.intervals import PARTS
    from classifiers.studies.ledger import LedgerError, row_identity

    record = result.to_record()
    row = book.row_key(record["config_key"], row_identity(record))
    for part in PARTS:
        if not record.get(part):
            try:
                record[part] = book.predictions(row, part)
            except LedgerError:  # stored without them (or a baseline part the run has not)
                record.pop(part, None)
    book.put(record, study=study)
