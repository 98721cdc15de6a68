"""Reports: files written atomically, tables holding the ledger's numbers with their configurations, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import bench_module

from classifiers.reports.report import ReportError, load_paper_table, write_report
from classifiers.studies.intervals import uar_text
from classifiers.studies.ledger import Ledger
from classifiers.studies.sweep import parse_study, run_sweep
from cli.main import fs
from featurestore.store import FeatureStore
from featurestore.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
NOISE = {"noise": "/synthetic/noise", "snr_db": 10, "noise_seed": 0}



STUDY = {"name": "small", "noise": {"dir": NOISE["noise"], "snr_db": 10},
         "defaults": {"classifiers": "logreg", "seeds": 2, "models": "whisper"},
         "experiments": [{"name": "cross", "all_pairs": ["emodb", "urdu"], "layers": ["last", 0, 1, "best"]},
                         {"name": "few", "pairs": ["emodb->urdu"], "shots": [0, 3, 6]},
                         {"name": "noise", "pairs": ["emodb->urdu"], "conditions": ["clean", "target"]}]}


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """Corpora named like the study's (emodb, urdu) and a model named whisper, with the small study run."""
    root = tmp_path_factory.mktemp("report")
    ws = bench_module().synthetic_workspace(root, corpora={"emodb": 48, "urdu": 40}, models={"whisper": (3, 8)},
                                            speakers={"emodb": 6, "urdu": 5}, noise=NOISE, separation=1.0)
    run_sweep(parse_study(STUDY), FeatureStore(ws.store_url), ws, n_jobs=1, progress=False)
    return ws


