"""``--select``: model selection without the target's labels (LTO over the other corpora, the source dev split)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from classifiers.studies.engine import run_selected, select
from classifiers.studies.protocols import ProbeConfig
from classifiers.studies.selection import Grid, SelectionError
from data_manifests.manifest import build_manifest
from data_manifests.synth import generate_corpus
from featurestore.encoders import load_encoder
from featurestore.extract import ExtractOptions, extract
from featurestore.store import FeatureStore
from featurestore.workspace import Workspace

MODEL = "tiny-wav2vec2"  # layers 0..2
CORPORA = (("emodb", "emodb", 0), ("urdu", "urdu", 0), ("emovo", "emovo", 0), ("berlin", "emodb", 1))


def build_four(tmp: Path) -> tuple[Workspace, FeatureStore]:
    """Four tiny corpora (``berlin``: a second synthetic EMODB) extracted with one model."""
    ws = Workspace.open(tmp / "ws")
    store = FeatureStore(ws.store_url)
    encoder = load_encoder(MODEL, seed=0)
    for name, layout, seed in CORPORA:
        manifest = build_manifest(name, layout, generate_corpus(layout, tmp / name, seed=seed, size="tiny"))
        ws.save_manifest(manifest)
        extract(manifest, encoder, store, options=ExtractOptions(progress=False))
    return ws, store


@pytest.fixture(scope="module")
def four(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, FeatureStore]:
    return build_four(tmp_path_factory.mktemp("select"))


def relabel(ws: Workspace, name: str) -> None:
    """Shuffle ``name``'s labels in its manifest (speakers and features unchanged)."""
    manifest = ws.load_manifest(name)
    labels = [row["label"] for row in manifest.rows][::-1]
    rows = [{**row, "label": label} for row, label in zip(manifest.rows, labels)]
    assert rows != manifest.rows
    ws.save_manifest(replace(manifest, rows=rows), force=True)


def test_lto_records_grid_scores_and_choice_and_never_reads_target_labels(tmp_path: Path) -> None:
    ws, store = build_four(tmp_path)
    config = ProbeConfig(source="emodb", target="urdu", model=MODEL, seeds=1)
    grid = {"norms": ["none", "corpus"]}
    result = run_selected(config, "lto", store, ws, grid=grid, ledger=False)
    sel = result.to_record()["selection"]
    assert sel["rule"] == "lto" and sel["target"] == "urdu"
    # the default layers: every stored one and their average
    assert sel["grid"] == {"layers": [0, 1, 2, "mean"], "norms": ["none", "corpus"], "classifiers": ["logreg"]}
    assert len(sel["candidates"]) == 8 and all(len(c["pair_uar"]) == 6 for c in sel["candidates"])  # 3 others: 6 pairs
    assert all("urdu" not in pair for pair in sel["pairs"])
    best = max(sel["candidates"], key=lambda c: c["mean_uar"])
    assert sel["chosen"] == best["setting"]
    assert (result.config.layer, result.config.norm) == tuple(best["setting"][:2]) if isinstance(
        best["setting"], list) else True
    relabel(ws, "urdu")  # the target's labels change: the selection must not
    again = select(config, "lto", store, ws, grid=grid, ledger=False)
    assert again.to_dict() == sel


def test_guard_excludes_speaker_norm_for_an_undeclared_target(four) -> None:
    ws, store = four
    grid = {"norms": ["none", "speaker"], "layers": [1]}
    urdu = select(ProbeConfig(source="emodb", target="urdu", model=MODEL, seeds=1), "lto", store, ws, grid=grid,
                  ledger=False)
    assert (1, "speaker", "logreg") in urdu.excluded and "not declared" in urdu.excluded[(1, "speaker", "logreg")]
    assert urdu.chosen == (1, "none", "logreg")


