"""Intervals from a result's per-utterance predictions (classifiers.studies.intervals): add_intervals, text, compare."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from classifiers.learners.metrics import uar
from classifiers.learners.stats import uar_interval, uar_interval_sets
from classifiers.studies.intervals import (
    PredictionsError,
    add_intervals,
    check_predictions,
    compare,
    seed_predictions,
    uar_text,
)

CLASSES = ["angry", "happy", "neutral", "sad"]


def fake_predictions(n_speakers: int = 12, seeds: int = 3, skill: float = 0.6, per_class: int = 5,
                     rng_seed: int = 0, drop: int = 0, proba: bool = True) -> list[dict[str, Any]]:
    """Predictions of ``seeds`` seeds on one test set of ``n_speakers`` speakers (``per_class`` utterances of
    every class each); each speaker is right with its own probability around ``skill``; ``drop`` utterances
    (a seed-dependent choice) leave each seed's test set, as shots do."""
    rng = np.random.default_rng(rng_seed)
    ids = np.array([f"u{s:02d}-{c}-{k}" for s in range(n_speakers) for c in range(4) for k in range(per_class)])
    speakers = np.array([f"spk{s}" for s in range(n_speakers) for _ in range(4 * per_class)])
    truth = np.array([CLASSES[c] for _ in range(n_speakers) for c in range(4) for _ in range(per_class)])
    ability = np.clip(rng.normal(skill, 0.15, n_speakers), 0.05, 0.95)
    out = []
    for seed in range(seeds):
        right = rng.random(ids.size) < ability[np.searchsorted(np.unique(speakers), speakers)]
        wrong = np.array(CLASSES)[(np.searchsorted(CLASSES, truth) + rng.integers(1, 4, ids.size)) % 4]
        pred = np.where(right, truth, wrong)
        keep = np.sort(rng.permutation(ids.size)[drop:])
        p = rng.dirichlet(np.ones(4), keep.size) if proba else None
        out.append(seed_predictions(seed, ids[keep], speakers[keep], truth[keep], pred[keep], CLASSES, p))
    return out


