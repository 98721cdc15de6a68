"""LoRA fine-tuning (peft) of a speech encoder plus the study's head, end to end.

Two ways in, one model: the encoder's layers k+1..j with LoRA adapters, mean pooling over the
real frames of layer j (:class:`~featurestore.pooling.MaskedStatsPooling`, as the store pools) and
the study's head (dense ``head_hidden`` -> ReLU -> dropout -> output), trained with
:func:`classifiers.learners.training.train`.

- :class:`LoRAFineTuner` (k = 0): from waveforms. The front end (CNN or Whisper's convolutions)
  has no adapters and runs without gradients; every batch runs it again.
- :class:`TopLayerLoRA` (k > 0 or 0): from cached frame states of layer k (``fs extract --frames
  k``), never touching audio, the front end or layers 1..k. Frames come as a list of (T_i, D)
  arrays or, to stream a corpus from the store, a callable ``rows(indices) -> list of (T_i, D)``
  (e.g. ``functools.partial(group.frame_rows, k)``).

The adapted layers are a copy: the encoder you pass is never modified. The encoder's own dropout
and layer drop stay off (it runs in eval mode; ``lora_dropout`` is peft's dropout on the adapter
input and is off too), so an untrained model (LoRA B = 0) reproduces the frozen encoder exactly.
WavLM's attention reads its projection weights directly, so LoRA on q/k/v/out_proj would do
nothing there: WavLM gets the feed-forward layers by default and refuses attention targets.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import LoraConfig, inject_adapter_in_model
from safetensors.torch import load_file, save_file
from torch import nn

from classifiers.learners.training import (
    TrainingError,
    TrainObserver,
    TrainOptions,
    codes_of,
    dev_split,
    encode_labels,
    predict_logits,
    train,
)
from featurestore.encoders import Encoder, EncoderError, load_encoder
from featurestore.encoders.common import pad_frames, seeded
from featurestore.errors import FsError
from featurestore.pooling import MaskedStatsPooling

FORMAT = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "adapters+head.safetensors"
DEFAULT_TARGETS = ("q_proj", "v_proj")
AUTO_TARGETS = {"wavlm": ("intermediate_dense", "output_dense")}
_WAVLM_BYPASSED = {"q_proj", "k_proj", "v_proj", "out_proj"}
Rows = Callable[[np.ndarray], list[np.ndarray]]  # indices -> one array per utterance


class LoRAError(FsError):
    """A LoRA set-up that cannot work (no target modules, bad layer, foreign checkpoint)."""


class Head(nn.Module):
    """The study's head: (B, D) pooled states -> dense ``hidden`` -> ReLU -> dropout -> (B, C)."""

    def __init__(self, dim: int, hidden: int, n_classes: int, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, n_classes))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net(pooled)


class AdaptedModel(nn.Module):
    """Layers k+1..j with adapters (``stack``), mean pooling of layer j, and the head.

    ``pooled(states (B, T, D) = layer k, lengths (B,)) -> (B, D)``; ``head(pooled) -> (B, C)``.
    The stack stays in eval mode whatever ``train()`` is told: only the head uses dropout.
    """

    def __init__(self, stack: nn.Module, head: Head):
        super().__init__()
        self.stack = stack
        self.pool = MaskedStatsPooling("mean")
        self.head = head

    def train(self, mode: bool = True) -> AdaptedModel:
        super().train(mode)
        self.stack.eval()
        return self

    def pooled(self, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stack(states, lengths)[-1], lengths)

    def forward(self, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(states, lengths))


def resolve_targets(stack: nn.Module, target_modules: Sequence[str] | None,
                    layers: set[int] | None = None) -> list[str]:
    """Full names of the linear modules of ``stack`` that get adapters.

    target_modules: last name components (e.g. "q_proj"); None picks the family default.
    layers: stack-relative layer indices to adapt (None: all). Raises LoRAError naming the linear
    modules the stack has when nothing matches.
    """
    model_type = getattr(getattr(stack, "config", None), "model_type", "")
    wanted = set(target_modules) if target_modules else set(AUTO_TARGETS.get(model_type, DEFAULT_TARGETS))
    if model_type == "wavlm" and wanted & _WAVLM_BYPASSED:
        raise LoRAError(f"WavLM's attention reads {sorted(wanted & _WAVLM_BYPASSED)} weights directly, so "
                        f"LoRA there would have no effect; use target_modules={AUTO_TARGETS['wavlm']} "
                        "(the default for WavLM)")
    linear = [n for n, m in stack.named_modules() if isinstance(m, nn.Linear)]
    names = [n for n in linear if n.split(".")[-1] in wanted
             and (layers is None or (n.startswith("layers.") and int(n.split(".")[1]) in layers))]
    if not names:
        have = sorted({n.split(".")[-1] for n in linear})
        raise LoRAError(f"no module named {sorted(wanted)} in the adapted layers"
                        f"{'' if layers is None else ' ' + str(sorted(layers))}; their linear modules are: "
                        f"{', '.join(have)}. Pass target_modules= some of these.")
    return names


