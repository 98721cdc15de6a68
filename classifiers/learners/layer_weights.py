"""Learned layer weights on pooled per-layer features: s3prl's weighted sum, trained with a linear probe.

``WeightedLayerProbe`` takes ``X (n, L, D)``: one pooled vector per utterance and stored layer
(``load_view(..., layers="mean")`` or any list of layers gives that shape). Each layer is
standardised with the training part's mean and std (the pooled analogue of s3prl's per-layer
``layer_norm``), the layers are mixed with ``softmax(w) (L,)`` and a linear layer maps the mix to
the classes; ``w`` and the linear layer are trained together by :func:`classifiers.learners.training.train`
(Adam, cross-entropy, seeded; the epoch with the best UAR on a speaker-independent dev split is
kept: early stopping). Same interface as :mod:`classifiers.learners.probes` (``fit(X, y, groups)``,
``predict``, ``predict_proba``, ``classes_``, ``clone``-able, seeded by ``random_state``).

    probe = WeightedLayerProbe(random_state=0).fit(X_layers, y, groups=speakers)
    probe.layer_weights_        # (L,), sums to 1: how much each layer counts
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted
from torch import nn

from classifiers.learners.probes import ClassifierError, check_features, check_training_data
from classifiers.learners.training import TrainOptions, dev_split, encode_labels, train


class _WeightedSumLinear(nn.Module):
    """``(B, L, D)`` → ``softmax(layer_logits) · layers`` ``(B, D)`` → ``(B, C)`` logits."""

    def __init__(self, n_layers: int, n_features: int, n_classes: int):
        super().__init__()
        self.layer_logits = nn.Parameter(torch.zeros(n_layers))  # uniform weights at the start, as in s3prl
        self.linear = nn.Linear(n_features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.layer_logits, dim=0)
        return self.linear(torch.einsum("l,bld->bd", weights, x))


def _layers(X: Any) -> np.ndarray:
    """``X`` as a ``(n, L, D)`` float array, or :class:`ClassifierError`."""
    X = np.asarray(X)
    if X.ndim != 3:
        raise ClassifierError(
            f"the weighted-layer probe needs per-layer features of shape (n, L, D), got {X.shape}; "
            "read the view with every layer (layers='mean' or a list of layers)"
        )
    return X


class WeightedLayerProbe(ClassifierMixin, BaseEstimator):
    """Softmax layer weights learned jointly with a linear classifier on ``X (n, L, D)``.

    ``dev_fraction`` of the training utterances choose the epoch: whole speakers when ``groups``
    ``(n,)`` is given to :meth:`fit`, else a stratified random split; ``dev_fraction=0`` keeps the
    last epoch. ``weight_decay`` is Adam's L2 penalty on every parameter (on the layer logits it
    pulls towards uniform weights).

    After fit: ``classes_``, ``layer_weights_`` ``(L,)`` (sums to 1), ``mean_`` / ``scale_``
    ``(L, D)``, ``n_layers_``, ``n_features_in_`` (``D``), ``history_`` (``train_loss``, ``dev_uar``
    per epoch, ``best_epoch`` from 1, ``dev_split``, ``n_train``, ``n_dev``), ``dev_idx_``.
    """

    def __init__(
        self,
        lr: float = 1e-2,
        epochs: int = 40,
        batch_size: int = 32,
        dev_fraction: float = 0.2,
        weight_decay: float = 1e-4,
        device: str = "cpu",
        random_state: int | None = 0,
    ):
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.dev_fraction = dev_fraction
        self.weight_decay = weight_decay
        self.device = device
        self.random_state = random_state

    def fit(self, X: Any, y: Any, groups: Any = None) -> WeightedLayerProbe:
        """Train on ``X (n, L, D)``, ``y (n,)``; ``groups (n,)`` speaker ids make the dev split speaker-independent."""
        X = _layers(X)
        n, n_layers, n_features = X.shape
        flat, y, groups = check_training_data(X.reshape(n, -1), y, groups)
        X = flat.reshape(n, n_layers, n_features)
        seed = 0 if self.random_state is None else int(self.random_state)
        options = TrainOptions(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                               weight_decay=self.weight_decay, dev_fraction=self.dev_fraction, seed=seed,
                               device=self.device)
        options.check()
        self.classes_, codes = encode_labels(y)
        train_idx, dev_idx, kind = dev_split(codes, groups, self.dev_fraction, seed)
        self.n_layers_, self.n_features_in_ = n_layers, n_features
        self.mean_ = X[train_idx].mean(axis=0, dtype=np.float64)
        std = X[train_idx].std(axis=0, dtype=np.float64)
        self.scale_ = np.where(std > 1e-12, std, 1.0)
        device = torch.device(self.device)
        Xt = self._tensor(X, device)
        forked = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=forked):  # seeded weights; the caller's RNG untouched
            torch.manual_seed(seed)
            net = _WeightedSumLinear(n_layers, n_features, self.classes_.size).to(device)
        result = train(net, lambda rows: net(Xt[torch.as_tensor(rows, device=device)]), codes,
                       train_idx, dev_idx, options, dev_kind=kind)
        self.net_ = net.eval()
        self.dev_idx_ = dev_idx
        with torch.no_grad():
            self.layer_weights_ = torch.softmax(net.layer_logits, dim=0).double().cpu().numpy()
        self.history_ = {
            "train_loss": [r["train_loss"] for r in result.history],
            "dev_uar": [r["dev_uar"] for r in result.history if r["dev_uar"] is not None],
            "best_epoch": result.best_epoch,
            "dev_split": result.dev_split,
            "n_train": int(train_idx.size),
            "n_dev": int(dev_idx.size),
        }
        return self

    def _tensor(self, X: np.ndarray, device: torch.device) -> torch.Tensor:
        return torch.as_tensor(((X - self.mean_) / self.scale_).astype(np.float32), device=device)

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(n, C)`` softmax probabilities in ``classes_`` order for ``X (n, L, D)``."""
        check_is_fitted(self, "net_")
        X = _layers(X)
        if X.shape[1:] != (self.n_layers_, self.n_features_in_):
            raise ClassifierError(f"expected features of shape (n, {self.n_layers_}, {self.n_features_in_}) as in "
                                  f"training, got {X.shape}; use the same model and layers for training and test")
        X = check_features(X.reshape(X.shape[0], -1), self.n_layers_ * self.n_features_in_).reshape(X.shape)
        device = next(self.net_.parameters()).device
        with torch.no_grad():
            logits = self.net_(self._tensor(X, device)).double()
        return torch.softmax(logits, dim=1).cpu().numpy()

    def predict(self, X: Any) -> np.ndarray:
        """Labels ``(n,)`` from ``classes_`` for ``X (n, L, D)``."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
