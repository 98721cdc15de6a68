"""Studies: strict validation, expansion, planning (missing groups), sweeps equal to run_probe, ledger reuse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import bench_module

from classifiers.studies.ledger import Ledger
from classifiers.studies.protocols import ProbeConfig, run_probe
from classifiers.studies.sweep import (
    StudyError,
    SweepError,
    ViewCache,
    _tasks,
    expand_study,
    load_study,
    parse_study,
    run_sweep,
    shipped_studies,
)
from featurestore.store import FeatureStore
from featurestore.workspace import Workspace

NOISE = {"noise": "/synthetic/noise", "snr_db": 10, "noise_seed": 0}




def tiny_workspace(root: Path) -> Workspace:
    """Corpora aa (48) and bb (40) with model m1 (3 layers x 8), clean and noisy (10 dB)."""
    return bench_module().synthetic_workspace(root, corpora={"aa": 48, "bb": 40}, models={"m1": (3, 8)},
                                              speakers={"aa": 6, "bb": 5}, noise=NOISE, separation=1.0)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return tiny_workspace(tmp_path_factory.mktemp("sweep"))


def study_dict(**experiment: Any) -> dict[str, Any]:
    exp = {"name": "x", "pairs": ["aa->bb"], "models": "m1", **experiment}
    return {"name": "t", "noise": {"dir": NOISE["noise"], "snr_db": 10}, "defaults": {"classifiers": "logreg",
            "seeds": 2}, "experiments": [exp]}


def write_study(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize("data, message", [
    ({"name": "t", "experiment": []}, r"unknown key 'experiment' \(did you mean 'experiments'\?\); valid keys"),
    (study_dict(model="m1"), r"experiment 'x': unknown key 'model' \(did you mean 'models'\?\)"),
    (study_dict(classifiers=["logreg", "logrge"]), r"classifiers 'logrge' is not valid \(did you mean 'logreg'\?\)"),
    (study_dict(norms="corpse"), r"norms 'corpse' is not valid \(did you mean 'corpus'\?\)"),
    (study_dict(shots=[0, -5]), r"shots -5 is not valid"),
    (study_dict(layers="middle"), r"layer 'middle': give last, best"),
    (study_dict(seeds=0), r"seeds 0 is not valid"),
    (study_dict(conditions=["clean", "targte"]), r"did you mean 'target'"),
    (study_dict(all_pairs=["aa", "bb"]), r"exactly one of pairs .* or all_pairs"),
    (study_dict(pairs=["aa"]), r"pair 'aa' is not valid; write SOURCE->TARGET"),
    ({"name": "t", "defaults": {"seed": 3}, "experiments": [{"pairs": ["aa->bb"], "models": "m1"}]},
     r"defaults: unknown key 'seed' \(did you mean 'seeds'\?\)"),
    ({"name": "t", "experiments": [{"pairs": ["aa->bb"], "models": "m1", "conditions": "target"}]},
     r"need the study's noise; add a top-level noise"),
    ({"name": "t", "noise": {"dir": "n", "snr": 10}, "experiments": []}, r"noise: unknown key 'snr'"),
    ({"name": "t", "experiments": [{"pairs": ["aa->bb"]}]}, r"models is missing"),
])
def test_study_errors_name_the_key_and_leave_the_ledger_untouched(ws: Workspace, tmp_path: Path,
                                                                 data: dict[str, Any], message: str) -> None:
    with pytest.raises(StudyError, match=message):
        parse_study(data)
    path = write_study(tmp_path / "bad.yaml", data)
    before = len(Ledger.open(ws))
    with pytest.raises(StudyError, match=message):
        run_sweep(path, FeatureStore(ws.store_url), ws, n_jobs=1, progress=False)
    assert len(Ledger.open(ws)) == before


def test_probe_config_errors_become_study_errors() -> None:
    with pytest.raises(StudyError, match="experiment 'x'.*concat"):  # refused when the file is read
        parse_study(study_dict(classifier_params={"C": 1.0}, dev_fraction=0.5, layers=["concat:0,0"]))
    study = parse_study(study_dict(shots=[5], pairs=["aa->aa"]))  # a rule across settings: when configs are made
    with pytest.raises(StudyError, match="experiment 'x'.*shots"):
        expand_study(study)


def test_unknown_study_name_suggests_a_shipped_one() -> None:
    with pytest.raises(StudyError, match="did you mean 'paper'"):
        load_study("papr")


# --------------------------------------------------------------------------- expansion
def test_paper_study_expands_to_the_three_experiments() -> None:
    assert {"paper", "demo"} <= set(shipped_studies())
    study = load_study("paper")
    assert [e.name for e in study.experiments] == ["table2", "few-shot", "noise", "table2-cnn-lstm"]
    cells = expand_study(study)
    cnn = [c for c in cells if "table2-cnn-lstm" in c.experiments]
    assert len(cnn) == 12 and all(c.config.method == "cnn-lstm" and c.config.norm == "corpus" for c in cnn)
    cells = [c for c in cells if c not in cnn]
    table2 = [c for c in cells if "table2" in c.experiments]
    assert len(table2) == 48 and {(c.config.source, c.config.target) for c in table2} == {
        (a, b) for a in ("iemocap", "emodb", "emovo", "urdu") for b in ("iemocap", "emodb", "emovo", "urdu") if a != b}
    assert all(c.config.classifier == "mlp" and c.config.layer == "last" and c.config.seeds == 5 for c in cells)
    few = [c for c in cells if "few-shot" in c.experiments]
    assert sorted({c.config.shots for c in few}) == [0, 50, 100, 150, 200] and len(few) == 60
    noisy = [c for c in cells if c.config.target_noise]
    assert len(noisy) == 12 and all(c.config.target_noise["snr_db"] == 10.0 for c in noisy)
    # the clean / 0-shot cells of few-shot and noise are table II's: each configuration once
    assert len(cells) == 48 + 48 + 12 == len({c.key for c in cells})
    shared = next(c for c in cells if c.config.source == "iemocap" and c.config.target == "urdu"
                  and c.config.model == "whisper" and not c.config.shots and not c.config.target_noise)
    assert shared.experiments == ("table2", "few-shot", "noise")


def test_demo_study_is_valid() -> None:
    cells = expand_study(load_study("demo"))
    assert all(c.config.source.startswith("demo-") for c in cells) and len(cells) > 20


# --------------------------------------------------------------------------- planning
def test_missing_groups_are_listed_before_anything_runs(ws: Workspace, tmp_path: Path) -> None:
    data = study_dict(models=["m1", "m9"], pairs=["aa->bb", "aa->zz"], conditions=["clean", "target"])
    data["noise"]["snr_db"] = 5
    before = len(Ledger.open(ws))
    with pytest.raises(SweepError) as err:
        run_sweep(parse_study(data), FeatureStore(ws.store_url), ws, n_jobs=1, progress=False)
    text = str(err.value)
    assert "nothing was run" in text and "fs corpus add zz" in text
    assert "fs extract --model m9 --corpus aa --corpus bb" in text
    assert "fs extract --model m1 --corpus bb --noise /synthetic/noise --snr 5 --noise-seed 0" in text
    assert len(Ledger.open(ws)) == before


# --------------------------------------------------------------------------- running
def test_sweep_equals_run_probe_per_cell_and_is_answered_from_the_ledger(tmp_path: Path) -> None:
    ws = tiny_workspace(tmp_path)
    store = FeatureStore(ws.store_url)
    study = parse_study(study_dict(layers=["last", "best"], shots=[0, 3], conditions=["clean", "target"]))
    results = run_sweep(study, store, ws, n_jobs=1, progress=False)
    assert len(results) == 8 and not any(r["from_ledger"] for r in results)
    for result in results:
        alone = run_probe(ProbeConfig.from_dict(result["config"]), store, ws).to_dict()
        assert result["config_key"] == alone["config_key"]
        assert result["uar_per_seed"] == alone["uar_per_seed"] and result["layer"] == alone["layer"]
        assert result["baseline"] == alone["baseline"]
    ledger = Ledger.open(ws)
    assert len(ledger) == 8 and ledger.studies() == {"t": 8}
    again = run_sweep(study, store, ws, n_jobs=1, progress=False)
    assert all(r["from_ledger"] for r in again) and len(ledger) == 8
    assert [r["uar_per_seed"] for r in again] == [r["uar_per_seed"] for r in results]
    rerun = run_sweep(study, store, ws, n_jobs=1, progress=False, rerun=True)
    assert not any(r["from_ledger"] for r in rerun) and len(ledger) == 8


@pytest.mark.slow
def test_worker_processes_give_the_same_results(tmp_path: Path) -> None:
    ws = tiny_workspace(tmp_path)
    store = FeatureStore(ws.store_url)
    study = parse_study(study_dict(pairs=["aa->bb", "bb->aa"]))
    parallel = run_sweep(study, store, ws, n_jobs=2, progress=False)
    serial = run_sweep(study, store, ws, n_jobs=1, progress=False, rerun=True)
    assert [r["uar_per_seed"] for r in parallel] == [r["uar_per_seed"] for r in serial]
    assert len(Ledger.open(ws)) == 2


def test_failed_cells_are_listed_and_the_others_kept(tmp_path: Path) -> None:
    ws = tiny_workspace(tmp_path)
    study = parse_study(study_dict(layers=["last", 7]))
    with pytest.raises(SweepError, match=r"(?s)1 of 2 configurations failed.*aa->bb m1 layer 7 .*out of range"):
        run_sweep(study, FeatureStore(ws.store_url), ws, n_jobs=1, progress=False)
    rows = Ledger.open(ws).rows(study="t")
    assert [r["config"]["layer"] for r in rows] == ["last"]


def test_view_cache_is_bounded() -> None:
    class Box:
        def __init__(self, n: int) -> None:
            import numpy as np

            self.X = np.zeros(n, dtype=np.uint8)

    cache = ViewCache(max_bytes=100)
    cache["a"], cache["b"] = Box(60), Box(30)
    assert cache["a"].X.size == 60  # a is now the most recent
    cache["c"] = Box(30)
    assert "b" not in cache and set(cache) == {"a", "c"}
    cache["big"] = Box(500)
    assert list(cache) == ["big"]


def test_a_study_experiment_can_fine_tune(tmp_path: Path) -> None:
    """`method: cnn-lstm` in a study runs classifiers.studies.finetune in the sweep, into the same ledger."""
    from data_manifests.manifest import build_manifest
    from data_manifests.synth import generate_corpus
    from featurestore.encoders import load_encoder
    from featurestore.extract import ExtractOptions, extract

    ws = Workspace.open(tmp_path / "ws")
    store = FeatureStore(ws.store_url)
    for layout in ("urdu", "emodb"):
        manifest = build_manifest(layout, layout, generate_corpus(layout, tmp_path / layout, size="tiny"))
        ws.save_manifest(manifest)
        extract(manifest, load_encoder("logmel"), store, options=ExtractOptions(frame_layers=(0,), progress=False))
    study = parse_study({"name": "ft", "defaults": {"seeds": 1}, "experiments": [
        {"name": "cnn", "pairs": ["urdu->emodb"], "models": "logmel", "method": "cnn-lstm", "epochs": 1,
         "norms": "corpus"},
        {"name": "probe", "pairs": ["urdu->emodb"], "models": "logmel", "classifiers": "logreg"}]})
    results = run_sweep(study, store, ws, n_jobs=1, progress=False)
    assert sorted(r.get("method", "probe") for r in results) == ["cnn-lstm", "probe"]
    assert all(0.0 <= r["uar_mean"] <= 1.0 for r in results)
    assert len(Ledger.open(ws).rows(study="ft")) == 2
    assert all(r["from_ledger"] for r in run_sweep(study, store, ws, n_jobs=1, progress=False))
    with pytest.raises(StudyError, match="did you mean 'cnn-lstm'"):
        parse_study({"name": "ft", "experiments": [{"pairs": ["a->b"], "models": "m", "method": "cnn-lstn"}]})


# --------------------------------------------------------------------------- issue 14: reliability
def test_a_rerun_of_another_study_keeps_the_shared_cells(tmp_path: Path) -> None:
    ws = tiny_workspace(tmp_path)
    store = FeatureStore(ws.store_url)
    first = parse_study(study_dict(layers=["last", 0]))
    other = parse_study({**study_dict(layers=[0, 1]), "name": "u"})
    run_sweep(first, store, ws, n_jobs=1, progress=False)
    run_sweep(other, store, ws, n_jobs=1, progress=False, rerun=True)  # recomputes the shared layer-0 cell
    run_sweep(first, store, ws, n_jobs=1, progress=False, rerun=True)
    ledger = Ledger.open(ws)
    assert sorted(str(r["config"]["layer"]) for r in ledger.rows(study="t")) == ["0", "last"]
    assert sorted(str(r["config"]["layer"]) for r in ledger.rows(study="u")) == ["0", "1"]


def test_an_interrupted_sweep_keeps_every_finished_cell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM raises Terminated (a KeyboardInterrupt) in the middle of a task: the cells it finished are kept."""
    import classifiers.studies.protocols as protocols

    ws = tiny_workspace(tmp_path)
    store = FeatureStore(ws.store_url)
    study = parse_study(study_dict(layers=["last", 0, 1, 2]))
    real, calls = protocols.run_probe, []

    def dies_at_the_third(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(protocols, "run_probe", dies_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(study, store, ws, n_jobs=1, progress=False)
    assert len(Ledger.open(ws).rows(study="t")) == 2  # one task of four cells: the first two are in the ledger
    monkeypatch.setattr(protocols, "run_probe", real)
    again = run_sweep(study, store, ws, n_jobs=1, progress=False)
    assert sum(r["from_ledger"] for r in again) == 2 and len(Ledger.open(ws).rows(study="t")) == 4


def test_jobs_split_a_single_pair_across_the_workers() -> None:
    cells = expand_study(parse_study(study_dict(layers=["last", 0, 1, 2], shots=[0, 3])))
    tasks = _tasks(cells, 4)
    assert len(tasks) == 4 and sorted(c.key for t in tasks for c in t) == sorted(c.key for c in cells)
    assert len(_tasks(cells, 1)) == 1 and len(_tasks(cells[:2], 8)) == 2


HUGE = {"name": "huge", "defaults": {"classifiers": ["logreg", "svm", "ridge", "lgbm"], "seeds": 5},
        "experiments": [{"name": "all", "all_pairs": [f"c{i}" for i in range(20)], "models": ["m1", "m2"],
                         "layers": list(range(12)) + ["last", "best"], "shots": list(range(0, 190, 5)),
                         "norms": ["none", "corpus", "speaker"]}]}


def test_a_huge_study_is_counted_and_asked_about_before_anything_runs(ws: Workspace, tmp_path: Path) -> None:
    import time

    from click.testing import CliRunner

    from classifiers.studies.sweep import count_cells, describe_size
    from cli.main import fs

    study = parse_study(HUGE)
    start = time.perf_counter()
    assert count_cells(study) == 380 * 2 * 14 * 38 * 3 * 4 == 4_851_840
    line = describe_size(study, 4)
    assert time.perf_counter() - start < 2.0
    assert "4,851,840 configurations" in line and "days" in line
    asked: list[str] = []
    before = len(Ledger.open(ws))
    with pytest.raises(SweepError, match="not run.*--yes"):
        run_sweep(study, FeatureStore(ws.store_url), ws, n_jobs=4, progress=False, confirm=lambda s: asked.append(s)
                  or False)
    assert asked == [line] and len(Ledger.open(ws)) == before
    path = write_study(tmp_path / "huge.yaml", HUGE)
    start = time.perf_counter()
    out = CliRunner().invoke(fs, ["--workspace", str(ws.root), "sweep", str(path), "--jobs", "4"])
    assert out.exit_code == 1 and "4,851,840 configurations" in out.output and "pass --yes" in out.output
    assert time.perf_counter() - start < 10 and "bug in fs" not in out.output


def test_a_non_utf8_study_file_is_a_study_error(ws: Workspace, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cli.main import fs

    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: t\nnote: café\n".encode("latin-1"))
    with pytest.raises(StudyError, match="not UTF-8 text.*save the study file as UTF-8"):
        load_study(path)
    out = CliRunner().invoke(fs, ["--workspace", str(ws.root), "sweep", str(path)])
    assert out.exit_code == 1 and "not UTF-8" in out.output and "bug in fs" not in out.output
