"""One torch training loop for every trained classifier (CNN-LSTM, LoRA): the study's recipe.

Adam, cross-entropy, a fixed number of epochs, and the checkpoint of the epoch with the best UAR
on a dev split held out of the training data (speaker-independent when speaker ids are given).
The caller supplies ``batch_logits(indices) -> (B, C) logits``, so the loop never knows whether a
batch comes from a list in memory, from audio or streamed from the store.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import nn

from classifiers.learners.metrics import uar
from classifiers.learners.splits import speaker_dev_split
from featurestore.errors import FsError
from featurestore.progress import Progress

BatchLogits = Callable[[np.ndarray], torch.Tensor]


class TrainingError(FsError):
    """Training input that cannot be used as given (labels, sizes, options)."""


@dataclass(frozen=True)
class TrainOptions:
    """The recipe: epochs, batch size, Adam learning rate, dev split and where to run."""

    epochs: int = 5
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.0
    dev_fraction: float = 0.2
    seed: int = 0
    device: str = "cpu"
    bf16: bool = False  # autocast to bfloat16 (CUDA)
    grad_clip: float | None = None

    def check(self) -> None:
        """Raise TrainingError for values no run can use."""
        if self.epochs < 1 or self.batch_size < 1:
            raise TrainingError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if not self.lr > 0:
            raise TrainingError(f"lr must be positive, got {self.lr}")
        if not 0.0 <= self.dev_fraction < 1.0:
            raise TrainingError(f"dev_fraction must be in [0, 1), got {self.dev_fraction} (0: no dev split, "
                                "keep the last epoch)")


@dataclass
class TrainResult:
    """history: one dict per epoch (epoch, train_loss, dev_loss, dev_uar, seconds, train_utts_per_s);
    best_epoch: the epoch whose weights the model holds; dev_split: "speaker", "utterance" or "none"."""

    history: list[dict]
    best_epoch: int
    dev_split: str


class TrainObserver(Protocol):
    """What :func:`train` reports as it goes (progress lines, bars)."""

    def batch(self, epoch: int, done: int, batches: int) -> None:
        """Batch ``done`` of ``batches`` of epoch ``epoch`` (1-based) has been trained on."""

    def epoch(self, record: dict) -> None:
        """Epoch ``record["epoch"]`` finished (the history record: train_loss, dev_uar, seconds, ...)."""


class TrainingProgress:
    """A :class:`~featurestore.progress.Progress` over the epochs of several training runs (seeds).

    A bar on a terminal, else periodic plain lines on stderr; one line per finished epoch either
    way (``seed 0 epoch 3/5: train loss 1.21, dev UAR 41.2 %, 21s``). Call :meth:`start` before
    each run (it is the :class:`TrainObserver` passed to :func:`train`), :meth:`skip` for a run
    that needs no training (a saved checkpoint), :meth:`close` at the end.
    """

    def __init__(self, runs: int, epochs: int, desc: str, **progress: Any):
        self.epochs = epochs
        self.run = ""
        self.progress = Progress(total=runs * epochs, desc=desc, unit="epochs", **progress)

    def start(self, run: str) -> TrainingProgress:
        """Training of ``run`` (e.g. ``seed 0``) begins; returns self, the observer to pass to :func:`train`."""
        self.run = run
        return self

    def skip(self, run: str, why: str) -> None:
        """``run`` needs no training (e.g. loaded from its checkpoint): its epochs leave the total."""
        if self.progress.total is not None:
            self.progress.total = max(self.progress.total - self.epochs, self.progress.done)
        self.progress.note(f"{run}: {why}")

    def batch(self, epoch: int, done: int, batches: int) -> None:
        self.progress.update(0, at=f"{self.run} epoch {epoch}/{self.epochs} batch {done}/{batches}")

    def epoch(self, record: dict) -> None:
        dev = "" if record.get("dev_uar") is None else f", dev UAR {100 * record['dev_uar']:.1f} %"
        self.progress.note(f"{self.run} epoch {record['epoch']}/{self.epochs}: train loss {record['train_loss']:.3f}"
                           f"{dev}, {record['seconds']:.1f} s")
        self.progress.update(1, at=f"{self.run} epoch {record['epoch']}/{self.epochs}")

    def close(self, *, stopped: bool = False) -> None:
        self.progress.close(stopped=stopped)


def encode_labels(y: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """(classes, codes): sorted distinct labels and (n,) int64 indices into them."""
    y = np.asarray(y)
    if y.ndim != 1 or y.size == 0:
        raise TrainingError(f"y must be a non-empty 1-D array of labels, got shape {y.shape}")
    classes, codes = np.unique(y, return_inverse=True)
    if classes.size < 2:
        raise TrainingError(f"training needs at least 2 classes, got {classes.tolist()}")
    return classes, codes.astype(np.int64)


def codes_of(y: Sequence, classes: np.ndarray) -> np.ndarray:
    """(n,) int64 indices of ``y`` in ``classes``; raise TrainingError for an unknown label."""
    y = np.asarray(y)
    unknown = sorted(set(y.tolist()) - set(classes.tolist()))
    if unknown:
        raise TrainingError(f"labels {unknown} were not seen in training (classes: {classes.tolist()})")
    return np.searchsorted(classes, y).astype(np.int64)


def dev_split(codes: np.ndarray, groups: Sequence | None, dev_fraction: float,
              seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(train_idx, dev_idx, kind): by whole speakers when ``groups`` is given, else stratified by
    utterance ("utterance": a speaker may then be on both sides); dev_fraction 0 gives no dev set."""
    everything = np.arange(codes.size)
    if dev_fraction == 0:
        return everything, everything[:0], "none"
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != codes.shape:
            raise TrainingError(f"groups must give one speaker per utterance: {groups.shape} vs {codes.shape}")
        train, dev = speaker_dev_split(groups, codes, dev_fraction, seed)
        return train, dev, "speaker"
    counts = np.bincount(codes)
    stratify = codes if counts.min() >= 2 else None
    train, dev = train_test_split(everything, test_size=dev_fraction, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(dev), "utterance"


def batches(indices: np.ndarray, batch_size: int, rng: np.random.Generator | None,
            lengths: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """Batches of ``indices``: shuffled when ``rng`` is given; with ``lengths``, utterances of
    similar length share a batch (sorted within windows of 8 batches) to cut padding."""
    order = rng.permutation(indices) if rng is not None else np.asarray(indices)
    if lengths is not None:
        window = 8 * batch_size
        order = np.concatenate([sorted(order[i:i + window], key=lambda j: -lengths[j])
                                for i in range(0, order.size, window)]) if order.size else order
    chunks = [order[i:i + batch_size] for i in range(0, order.size, batch_size)]
    if rng is not None and lengths is not None:
        chunks = [chunks[i] for i in rng.permutation(len(chunks))]
    yield from chunks


def _autocast(options: TrainOptions) -> contextlib.AbstractContextManager:
    if options.bf16:
        return torch.autocast(torch.device(options.device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def predict_logits(model: nn.Module, batch_logits: BatchLogits, indices: np.ndarray, batch_size: int,
                   lengths: np.ndarray | None = None, bf16: bool = False, device: str = "cpu") -> np.ndarray:
    """(len(indices), C) float32 logits in ``indices`` order, model in eval mode, no gradients."""
    model.eval()
    out: dict[int, np.ndarray] = {}
    options = TrainOptions(device=device, bf16=bf16)
    with torch.no_grad(), _autocast(options):
        for batch in batches(np.asarray(indices), batch_size, None, lengths):
            logits = batch_logits(batch).float().cpu().numpy()
            out.update(zip(batch.tolist(), logits))
    return np.stack([out[i] for i in np.asarray(indices).tolist()])


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of what training changes: trainable parameters and every buffer."""
    keep = {n for n, p in model.named_parameters() if p.requires_grad}
    keep |= {n for n, _ in model.named_buffers()}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in keep}


def train(model: nn.Module, batch_logits: BatchLogits, codes: np.ndarray, train_idx: np.ndarray,
          dev_idx: np.ndarray, options: TrainOptions, *, dev_kind: str = "speaker",
          lengths: np.ndarray | None = None, observer: TrainObserver | None = None) -> TrainResult:
    """Train the parameters of ``model`` that require grad; leave it holding the best dev epoch.

    codes: (n,) int64 class indices; train_idx / dev_idx: indices into them (dev may be empty:
    the last epoch is kept). ``batch_logits(idx)`` returns (len(idx), C) logits with the model in
    whatever mode the loop set. Seeded: the same inputs and options give the same weights on CPU.
    ``observer`` hears of every batch and epoch (progress); Ctrl-C or SIGTERM stops the loop at
    once (the exception propagates; nothing of the unfinished run is kept).
    """
    options.check()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainingError("the model has no trainable parameters")
    if train_idx.size == 0:
        raise TrainingError("no training utterances left after the dev split; lower dev_fraction")
    targets = torch.as_tensor(codes, device=options.device)
    optimiser = torch.optim.Adam(params, lr=options.lr, weight_decay=options.weight_decay)
    rng = np.random.default_rng(options.seed)
    history: list[dict] = []
    best: tuple[float, float] | None = None
    best_state, best_epoch = None, options.epochs
    devices = [torch.device(options.device).index or 0] if torch.device(options.device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(options.seed)
        for epoch in range(1, options.epochs + 1):
            start, total, seen = time.perf_counter(), 0.0, 0
            model.train()
            n_batches = -(-train_idx.size // options.batch_size)
            for done, batch in enumerate(batches(train_idx, options.batch_size, rng, lengths), 1):
                with _autocast(options):
                    logits = batch_logits(batch)
                loss = nn.functional.cross_entropy(logits.float(), targets[batch])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                if options.grad_clip is not None:
                    nn.utils.clip_grad_norm_(params, options.grad_clip)
                optimiser.step()
                total += float(loss.detach()) * batch.size
                seen += batch.size
                if observer is not None:
                    observer.batch(epoch, done, n_batches)
            seconds = time.perf_counter() - start
            record = {"epoch": epoch, "train_loss": total / seen, "dev_loss": None, "dev_uar": None,
                      "seconds": seconds, "train_utts_per_s": seen / seconds if seconds > 0 else None}
            if dev_idx.size:
                logits = predict_logits(model, batch_logits, dev_idx, options.batch_size, lengths,
                                        options.bf16, options.device)
                dev_loss = float(nn.functional.cross_entropy(torch.from_numpy(logits),
                                                             torch.from_numpy(codes[dev_idx])))
                dev_uar = uar(codes[dev_idx], logits.argmax(axis=1))
                record.update(dev_loss=dev_loss, dev_uar=dev_uar)
                score = (dev_uar, -dev_loss)
                if best is None or score > best:
                    best, best_state, best_epoch = score, _snapshot(model), epoch
            history.append(record)
            if observer is not None:
                observer.epoch(record)
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    for record in history:
        record["best"] = record["epoch"] == best_epoch
    model.eval()
    return TrainResult(history=history, best_epoch=best_epoch, dev_split=dev_kind)
