"""Bootstrap intervals over speakers, paired comparisons and McNemar (classifiers.learners.stats)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from classifiers.learners.metrics import uar
from classifiers.learners.stats import mcnemar, paired_bootstrap, uar_interval

CLASSES = np.array(["angry", "happy", "neutral", "sad"])


def _population_sample(rng: np.random.Generator, n_speakers: int, per_class: int = 6,
                       ability: tuple[float, float] = (6.0, 4.0)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A test set of ``n_speakers`` drawn from a population whose UAR is exactly ``a / (a + b)``:
    each speaker has ``per_class`` utterances of every class and is right with its own probability
    ~ Beta(a, b) (utterances of one speaker are correlated through it)."""
    truth, pred, groups = [], [], []
    for s in range(n_speakers):
        p_right = rng.beta(*ability)
        for k, label in enumerate(CLASSES):
            right = rng.random(per_class) < p_right
            wrong = CLASSES[(k + rng.integers(1, len(CLASSES), per_class)) % len(CLASSES)]
            truth += [label] * per_class
            pred += list(np.where(right, label, wrong))
            groups += [f"spk{s}"] * per_class
    return np.array(truth), np.array(pred), np.array(groups)


def test_estimate_is_the_metric_uar_and_seeds_are_averaged():
    rng = np.random.default_rng(0)
    truth, pred, groups = _population_sample(rng, 10)
    other = rng.permutation(pred)
    ci = uar_interval(truth, pred, groups, n_resamples=50)
    assert ci.estimate == pytest.approx(uar(truth, pred))
    both = uar_interval(truth, np.stack([pred, other]), groups, n_resamples=50)
    assert both.estimate == pytest.approx((uar(truth, pred) + uar(truth, other)) / 2)
    assert both.low <= both.estimate <= both.high


def test_bootstrap_resample_uar_matches_metric_on_the_drawn_speakers():
    """One resample's vectorised UAR equals classifiers.learners.metrics.uar on the same drawn speakers."""
    from classifiers.learners.stats import _counts, _uar_of, _units

    rng = np.random.default_rng(1)
    truth, pred, groups = _population_sample(rng, 7, per_class=3)
    codes = _units(groups, truth.size, "speaker")
    totals, (hits,) = _counts(truth, [pred[None]], codes)
    drawn = np.array([0, 0, 3, 5, 5, 5, 6])
    weights = np.bincount(drawn, minlength=7)[None].astype(float)
    rows = np.concatenate([np.flatnonzero(codes == u) for u in drawn])
    assert _uar_of(weights, totals, hits)[0] == pytest.approx(uar(truth[rows], pred[rows]))


def test_perfect_predictions_give_a_point_interval_and_string_form():
    truth = np.repeat(CLASSES, 5)
    groups = np.tile(np.arange(5), 4)
    ci = uar_interval(truth, truth, groups)
    assert (ci.estimate, ci.low, ci.high) == (1.0, 1.0, 1.0)
    assert str(ci) == "100.0 [100.0, 100.0]" and ci.as_list() == [1.0, 1.0]


def test_speaker_interval_covers_the_population_uar_at_about_the_stated_rate():
    """Over 300 test sets from a population with UAR 0.6, the 95% speaker interval covers 0.6 in
    roughly 95% of them; the utterance interval, blind to speaker correlation, covers less often."""
    rng = np.random.default_rng(2)
    true_uar = 6.0 / 10.0
    covered = {"speaker": 0, "utterance": 0}
    reps = 300
    for rep in range(reps):
        truth, pred, groups = _population_sample(rng, 25)
        for unit in covered:
            ci = uar_interval(truth, pred, groups, unit=unit, n_resamples=400, random_state=rep)
            covered[unit] += ci.low <= true_uar <= ci.high
    speaker_rate, utterance_rate = covered["speaker"] / reps, covered["utterance"] / reps
    assert 0.89 <= speaker_rate <= 0.99
    assert utterance_rate < speaker_rate - 0.05


def test_intervals_are_seeded():
    rng = np.random.default_rng(3)
    truth, pred, groups = _population_sample(rng, 12)
    assert uar_interval(truth, pred, groups, random_state=5) == uar_interval(truth, pred, groups, random_state=5)


def test_paired_bootstrap_identical_predictions_and_a_clear_winner():
    rng = np.random.default_rng(4)
    truth, pred, groups = _population_sample(rng, 20)
    same = paired_bootstrap(truth, pred, pred, groups)
    assert same.difference == 0.0 and same.p_value == 1.0 and same.low == same.high == 0.0
    truth_b, weak, _ = _population_sample(np.random.default_rng(4), 20, ability=(2.0, 8.0))
    assert (truth_b == truth).all()
    better = paired_bootstrap(truth, pred, weak, groups, n_resamples=500)
    assert better.difference > 0.2 and better.low > 0 and better.p_value < 0.01
    flipped = paired_bootstrap(truth, weak, pred, groups, n_resamples=500)
    assert flipped.difference == pytest.approx(-better.difference) and flipped.high < 0


def test_paired_bootstrap_false_positive_rate_is_near_nominal():
    """Two predictors of equal skill: p < 0.05 in few of 100 repetitions."""
    rng = np.random.default_rng(5)
    hits = 0
    for rep in range(100):
        truth, a, groups = _population_sample(rng, 20)
        b = np.where(rng.random(truth.size) < 0.5, a, rng.permutation(a))  # same marginal skill, noisier pairing
        a2 = np.where(rng.random(truth.size) < 0.5, a, rng.permutation(a))
        hits += paired_bootstrap(truth, a2, b, groups, n_resamples=300, random_state=rep).p_value < 0.05
    assert hits <= 12


def test_mcnemar_is_the_exact_binomial_on_discordant_utterances():
    truth = np.array(["a"] * 10)
    pred_a = np.array(["a"] * 8 + ["b"] * 2)
    pred_b = np.array(["a"] * 3 + ["b"] * 7)
    result = mcnemar(truth, pred_a, pred_b)
    assert (result.a_only, result.b_only) == (5, 0)
    assert result.p_value == pytest.approx(binomtest(5, 5, 0.5).pvalue)
    assert mcnemar(truth, pred_a, pred_a).p_value == 1.0


def test_bad_shapes_and_missing_speakers_are_refused():
    with pytest.raises(ValueError, match="groups"):
        uar_interval(["a", "b"], ["a", "b"])
    with pytest.raises(ValueError, match="y_pred"):
        uar_interval(["a", "b"], ["a"], ["s", "t"])
    with pytest.raises(ValueError, match="confidence"):
        uar_interval(["a"], ["a"], ["s"], confidence=95)
    with pytest.raises(ValueError, match="one seed"):
        mcnemar(["a"], [["a"], ["a"]], ["a"])
