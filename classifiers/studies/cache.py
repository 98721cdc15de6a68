"""The study cache: one least-recently-used mapping whose byte bound counts everything it holds.

A sweep worker keeps what one configuration loaded or fitted for the next ones: feature views, fitted
estimators, best-layer selections and dev splits, fine-tuning frame caches and encoders, resolved
store groups and manifests. Each entry falls in a typed slot (:data:`SLOTS`, from its key's first
element) and is counted by :func:`estimate_bytes`: numpy ``nbytes``, torch parameter and buffer
bytes, the arrays inside sklearn estimators (found recursively), pickle length for values without
arrays. Frame caches grow while a run reads frames, so the slots in :data:`GROWING` are
measured again whenever the cache is touched. When the total passes ``max_bytes`` the least recently
used entries go, whatever their slot (the one just stored stays, even alone over the bound).
"""

from __future__ import annotations

import pickle
import sys
from collections import OrderedDict
from collections.abc import Iterator, MutableMapping
from typing import Any

# key[0] -> slot
SLOT_OF: dict[str, str] = {"view": "views", "fit": "estimators", "select": "selections", "dev-split": "selections",
                           "frames": "frames", "encoder": "encoders", "group": "groups", "manifest": "manifests",
                           "digest": "manifests"}
SLOTS: tuple[str, ...] = ("views", "estimators", "selections", "frames", "encoders", "groups", "manifests", "other")
GROWING: frozenset[str] = frozenset({"frames"})  # measured again on every access: they fill after being stored
_MAX_DEPTH = 8


def slot_of(key: Any) -> str:
    """The slot of a cache key (``("view", ...)`` → ``views``); ``other`` for keys of no known kind."""
    head = key[0] if isinstance(key, tuple) and key else key
    return SLOT_OF.get(head, "other") if isinstance(head, str) else "other"


def _torch_bytes(value: Any) -> int | None:
    torch = sys.modules.get("torch")  # never import torch just to measure
    if torch is None:
        return None
    if isinstance(value, torch.Tensor):
        return int(value.numel() * value.element_size())
    if isinstance(value, torch.nn.Module):
        tensors = list(value.parameters()) + list(value.buffers())
        return int(sum(t.numel() * t.element_size() for t in tensors))
    return None


def _buffer_bytes(value: Any, seen: set[int], depth: int) -> int:
    """Bytes of the arrays and tensors reachable from ``value`` (each object counted once)."""
    if id(value) in seen or depth > _MAX_DEPTH or value is None or isinstance(value, (bool, int, float, str, bytes)):
        return len(value) if isinstance(value, bytes) and id(value) not in seen else 0
    seen.add(id(value))
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int) and hasattr(value, "dtype"):  # numpy (or numpy-like) array
        base = getattr(value, "base", None)
        return 0 if base is not None and id(base) in seen else nbytes
    torch_bytes = _torch_bytes(value)
    if torch_bytes is not None:
        return torch_bytes
    if isinstance(value, dict):
        return sum(_buffer_bytes(v, seen, depth + 1) for v in list(value.values()))
    if isinstance(value, (list, tuple, set, frozenset)):
        return sum(_buffer_bytes(v, seen, depth + 1) for v in list(value))
    if callable(value) and not hasattr(value, "__dict__"):
        return 0
    attrs = getattr(value, "__dict__", None)
    if attrs is None:
        return 0
    return sum(_buffer_bytes(v, seen, depth + 1) for v in list(attrs.values()) if not callable(v) or hasattr(v, "dtype")
               or _torch_bytes(v) is not None)


def estimate_bytes(value: Any) -> int:
    """A byte estimate of ``value``: the arrays and tensors it holds (numpy ``nbytes``, torch parameters and
    buffers, found through containers and object attributes, e.g. inside sklearn pipelines and frame
    caches); for a value holding none (a manifest, a selection), its pickle length (``sys.getsizeof`` when it
    cannot be pickled: a store group's handles)."""
    found = _buffer_bytes(value, set(), 0)
    if found:
        return found
    try:
        text = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # unpicklable: store groups, open handles
        return int(sys.getsizeof(value))
    return len(text)


class StudyCache(MutableMapping):
    """Least-recently-used entries of every slot, bounded by ``max_bytes`` counted over all of them.

    ``hits`` / ``misses`` count lookups; :meth:`slot_bytes` says what each slot holds now.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._sizes: dict[Any, int] = {}
        self.hits = self.misses = 0

    def __getitem__(self, key: Any) -> Any:
        try:
            value = self._items[key]
        except KeyError:
            self.misses += 1
            raise
        self.hits += 1
        self._items.move_to_end(key)
        if slot_of(key) in GROWING:
            self._remeasure()
            self._evict(keep=key)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        self._sizes[key] = estimate_bytes(value)
        self._remeasure()
        self._evict(keep=key)

    def __delitem__(self, key: Any) -> None:
        del self._items[key]
        self._sizes.pop(key, None)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    @property
    def nbytes(self) -> int:
        """Estimated bytes of everything held (growing slots as last measured)."""
        return sum(self._sizes.values())

    def slot_bytes(self) -> dict[str, int]:
        """Estimated bytes held per slot (every slot of :data:`SLOTS`, 0 when empty)."""
        out = dict.fromkeys(SLOTS, 0)
        for key, size in self._sizes.items():
            out[slot_of(key)] += size
        return out

    def trim(self, max_bytes: int) -> None:
        """Drop the least recently used entries until at most ``max_bytes`` are held."""
        self._remeasure()
        while self._items and self.nbytes > max_bytes:
            old, _ = self._items.popitem(last=False)
            self._sizes.pop(old, None)

    def _remeasure(self) -> None:
        for key in [k for k in self._items if slot_of(k) in GROWING]:
            self._sizes[key] = estimate_bytes(self._items[key])

    def _evict(self, keep: Any) -> None:
        for old in list(self._items):
            if self.nbytes <= self.max_bytes:
                return
            if old != keep:
                del self._items[old]
                self._sizes.pop(old, None)
