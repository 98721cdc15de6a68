"""Uncertainty of results from their per-utterance predictions: intervals, their text, paired comparisons.

A result record (:meth:`classifiers.studies.result.Result.to_record`, probe or fine-tuning) carries ``predictions``: one
entry per seed ::

    {"seed": 0, "ids": [...], "speakers": [...], "y_true": [...], "y_pred": [...],
     "classes": [...], "proba": [[...], ...] or None}

(``ids``, ``speakers``, ``y_true``, ``y_pred`` ``(n,)`` over the seed's test utterances; within a
corpus the union of the folds' test parts, every utterance once; ``proba`` ``(n, len(classes))``),
and for few-shot results ``baseline_predictions`` in the same shape (the target-only baseline).

:func:`add_intervals` gives such a record ``uar_ci95`` (a bootstrap over **test speakers**, pooled
over seeds, :data:`N_RESAMPLES` resamples, seeded) and ``uar_ci95_utterance`` (the same over
utterances, blind to speaker clustering), both ``[low, high]`` on the scale of ``uar_mean``; the
seed spread ``uar_std`` stays beside them as training variance. :func:`uar_text` is the one text
of a UAR (``55.2 [50.1, 60.3]``, or ``55.20 ± 1.03`` for results without predictions), and
:func:`compare` the paired comparison of two results on their common test utterances
(``fs compare``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from classifiers.learners.metrics import uar
from classifiers.learners.stats import (
    Interval,
    McNemar,
    PairedComparison,
    Unit,
    mcnemar,
    paired_bootstrap,
    uar_interval_sets,
)
from featurestore.errors import FsError

N_RESAMPLES = 1000
RANDOM_STATE = 0
CONFIDENCE = 0.95
PARTS: tuple[str, ...] = ("predictions", "baseline_predictions")  # the prediction lists a record may carry
_FIELDS = ("seed", "ids", "speakers", "y_true", "y_pred", "classes", "proba")
_ARRAYS = ("ids", "speakers", "y_true", "y_pred")


class PredictionsError(FsError):
    """Per-utterance predictions that are malformed, missing, or not comparable."""


def check_predictions(predictions: Any, what: str = "predictions") -> list[dict[str, Any]]:
    """``predictions`` (a list of per-seed entries, see the module docstring) as plain JSON values, checked:
    every field present, ``ids``/``speakers``/``y_true``/``y_pred`` of one length ``n`` > 0 with unique ids,
    ``proba`` None or ``(n, len(classes))``, seeds distinct. Raises :class:`PredictionsError`."""
    if not isinstance(predictions, list) or not predictions:
        raise PredictionsError(f"{what} must be a non-empty list of per-seed entries, got {type(predictions).__name__}")
    out, seeds = [], set()
    for entry in predictions:
        if not isinstance(entry, dict) or set(_FIELDS) - set(entry):
            missing = sorted(set(_FIELDS) - set(entry)) if isinstance(entry, dict) else _FIELDS
            raise PredictionsError(f"{what}: each entry needs {', '.join(_FIELDS)} (missing {', '.join(missing)})")
        seed = int(entry["seed"])
        if seed in seeds:
            raise PredictionsError(f"{what}: seed {seed} appears twice")
        seeds.add(seed)
        arrays = {name: [_plain(v) for v in entry[name]] for name in _ARRAYS}
        n = len(arrays["ids"])
        if n == 0 or any(len(v) != n for v in arrays.values()):
            raise PredictionsError(f"{what} of seed {seed}: ids, speakers, y_true and y_pred must have one equal, "
                                   f"non-zero length, got {[len(v) for v in arrays.values()]}")
        if len(set(map(str, arrays["ids"]))) != n:
            raise PredictionsError(f"{what} of seed {seed}: an utterance id appears twice")
        classes = [_plain(c) for c in entry["classes"]]
        proba = entry["proba"]
        if proba is not None:
            proba = np.asarray(proba, dtype=np.float64)
            if proba.shape != (n, len(classes)):
                raise PredictionsError(f"{what} of seed {seed}: proba must be (n, classes) = ({n}, {len(classes)}), "
                                       f"got {proba.shape}")
            proba = proba.tolist()
        out.append({"seed": seed, **arrays, "classes": classes, "proba": proba})
    return out


def _plain(value: Any) -> Any:
    """A numpy scalar as its Python value (JSON-able)."""
    return value.item() if isinstance(value, np.generic) else value


def seed_predictions(seed: int, ids: ArrayLike, speakers: ArrayLike, y_true: ArrayLike, y_pred: ArrayLike,
                     classes: Sequence, proba: np.ndarray | None = None) -> dict[str, Any]:
    """One seed's entry of ``predictions`` from arrays (``(n,)`` each, ``proba`` ``(n, C)`` or None)."""
    return {"seed": int(seed), "ids": np.asarray(ids).tolist(), "speakers": np.asarray(speakers).tolist(),
            "y_true": np.asarray(y_true).tolist(), "y_pred": np.asarray(y_pred).tolist(),
            "classes": [_plain(c) for c in classes],
            "proba": None if proba is None else np.round(np.asarray(proba, dtype=np.float64), 6).tolist()}


