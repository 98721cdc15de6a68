"""The study cache: typed slots, a byte bound that counts everything it holds, LRU eviction across slots."""

from __future__ import annotations

import numpy as np
import pytest

from classifiers.studies.cache import StudyCache, estimate_bytes, slot_of
from classifiers.studies.sweep import ViewCache


class _Frames:
    """Stands for a fine-tuning frame cache: fills with arrays after it was stored."""

    def __init__(self) -> None:
        self._items: dict[int, np.ndarray] = {}

    def read(self, row: int, n: int) -> None:
        self._items[row] = np.zeros(n, dtype=np.uint8)


def test_estimates_count_arrays_estimators_tensors_and_small_values() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = np.random.default_rng(0).normal(size=(60, 50)), np.repeat([0, 1, 2], 20)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=200)).fit(X, y)
    coef = pipe[-1].coef_.nbytes + pipe[-1].intercept_.nbytes
    scaler = pipe[0].mean_.nbytes + pipe[0].scale_.nbytes + pipe[0].var_.nbytes
    assert estimate_bytes(pipe) >= coef + scaler  # found inside the pipeline's steps
    assert estimate_bytes(np.zeros((10, 4), dtype=np.float32)) == 160
    assert estimate_bytes((3, {"0": 0.5, "1": 0.6})) > 0  # a selection: its pickle length
    torch = pytest.importorskip("torch")
    layer = torch.nn.Linear(100, 10)
    assert estimate_bytes(layer) == (100 * 10 + 10) * 4
    assert estimate_bytes({"encoder": layer}) == (100 * 10 + 10) * 4


def test_slots_come_from_the_key() -> None:
    assert [slot_of(k) for k in (("view", 1), ("fit", 2), ("select", 3), ("dev-split", 4), ("frames", 5),
                                 ("encoder", 6), ("group", 7), ("manifest", 8), "x")] == \
        ["views", "estimators", "selections", "selections", "frames", "encoders", "groups", "manifests", "other"]


def test_the_bound_counts_a_frame_cache_that_grows_and_evicts_least_recent() -> None:
    cache = StudyCache(max_bytes=1000)
    cache[("view", "a")] = np.zeros(300, dtype=np.uint8)
    frames = _Frames()
    cache[("frames", "g", 1)] = frames
    cache[("fit", "f")] = {"coef": np.zeros(200, dtype=np.uint8)}
    assert cache.slot_bytes()["views"] == 300 and cache.slot_bytes()["estimators"] == 200
    for row in range(6):  # the frame cache fills after it was stored: 600 bytes
        frames.read(row, 100)
    assert cache[("frames", "g", 1)] is frames  # touching it measures it again and evicts
    assert cache.nbytes <= 1000 and cache.slot_bytes()["frames"] == 600
    assert ("view", "a") not in cache and ("fit", "f") in cache  # the least recently used went first
    cache[("encoder", "m")] = np.zeros(900, dtype=np.uint8)  # alone over the rest: keeps only itself
    assert list(cache) == [("encoder", "m")] and cache.nbytes == 900


def test_trim_and_the_sweep_cache_is_a_study_cache() -> None:
    cache = ViewCache(max_bytes=10_000)
    assert isinstance(cache, StudyCache)
    cache[("view", 1)] = np.zeros(4000, dtype=np.uint8)
    cache[("view", 2)] = np.zeros(4000, dtype=np.uint8)
    cache.trim(5000)
    assert list(cache) == [("view", 2)]
    with pytest.raises(KeyError):
        cache[("view", 1)]
    assert cache.misses == 1
