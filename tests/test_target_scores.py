"""Label-free target-aware selection rules (``--select entropy|snd|iwcv``): direction, a planted target, labels never read."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from classifiers.learners.metrics import uar
from classifiers.learners.target_scores import (
    importance_weighted_uar,
    importance_weights,
    prediction_entropy,
    soft_neighbourhood_density,
    weighted_uar,
)
from classifiers.studies.engine import run_selected, select
from classifiers.studies.protocols import ProbeConfig
from classifiers.studies.selection import TARGET_RULES, Candidate, SelectionError, select_target_aware
from data_manifests.manifest import build_manifest
from data_manifests.synth import generate_corpus
from featurestore.encoders import load_encoder
from featurestore.extract import ExtractOptions, extract
from featurestore.store import FeatureStore
from featurestore.workspace import Workspace

MODEL = "tiny-wav2vec2"  # layers 0..2


def test_scores_are_higher_for_confident_clustered_predictions() -> None:
    rng = np.random.default_rng(0)
    confident = np.eye(4)[rng.integers(0, 4, 80)] * 0.9 + 0.025  # (80, 4) near one-hot, four clusters
    diffuse = rng.dirichlet(np.full(4, 20.0), size=80)  # (80, 4) near uniform
    scattered = rng.dirichlet(np.ones(4), size=80)  # (80, 4) spread over the simplex: no dense neighbourhoods
    assert prediction_entropy(confident) > prediction_entropy(diffuse)
    assert prediction_entropy(confident) > prediction_entropy(scattered)
    assert soft_neighbourhood_density(confident) > soft_neighbourhood_density(scattered)
    assert prediction_entropy(np.full((5, 4), 0.25)) == pytest.approx(-np.log(4) / 4)  # skada: mean over rows and classes
    with pytest.raises(ValueError, match="shape"):
        prediction_entropy(np.ones(4))


def planted(seed: int = 0, n: int = 200) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per candidate layer, ``(X_source (n, 2), y_source (n,), X_target (n, 2))``: layer ``"clean"`` keeps the class
    clusters on the target; layer ``"shifted"`` moves every target utterance to the middle of the classes."""
    rng = np.random.default_rng(seed)
    centres = np.array([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0], [0.0, -4.0]])
    ys, yt = rng.integers(0, 4, n), rng.integers(0, 4, n)
    Xs = centres[ys] + rng.normal(0, 0.7, (n, 2))
    return {"clean": (Xs, ys, centres[yt] + rng.normal(0, 0.7, (n, 2))),
            "shifted": (Xs, ys, rng.normal(0, 0.7, (n, 2)))}


def test_entropy_and_snd_prefer_the_candidate_that_keeps_the_target_clustered() -> None:
    data = planted()

    def proba(layer: str) -> np.ndarray:
        Xs, ys, Xt = data[layer]
        return LogisticRegression(max_iter=1000).fit(Xs, ys).predict_proba(Xt)

    cands = [Candidate("shifted"), Candidate("clean")]  # the wrong one first: ties would keep it
    for rule, score in (("entropy", prediction_entropy), ("snd", soft_neighbourhood_density)):
        sel = select_target_aware(rule, cands, "src", "tgt", lambda s, score=score: score(proba(s)))
        assert sel.chosen == "clean", (rule, sel.mean_scores)
        record = sel.to_dict()
        assert record["pairs"] == [["src", "tgt"]] and record["score"].startswith(("minus", "soft"))
        assert {c["setting"] for c in record["candidates"]} == {"clean", "shifted"}


def test_importance_weights_favour_source_rows_that_look_like_the_target() -> None:
    rng = np.random.default_rng(1)
    Xs = np.r_[rng.normal(0, 1, (100, 3)), rng.normal(5, 1, (100, 3))]  # half near the target, half far
    Xt = rng.normal(5, 1, (150, 3))
    w = importance_weights(Xs, Xt, Xs)
    assert w[100:].mean() > 5 * w[:100].mean() and w.mean() == pytest.approx(1.0)
    y = np.r_[np.zeros(100, int), np.ones(100, int)]
    pred = np.r_[np.zeros(100, int), np.zeros(100, int)]  # right far from the target, wrong near it
    assert weighted_uar(y, pred, np.ones(200)) == pytest.approx(uar(y, pred))
    y2 = np.tile([0, 1], 100)
    pred2 = np.r_[1 - y2[:100], y2[100:]]  # wrong far from the target, right near it
    assert uar(y2, pred2) == pytest.approx(0.5)
    assert importance_weighted_uar(y2, pred2, Xs, Xs, Xt) > 0.8


def test_unknown_rule_and_empty_candidates_are_refused() -> None:
    with pytest.raises(SelectionError, match="unknown target-aware rule"):
        select_target_aware("accuracy", [Candidate("a")], "s", "t", lambda s: 0.0)
    with pytest.raises(SelectionError, match="excluded"):
        select_target_aware("snd", [Candidate("a", needs_speaker_variety=True)], "s", "t", lambda s: 0.0)
    with pytest.raises(SelectionError, match="no finite score"):
        select_target_aware("snd", [Candidate("a")], "s", "t", lambda s: float("nan"))


# --------------------------------------------------------------------------- through engine.select on real stores
@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, FeatureStore]:
    tmp = tmp_path_factory.mktemp("target-scores")
    ws = Workspace.open(tmp / "ws")
    store = FeatureStore(ws.store_url)
    encoder = load_encoder(MODEL, seed=0)
    for name, layout in (("emodb", "emodb"), ("urdu", "urdu")):
        manifest = build_manifest(name, layout, generate_corpus(layout, tmp / name, seed=0, size="tiny"))
        ws.save_manifest(manifest)
        extract(manifest, encoder, store, options=ExtractOptions(progress=False))
    return ws, store


def relabelled(ws: Workspace, name: str) -> None:
    """Reverse ``name``'s labels in its manifest (speakers and features unchanged)."""
    manifest = ws.load_manifest(name)
    labels = [row["label"] for row in manifest.rows][::-1]
    rows = [{**row, "label": label} for row, label in zip(manifest.rows, labels)]
    assert rows != manifest.rows
    ws.save_manifest(replace(manifest, rows=rows), force=True)


@pytest.mark.slow
def test_target_rules_record_every_candidate_and_never_read_target_labels(pair) -> None:
    ws, store = pair
    config = ProbeConfig(source="emodb", target="urdu", model=MODEL, seeds=1)
    grid = {"norms": ["none", "corpus"]}
    before = {rule: select(config, rule, store, ws, grid=grid, ledger=False).to_dict() for rule in TARGET_RULES}
    for rule, sel in before.items():
        assert sel["rule"] == rule and sel["pairs"] == [["emodb", "urdu"]]
        # 3 stored layers and their mean x 2 norms
        assert len(sel["candidates"]) == 8 and all(np.isfinite(c["mean_uar"]) for c in sel["candidates"])
        assert sel["chosen"] == max(sel["candidates"], key=lambda c: c["mean_uar"])["setting"]
    original = ws.load_manifest("urdu")
    relabelled(ws, "urdu")
    try:
        after = {rule: select(config, rule, store, ws, grid=grid, ledger=False).to_dict() for rule in TARGET_RULES}
    finally:
        ws.save_manifest(original, force=True)
    assert after == before  # the target's labels are never read
    result = run_selected(config, "snd", store, ws, grid=grid, ledger=False)
    assert result.to_record()["selection"]["chosen"] == before["snd"]["chosen"]
    assert repr((result.config.layer, result.config.norm, result.config.classifier)) == before["snd"]["chosen"]