class _LoRABase:
    """What both fine-tuners share: model building, training, prediction, checkpoints."""

    method = "lora"

    def __init__(self, encoder: str | Encoder, *, from_layer: int, rank: int, alpha: float,
                 target_modules: Sequence[str] | None, lora_dropout: float, head_hidden: int,
                 head_dropout: float, layer: int | str, epochs: int, batch_size: int, lr: float,
                 dev_fraction: float, seed: int, device: str, whisper_input: str,
                 grad_checkpointing: bool | str, bf16: bool | str):
        if isinstance(encoder, str):
            encoder = load_encoder(encoder, device=device, whisper_input=whisper_input)
        if not hasattr(encoder, "top_layers") or encoder.info.num_layers < 2:
            raise LoRAError(f"{encoder.info.name}: a {encoder.info.family} encoder has no transformer layers to "
                            "fine-tune; train the CNN-LSTM on its frames instead")
        if rank < 1 or not alpha > 0:
            raise LoRAError(f"rank must be >= 1 and alpha > 0, got rank={rank}, alpha={alpha}")
        self.encoder = encoder
        self.device = str(encoder.device)
        num = encoder.info.num_layers - 1
        self.layer_ = num if layer == "last" else layer
        if not isinstance(self.layer_, int) or not 0 <= from_layer < self.layer_ <= num:
            raise LoRAError(f"{encoder.info.name}: layer={layer!r} with from_layer={from_layer} is out of "
                            f"range; the head reads a layer in {from_layer + 1}..{num} ('last' = {num}) and "
                            f"from_layer must be in 0..{num - 1}")
        self.from_layer, self.layer = from_layer, layer
        self.rank, self.alpha, self.target_modules = rank, alpha, target_modules
        self.lora_dropout, self.head_hidden, self.head_dropout = lora_dropout, head_hidden, head_dropout
        self.epochs, self.batch_size, self.lr = epochs, batch_size, lr
        self.dev_fraction, self.seed = dev_fraction, seed
        cuda = encoder.device.type == "cuda"
        self.grad_checkpointing = cuda if grad_checkpointing == "auto" else bool(grad_checkpointing)
        self.bf16 = cuda if bf16 == "auto" else bool(bf16)

    # --- model ---------------------------------------------------------------------------------

    def _stack(self) -> nn.Module:
        """A fresh copy of layers from_layer+1..layer_ (to receive adapters)."""
        try:
            if self.from_layer == 0:
                stack = self.encoder.trainable_layers(self.layer_)
            else:
                stack = self.encoder.top_layers(self.from_layer, self.layer_)
        except EncoderError as exc:
            raise LoRAError(str(exc)) from None
        return copy.deepcopy(stack).requires_grad_(False)

    def _lora_layers(self) -> set[int] | None:
        return None

    def _build(self, n_classes: int) -> tuple[list[str], AdaptedModel]:
        """(adapted module names, model): layers with LoRA (B = 0) and a fresh head."""
        stack = self._stack()
        targets = resolve_targets(stack, self.target_modules, self._lora_layers())
        with seeded(self.seed):
            inject_adapter_in_model(LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.lora_dropout,
                                               target_modules=targets, bias="none"), stack)
            head = Head(self.encoder.info.dim, self.head_hidden, n_classes, self.head_dropout)
        stack.checkpointing = self.grad_checkpointing
        return targets, AdaptedModel(stack, head).to(self.device)

    def setup(self, classes: Sequence) -> _LoRABase:
        """Build the adapted layers (LoRA B = 0) and a fresh head for ``classes``; fit() calls it."""
        self.targets_, self.model_ = self._build(len(classes))
        self.classes_ = np.asarray(classes)
        return self

    def _options(self) -> TrainOptions:
        return TrainOptions(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                            dev_fraction=self.dev_fraction, seed=self.seed, device=self.device, bf16=self.bf16)

    def _fit(self, batch_pooled: Callable[[np.ndarray], torch.Tensor], y: Sequence, groups: Sequence | None,
             n: int, lengths: np.ndarray | None, observer: TrainObserver | None = None) -> _LoRABase:
        classes, codes = encode_labels(y)
        if n != codes.size:
            raise TrainingError(f"{n} utterances but {codes.size} labels")
        options = self._options()
        options.check()
        train_idx, dev_idx, kind = dev_split(codes, groups, self.dev_fraction, self.seed)
        self.setup(classes)
        try:
            result = train(self.model_, lambda idx: self.model_.head(batch_pooled(idx)), codes, train_idx,
                           dev_idx, options, dev_kind=kind, lengths=lengths, observer=observer)
        except BaseException:
            del self.model_  # a failed fit leaves the estimator unfitted, not half-trained
            raise
        self.history_, self.best_epoch_, self.dev_split_ = result.history, result.best_epoch, result.dev_split
        return self

    def _proba(self, batch_pooled: Callable[[np.ndarray], torch.Tensor], n: int,
               lengths: np.ndarray | None) -> np.ndarray:
        self._check_fitted()
        logits = predict_logits(self.model_, lambda idx: self.model_.head(batch_pooled(idx)), np.arange(n),
                                self.batch_size, lengths, self.bf16, self.device)
        return torch.softmax(torch.from_numpy(logits), dim=1).numpy()

    def _pooled(self, batch_pooled: Callable[[np.ndarray], torch.Tensor], n: int) -> np.ndarray:
        self._check_fitted()
        self.model_.eval()
        with torch.no_grad():
            return np.concatenate([batch_pooled(np.arange(i, min(i + self.batch_size, n))).float().cpu().numpy()
                                   for i in range(0, n, self.batch_size)])

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise TrainingError(f"this {type(self).__name__} is not fitted yet; call fit() (or load())")

    @staticmethod
    def _source(data: Sequence[np.ndarray] | Rows, n: int | None,
                lengths: Sequence[int] | None = None) -> tuple[Rows, int, np.ndarray | None]:
        """(rows(indices) -> arrays, n, lengths or None) for a list of arrays or a callable source."""
        if callable(data):
            if n is None:
                raise TrainingError("with a callable source, give the number of utterances (n=)")
            return data, int(n), None if lengths is None else np.asarray(lengths)
        if lengths is None:
            lengths = [len(a) for a in data]
        return (lambda idx: [data[i] for i in idx]), len(data), np.asarray(lengths)

    # --- checkpoints ---------------------------------------------------------------------------

    def config(self, targets: Sequence[str] | None = None) -> dict[str, Any]:
        """Everything that determines the checkpoint's meaning (config.json, less ``classes``)."""
        info = self.encoder.info
        return {"format": FORMAT, "method": self.method,
                "encoder": {"model_id": info.model_id, "weights_hash": info.weights_hash,
                            "whisper_input": info.settings.get("whisper_input")},
                "from_layer": self.from_layer, "layer": self.layer_, "rank": self.rank, "alpha": self.alpha,
                "lora_dropout": self.lora_dropout,
                "target_modules": list(self.targets_ if targets is None else targets),
                "head_hidden": self.head_hidden, "head_dropout": self.head_dropout, "pooling": "mean"}

    @staticmethod
    def _weights(model: AdaptedModel) -> dict[str, torch.Tensor]:
        """What a checkpoint holds: adapter and head tensors (the encoder's own weights stay out)."""
        return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
                if "lora_" in k or k.startswith("head.")}

    def save(self, path: str | Path) -> Path:
        """Write adapters + head and config.json into directory ``path`` (atomically replaced)."""
        self._check_fitted()
        path = Path(path)
        if path.exists() and not (path / CONFIG_FILE).is_file():
            raise LoRAError(f"{path} exists and is not a checkpoint directory; choose another path")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        config = {**self.config(), "classes": self.classes_.tolist()}
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
        save_file(self._weights(self.model_), str(tmp / WEIGHTS_FILE))
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
        return path

    def load(self, path: str | Path) -> _LoRABase:
        """Load adapters + head saved by :meth:`save` with this very configuration."""
        path = Path(path)
        if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
            raise LoRAError(f"{path} is not a LoRA checkpoint (expected {CONFIG_FILE} and {WEIGHTS_FILE})")
        saved = json.loads((path / CONFIG_FILE).read_text())
        classes = saved.get("classes") or []
        if len(classes) < 2:
            raise LoRAError(f"{path / CONFIG_FILE} lists no classes; the checkpoint is damaged, retrain it")
        targets, model = self._build(len(classes))
        mine = json.loads(json.dumps(self.config(targets)))
        diff = sorted(k for k in (set(mine) | set(saved)) - {"classes"} if mine.get(k) != saved.get(k))
        if diff:
            detail = "; ".join(f"{k}: checkpoint {saved.get(k)!r}, this estimator {mine.get(k)!r}" for k in diff)
            raise LoRAError(f"checkpoint {path} was made with another configuration ({detail}). Build the "
                            f"estimator with the checkpoint's settings (see {path / CONFIG_FILE}) or retrain.")
        weights = load_file(str(path / WEIGHTS_FILE))
        if set(weights) != set(self._weights(model)):
            raise LoRAError(f"checkpoint {path} holds other tensors than this model expects; retrain it")
        model.load_state_dict(weights, strict=False)
        self.targets_, self.model_, self.classes_ = targets, model.eval(), np.asarray(classes)
        return self

    # --- sklearn-like surface ------------------------------------------------------------------

    def predict(self, data: Any, **kwargs: Any) -> np.ndarray:
        """(n,) predicted labels."""
        proba = self.predict_proba(data, **kwargs)
        return self.classes_[proba.argmax(axis=1)]

    def predict_proba(self, data: Any, **kwargs: Any) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError


