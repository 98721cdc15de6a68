"""The study's classification head, trained in torch on pooled features (arrays in, arrays out).

``MLPHead``: ``X (n, D)`` → Linear(D, hidden) → ReLU → Dropout → Linear(hidden, C). The
study's recipe by default: Adam, learning rate 1e-4, 5 epochs, batch 16, keeping the epoch
whose weights score best (UAR) on a speaker-independent dev split of the training data.
Same interface as :mod:`classifiers.learners.probes` (``fit(X, y, groups)``, ``predict``,
``predict_proba``, ``classes_``, ``clone``-able, seeded by ``random_state``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted
from torch import nn

from classifiers.learners.probes import check_features, check_training_data
from classifiers.learners.training import TrainOptions, dev_split, encode_labels, train


class MLPHead(ClassifierMixin, BaseEstimator):
    """Pooled features → hidden dense layer → classes; best dev epoch kept.

    ``dev_fraction`` of the training utterances choose the epoch: whole speakers when
    ``groups`` is given to :meth:`fit` (``history_["dev_split"] == "speaker"``), else a
    stratified random split (``"utterance"``); ``dev_fraction=0`` trains on everything and
    keeps the last epoch (``"none"``). The loop is :func:`classifiers.learners.training.train` (best dev
    UAR, ties to the lower dev loss). ``standardise`` scales inputs with the mean and std of
    the training part (dev excluded).

    After fit: ``classes_``, ``history_`` (``train_loss`` and ``dev_uar`` per epoch,
    ``best_epoch`` counted from 1, ``best_dev_uar``, ``dev_split``, ``n_train``, ``n_dev``,
    ``epochs``: the loop's per-epoch records), ``dev_idx_`` (rows of the fit arrays used as dev).
    Raises :class:`~classifiers.learners.splits.SplitError` when no speaker-independent dev split exists
    (pass ``dev_fraction=0`` or no groups).
    """

    def __init__(
        self,
        hidden: int = 256,
        dropout: float = 0.2,
        lr: float = 1e-4,
        epochs: int = 5,
        batch_size: int = 16,
        dev_fraction: float = 0.2,
        weight_decay: float = 0.0,
        standardise: bool = True,
        device: str = "cpu",
        random_state: int | None = 0,
    ):
        self.hidden = hidden
        self.dropout = dropout
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.dev_fraction = dev_fraction
        self.weight_decay = weight_decay
        self.standardise = standardise
        self.device = device
        self.random_state = random_state

    def _network(self, n_features: int, n_classes: int) -> nn.Module:
        return nn.Sequential(
            nn.Linear(n_features, self.hidden),
            nn.ReLU(),
            nn.Dropout(self.dropout),
            nn.Linear(self.hidden, n_classes),
        )

    def fit(self, X: Any, y: Any, groups: Any = None) -> MLPHead:
        """Train on ``X (n, D)``, ``y (n,)``; ``groups (n,)`` speaker ids pick the dev split."""
        X, y, groups = check_training_data(X, y, groups)
        seed = 0 if self.random_state is None else int(self.random_state)
        options = TrainOptions(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            dev_fraction=self.dev_fraction,
            seed=seed,
            device=self.device,
        )
        options.check()
        self.classes_, codes = encode_labels(y)
        train_idx, dev_idx, kind = dev_split(codes, groups, self.dev_fraction, seed)
        self.n_features_in_ = X.shape[1]
        if self.standardise:
            self.mean_ = X[train_idx].mean(axis=0, dtype=np.float64)
            std = X[train_idx].std(axis=0, dtype=np.float64)
            self.scale_ = np.where(std > 1e-12, std, 1.0)
        else:
            self.mean_, self.scale_ = np.zeros(X.shape[1]), np.ones(X.shape[1])
        device = torch.device(self.device)
        Xt = self._tensor(X, device)
        forked = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=forked):  # seeded weights; the caller's RNG untouched
            torch.manual_seed(seed)
            net = self._network(X.shape[1], self.classes_.size).to(device)
        result = train(
            net, lambda rows: net(Xt[torch.as_tensor(rows, device=device)]), codes,
            train_idx, dev_idx, options, dev_kind=kind,
        )
        self.net_ = net.eval()
        self.dev_idx_ = dev_idx
        dev_uar = [r["dev_uar"] for r in result.history if r["dev_uar"] is not None]
        self.history_ = {
            "train_loss": [r["train_loss"] for r in result.history],
            "dev_uar": dev_uar,
            "best_epoch": result.best_epoch,
            "best_dev_uar": dev_uar[result.best_epoch - 1] if dev_uar else None,
            "dev_split": result.dev_split,
            "n_train": int(train_idx.size),
            "n_dev": int(dev_idx.size),
            "epochs": result.history,
        }
        return self

    def _tensor(self, X: np.ndarray, device: torch.device) -> torch.Tensor:
        scaled = ((X - self.mean_) / self.scale_).astype(np.float32)
        return torch.as_tensor(scaled, device=device)

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(n, C)`` softmax probabilities in ``classes_`` order."""
        check_is_fitted(self, "net_")
        X = check_features(X, self.n_features_in_)
        device = next(self.net_.parameters()).device
        with torch.no_grad():
            logits = self.net_(self._tensor(X, device)).double()
        return torch.softmax(logits, dim=1).cpu().numpy()

    def predict(self, X: Any) -> np.ndarray:
        """Labels ``(n,)`` from ``classes_``."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