def interval(predictions: list[dict[str, Any]], unit: Unit = "speaker") -> Interval:
    """The bootstrap interval of the mean-over-seeds UAR of ``predictions`` (each seed on its own test
    set), resampling speakers (``unit="speaker"``) or utterances; :data:`N_RESAMPLES`, seeded."""
    key = "speakers" if unit == "speaker" else "ids"
    parts = [(p["y_true"], p["y_pred"], [str(v) for v in p[key]]) for p in predictions]
    return uar_interval_sets(parts, unit=unit, n_resamples=N_RESAMPLES, confidence=CONFIDENCE,
                             random_state=RANDOM_STATE)


def _set_intervals(target: dict[str, Any], predictions: list[dict[str, Any]]) -> None:
    target["uar_ci95"] = interval(predictions, "speaker").as_list()
    target["uar_ci95_utterance"] = interval(predictions, "utterance").as_list()


def add_intervals(result: dict[str, Any]) -> dict[str, Any]:
    """Give ``result`` (a record with ``predictions``) its ``uar_ci95`` and ``uar_ci95_utterance`` (and its
    ``baseline`` those of ``baseline_predictions``), plus ``uncertainty`` saying how they were made;
    in place, and returned. A record without predictions, or whose intervals are there, is unchanged."""
    if result.get("predictions") and result.get("uar_ci95") is None:
        _set_intervals(result, check_predictions(result["predictions"]))
        result["uncertainty"] = {
            "uar_ci95": f"{CONFIDENCE:.0%} percentile bootstrap over test speakers, {N_RESAMPLES} resamples "
                        f"(seed {RANDOM_STATE}), pooled over training seeds",
            "uar_ci95_utterance": "the same over test utterances (ignores that a speaker's utterances correlate)",
            "uar_std": "spread over training seeds (training variance), not sampling error"}
    baseline = result.get("baseline")
    if isinstance(baseline, dict) and result.get("baseline_predictions") and baseline.get("uar_ci95") is None:
        _set_intervals(baseline, check_predictions(result["baseline_predictions"], "baseline_predictions"))
    return result


def uar_text(record: dict[str, Any] | None, digits: int = 1) -> str:
    """A record's UAR in %: ``55.2 [50.1, 60.3]`` with its speaker interval, else (older results)
    ``55.20 ± 1.03`` (mean ± std over seeds; ``55.20`` when they agree: never ``± 0.00``); ``–`` for none.
    ``record``: a result or its ``baseline``."""
    if not record or record.get("uar_mean") is None:
        return "–"
    ci = record.get("uar_ci95")
    if ci:
        return f"{100 * record['uar_mean']:.{digits}f} [{100 * ci[0]:.{digits}f}, {100 * ci[1]:.{digits}f}]"
    std = record.get("uar_std")  # 0 for a deterministic learner or one seed: no spread to show
    return f"{100 * record['uar_mean']:.2f}" + (f" ± {100 * std:.2f}" if std else "")