class LoRAFineTuner(_LoRABase):
    """LoRA + head trained end to end from waveforms.

    fit(waves, y: (n,), groups: (n,) or None, lengths=None): ``waves`` is a list of mono float32
    arrays at the encoder's rate or a callable ``rows(indices) -> list of arrays`` that loads them
    (then ``len(y)`` utterances; ``lengths`` in samples, if known, group similar lengths).
    predict / predict_proba(waves, n=None); transform(waves) -> (n, D) the pooled layer the head reads.
    ``lora_layers``: hidden-state numbers (1..layer) of the layers that get adapters (None: all
    up to the head's layer); layers above the lowest adapted one are the only ones back-propagated.
    After fit: ``classes_``, ``history_``, ``best_epoch_``, ``dev_split_``, ``targets_``.
    """

    method = "lora"

    def __init__(self, encoder: str | Encoder, rank: int = 8, alpha: float = 16,
                 target_modules: Sequence[str] | None = None, head_hidden: int = 256, layer: int | str = "last",
                 epochs: int = 5, batch_size: int = 16, lr: float = 1e-4, seed: int = 0, *,
                 lora_layers: Sequence[int] | None = None, lora_dropout: float = 0.0, head_dropout: float = 0.2,
                 dev_fraction: float = 0.2, device: str = "cpu", whisper_input: str = "full",
                 grad_checkpointing: bool | str = "auto", bf16: bool | str = "auto"):
        super().__init__(encoder, from_layer=0, rank=rank, alpha=alpha, target_modules=target_modules,
                         lora_dropout=lora_dropout, head_hidden=head_hidden, head_dropout=head_dropout,
                         layer=layer, epochs=epochs, batch_size=batch_size, lr=lr, dev_fraction=dev_fraction,
                         seed=seed, device=device, whisper_input=whisper_input,
                         grad_checkpointing=grad_checkpointing, bf16=bf16)
        if lora_layers is not None:
            bad = [j for j in lora_layers if not 1 <= int(j) <= self.layer_]
            if bad or not list(lora_layers):
                raise LoRAError(f"lora_layers {list(lora_layers)} must be non-empty and in 1..{self.layer_}")
        self.lora_layers = None if lora_layers is None else sorted(int(j) for j in lora_layers)

    def _lora_layers(self) -> set[int] | None:
        return None if self.lora_layers is None else {j - 1 for j in self.lora_layers}

    def config(self, targets: Sequence[str] | None = None) -> dict[str, Any]:
        return {**super().config(targets), "lora_layers": self.lora_layers}

    def _batch_pooled(self, rows: Rows) -> Callable[[np.ndarray], torch.Tensor]:
        def pooled(idx: np.ndarray) -> torch.Tensor:
            front = self.encoder.front(rows(np.asarray(idx)))
            last = self.model_.stack(front.states.to(self.device), front.lengths)[-1]
            joined = front.join(last)
            return self.model_.pool(joined.hidden[0], joined.lengths.to(self.device))
        return pooled

    def fit(self, waves: Sequence[np.ndarray] | Rows, y: Sequence, groups: Sequence | None = None,
            lengths: Sequence[int] | None = None, observer: TrainObserver | None = None) -> LoRAFineTuner:
        """Train adapters + head on ``waves`` with labels ``y``; keep the best dev epoch (``observer``:
        progress, see :func:`classifiers.learners.training.train`)."""
        rows, n, lengths = self._source(waves, len(y), lengths)
        return self._fit(self._batch_pooled(rows), y, groups, n, lengths, observer)

    def predict_proba(self, waves: Sequence[np.ndarray] | Rows, n: int | None = None,
                      lengths: Sequence[int] | None = None) -> np.ndarray:
        """(n, C) class probabilities, columns in ``classes_`` order."""
        rows, n, lengths = self._source(waves, n, lengths)
        return self._proba(self._batch_pooled(rows), n, lengths)

    def transform(self, waves: Sequence[np.ndarray] | Rows, n: int | None = None) -> np.ndarray:
        """(n, D) mean over real frames of the head's layer, through the adapted layers."""
        rows, n, _ = self._source(waves, n)
        return self._pooled(self._batch_pooled(rows), n)