def test_fewer_than_two_other_corpora_is_one_clear_error(four) -> None:
    ws, store = four
    config = ProbeConfig(source="emodb", target="urdu", model=MODEL, seeds=1)
    with pytest.raises(SelectionError, match="at least 2 corpora besides the target"):
        select(config, "lto", store, ws, on=["emodb"], ledger=False)


def test_source_rule_scores_the_source_dev_split(four) -> None:
    ws, store = four
    sel = select(ProbeConfig(source="emodb", target="urdu", model=MODEL, seeds=1), "source", store, ws,
                 grid={"norms": ["none"]}, ledger=False)
    assert sel.rule == "source" and sel.pairs == [("emodb", "dev")] and len(sel.mean_scores) == 3
    # the dev split scores single layers: the layer average is left out, and the record says why
    assert "single stored layers" in sel.excluded[("mean", "none", "logreg")]


def test_grid_is_declared_once_with_defaults() -> None:
    cands = Grid.parse(None).candidates(3, "svm")
    assert [c.setting for c in cands][:4] == [(0, "none", "svm"), (1, "none", "svm"), (2, "none", "svm"),
                                              ("mean", "none", "svm")]
    assert Grid.parse({"layers": [2, "mean"]}).layers == (2, "mean")
    with pytest.raises(SelectionError, match="layer numbers or mean"):
        Grid.parse({"layers": ["concat:1,2"]})
    assert {c.setting[1] for c in cands} == {"none", "corpus", "speaker"}
    assert all(c.needs_speaker_variety == (c.setting[1] == "speaker") for c in cands)
    with pytest.raises(SelectionError, match="not valid"):
        Grid.parse({"norm": ["none"]})


@pytest.mark.slow
def test_fs_probe_select_prints_the_choice(four) -> None:
    from cli.main import fs

    ws, _ = four
    out = CliRunner().invoke(fs, ["--workspace", str(ws.root), "probe", "--source", "emodb", "--target", "urdu",
                                   "--model", MODEL, "--seeds", "1", "--select", "lto", "--select-grid",
                                   "{norms: [none, speaker]}", "--no-progress", "--no-save-model"])
    assert out.exit_code == 0, out.output
    assert "selected by lto" in out.output and "excluded" in out.output
    assert np.isfinite(float(out.output.split("UAR ")[1].split()[0]))


def _row(source: str, target: str, layer: int, norm: str, uar: float) -> dict:
    config = {"source": source, "target": target, "model": MODEL, "layer": layer, "norm": norm, "classifier": "logreg",
              "seeds": 1, "stat": "mean", "shots": 0}
    return {"config": config, "uar_mean": uar, "config_key": f"{source}{target}{layer}{norm}"}


def test_report_friedman_and_critical_difference_plot(tmp_path: Path) -> None:
    from classifiers.reports.report import friedman_nemenyi, selection_section

    corpora = ("emodb", "urdu", "emovo")
    rows = [_row(s, t, layer, norm, 0.3 + 0.1 * layer + (0.05 if norm == "corpus" else 0) + 0.01 * len(s + t))
            for s in corpora for t in corpora if s != t for layer in (0, 1, 2) for norm in ("none", "corpus")]
    lines, path = selection_section(rows, tmp_path)
    assert path == tmp_path / "cd.png" and path.read_bytes()[:4] == b"\x89PNG"
    assert any("Friedman test over 6 settings x 6 pairs" in line for line in lines)
    text = "\n".join(lines)
    assert "layer 2" in text and "0.0" in text  # LTO picks the planted best (layer 2, corpus norm): no points lost
    U = np.array([[1.0, 2.0, 3.0]] * 6)
    test = friedman_nemenyi(U)
    assert test["mean_ranks"] == [3.0, 2.0, 1.0] and test["p"] < 0.01
    assert test["cd"] == pytest.approx(3.314 / np.sqrt(2) * np.sqrt(3 * 4 / 36), rel=1e-3)  # q_0.05(3, inf) = 3.314
