"""Studies: a YAML file of experiments → probe configurations → results in the ledger, in parallel.

A study file (``fs sweep STUDY.yaml``; shipped ones by name: ``paper``, ``demo``)::

    name: my-study
    noise: {dir: ../shared/noise, snr_db: 10, noise_seed: 0}   # for conditions other than clean
    defaults: {classifier: mlp, layers: last, seeds: 5}        # any experiment setting
    experiments:
      - name: cross-language
        all_pairs: [iemocap, emodb, emovo, urdu]               # every ordered pair (or pairs: [a->b, ...], or
                                                               # loco: [a, b, c]: each as target from all the others)
        models: [wav2vec2, xlsr, whisper, mms]
      - name: few-shot
        pairs: [iemocap->emodb, iemocap->urdu]
        models: [whisper]
        shots: [0, 50, 100]

List-valued settings (``models layers classifiers norms stats shots conditions``) take one value
or a list; the study is their product. A setting left out takes :class:`ProbeConfig`'s default.
Every key and value is checked before anything runs (an unknown key gets a did-you-mean), and
every store group the study needs is resolved first: what is missing is listed as the ``fs
extract`` commands that make it. Configurations already in the ledger (same configuration, same
store groups and weights) are answered from it; the rest run in joblib worker processes, each
keeping the feature views it loaded for the cells that follow and writing each result to the ledger
the moment it is finished (an interrupted sweep keeps every finished cell; a rerun resumes). The
number of configurations and an estimated time are known before any is made (:func:`count_cells`);
``fs sweep`` asks before running more than :data:`LARGE_STUDY_CELLS`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from classifiers.studies import settings
from classifiers.studies.cache import StudyCache
from classifiers.studies.settings import BY_STUDY_KEY, SETTINGS, SettingError
from featurestore.errors import FsError
from featurestore.layers import LayerError
from featurestore.store import AmbiguousGroupError, FeatureStore, StoreError, StoreKey
from featurestore.workspace import Workspace

STUDY_KEYS = ("name", "description", "note", "noise", "defaults", "experiments")
NOISE_KEYS = ("dir", "snr_db", "noise_seed")
# study-file keys, from the one settings table: the plural ones take a list (the study is their product)
LIST_KEYS = {"models": "model", **{s.study_key: s.name for s in SETTINGS if s.many and s.study_key}}
SCALAR_KEYS = tuple(s.study_key for s in SETTINGS if s.study_key and not s.many)
METHODS = settings.METHODS  # `method:` makes an experiment fine-tune (classifiers.studies.finetune)
SETTING_KEYS = tuple(LIST_KEYS) + SCALAR_KEYS
EXPERIMENT_KEYS = ("name", "note", "pairs", "all_pairs", "loco", "condition") + SETTING_KEYS
CONDITIONS = settings.CONDITIONS  # which side is mixed with the study's noise
LAYER_WORDS = ("last", "best", "mean")
STATS = settings.STATS
WHISPER_INPUTS = settings.WHISPER_INPUTS
VIEW_CACHE_MB = int(os.environ.get("FS_VIEW_CACHE_MB", "3000"))
LARGE_STUDY_CELLS = 2000  # above this many configurations `fs sweep` asks before running (--yes skips)
# Rough seconds per seed of one cell (5-fold within-corpus or one cross-corpus fit on a few hundred
# utterances of 512-1024-d features) when the ledger has no timing of that classifier yet.
SECONDS_PER_SEED = {"logreg": 1.0, "svm": 1.0, "ridge": 0.3, "lgbm": 3.0, "mlp": 3.0, "head": 3.0,
                    "cnn-lstm": 60.0, "lora": 120.0}
# Kept between tasks by a worker: loky restarts a worker whose memory grew by 300 MB after its first task.
KEEP_BETWEEN_TASKS_MB = 200


class StudyError(FsError):
    """A study file that cannot be run as written (unknown key, bad value, nothing to run)."""


class SweepError(FsError):
    """A sweep that cannot start (missing corpora or store groups) or whose cells failed."""


# --------------------------------------------------------------------------- study files
@dataclass(frozen=True)
class Experiment:
    """One block of a study: corpus pairs × settings (each setting a tuple of values)."""

    name: str
    pairs: tuple[tuple[str, str], ...]
    settings: dict[str, Any]
    note: str = ""
    condition: dict[str, Any] | None = None  # {condition: TEXT, noise, noise_seed}: the side of conditions != clean


@dataclass(frozen=True)
class Study:
    """A validated study file."""

    name: str
    experiments: tuple[Experiment, ...]
    noise: dict[str, Any] | None = None
    description: str = ""
    note: str = ""
    path: str = ""


SELECT_KEYS = ("select", "select_on", "select_grid")  # a cell chosen by a selection rule (engine.run_selected)


@dataclass(frozen=True)
class Cell:
    """One configuration to run and the experiments of the study that asked for it; with ``select`` (``{rule, on,
    grid}``) the configuration's layer, normalisation and classifier are chosen by that rule when it runs."""

    config: Any  # ProbeConfig
    experiments: tuple[str, ...]
    select: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        if not self.select:
            return self.config.key()
        text = json.dumps([self.config.key(), self.select], sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()

    def payload(self) -> dict[str, Any]:
        """What a worker gets (:func:`run_cells`): the configuration's dict, with ``_select`` for a selected cell."""
        return {**self.config.to_dict(), **({"_select": self.select} if self.select else {})}


_suggest = settings.suggest  # " (did you mean 'x'?)"


def _check_keys(where: str, data: dict[str, Any], valid: tuple[str, ...]) -> None:
    for key in data:
        if key not in valid:
            raise StudyError(f"{where}: unknown key {key!r}{_suggest(key, valid)}; valid keys: {', '.join(valid)}")


def study_path(name_or_path: str | Path) -> Path:
    """A study file: an existing path, or the name of a shipped study (``paper``, ``demo``)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    shipped = shipped_studies()
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    raise StudyError(f"no study file {str(name_or_path)!r}{_suggest(str(name_or_path), list(shipped))}; give a "
                     f"YAML path or a shipped study: {', '.join(shipped)}")


def shipped_studies() -> dict[str, Path]:
    """Study files shipped with fs, by name."""
    folder = resources.files("classifiers") / "studies"
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")
            and not p.name.startswith("paper_table")}


def load_study(name_or_path: str | Path) -> Study:
    """Read and validate a study file (path or shipped name); :class:`StudyError` says what is wrong."""
    path = study_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise StudyError(f"{path}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start:exc.start + 1]!r}); "
                         "save the study file as UTF-8") from None
    except OSError as exc:
        raise StudyError(f"{path}: cannot be read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise StudyError(f"{path}: not valid YAML ({exc})") from None
    return parse_study(data, name=path.stem, path=str(path))


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_value(where: str, key: str, value: Any) -> Any:
    """One study-file value of ``key`` checked by the settings table (the message every door gives,
    with the key as written here); returns it in canonical form."""
    if key == "models":
        if not isinstance(value, str) or not value.strip():
            raise StudyError(f"{where}: models {value!r} is not valid; use a model name as given to "
                             "`fs extract --model`")
        return value
    try:
        return BY_STUDY_KEY[key].check(value, label=key)
    except (SettingError, LayerError) as exc:
        raise StudyError(f"{where}: {exc}") from None


def _settings(where: str, data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in SETTING_KEYS:
        if key not in data:
            continue
        values = _as_list(data[key]) if key in LIST_KEYS else [data[key]]
        if not values:
            raise StudyError(f"{where}: {key} is an empty list; give at least one value or leave the key out")
        for value in values:
            _check_value(where, key, value)
        out[key] = tuple(values) if key in LIST_KEYS else values[0]
    return out


def _pairs(where: str, data: dict[str, Any]) -> tuple[tuple[Any, str], ...]:
    """The experiment's (source, target) pairs; with ``loco`` the source is the tuple of all the other corpora."""
    if sum(key in data for key in ("pairs", "all_pairs", "loco")) != 1:
        raise StudyError(f"{where}: give exactly one of pairs (e.g. [iemocap->emodb, [urdu, emovo]]), loco (corpora: "
                         "each as target, all the others together as the source) or all_pairs (corpora: every "
                         "ordered pair of two different ones)")
    if "loco" in data:
        corpora = _as_list(data["loco"])
        if len(corpora) < 3 or not all(isinstance(c, str) and c for c in corpora) or len(set(corpora)) != len(corpora):
            raise StudyError(f"{where}: loco needs a list of at least three different corpus names, got {data['loco']!r}")
        return tuple((tuple(c for c in corpora if c != t), t) for t in corpora)
    if "all_pairs" in data:
        corpora = _as_list(data["all_pairs"])
        if len(corpora) < 2 or not all(isinstance(c, str) and c for c in corpora) or len(set(corpora)) != len(corpora):
            raise StudyError(f"{where}: all_pairs needs a list of at least two different corpus names, got "
                             f"{data['all_pairs']!r}")
        return tuple((a, b) for a, b in itertools.permutations(corpora, 2))
    pairs = []
    for item in _as_list(data["pairs"]):
        if isinstance(item, str) and "->" in item:
            item = [p.strip() for p in item.split("->")]
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and all(isinstance(c, str) and c for c in item)):
            raise StudyError(f"{where}: pair {item!r} is not valid; write SOURCE->TARGET or [SOURCE, TARGET]")
        pairs.append((item[0], item[1]))
    if not pairs:
        raise StudyError(f"{where}: pairs is empty; list at least one SOURCE->TARGET")
    return tuple(dict.fromkeys(pairs))


