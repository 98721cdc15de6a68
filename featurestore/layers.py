"""The one layer vocabulary: what ``--layer``, a study file's ``layers``, the store's view and reports all parse.

A layer choice is one of:

- ``last``: the encoder's last layer; ``K``: layer K (negative from the end: ``-1`` = last);
- ``best``: every layer is a candidate, a protocol picks one on a source-only dev split;
- ``mean``: the mean over all layers; ``concat:3,6``: layers 3 and 6 side by side;
- ``weighted``: softmax layer weights learned with the probe (not every runner supports it yet).

:meth:`LayerChoice.parse` reads any of these once (ints, digit strings, any case and spacing);
:meth:`LayerChoice.indices` says which stored layers it reads for a model of ``num_layers`` (the one
range check); :attr:`LayerChoice.value` is the canonical configuration value (an ``int`` for K, else
text) and :attr:`LayerChoice.label` the text for tables and plots. It lives on the store's floor
(no numpy, no classifiers) so that :mod:`featurestore.view` and the studies share it.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import Any

from featurestore.errors import FsError

KINDS: tuple[str, ...] = ("last", "index", "best", "mean", "concat", "weighted")
WORDS: tuple[str, ...] = ("last", "best", "mean", "weighted")  # the choices written as one word
# kinds that read every stored layer
_EVERY = ("best", "mean", "weighted")
HELP = "last, best (chosen on a source-only dev split), a layer number (e.g. 6), mean, concat:3,6 or weighted"


class LayerError(FsError):
    """A layer choice that cannot be parsed, is out of range for the model, or is not supported where asked."""


def _is_int(value: Any) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(value, Integral) and not isinstance(value, bool) and type(value).__name__ != "bool_"


@dataclass(frozen=True)
class LayerChoice:
    """One parsed layer choice: ``kind`` (one of :data:`KINDS`) and, for ``index`` / ``concat``, the
    layer numbers as written (may be negative: counted from the end)."""

    kind: str
    layers: tuple[int, ...] = ()

    @classmethod
    def parse(cls, value: Any) -> LayerChoice:
        """``value`` (a LayerChoice, an int, ``"6"``, ``"-1"``, ``"Best"``, ``"concat:3, 6"``) as a choice;
        anything else raises :class:`LayerError` with the one message every entry point gives."""
        if isinstance(value, LayerChoice):
            return value
        if _is_int(value):
            return cls("index", (int(value),))
        if not isinstance(value, str):
            raise LayerError(f"layer {value!r}: give {HELP}")
        text = value.strip().lower()
        if text in WORDS:
            return cls(text)
        try:
            return cls("index", (int(text),))
        except ValueError:
            pass
        if text.startswith("concat:"):
            try:
                layers = tuple(int(x) for x in text.removeprefix("concat:").split(",") if x.strip())
            except ValueError:
                layers = ()
            if len(layers) >= 2 and len(set(layers)) == len(layers):
                return cls("concat", layers)
            raise LayerError(f"layer {value!r}: concat needs two or more different layer numbers, e.g. concat:3,6")
        raise LayerError(f"layer {value!r}: give {HELP}")

    @property
    def value(self) -> str | int:
        """The canonical configuration value: ``"last"``, ``6``, ``"best"``, ``"mean"``, ``"concat:3,6"``,
        ``"weighted"`` (what a configuration stores and its key hashes)."""
        if self.kind == "index":
            return self.layers[0]
        if self.kind == "concat":
            return "concat:" + ",".join(str(k) for k in self.layers)
        return self.kind

    @property
    def text(self) -> str:
        """:attr:`value` as text (``"6"`` for layer 6)."""
        return str(self.value)

    @property
    def label(self) -> str:
        """The choice in words for tables and plots: ``layer 6``, ``last layer``, ``best layer (dev)``,
        ``mean of layers``, ``layers 3+6``, ``weighted layers``."""
        return {"last": "last layer", "best": "best layer (dev)", "mean": "mean of layers",
                "weighted": "weighted layers"}.get(self.kind) or (
            f"layer {self.layers[0]}" if self.kind == "index" else "layers " + "+".join(str(k) for k in self.layers))

    @property
    def reads_every_layer(self) -> bool:
        """``best``, ``mean`` and ``weighted`` read every stored layer."""
        return self.kind in _EVERY

    def indices(self, num_layers: int) -> list[int]:
        """The stored layers (non-negative indices, in choice order) this choice reads from a model of
        ``num_layers`` layers; the one range check (:class:`LayerError` names the valid range)."""
        if self.kind == "last":
            return [num_layers - 1]
        if self.reads_every_layer:
            return list(range(num_layers))
        bad = [k for k in self.layers if not -num_layers <= k < num_layers]
        if bad:
            raise LayerError(f"layer {bad[0]} out of range: the model has layers 0..{num_layers - 1} "
                             f"(0 = input to the first transformer layer, {num_layers - 1} = last); "
                             "see `fs store info KEY`")
        return [k % num_layers for k in self.layers]

    def refuse_unless(self, supported: tuple[str, ...], where: str) -> LayerChoice:
        """This choice, or :class:`LayerError` when its kind is not in ``supported`` by ``where`` (a runner)."""
        if self.kind not in supported:
            words = [k if k != "index" else "a layer number" for k in supported]
            words = [w if w != "concat" else "concat:a,b" for w in words]
            raise LayerError(f"layer {self.text}: {where} does not support it yet; use {', '.join(words)}")
        return self

    def to_record(self, num_layers: int | None = None, used: Any = None) -> dict[str, Any]:
        """The one recorded shape of the layer a result used: ``{"choice", "kind", "label", "layers"}``
        (``layers``: the stored layers read, when ``num_layers`` is known) plus ``used`` when given (for
        ``best`` the per-seed picks). :meth:`from_record` reads it back."""
        record: dict[str, Any] = {"choice": self.value, "kind": self.kind, "label": self.label,
                                  "layers": self.indices(num_layers) if num_layers is not None else None}
        if used is not None:
            record["used"] = used
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> LayerChoice:
        """The choice of a :meth:`to_record` dict."""
        return cls.parse(record["choice"])


def layer_indices_for(layers: Any, num_layers: int) -> list[int]:
    """Stored layer indices of ``layers``: any :class:`LayerChoice` value, or an explicit list of layer
    numbers (negative from the end), range-checked once."""
    if isinstance(layers, (list, tuple)):
        if not layers or not all(_is_int(k) for k in layers):
            raise LayerError(f"layers {list(layers)!r}: give a non-empty list of layer numbers")
        if len(layers) == 1:
            return LayerChoice("index", (int(layers[0]),)).indices(num_layers)
        return LayerChoice("concat", tuple(int(k) for k in layers)).indices(num_layers)
    return LayerChoice.parse(layers).indices(num_layers)
