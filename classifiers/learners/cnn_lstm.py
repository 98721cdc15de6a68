"""The study's CNN-LSTM baseline, trained from log-mel frames (``fs extract --model logmel --frames 0``).

A convolutional encoder whose first kernel is larger (7x7, then two 3x3 blocks; each block conv ->
batch norm -> ReLU -> 2x2 max pooling over time and frequency), a bidirectional LSTM of 128 units
over the pooled time steps (packed sequences: padding never enters it), a dense layer of 128 and a
softmax over the classes, trained with cross-entropy by :func:`classifiers.learners.training.train`.

Variable lengths: frames past an utterance's (pooled) length are zeroed before the first block and
after every block, so a padded utterance sees exactly the zeros it would see alone at its edges,
and predictions do not depend on the batch.

Per-corpus normalisation (``normalise="corpus"``): every mel bin is standardised with the mean and
variance over all frames of its corpus. Training frames use the training corpus's statistics;
``predict`` standardises the frames it is given with *their own* statistics (unlabelled target
frames are used, i.e. transductive): pass the whole target corpus in one call.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from classifiers.learners.training import (
    BatchLogits,
    TrainingError,
    TrainObserver,
    TrainOptions,
    codes_of,
    dev_split,
    encode_labels,
    predict_logits,
    train,
)
from featurestore.encoders.common import frame_mask, pad_frames, seeded

NORMALISE = ("corpus", "none")
POOL = 2  # time and frequency reduction of every conv block


class CNNLSTM(nn.Module):
    """(B, T, n_mels) log-mel + (B,) lengths -> (B, n_classes) logits."""

    def __init__(self, n_mels: int, n_classes: int, channels: Sequence[int] = (32, 64, 64),
                 first_kernel: int = 7, lstm_units: int = 128, dense_units: int = 128, dropout: float = 0.3):
        super().__init__()
        blocks, c_in = [], 1
        for i, c_out in enumerate(channels):
            kernel = first_kernel if i == 0 else 3
            blocks.append(nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2),
                                        nn.BatchNorm2d(c_out), nn.ReLU()))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.MaxPool2d(POOL)
        freq = n_mels
        for _ in channels:
            freq //= POOL
        if freq < 1:
            raise TrainingError(f"{n_mels} mel bins are too few for {len(channels)} pooling blocks")
        self.lstm = nn.LSTM(c_in * freq, lstm_units, batch_first=True, bidirectional=True)
        self.dense = nn.Sequential(nn.Linear(2 * lstm_units, dense_units), nn.ReLU(), nn.Dropout(dropout))
        self.out = nn.Linear(dense_units, n_classes)

    @property
    def min_frames(self) -> int:
        """Fewest input frames that leave one LSTM step."""
        return POOL ** len(self.blocks)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lengths = lengths.to(x.device)
        h = (x * frame_mask(lengths, x.shape[1])[:, :, None].to(x.dtype))[:, None]  # (B, 1, T, F)
        for block in self.blocks:
            h = self.pool(block(h))
            lengths = lengths // POOL
            h = h * frame_mask(lengths, h.shape[2])[:, None, :, None].to(h.dtype)
        steps = h.permute(0, 2, 1, 3).flatten(2)  # (B, T', C * F')
        packed = nn.utils.rnn.pack_padded_sequence(steps, lengths.clamp(min=1).cpu(), batch_first=True,
                                                   enforce_sorted=False)
        _, (last, _) = self.lstm(packed)
        return self.out(self.dense(torch.cat([last[0], last[1]], dim=-1)))


def corpus_stats(frames: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per mel bin over every frame of ``frames`` (float64 sums, std floored at 1e-5)."""
    total = sum(int(f.shape[0]) for f in frames)
    s = sum(f.astype(np.float64).sum(axis=0) for f in frames)
    mean = s / total
    var = sum(((f.astype(np.float64) - mean) ** 2).sum(axis=0) for f in frames) / total
    return mean.astype(np.float32), np.sqrt(np.maximum(var, 1e-10)).astype(np.float32)