def record(predictions: list[dict[str, Any]], baseline: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A result record as a producer makes it: per-seed UARs from the predictions."""
    uars = [uar(p["y_true"], p["y_pred"]) for p in predictions]
    out: dict[str, Any] = {"config_key": "k" * 64, "uar_mean": float(np.mean(uars)), "uar_std": float(np.std(uars)),
                           "uar_per_seed": uars, "predictions": predictions}
    if baseline:
        base = [uar(p["y_true"], p["y_pred"]) for p in baseline]
        out["baseline"] = {"uar_mean": float(np.mean(base)), "uar_std": float(np.std(base))}
        out["baseline_predictions"] = baseline
    return out


def test_add_intervals_brackets_the_mean_uar_and_is_idempotent() -> None:
    result = record(fake_predictions())
    assert add_intervals(result) is result
    low, high = result["uar_ci95"]
    assert low < result["uar_mean"] < high
    u_low, u_high = result["uar_ci95_utterance"]
    assert u_low < result["uar_mean"] < u_high
    assert "speakers" in result["uncertainty"]["uar_ci95"] and "training" in result["uncertainty"]["uar_std"]
    again = add_intervals(dict(result))
    assert again["uar_ci95"] == [low, high]
    # the speaker interval is the pooled speaker bootstrap of classifiers.learners.stats, seeded
    p = result["predictions"]
    pooled = uar_interval(p[0]["y_true"], np.stack([e["y_pred"] for e in p]), p[0]["speakers"], n_resamples=1000,
                          random_state=0)
    assert pooled.estimate == pytest.approx(result["uar_mean"]) and pooled.as_list() == pytest.approx([low, high])


def test_speaker_interval_is_wider_than_the_utterance_interval_for_clustered_errors() -> None:
    result = add_intervals(record(fake_predictions(n_speakers=10, per_class=10, rng_seed=3)))
    speaker = result["uar_ci95"][1] - result["uar_ci95"][0]
    utterance = result["uar_ci95_utterance"][1] - result["uar_ci95_utterance"][0]
    assert speaker > utterance


def test_seeds_with_their_own_test_sets_and_the_baseline() -> None:
    """Few-shot: each seed's shots leave its test set; the estimate is still the mean of the seeds' UARs."""
    preds, base = fake_predictions(drop=15, rng_seed=1), fake_predictions(drop=15, rng_seed=2, skill=0.4)
    assert preds[0]["ids"] != preds[1]["ids"]
    result = add_intervals(record(preds, base))
    parts = [(p["y_true"], p["y_pred"], p["speakers"]) for p in preds]
    assert uar_interval_sets(parts).estimate == pytest.approx(result["uar_mean"])
    assert result["uar_ci95"][0] < result["uar_mean"] < result["uar_ci95"][1]
    b = result["baseline"]
    assert b["uar_ci95"][0] < b["uar_mean"] < b["uar_ci95"][1] and "uar_ci95_utterance" in b


def test_interval_sets_equal_the_pooled_interval_on_one_test_set() -> None:
    p = fake_predictions(rng_seed=4)
    pooled = uar_interval(p[0]["y_true"], np.stack([e["y_pred"] for e in p]), p[0]["speakers"], random_state=7)
    sets = uar_interval_sets([(e["y_true"], e["y_pred"], e["speakers"]) for e in p], random_state=7)
    assert sets == pooled


def test_a_record_without_predictions_is_unchanged_and_prints_mean_and_std() -> None:
    old = {"uar_mean": 0.5812, "uar_std": 0.0103}
    assert add_intervals(dict(old)) == old
    assert uar_text(old) == "58.12 ± 1.03"
    assert uar_text({"uar_mean": 0.552, "uar_ci95": [0.501, 0.603]}) == "55.2 [50.1, 60.3]"
    assert uar_text(None) == "–"


@pytest.mark.parametrize("broken, match", [
    ({"ids": ["a", "b"]}, "one equal"),
    ({"ids": ["a", "a", "c"]}, "appears twice"),
    ({"proba": [[1.0, 0.0, 0.0]] * 3}, "proba must be"),
])
def test_malformed_predictions_are_refused(broken: dict[str, Any], match: str) -> None:
    good = {"seed": 0, "ids": ["a", "b", "c"], "speakers": ["s", "s", "t"], "y_true": ["x", "y", "x"],
            "y_pred": ["x", "x", "x"], "classes": ["x", "y"], "proba": None}
    assert check_predictions([good])[0]["ids"] == ["a", "b", "c"]
    with pytest.raises(PredictionsError, match=match):
        check_predictions([{**good, **broken}])
    with pytest.raises(PredictionsError, match="missing proba"):
        check_predictions([{k: v for k, v in good.items() if k != "proba"}])


def test_compare_identical_and_a_clear_winner() -> None:
    strong = fake_predictions(rng_seed=5, skill=0.8, n_speakers=16)
    weak = fake_predictions(rng_seed=6, skill=0.4, n_speakers=16)
    same = compare(strong, strong)
    assert same.paired.difference == 0 and same.paired.p_value == 1.0 and same.mcnemar.p_value == 1.0
    better = compare(strong, weak)
    assert better.paired.difference > 0.2 and better.paired.low > 0 and better.paired.p_value < 0.01
    assert better.mcnemar.p_value < 0.01 and better.mcnemar.a_only > better.mcnemar.b_only
    assert better.uar_a - better.uar_b == pytest.approx(better.paired.difference)
    assert better.n == 16 * 20 and better.speakers == 16 and better.to_dict()["mcnemar"]["seed"] == 0


def test_compare_uses_common_utterances_and_refuses_disjoint_or_relabelled_sets() -> None:
    a, b = fake_predictions(rng_seed=7), fake_predictions(rng_seed=8, drop=40)
    found = compare(a, b)
    assert found.n == len(set.intersection(*(set(e["ids"]) for e in b)))
    other = [{**e, "ids": [f"x{i}" for i in e["ids"]]} for e in b]
    with pytest.raises(PredictionsError, match="share no test utterance"):
        compare(a, other)
    relabelled = [{**e, "y_true": list(reversed(e["y_true"]))} for e in a]
    with pytest.raises(PredictionsError, match="different true labels"):
        compare(a, relabelled)


# --------------------------------------------------------------------------- end to end: fs probe → ledger
@pytest.mark.parametrize("source, target, extra", [
    ("emodb", "urdu", []),                      # cross-language: every target utterance, each seed
    ("urdu", "urdu", []),                       # within-corpus: the folds' test parts, every utterance once
    ("emodb", "urdu", ["--shots", "2"]),        # few-shot: each seed's own test set, and the baseline's
])
def test_fs_probe_stores_predictions_that_give_its_numbers(tmp_path: Path, source: str, target: str,
                                                           extra: list[str]) -> None:
    from click.testing import CliRunner
    from test_protocols import MODEL, build_workspace

    from classifiers.studies.ledger import Ledger
    from cli.main import fs

    ws = build_workspace(tmp_path)[0]
    args = ["--workspace", str(ws.root), "probe", "--source", source, "--target", target, "--model", MODEL,
            "--classifier", "svm", "--seeds", "2", "--no-save-model", "--no-progress", *extra]
    out = CliRunner().invoke(fs, args)
    assert out.exit_code == 0, out.output
    ledger = Ledger.open(ws)
    (row,) = ledger.rows()
    stored = ledger.predictions(row["config_key"])
    assert [p["seed"] for p in stored] == [0, 1]
    assert [uar(p["y_true"], p["y_pred"]) for p in stored] == pytest.approx(row["uar_per_seed"])
    assert row["uar_ci95"][0] <= row["uar_mean"] <= row["uar_ci95"][1]
    assert row["uar_ci95_utterance"][0] <= row["uar_mean"] <= row["uar_ci95_utterance"][1]
    manifest = ws.load_manifest(target)
    speaker_of = {row["utt_id"]: str(row["speaker"]) for row in manifest.rows}
    for p in stored:
        assert [speaker_of[i] for i in p["ids"]] == [str(s) for s in p["speakers"]]
        assert np.allclose(np.sum(p["proba"], axis=1), 1.0) and p["classes"] == list(manifest.classes)
    if target == source or not extra:
        assert all(sorted(p["ids"]) == sorted(speaker_of) for p in stored)  # every utterance once
    if extra:
        base = ledger.predictions(row["config_key"], "baseline_predictions")
        assert [uar(p["y_true"], p["y_pred"]) for p in base] == pytest.approx(row["baseline"]["uar_per_seed"])
        assert row["baseline"]["uar_ci95"][0] <= row["baseline"]["uar_mean"] <= row["baseline"]["uar_ci95"][1]
        assert all(len(p["ids"]) < len(speaker_of) for p in stored)  # the shots are never tested
    assert f"UAR {uar_text(row)} (95 % CI over test speakers), seed spread ± " in out.output