def parse_study(data: Any, name: str = "study", path: str = "") -> Study:
    """Validate a study's parsed YAML (see the module docstring) into a :class:`Study`."""
    where = path or name
    if not isinstance(data, dict):
        raise StudyError(f"{where}: a study is a mapping with keys {', '.join(STUDY_KEYS)}")
    _check_keys(where, data, STUDY_KEYS)
    noise = data.get("noise")
    if noise is not None:
        if not isinstance(noise, dict):
            raise StudyError(f"{where}: noise must be a mapping like {{dir: NOISE_DIR, snr_db: 10, noise_seed: 0}}")
        _check_keys(f"{where}: noise", noise, NOISE_KEYS)
        if not isinstance(noise.get("dir"), str) or not isinstance(noise.get("snr_db"), (int, float)) \
                or isinstance(noise.get("snr_db"), bool) or not _is_int(noise.get("noise_seed", 0)):
            raise StudyError(f"{where}: noise needs dir (a folder of recordings), snr_db (a number) and optionally "
                             f"noise_seed (an integer); got {noise!r}")
        noise = {"noise": os.path.expandvars(os.path.expanduser(noise["dir"])), "snr_db": float(noise["snr_db"]),
                 "noise_seed": int(noise.get("noise_seed", 0))}
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise StudyError(f"{where}: defaults must be a mapping of settings ({', '.join(SETTING_KEYS)})")
    _check_keys(f"{where}: defaults", defaults, SETTING_KEYS)
    base = _settings(f"{where}: defaults", defaults)
    blocks = data.get("experiments")
    if not isinstance(blocks, list) or not blocks:
        raise StudyError(f"{where}: experiments must be a non-empty list of experiment blocks")
    experiments = []
    for i, block in enumerate(blocks):
        label = f"{where}: experiment {i + 1}"
        if not isinstance(block, dict):
            raise StudyError(f"{label}: an experiment is a mapping with keys {', '.join(EXPERIMENT_KEYS)}")
        if isinstance(block.get("name"), str):
            label = f"{where}: experiment {block['name']!r}"
        _check_keys(label, block, EXPERIMENT_KEYS)
        settings = {**base, **_settings(label, block)}
        if "models" not in settings:
            raise StudyError(f"{label}: models is missing; list the models to probe (as given to `fs extract`)")
        noisy = [c for c in settings.get("conditions", ()) if c != "clean"]
        condition = _condition(label, block.get("condition"), noise)
        if noisy and noise is None and condition is None:
            raise StudyError(f"{label}: conditions {noisy} need the study's noise; add a top-level noise: "
                             "{dir: NOISE_DIR, snr_db: 10, noise_seed: 0} (or give the experiment a condition: TEXT)")
        experiments.append(Experiment(name=str(block.get("name", f"experiment-{i + 1}")), pairs=_pairs(label, block),
                                      settings=settings, note=str(block.get("note", "")), condition=condition))
    names = [e.name for e in experiments]
    if len(set(names)) != len(names):
        raise StudyError(f"{where}: experiment names must differ, got {names}")
    study_name = data.get("name", name)
    if not isinstance(study_name, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", study_name):
        raise StudyError(f"{where}: name {study_name!r} must be letters, digits, '.', '_' or '-'")
    return Study(name=study_name, experiments=tuple(experiments), noise=noise,
                 description=str(data.get("description", "")), note=str(data.get("note", "")), path=path)


def _condition(label: str, text: Any, noise: dict[str, Any] | None) -> dict[str, Any] | None:
    """An experiment's ``condition: TEXT`` (as ``fs extract --condition`` takes it, steps joined by ' > ') as the
    side its conditions other than clean read: a noise step without source= takes the study's noise dir, the
    chain the study's noise seed. Checked here (a bad condition names the valid kinds or parameters)."""
    if text is None:
        return None
    from featurestore.conditions import ConditionChain, ConditionError

    if not isinstance(text, str) or not text.strip():
        raise StudyError(f"{label}: condition must be a condition text such as telephone or 'reverb:rt60=0.3-0.9', "
                         f"got {text!r}")
    side = {"condition": text, "noise_seed": noise["noise_seed"] if noise else 0,
            **({"noise": noise["noise"]} if noise else {})}
    try:
        ConditionChain.parse(text, seed=side["noise_seed"], noise=side.get("noise"))
    except ConditionError as exc:
        raise StudyError(f"{label}: {exc}") from None
    return side


def count_cells(study: Study) -> int:
    """How many configurations ``study`` asks for, without making them: per experiment its pairs times the
    product of its list lengths (a configuration shared by two experiments counts twice)."""
    total = 0
    for exp in study.experiments:
        total += len(exp.pairs) * int(np.prod([len(v) for k, v in exp.settings.items() if k in LIST_KEYS]))
    return total


def estimate_seconds(study: Study, n_jobs: int, ledger: Any = None) -> float:
    """Rough wall seconds to run every cell of ``study`` on ``n_jobs`` workers: per cell the median
    seconds per seed of this classifier in ``ledger`` (a :class:`~classifiers.studies.ledger.Ledger`), else
    :data:`SECONDS_PER_SEED`, times its seeds."""
    from classifiers.studies.protocols import ProbeConfig

    past = ledger.seconds_per_seed() if ledger is not None else {}
    total = 0.0
    for exp in study.experiments:
        kinds = [exp.settings["method"]] if exp.settings.get("method") else list(
            exp.settings.get("classifiers", (ProbeConfig.classifier,)))
        per_cell = float(np.mean([past.get(k, SECONDS_PER_SEED.get(k, 1.0)) for k in kinds]))
        seeds = exp.settings.get("seeds", ProbeConfig.seeds)
        total += count_cells(Study(name=study.name, experiments=(exp,))) * per_cell * int(seeds)
    return total / max(1, n_jobs)


def describe_size(study: Study, n_jobs: int, ledger: Any = None) -> str:
    """One line: how many configurations ``study`` has and about how long they take (cells in the ledger
    are answered from it, so a rerun of a finished study is quicker)."""
    n = count_cells(study)
    seconds = estimate_seconds(study, n_jobs, ledger)
    many = "up to " if len(study.experiments) > 1 else ""
    return (f"study {study.name}: {many}{n:,} configurations, about {_duration(seconds)} on {n_jobs} worker(s) "
            "(less for those already in the ledger)")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def expand_study(study: Study) -> list[Cell]:
    """Every configuration of ``study`` (product of its settings per experiment), each once, in study order."""

    cells: dict[str, tuple[Any, list[str]]] = {}
    for exp in study.experiments:
        lists = {k: v for k, v in exp.settings.items() if k in LIST_KEYS}
        scalars = {k: v for k, v in exp.settings.items() if k not in LIST_KEYS}
        names = list(lists)
        for (source, target), values in itertools.product(exp.pairs, itertools.product(*lists.values())):
            chosen = dict(zip(names, values))
            condition = chosen.pop("conditions", "clean")
            config = {"source": source, "target": target, **scalars,
                      **{LIST_KEYS[k]: v for k, v in chosen.items()}}
            side = exp.condition or study.noise
            if condition != "clean":
                if side is None:  # refused when the study file is read
                    raise StudyError(f"experiment {exp.name!r}: condition {condition!r} needs the study's noise "
                                     "or the experiment's condition")
                if condition in ("source", "both"):
                    config["source_noise"] = dict(side)
                if condition in ("target", "both"):
                    config["target_noise"] = dict(side)
            given = {k: config.pop(k) for k in SELECT_KEYS if k in config}
            try:
                select = _select_spec(given)
                probe = _config_from_dict(config)
                if select and getattr(probe, "method", None):
                    raise StudyError(f"select chooses a probe's layer, normalisation and classifier; method "
                                     f"{probe.method!r} has none to choose (leave select out of fine-tuning experiments)")
            except FsError as exc:
                raise StudyError(f"{study.path or study.name}: experiment {exp.name!r}: {exc}") from None
            cell = Cell(config=probe, experiments=(), select=select)
            if cell.key in cells:
                cells[cell.key][1].append(exp.name)
            else:
                cells[cell.key] = (cell, [exp.name])
    return [Cell(config=c.config, experiments=tuple(dict.fromkeys(e)), select=c.select) for c, e in cells.values()]


def _select_spec(given: dict[str, Any]) -> dict[str, Any] | None:
    """``{rule, on, grid}`` of an experiment's ``select`` / ``select_on`` / ``select_grid`` (None without ``select``)."""
    if given.get("select") is None:
        if any(given.get(k) for k in ("select_on", "select_grid")):
            raise StudyError("select_on and select_grid need select (lto or source)")
        return None
    from classifiers.studies.selection import Grid

    Grid.parse(given.get("select_grid") or None)  # a bad grid is refused before anything runs
    on = settings.check("select_on", given.get("select_on"))  # canonical: names sorted, once each
    return {"rule": given["select"], "on": list(on) if on else None, "grid": given.get("select_grid") or None}


def _corpora(source: Any) -> tuple[str, ...]:
    """The corpora of a configuration's source (several for a multi-source one)."""
    return (source,) if isinstance(source, str) else tuple(source)


def _config_from_dict(data: dict[str, Any]) -> Any:
    """A probe or fine-tuning configuration from its settings (:func:`classifiers.studies.result.config_from_dict`)."""
    from classifiers.studies.result import config_from_dict

    return config_from_dict(data)


# --------------------------------------------------------------------------- planning
def _group_queries(config: Any, side: str) -> list[tuple[str, str, str | None, tuple[tuple[str, Any], ...]]]:
    """(corpus, model, condition, filters) of each store group that ``config`` reads for ``side`` (several for a
    multi-source one; resolved as the protocol resolves it: :func:`classifiers.studies.views.noise_filters`)."""
    from classifiers.studies.views import noise_filters

    condition, filters = noise_filters(getattr(config, f"{side}_noise"), config.whisper_input, config.model_seed)
    return [(corpus, config.model, condition, tuple(sorted(filters.items())))
            for corpus in _corpora(getattr(config, side))]


def extract_command(corpora: list[str], model: str, filters: dict[str, Any], side: dict[str, Any] | None = None) -> str:
    """The ``fs extract`` command that makes the groups of ``model`` for ``corpora`` under ``filters`` (or under
    the condition chain of ``side`` ``{condition: TEXT, noise_seed}``)."""
    from featurestore.hints import command_from_filters

    if side and "condition" in side:
        from classifiers.studies.views import condition_command

        return condition_command(model, corpora, side, filters.get("whisper_input"), filters.get("seed"))
    return command_from_filters(model, corpora, filters)


@dataclass
class SweepPlan:
    """What a sweep needs: per configuration key the store groups and the data identity
    (:func:`classifiers.studies.result.result_identity`: store keys, weights hashes, data digests)."""

    identities: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    groups: dict[str, list[StoreKey]] = field(default_factory=dict)


def plan_sweep(cells: list[Cell], store: FeatureStore, workspace: Workspace) -> SweepPlan:
    """Resolve every corpus and store group the cells read, or raise one :class:`SweepError` listing
    all that is missing (the ``fs corpus add`` / ``fs extract`` commands that make it)."""
    from classifiers.studies.result import result_identity

    corpora = sorted({c for cell in cells for c in (*_corpora(cell.config.source), cell.config.target)})
    missing_corpora = [c for c in corpora if not workspace.manifest_path(c).exists()]
    resolved: dict[tuple, StoreKey] = {}
    problems: dict[tuple, StoreError] = {}
    sides: dict[tuple, dict[str, Any] | None] = {}  # query -> the condition side it reads (for the hint)
    for cell in cells:
        for side in ("source", "target"):
            for query in _group_queries(cell.config, side):
                sides[query] = getattr(cell.config, f"{side}_noise")
                if query in resolved or query in problems or query[0] in missing_corpora:
                    continue
                corpus, model, condition, filters = query
                try:
                    resolved[query] = store.resolve(corpus, model, condition, **dict(filters))
                except StoreError as exc:
                    problems[query] = exc
    if missing_corpora or problems:
        lines = []
        if missing_corpora:
            known = ", ".join(workspace.corpus_names()) or "none"
            lines.append(f"corpora not added in {workspace.root} (added: {known}):")
            from data_manifests.layouts import LAYOUTS

            lines += [f"  fs corpus add {c} --layout {c if c in LAYOUTS else 'LAYOUT'} --root PATH"
                      for c in missing_corpora]
        ambiguous = {q: str(exc) for q, exc in problems.items() if isinstance(exc, AmbiguousGroupError)}
        absent = [q for q in problems if q not in ambiguous]
        if absent:
            lines.append("store groups not extracted yet; make them with:")
            by_model: dict[tuple, list[str]] = {}
            for corpus, model, condition, filters in absent:
                by_model.setdefault((model, condition, filters), []).append(corpus)
            lines += [f"  {extract_command(sorted(set(cs)), m, dict(f), sides[(cs[0], m, c, f)])}"
                      for (m, c, f), cs in by_model.items()]
        lines += [f"  {msg}" for msg in ambiguous.values()]
        raise SweepError("the study cannot run, nothing was run:\n" + "\n".join(lines))
    plan = SweepPlan()
    cache: dict[Any, Any] = {}
    identities: dict[tuple, dict[str, Any]] = {}
    for cell in cells:
        queries = tuple(q for s in ("source", "target") for q in _group_queries(cell.config, s))
        plan.groups[cell.key] = sorted({resolved[q] for q in queries}, key=lambda k: k.path)
        if queries not in identities:  # the identity depends on the groups and corpora only
            identities[queries] = result_identity(cell.config, store, workspace, cache)
        plan.identities[cell.key] = identities[queries]
    return plan


# --------------------------------------------------------------------------- running
class ViewCache(StudyCache):
    """A sweep worker's study cache (:class:`~classifiers.studies.cache.StudyCache`: views, fitted estimators,
    selections, frame caches, encoders, all counted), bounded by ``FS_VIEW_CACHE_MB`` (default 3000 MB)."""

    def __init__(self, max_bytes: int | None = None):
        super().__init__(VIEW_CACHE_MB * 2**20 if max_bytes is None else max_bytes)  # the bound as set now


_WORKER_CACHE: dict[str, ViewCache] = {}


def _worker_views(token: str) -> ViewCache:
    """This process's view cache for sweep ``token`` (caches of earlier sweeps are dropped)."""
    if token not in _WORKER_CACHE:
        _WORKER_CACHE.clear()
        _WORKER_CACHE[token] = ViewCache()
    return _WORKER_CACHE[token]


def run_cells(configs: list[dict[str, Any]], store_url: str, workspace_root: str,
              token: str = "", study: str | None = None) -> list[dict[str, Any]]:
    """Run probe configurations (dicts) in this process, reusing loaded views across them.

    With ``study`` each result is written to the workspace's ledger (tagged with ``study``) the
    moment it is finished, so an interrupted task keeps its finished cells. Returns one dict per
    configuration: the result (without its per-utterance predictions once they are in the ledger), or
    ``{"config_key", "error"}`` for an fs error.
    """
    from classifiers.studies.engine import run, run_selected
    from classifiers.studies.ledger import Ledger

    store = FeatureStore(store_url)
    workspace = Workspace.open(workspace_root, store_url)
    ledger = Ledger.open(workspace) if study is not None else None
    views = _worker_views(token or uuid.uuid4().hex)
    out = []
    for data in configs:
        data = dict(data)
        select = data.pop("_select", None)
        config = _config_from_dict(data)
        cell_key = Cell(config, (), select).key
        try:  # the sweep looked the ledger up already: compute (keeping fine-tuning checkpoints) and store
            if select:  # the candidates and the chosen run ledger first; the selection kept on the chosen row
                result = run_selected(config, select["rule"], store, workspace, on=select.get("on"),
                                      grid=select.get("grid"), cache=views, ledger=ledger, study=study).to_record()
            else:
                result = run(config, store, workspace, rerun=True, retrain=False, cache=views, ledger=ledger,
                             study=study).to_record()
        except FsError as exc:
            out.append({"config_key": config.key(), "cell_key": cell_key, "error": str(exc),
                        "config": config.to_dict()})
            continue
        # the predictions stay in the ledger; the result carries its intervals
        out.append({**(without_predictions(result) if ledger is not None else result), "cell_key": cell_key})
    views.trim(KEEP_BETWEEN_TASKS_MB * 2**20)
    return out


def without_predictions(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` less its per-utterance predictions (kept by the ledger: ``Ledger.predictions``)."""
    from classifiers.studies.intervals import PARTS

    return {k: v for k, v in result.items() if k not in PARTS}


def _tasks(cells: list[Cell], n_jobs: int) -> list[list[Cell]]:
    """Cells grouped so that a worker reuses what it loaded and fitted: by (model, source), so one source
    model serves every target, or by (model, source, target) when that leaves too few tasks for the
    workers; tasks are then split in halves until every worker has one (a single pair uses ``n_jobs``
    workers too). Tasks of one model come together (a worker keeps its views for the tasks that follow)."""
    def grouped(with_target: bool) -> list[list[Cell]]:
        groups: dict[tuple, list[Cell]] = {}
        for cell in cells:
            c = cell.config
            key = (c.model, str(c.whisper_input), str(c.model_seed), c.source, str(c.source_noise))
            groups.setdefault(key + ((c.target,) if with_target else ()), []).append(cell)
        return [groups[k] for k in sorted(groups)]

    tasks = grouped(False)
    if len(tasks) < 2 * n_jobs:
        tasks = grouped(True)
    while len(tasks) < n_jobs and any(len(t) > 1 for t in tasks):
        i = max(range(len(tasks)), key=lambda j: len(tasks[j]))
        half = (len(tasks[i]) + 1) // 2
        tasks[i:i + 1] = [tasks[i][:half], tasks[i][half:]]
    return tasks


def default_jobs() -> int:
    """Worker processes by default: the CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def run_sweep(study: Study | str | Path, store: FeatureStore, workspace: Workspace, n_jobs: int | None = None,
              progress: bool = True, rerun: bool = False, backend: str = "local",
              address: str | None = None, echo: Callable[[str], None] | None = None,
              confirm: Callable[[str], bool] | None = None) -> list[dict[str, Any]]:
    """Run every configuration of ``study``; results in study order, each also in the ledger.

    Answers configurations already in the ledger (same store groups and weights) from it unless
    ``rerun``; runs the rest in ``n_jobs`` processes (default: the cores; 1 = in this process), each
    writing every result to the ledger as it finishes (an interrupted sweep keeps every finished cell
    and a rerun resumes), or with ``backend="ray"`` as ``n_jobs`` tasks on a Ray cluster
    (``address``: HOST:PORT, ``auto``, or None for a local runtime) through joblib's Ray backend,
    where this process writes the results as each task returns. On a cluster every node needs the
    store (a shared path or an object-store URL) and the workspace's manifests at the same paths.
    Before anything is expanded, ``echo`` (when given) gets the number of configurations and an
    estimated time; above :data:`LARGE_STUDY_CELLS` configurations ``confirm`` (when given) is asked
    with that line and a False answer raises :class:`SweepError` with nothing run.
    Each returned dict is a ``Result.to_record()`` (its predictions left in the ledger) plus ``from_ledger`` (bool) and
    ``experiments`` (names). Raises :class:`SweepError` before running anything when corpora or
    groups are missing, and after running the rest when some cells failed (their errors listed).
    """
    from classifiers.studies.engine import lookup
    from classifiers.studies.ledger import Ledger

    study = study if isinstance(study, Study) else load_study(study)
    if backend not in ("local", "ray"):
        raise SweepError(f"unknown sweep backend {backend!r}; use local or ray")
    ledger = Ledger.open(workspace)
    if echo is not None or confirm is not None:
        size = describe_size(study, n_jobs or default_jobs(), ledger)
        if echo is not None:
            echo(size)
        if confirm is not None and count_cells(study) > LARGE_STUDY_CELLS and not confirm(size):
            raise SweepError(f"{size}: not run (answer yes, or pass --yes to run it without asking)")
    cells = expand_study(study)
    plan = plan_sweep(cells, store, workspace)
    results: dict[str, dict[str, Any]] = {}
    known_rows = []
    for cell in cells:
        identity = plan.identities[cell.key]
        found = None if rerun or cell.select else lookup(cell.config, identity, ledger)  # selected: chosen when run
        if found is not None:
            results[cell.key] = {**found.to_record(), "from_ledger": True}
            known_rows.append(ledger.row_key(cell.key, identity))
    if known_rows:
        ledger.tag(known_rows, study.name)
    pending = [cell for cell in cells if cell.key not in results]
    failures: dict[str, str] = {}
    for batch in _execute(pending, store, workspace, n_jobs, progress, backend, address, study.name):
        cell_keys = [r.pop("cell_key", r["config_key"]) for r in batch]  # a selected cell's result is another key's
        done = [(k, r) for k, r in zip(cell_keys, batch) if "error" not in r]
        failures.update({k: r["error"] for k, r in zip(cell_keys, batch) if "error" in r})
        if done and backend == "ray":  # local workers wrote each result as it finished
            ledger.put_many([r for _, r in done], study=study.name)
        results.update({k: {**without_predictions(r), "from_ledger": False} for k, r in done})
    if failures:
        shown = "\n".join(f"  {_describe(next(c.config for c in cells if c.key == k))}: {msg}"
                          for k, msg in list(failures.items())[:20])
        more = f"\n  ... and {len(failures) - 20} more" if len(failures) > 20 else ""
        raise SweepError(f"{len(failures)} of {len(cells)} configurations failed (the other results are in the "
                         f"ledger; fix these and run the sweep again, finished ones are not rerun):\n{shown}{more}")
    experiments = {cell.key: list(cell.experiments) for cell in cells}
    return [{**results[cell.key], "experiments": experiments[cell.key]} for cell in cells]


def _describe(config: Any) -> str:
    extra = f", {config.shots} shots" if config.shots else ""
    noise = " (noisy)" if config.source_noise or config.target_noise else ""
    return f"{config.source}->{config.target} {config.model} layer {config.layer} {config.classifier}{extra}{noise}"


def _execute(cells: list[Cell], store: FeatureStore, workspace: Workspace, n_jobs: int | None,
             progress: bool, backend: str = "local", address: str | None = None,
             study: str | None = None) -> Iterator[list[dict[str, Any]]]:
    """Run ``cells`` and yield result batches as they finish (with a progress bar over cells); local
    workers write each result to the ledger under ``study`` as it finishes."""
    from tqdm.auto import tqdm

    if not cells:
        return
    if backend == "ray":
        yield from _execute_on_ray(cells, store, workspace, n_jobs, progress, address)
        return
    n_jobs = n_jobs or default_jobs()
    tasks = _tasks(cells, n_jobs)
    n_jobs = min(n_jobs, len(tasks))
    token = uuid.uuid4().hex
    args = [([c.payload() for c in task], store.url, str(workspace.root), token, study) for task in tasks]
    with tqdm(total=len(cells), unit="cell", desc="sweep", disable=not progress, dynamic_ncols=True) as bar:
        if n_jobs <= 1:
            batches: Any = (run_cells(*a) for a in args)
        else:
            from joblib import Parallel, delayed

            batches = Parallel(n_jobs=n_jobs, backend="loky", return_as="generator_unordered", batch_size=1)(
                delayed(run_cells)(*a) for a in args)
        for batch in batches:
            bar.update(len(batch))
            yield batch


def _execute_on_ray(cells: list[Cell], store: FeatureStore, workspace: Workspace, n_jobs: int | None,
                    progress: bool, address: str | None) -> Iterator[list[dict[str, Any]]]:
    """The cells' tasks through joblib's Ray backend; the results come back to this process."""
    from joblib import Parallel, delayed, parallel_backend
    from tqdm.auto import tqdm

    from featurestore.distributed import connect

    started = connect(address)
    try:
        import ray
        from ray.util.joblib import register_ray

        register_ray()
        n_jobs = n_jobs or max(1, int(ray.cluster_resources().get("CPU", 1)))
        tasks = _tasks(cells, n_jobs)
        token = uuid.uuid4().hex
        args = [([c.payload() for c in task], store.url, str(workspace.root), token) for task in tasks]
        with tqdm(total=len(cells), unit="cell", desc="sweep (ray)", disable=not progress, dynamic_ncols=True) as bar:
            with parallel_backend("ray"):
                batches = Parallel(n_jobs=min(n_jobs, len(tasks)), batch_size=1)(delayed(run_cells)(*a) for a in args)
            for batch in batches:
                bar.update(len(batch))
                yield batch
    finally:
        if started:
            import ray

            ray.shutdown()