class CNNLSTMClassifier:
    """sklearn-like CNN-LSTM on variable-length log-mel frames.

    fit(frames: list of (T_i, n_mels) arrays, y: (n,), groups: (n,) speaker ids or None);
    predict / predict_proba(frames). After fit: ``classes_``, ``history_`` (per epoch),
    ``best_epoch_``, ``dev_split_`` ("speaker", "utterance" or "none"), ``model_``.
    ``max_frames`` keeps the first ``max_frames`` frames of longer utterances (train and predict);
    corpus statistics are taken over the kept frames.
    """

    def __init__(self, epochs: int = 5, batch_size: int = 16, lr: float = 1e-4, dev_fraction: float = 0.2,
                 seed: int = 0, normalise: str = "corpus", device: str = "cpu", max_frames: int | None = None,
                 channels: Sequence[int] = (32, 64, 64), first_kernel: int = 7, lstm_units: int = 128,
                 dense_units: int = 128, dropout: float = 0.3, weight_decay: float = 0.0):
        if normalise not in NORMALISE:
            raise TrainingError(f"normalise must be one of {NORMALISE}, got {normalise!r}")
        if max_frames is not None and max_frames < 1:
            raise TrainingError(f"max_frames must be >= 1 or None, got {max_frames}")
        self.epochs, self.batch_size, self.lr = epochs, batch_size, lr
        self.dev_fraction, self.seed, self.normalise = dev_fraction, seed, normalise
        self.device, self.max_frames = device, max_frames
        self.channels, self.first_kernel = tuple(channels), first_kernel
        self.lstm_units, self.dense_units, self.dropout = lstm_units, dense_units, dropout
        self.weight_decay = weight_decay

    def _options(self) -> TrainOptions:
        return TrainOptions(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                            weight_decay=self.weight_decay, dev_fraction=self.dev_fraction, seed=self.seed,
                            device=self.device)

    def _checked(self, frames: Sequence[np.ndarray], n_mels: int | None) -> list[np.ndarray]:
        """(T_i, n_mels) float32 arrays, cropped to ``max_frames``; TrainingError names a bad one."""
        if len(frames) == 0:
            raise TrainingError("no utterances given")
        n_mels = n_mels or int(np.asarray(frames[0]).shape[-1])
        out = []
        for i, f in enumerate(frames):
            f = np.asarray(f, dtype=np.float32)
            if f.ndim != 2 or f.shape[0] == 0 or f.shape[1] != n_mels:
                raise TrainingError(f"utterance {i}: expected (T, {n_mels}) log-mel frames, got shape {f.shape}")
            if not np.all(np.isfinite(f)):
                raise TrainingError(f"utterance {i}: frames contain NaN or infinite values")
            out.append(f[:self.max_frames] if self.max_frames else f)
        return out

    def _prepare(self, frames: Sequence[np.ndarray], n_mels: int | None,
                 stats: tuple[np.ndarray, np.ndarray] | None = None) -> list[torch.Tensor]:
        """Checked, cropped and normalised (T_i, n_mels) float32 tensors. With ``normalise="corpus"``,
        ``stats`` (mean, std) or else the statistics of ``frames`` themselves."""
        arrays = self._checked(frames, n_mels)
        if self.normalise == "corpus":
            mean, std = stats if stats is not None else corpus_stats(arrays)
            arrays = [(f - mean) / std for f in arrays]
        return [torch.from_numpy(np.ascontiguousarray(f)) for f in arrays]

    def _batch_logits(self, data: list[torch.Tensor]) -> BatchLogits:
        model, minimum, device = self.model_, self.model_.min_frames, self.device

        def batch_logits(idx: np.ndarray) -> torch.Tensor:
            seqs = [data[i] for i in idx]
            lengths = torch.tensor([s.shape[0] for s in seqs], dtype=torch.int64)
            x = pad_frames(seqs)
            if x.shape[1] < minimum:
                x = nn.functional.pad(x, (0, 0, 0, minimum - x.shape[1]))
            return model(x.to(device), lengths)

        return batch_logits

    def fit(self, frames: Sequence[np.ndarray], y: Sequence, groups: Sequence | None = None,
            observer: TrainObserver | None = None) -> CNNLSTMClassifier:
        """Train on log-mel ``frames`` with labels ``y``; keep the best dev epoch (``observer``: progress,
        see :func:`classifiers.learners.training.train`)."""
        classes, codes = encode_labels(y)
        if len(frames) != codes.size:
            raise TrainingError(f"{len(frames)} utterances but {codes.size} labels")
        arrays = self._checked(frames, None)
        self.n_mels_ = arrays[0].shape[1]
        self.train_stats_ = corpus_stats(arrays) if self.normalise == "corpus" else None
        data = self._prepare(arrays, self.n_mels_, self.train_stats_)
        options = self._options()
        options.check()
        train_idx, dev_idx, kind = dev_split(codes, groups, self.dev_fraction, self.seed)
        with seeded(self.seed):
            self.model_ = CNNLSTM(self.n_mels_, classes.size, self.channels, self.first_kernel, self.lstm_units,
                                  self.dense_units, self.dropout).to(self.device)
        self.classes_ = classes
        lengths = np.array([d.shape[0] for d in data])
        result = train(self.model_, self._batch_logits(data), codes, train_idx, dev_idx, options,
                       dev_kind=kind, lengths=lengths, observer=observer)
        self.history_, self.best_epoch_, self.dev_split_ = result.history, result.best_epoch, result.dev_split
        return self

    def predict_proba(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """(n, C) class probabilities, columns in ``classes_`` order."""
        if not hasattr(self, "model_"):
            raise TrainingError("this CNNLSTMClassifier is not fitted yet; call fit() first")
        data = self._prepare(frames, self.n_mels_)
        lengths = np.array([d.shape[0] for d in data])
        logits = predict_logits(self.model_, self._batch_logits(data), np.arange(len(data)), self.batch_size,
                                lengths, device=self.device)
        return torch.softmax(torch.from_numpy(logits), dim=1).numpy()

    def predict(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """(n,) predicted labels."""
        proba = self.predict_proba(frames)
        return self.classes_[proba.argmax(axis=1)]

    def score(self, frames: Sequence[np.ndarray], y: Sequence) -> float:
        """UAR of ``predict(frames)`` against ``y``."""
        from classifiers.learners.metrics import uar

        codes_of(y, self.classes_)
        return uar(np.asarray(y), self.predict(frames))