# --------------------------------------------------------------------------- comparing two results
@dataclass(frozen=True)
class Comparison:
    """Result A against result B on their common test utterances.

    ``paired``: UAR(A) - UAR(B) (mean over each one's seeds) with its speaker-bootstrap interval
    and p-value; ``mcnemar``: exact McNemar on utterances of ``mcnemar_seed``; ``n``, ``speakers``:
    the common test utterances and their speakers; ``seeds_a`` / ``seeds_b``: seeds used.
    """

    paired: PairedComparison
    mcnemar: McNemar
    mcnemar_seed: int
    n: int
    speakers: int
    seeds_a: list[int]
    seeds_b: list[int]
    uar_a: float
    uar_b: float

    def to_dict(self) -> dict[str, Any]:
        p, m = self.paired, self.mcnemar
        return {"uar_a": self.uar_a, "uar_b": self.uar_b, "difference": p.difference, "ci95": [p.low, p.high],
                "p_bootstrap": p.p_value, "n_resamples": p.n_resamples, "unit": p.unit,
                "mcnemar": {"seed": self.mcnemar_seed, "a_only": m.a_only, "b_only": m.b_only, "p_value": m.p_value},
                "n_utterances": self.n, "n_speakers": self.speakers, "seeds_a": self.seeds_a, "seeds_b": self.seeds_b}


def _by_id(entry: dict[str, Any]) -> dict[str, int]:
    return {str(i): k for k, i in enumerate(entry["ids"])}


def compare(pred_a: list[dict[str, Any]], pred_b: list[dict[str, Any]], names: tuple[str, str] = ("A", "B"),
            n_resamples: int = N_RESAMPLES) -> Comparison:
    """Paired bootstrap over speakers of UAR(A) - UAR(B) (every seed of each, on the test utterances
    that every seed of both tested) and McNemar on those utterances (the first seed both have, else
    the first of each). Raises :class:`PredictionsError` when they share no test utterance or give
    one utterance different true labels or speakers."""
    pred_a, pred_b = check_predictions(pred_a, names[0]), check_predictions(pred_b, names[1])
    common = set.intersection(*(set(_by_id(e)) for e in pred_a + pred_b))
    if not common:
        raise PredictionsError(f"{names[0]} and {names[1]} share no test utterance (they were tested on other "
                               "corpora, conditions or folds); compare results on the same target")
    ids = sorted(common)
    rows = [[_by_id(e)[i] for i in ids] for e in pred_a + pred_b]
    truths = [np.asarray(e["y_true"], dtype=object)[r].astype(str) for e, r in zip(pred_a + pred_b, rows)]
    speakers = [np.asarray(e["speakers"], dtype=object)[r].astype(str) for e, r in zip(pred_a + pred_b, rows)]
    for name, truth, spk in zip([names[0]] * len(pred_a) + [names[1]] * len(pred_b), truths, speakers):
        if not np.array_equal(truth, truths[0]):
            raise PredictionsError(f"{names[0]} and {names[1]} give {int(np.sum(truth != truths[0]))} common test "
                                   f"utterance(s) different true labels ({name}: relabelled corpus or another label "
                                   "map); compare results computed with the same labels")
        if not np.array_equal(spk, speakers[0]):
            raise PredictionsError(f"{names[0]} and {names[1]} give common test utterances different speakers; "
                                   "compare results computed from the same manifest")
    preds = [np.asarray(e["y_pred"], dtype=object)[r].astype(str) for e, r in zip(pred_a + pred_b, rows)]
    a, b = np.stack(preds[:len(pred_a)]), np.stack(preds[len(pred_a):])
    paired = paired_bootstrap(truths[0], a, b, speakers[0], n_resamples=n_resamples, random_state=RANDOM_STATE)
    seeds_a, seeds_b = [e["seed"] for e in pred_a], [e["seed"] for e in pred_b]
    shared = sorted(set(seeds_a) & set(seeds_b))
    seed = shared[0] if shared else seeds_a[0]
    mc = mcnemar(truths[0], a[seeds_a.index(seed)], b[seeds_b.index(seed if shared else seeds_b[0])])
    return Comparison(paired, mc, seed, len(ids), int(np.unique(speakers[0]).size), seeds_a, seeds_b,
                      float(np.mean([uar(truths[0], p) for p in a])), float(np.mean([uar(truths[0], p) for p in b])))
