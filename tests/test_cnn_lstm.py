"""CNN-LSTM baseline: learns, deterministic, batch-invariant, speaker dev split, normalisation, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from classifiers.learners.cnn_lstm import CNNLSTM, CNNLSTMClassifier, corpus_stats
from classifiers.learners.training import TrainingError

LABELS = np.array(["ang", "hap", "sad"])
N_MELS = 16


def corpus(n: int, seed: int, shift: float = 0.0) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Log-mel-like frames whose class raises one band of 4 mel bins by 3; 6 speakers; 20-70 frames."""
    rng = np.random.default_rng(seed)
    frames, y, groups = [], [], []
    for i in range(n):
        c = i % 3
        f = rng.standard_normal((int(rng.integers(20, 70)), N_MELS)).astype(np.float32) + shift
        f[:, 5 * c:5 * c + 4] += 3.0
        frames.append(f)
        y.append(LABELS[c])
        groups.append(f"spk{i % 6}")
    return frames, np.array(y), np.array(groups)


def small(**kwargs: object) -> CNNLSTMClassifier:
    defaults = dict(epochs=4, batch_size=8, lr=1e-2, channels=(8, 8, 8), lstm_units=16, dense_units=16)
    return CNNLSTMClassifier(**{**defaults, **kwargs})


def test_learns_and_records_history() -> None:
    frames, y, groups = corpus(48, 0)
    clf = small(epochs=6).fit(frames, y, groups)
    assert clf.dev_split_ == "speaker"
    assert [h["epoch"] for h in clf.history_] == [1, 2, 3, 4, 5, 6]
    assert sum(h["best"] for h in clf.history_) == 1 and clf.history_[clf.best_epoch_ - 1]["best"]
    assert clf.history_[-1]["train_loss"] < clf.history_[0]["train_loss"]
    test, y_test, _ = corpus(30, 1, shift=2.0)  # another "corpus": shifted levels, normalised away
    proba = clf.predict_proba(test)
    assert proba.shape == (30, 3) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert clf.score(test, y_test) >= 0.9
    assert set(clf.predict(test)) <= set(LABELS)


def test_same_seed_same_model_and_other_seed_differs() -> None:
    frames, y, groups = corpus(24, 2)
    test, _, _ = corpus(6, 3)
    a = small(epochs=2).fit(frames, y, groups).predict_proba(test)
    b = small(epochs=2).fit(frames, y, groups).predict_proba(test)
    c = small(epochs=2, seed=1).fit(frames, y, groups).predict_proba(test)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_prediction_does_not_depend_on_the_batch() -> None:
    frames, y, groups = corpus(24, 4)
    clf = small(epochs=1, normalise="none").fit(frames, y, groups)
    together = clf.predict_proba(frames[:6])
    alone = np.concatenate([clf.predict_proba([f]) for f in frames[:6]])
    assert np.allclose(together, alone, atol=1e-5)


def test_packed_lstm_ignores_padding() -> None:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = CNNLSTM(N_MELS, 3, channels=(4, 4, 4), lstm_units=8, dense_units=8).eval()
    x = torch.randn(2, 40, N_MELS)
    lengths = torch.tensor([40, 25])
    padded = x.clone()
    padded[1, 25:] = 100.0
    with torch.no_grad():
        assert torch.allclose(model(x, lengths), model(padded, lengths), atol=1e-6)


def test_corpus_normalisation_and_cropping() -> None:
    frames, y, groups = corpus(12, 5, shift=3.0)
    mean, std = corpus_stats(frames)
    stacked = np.concatenate(frames)
    assert np.allclose(mean, stacked.mean(axis=0), atol=1e-4) and np.allclose(std, stacked.std(axis=0), atol=1e-4)
    clf = small(epochs=1, max_frames=24, dev_fraction=0.0).fit(frames, y)
    assert clf.dev_split_ == "none" and clf.best_epoch_ == 1
    data = clf._prepare(frames, N_MELS, clf.train_stats_)
    assert max(d.shape[0] for d in data) == 24
    assert abs(float(torch.cat(data).mean())) < 0.2


def test_without_speakers_the_dev_split_is_by_utterance() -> None:
    frames, y, _ = corpus(18, 6)
    assert small(epochs=1).fit(frames, y).dev_split_ == "utterance"


def test_bad_input() -> None:
    frames, y, groups = corpus(24, 7)
    with pytest.raises(TrainingError, match="normalise"):
        CNNLSTMClassifier(normalise="utterance")
    with pytest.raises(TrainingError, match="labels"):
        small().fit(frames, y[:-1])
    with pytest.raises(TrainingError, match="2 classes"):
        small().fit(frames, np.array(["ang"] * 24))
    bad = frames[:-1] + [np.zeros((10, N_MELS + 1), np.float32)]
    with pytest.raises(TrainingError, match="utterance 23"):
        small().fit(bad, y, groups)
    with pytest.raises(TrainingError, match="not fitted"):
        small().predict(frames)
    clf = small(epochs=1).fit(frames, y, groups)
    with pytest.raises(TrainingError, match="not seen in training"):
        clf.score(frames, np.array(["neu"] * 24))


def test_training_progress_reports_batches_epochs_and_dev_uar() -> None:
    """Plain lines (not a terminal): a status line per batch here (interval 0), one line per finished
    epoch with the dev UAR, and the epochs of a run loaded from a checkpoint leave the total."""
    import io

    from classifiers.learners.training import TrainingProgress

    frames, y, groups = corpus(24, 6)
    log = io.StringIO()
    progress = TrainingProgress(runs=3, epochs=2, desc="fit", stream=log, interval_s=0.0)
    progress.skip("seed 0", "loaded from its checkpoint")
    clf = small(epochs=2, batch_size=8).fit(frames, y, groups, observer=progress.start("seed 1"))
    progress.close()
    lines = log.getvalue().splitlines()
    assert lines[0] == "fit: started, 6 epochs to do" and lines[1] == "fit: seed 0: loaded from its checkpoint"
    batches = [x for x in lines if "at seed 1 epoch 1/2 batch" in x]
    assert batches and batches[-1].endswith(f"batch {len(batches)}/{len(batches)}")
    for record in clf.history_:
        line = f"fit: seed 1 epoch {record['epoch']}/2: train loss {record['train_loss']:.3f}, dev UAR " \
               f"{100 * record['dev_uar']:.1f} %"
        assert any(x.startswith(line) for x in lines), line
    assert any("ETA" in x for x in lines if "epoch 2/2 batch" in x)  # after an epoch, a rate to go by
    assert lines[-1].startswith("fit: finished 2/4 epochs in")