def test_report_files_and_numbers_from_the_ledger(swept: Workspace) -> None:
    rows = Ledger.open(swept).rows(study="small")
    assert len(rows) == 8 + 2 + 1  # 2 pairs x 4 layers, 2 more shots, 1 noisy target (others shared)
    folder = write_report(rows, swept, name="small", store=FeatureStore(swept.store_url), paper=True)
    assert folder == swept.root / "reports" / "small"
    names = {p.name for p in folder.iterdir()}
    heatmaps = {f"heatmap-{i}.png" for i in range(1, 5)}  # one per setting: layers last, 0, 1, best
    assert names == {"report.md", "layers.png", "fewshot.png", "noise.png", "embedding.png", "cd.png"} | heatmaps
    assert all((folder / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in names if n.endswith(".png"))
    text = (folder / "report.md").read_text()
    for section in ("## Cross-language UAR (Table II layout)", "## UAR per layer", "## Few-shot adaptation",
                    "## Noise robustness", "## Every configuration", "## Configurations"):
        assert section in text
    for row in rows:
        assert uar_text(row) in text  # every number of the ledger is in the report
        assert row["config_key"][:12] in text
    few = next(r for r in rows if r["config"]["shots"] == 3)
    assert uar_text(few["baseline"]) in text
    published = load_paper_table()["table"]
    for pair in ("emodb->urdu", "urdu->emodb"):
        assert f"*{published[pair]['whisper']:.2f}*" in text
    weights = rows[0]["provenance"]["source"]["weights_hash"][:12]
    assert f"weights `{weights}`" in text and "Setting: layer last · logreg · norm none" in text


def test_report_without_store_or_rows(swept: Workspace, tmp_path: Path) -> None:
    rows = Ledger.open(swept).rows(study="small", shots=0, layer="last")
    folder = write_report(rows, swept, out=tmp_path / "plain")
    assert {p.name for p in folder.iterdir()} == {"report.md", "heatmap.png", "noise.png"}
    assert "*59.52*" not in (folder / "report.md").read_text()
    with pytest.raises(ReportError, match="no results to report"):
        write_report([], swept)


def test_cli_results_and_report(swept: Workspace, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["--workspace", str(swept.root)]
    out = runner.invoke(fs, [*base, "results", "--study", "small", "--target", "urdu", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    assert rows and all(r["config"]["target"] == "urdu" for r in rows)
    out = runner.invoke(fs, [*base, "results", "--study", "small", "--csv", str(tmp_path / "r.csv")])
    assert out.exit_code == 0 and (tmp_path / "r.csv").read_text().count("\n") == 1 + 11
    out = runner.invoke(fs, [*base, "results", "--shots", "3"])
    assert out.exit_code == 0 and "emodb" in out.output and "UAR %" in out.output
    out = runner.invoke(fs, [*base, "report", "--study", "small", "--paper", "--embedding", "none",
                             "--out", str(tmp_path / "rep")])
    assert out.exit_code == 0, out.output
    assert "report.md" in out.output and (tmp_path / "rep" / "heatmap-1.png").exists()
    out = runner.invoke(fs, [*base, "report", "--study", "nope"])
    assert out.exit_code == 1 and "no results match --study nope (studies: small" in out.output
    assert "Traceback" not in out.output


def test_cli_sweep(swept: Workspace, tmp_path: Path) -> None:
    runner = CliRunner()
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump({**STUDY, "experiments": STUDY["experiments"][:1]}))
    out = runner.invoke(fs, ["--workspace", str(swept.root), "sweep", str(study), "--jobs", "1"])
    assert out.exit_code == 0, out.output
    assert "8 configurations of study 'small': 0 run, 8 answered from the ledger" in out.output
    out = runner.invoke(fs, ["--workspace", str(swept.root), "sweep", str(study), "--json"])
    assert out.exit_code == 0 and len(json.loads(out.output)) == 8
    study.write_text(yaml.safe_dump({**STUDY, "experimnets": []}))
    out = runner.invoke(fs, ["--workspace", str(swept.root), "sweep", str(study)])
    assert out.exit_code == 1 and "did you mean 'experiments'" in out.output and "Traceback" not in out.output


def test_cli_module_imports_no_torch_or_matplotlib() -> None:
    code = ("import sys, cli.sweep, cli.main; "
            "assert not {'torch', 'matplotlib', 'sklearn'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# --------------------------------------------------------------------------- issue 14 (1, 2) and 12
def test_whisper_input_modes_are_told_apart(swept: Workspace) -> None:
    from classifiers.reports.report import model_label
    from classifiers.studies.ledger import flat_row

    row = Ledger.open(swept).rows(study="small")[0]
    trimmed = {**row, "whisper_input": "trim"}  # recorded by the result
    old = {**row, "config": {**row["config"], "whisper_input": "full"}}  # an older result: only the config says
    assert (model_label(trimmed), model_label(old), model_label(row)) == ("whisper (trim)", "whisper (full)", "whisper")
    assert (flat_row(trimmed)["whisper_input"], flat_row(old)["whisper_input"]) == ("trim", "full")


def test_paper_column_and_titles_for_a_whisper_given_as_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Whisper extracted from a local folder gets the paper's Whisper column; figures name it by its folder name."""
    import classifiers.reports.report as report
    from classifiers.studies.protocols import ProbeConfig, run_probe

    folder = tmp_path / "models" / "whisper-base-encoder"
    folder.mkdir(parents=True)
    ws = bench_module().synthetic_workspace(tmp_path / "ws", corpora={"emodb": 30, "urdu": 30}, models={"m1": (2, 8)},
                                            speakers={"emodb": 5, "urdu": 5}, separation=1.0)
    store = FeatureStore(ws.store_url)
    for key in store.find(model="m1"):
        group = store.open(key, mode="a").group
        group.attrs["model"] = {**group.attrs["model"], "name": str(folder), "model_id": str(folder),
                                "family": "whisper", "settings": {"whisper_input": "trim"}}
    result = run_probe(ProbeConfig(source="emodb", target="urdu", model=str(folder), classifier="logreg", seeds=1),
                       store, ws).to_dict()
    Ledger.open(ws).put({**result, "whisper_input": "trim"}, study="f")
    titles: list[str] = []
    monkeypatch.setattr(report, "plot_embedding", lambda points, path, title: titles.append(title) or path)
    folder_out = write_report(Ledger.open(ws).rows(study="f"), ws, name="f", store=store, paper=True,
                              map_model="whisper-base-encoder")
    text = (folder_out / "report.md").read_text()
    published = load_paper_table()["table"]["emodb->urdu"]
    assert "| whisper-base-encoder (trim) | whisper-base-encoder (trim) (paper: Whisper) | CNN-LSTM (paper) |" in text
    assert f"*{published['whisper']:.2f}* | *{published['cnn-lstm']:.2f}*" in text
    assert titles and titles[0].startswith("whisper-base-encoder (trim), last layer") and str(tmp_path) not in titles[0]


# --------------------------------------------------------------------------- issue 13 (1): uncertainty
def test_cross_language_table_marks_configurations_not_significantly_worse_than_the_best(tmp_path: Path) -> None:
    """Per pair the best cell is bold; a close second (same predictions up to a few utterances) gets ≈, a
    clearly worse one and a result without predictions do not; cells print their interval."""
    from test_intervals import fake_predictions, record

    from classifiers.reports.report import _Notes, cross_language_sections
    from classifiers.studies.intervals import add_intervals

    strong = fake_predictions(n_speakers=16, skill=0.8, rng_seed=1, proba=False)
    close = [{**e, "y_pred": e["y_true"][:3] + e["y_pred"][3:]} for e in strong]  # 3 utterances apart
    weak = fake_predictions(n_speakers=16, skill=0.35, rng_seed=2, proba=False)
    config = {"source": "emodb", "target": "urdu", "layer": "last", "classifier": "logreg", "norm": "none",
              "stat": "mean", "seeds": 3, "shots": 0}
    rows = []
    for model, preds in (("weak", weak), ("close", close), ("strong", strong)):
        row = add_intervals(record(preds))
        row.update({"config_key": model * 8, "config": {**config, "model": model}, "chance": 0.25})
        rows.append(row)
    old = {"config_key": "old" * 8, "config": {**config, "model": "old"}, "uar_mean": 0.7, "uar_std": 0.01}
    rows.append(old)
    by_key = {r["config_key"]: r for r in rows}
    text = "\n".join(cross_language_sections(rows, _Notes(), paper=False,
                                             predictions=lambda r: by_key[r["config_key"]].get("predictions")))
    strongest = max(rows[:3], key=lambda r: r["uar_mean"])
    line = next(t for t in text.split("\n") if t.startswith("| emodb → urdu"))
    cells = [c.strip() for c in line.strip("|").split("|")][1:]
    marks = dict(zip(["weak", "close", "strong", "old"], cells))
    assert marks[strongest["config"]["model"]] == f"**{uar_text(strongest)}**"
    other = "close" if strongest["config"]["model"] == "strong" else "strong"
    assert marks[other] == f"{uar_text(by_key[other * 8])} ≈"
    assert marks["weak"] == uar_text(by_key["weak" * 8]) and "[" in marks["weak"]
    assert marks["old"] == "70.00 ± 1.00"  # stored without predictions: mean ± std, never compared
    assert "p ≥ 0.05" in text and "**bold**" in text


def test_one_heatmap_per_setting_or_the_chosen_one(swept: Workspace, tmp_path: Path) -> None:
    from classifiers.reports.report import heatmap_settings, setting_line

    rows = Ledger.open(swept).rows(study="small")
    lines = [setting_line(s) for s in heatmap_settings(rows)]
    assert len(lines) == 4 and sum(line.startswith("layer ") for line in lines) == 4
    folder = write_report(rows, swept, out=tmp_path / "one", heatmap_setting="layer 0 ·")
    assert {p.name for p in folder.glob("heatmap*.png")} == {"heatmap.png"}
    with pytest.raises(ReportError, match="--setting 'layer 9' matches no setting.*layer last · logreg"):
        write_report(rows, swept, out=tmp_path / "none", heatmap_setting="layer 9")


def _row(layer: int, norm: str, uar: float) -> dict:
    config = {"source": "a", "target": "b", "model": "m", "layer": layer, "norm": norm, "classifier": "logreg",
              "stat": "mean", "seeds": 1, "shots": 0}
    return {"config_key": f"{layer}{norm}", "config": config, "uar_mean": uar, "uar_std": 0.0}


def test_layer_curves_one_line_per_configuration() -> None:
    from classifiers.reports.report import layer_curves

    rows = [_row(k, norm, 0.3 + 0.1 * k + (0.2 if norm == "corpus" else 0)) for norm in ("none", "corpus")
            for k in (0, 1, 2)]
    curves = layer_curves(rows)
    assert set(curves) == {"a→b test, m [norm none]", "a→b test, m [norm corpus]"}
    assert curves["a→b test, m [norm none]"] == pytest.approx({0: 0.3, 1: 0.4, 2: 0.5})
    assert curves["a→b test, m [norm corpus]"] == pytest.approx({0: 0.5, 1: 0.6, 2: 0.7})
    assert set(layer_curves(rows[:3])) == {"a→b test, m"}  # one configuration: no setting in the label


def test_deterministic_results_never_read_plus_minus_zero() -> None:
    assert uar_text({"uar_mean": 0.5, "uar_std": 0.0}) == "50.00"
    assert uar_text({"uar_mean": 0.5, "uar_std": 0.0, "uar_ci95": [0.45, 0.55]}) == "50.0 [45.0, 55.0]"
    assert uar_text({"uar_mean": 0.5, "uar_std": 0.01}) == "50.00 ± 1.00"


def test_report_map_layer_speaks_the_probe_vocabulary(swept: Workspace, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["--workspace", str(swept.root), "report", "--study", "small", "--embedding", "pca"]
    out = runner.invoke(fs, [*base, "--map-layer", "mean", "--out", str(tmp_path / "mean")])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "mean" / "embedding.png").exists() and "Not drawn" not in (tmp_path / "mean" / "report.md").read_text()
    bad = runner.invoke(fs, [*base, "--map-layer", "middle", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "layer 'middle': give last, best" in bad.output