class TopLayerLoRA(_LoRABase):
    """LoRA on layers from_layer+1..layer plus the head, trained from cached layer-``from_layer`` frames.

    fit(frames, y, groups=None, lengths=None): ``frames`` is a list of (T_i, D) arrays (fp16 from
    the store is fine) or a callable ``rows(indices) -> list of (T_i, D) arrays`` that streams
    them (then ``len(y)`` utterances; ``lengths`` (n,) frame counts, if known, group similar
    lengths in a batch). predict / predict_proba / transform take the same kinds of input (give
    ``n=`` with a callable). Whisper needs ``trim`` frames (``fs extract --whisper-input trim``).
    """

    method = "lora-top"

    def __init__(self, encoder: str | Encoder, from_layer: int, rank: int = 8, alpha: float = 16,
                 target_modules: Sequence[str] | None = None, head_hidden: int = 256, layer: int | str = "last",
                 epochs: int = 5, batch_size: int = 16, lr: float = 1e-4, seed: int = 0, *,
                 lora_dropout: float = 0.0, head_dropout: float = 0.2, dev_fraction: float = 0.2,
                 device: str = "cpu", whisper_input: str = "trim", grad_checkpointing: bool | str = "auto",
                 bf16: bool | str = "auto"):
        super().__init__(encoder, from_layer=int(from_layer), rank=rank, alpha=alpha,
                         target_modules=target_modules, lora_dropout=lora_dropout, head_hidden=head_hidden,
                         head_dropout=head_dropout, layer=layer, epochs=epochs, batch_size=batch_size, lr=lr,
                         dev_fraction=dev_fraction, seed=seed, device=device, whisper_input=whisper_input,
                         grad_checkpointing=grad_checkpointing, bf16=bf16)
        self._stack()  # refuse now (e.g. Whisper 'full') rather than after loading data

    def _batch_pooled(self, rows: Rows) -> Callable[[np.ndarray], torch.Tensor]:
        dim = self.encoder.info.dim

        def pooled(idx: np.ndarray) -> torch.Tensor:
            arrays = rows(np.asarray(idx))
            if len(arrays) != len(idx):
                raise TrainingError(f"the frame source returned {len(arrays)} utterances for {len(idx)} rows")
            for i, a in zip(idx, arrays):
                if a.ndim != 2 or a.shape[1] != dim or a.shape[0] == 0:
                    raise TrainingError(f"utterance {i}: expected (T, {dim}) frames of layer {self.from_layer}, "
                                        f"got shape {a.shape}")
            lengths = torch.tensor([a.shape[0] for a in arrays], dtype=torch.int64)
            states = pad_frames([torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]).to(self.device)
            return self.model_.pooled(states, lengths.to(self.device))
        return pooled

    def fit(self, frames: Sequence[np.ndarray] | Rows, y: Sequence, groups: Sequence | None = None,
            lengths: Sequence[int] | None = None, observer: TrainObserver | None = None) -> TopLayerLoRA:
        """Train adapters + head from cached frames; keep the best dev epoch (``observer``: progress)."""
        rows, n, lengths = self._source(frames, len(y), lengths)
        return self._fit(self._batch_pooled(rows), y, groups, n, lengths, observer)

    def predict_proba(self, frames: Sequence[np.ndarray] | Rows, n: int | None = None,
                      lengths: Sequence[int] | None = None) -> np.ndarray:
        """(n, C) class probabilities, columns in ``classes_`` order."""
        rows, n, lengths = self._source(frames, n, lengths)
        return self._proba(self._batch_pooled(rows), n, lengths)

    def transform(self, frames: Sequence[np.ndarray] | Rows, n: int | None = None) -> np.ndarray:
        """(n, D) mean over real frames of the head's layer, through the adapted top layers."""
        rows, n, _ = self._source(frames, n)
        return self._pooled(self._batch_pooled(rows), n)

    def score(self, frames: Sequence[np.ndarray] | Rows, y: Sequence) -> float:
        """UAR of the predictions against ``y``."""
        from classifiers.learners.metrics import uar

        codes_of(y, self.classes_)
        return uar(np.asarray(y), self.predict(frames, n=len(y)))
