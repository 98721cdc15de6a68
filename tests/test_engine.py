"""The study engine: protocol registry splits, one typed Result, ledger-first run, identity without paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_protocols import MODEL, build_workspace

from classifiers.studies import engine
from classifiers.studies.finetune import FinetuneConfig
from classifiers.studies.ledger import Ledger
from classifiers.studies.protocol_registry import PROTOCOLS, FewShot, ProtocolError, Transfer, WithinCorpus, protocol_for
from classifiers.studies.protocols import ProbeConfig, run_probe
from classifiers.studies.result import Result, data_digest, is_current, result_identity, stored_identity
from classifiers.studies.sweep import expand_study, parse_study, plan_sweep
from data_manifests.manifest import build_manifest
from featurestore.workspace import Workspace


def fake_side(corpus: str, speakers: int, per_class: int, classes: tuple[str, ...] = ("a", "b")) -> SimpleNamespace:
    """A side as the protocols read it: labels, corpus:speaker groups, ids (every speaker says every class)."""
    labels, groups = [], []
    for s in range(speakers):
        for c in classes:
            labels += [c] * per_class
            groups += [f"{corpus}:s{s}"] * per_class
    ids = np.array([f"{corpus}_{i}" for i in range(len(labels))])
    return SimpleNamespace(corpus=corpus, labels=np.array(labels), groups=np.array(groups), view=SimpleNamespace(ids=ids))


def rows_of(side: SimpleNamespace, rows: np.ndarray | None) -> np.ndarray:
    return np.arange(len(side.labels)) if rows is None else np.asarray(rows)


# --------------------------------------------------------------------------- the registry
def test_the_registry_holds_one_class_per_protocol_and_picks_it_from_the_config() -> None:
    assert {"cross-language", "within-corpus", "few-shot"} <= set(PROTOCOLS)
    base = {"model": MODEL, "seeds": 1}
    assert isinstance(protocol_for(ProbeConfig(source="a", target="b", **base)), Transfer)
    assert isinstance(protocol_for(ProbeConfig(source="a", target="a", **base)), WithinCorpus)
    assert isinstance(protocol_for(ProbeConfig(source="a", target="b", shots=2, **base)), FewShot)
    ft = FinetuneConfig(method="cnn-lstm", source="a", target="b", shots=2, seeds=1)
    assert isinstance(protocol_for(ft), FewShot)  # the frame-trained runner reads the same registry


def test_transfer_trains_on_all_of_the_source_and_tests_all_of_the_target() -> None:
    src, tgt = fake_side("s", 3, 2), fake_side("t", 2, 2)
    splits = Transfer(None).splits(src, tgt, seed=0)
    assert len(splits.folds) == 1 and not splits.pooled and splits.baseline_train is None
    fold = splits.folds[0]
    assert fold.train == [(src, None)] and fold.test == (tgt, None) and fold.n_train == len(src.labels)


@pytest.mark.parametrize("single", [False, True])
def test_within_corpus_folds_are_speaker_disjoint_and_pooled_folds_test_every_utterance_once(single: bool) -> None:
    side = fake_side("c", 5, 3)
    splits = WithinCorpus(None).splits(side, side, seed=1, single_split=single)
    assert splits.pooled is not single and len(splits.folds) == (1 if single else 5)
    for fold in splits.folds:
        (_, train), (_, test) = fold.train[0], fold.test
        assert not set(side.groups[train]) & set(side.groups[test])  # no speaker on both sides
        assert set(side.labels[train]) == set(side.labels[test]) == {"a", "b"}
    tested = np.sort(np.concatenate([fold.test[1] for fold in splits.folds]))
    if single:
        assert 0 < tested.size < len(side.labels)
    else:
        assert np.array_equal(tested, np.arange(len(side.labels)))  # a partition: each utterance once
    with pytest.raises(ProtocolError, match="within-corpus 'one'"):
        one = fake_side("one", 1, 3)
        WithinCorpus(None).splits(one, one, seed=0)


def test_few_shot_adds_shots_to_the_source_and_the_baseline_trains_on_the_shots_alone() -> None:
    src, tgt = fake_side("s", 3, 3), fake_side("t", 3, 3)
    config = SimpleNamespace(shots=2, target="t", shots_speaker_disjoint=False)
    splits = FewShot(config).splits(src, tgt, seed=0)
    (fold,) = splits.folds
    (src_part, src_rows), (tgt_part, shots) = fold.train
    assert src_part is src and src_rows is None and tgt_part is tgt
    assert splits.baseline_train[0][0] is tgt and np.array_equal(splits.baseline_train[0][1], shots)
    test = fold.test[1]
    assert not set(shots) & set(test) and len(shots) + len(test) == len(tgt.labels)
    assert {c: int(np.sum(tgt.labels[shots] == c)) for c in ("a", "b")} == {"a": 2, "b": 2}
    assert splits.shots["seed"] == 0 and splits.shots["ids"] == tgt.view.ids[shots].tolist()
    assert fold.n_train == len(src.labels) + 4
    capped = FewShot(SimpleNamespace(shots=50, target="t", shots_speaker_disjoint=False)).splits(src, tgt, 0)
    assert any("too few utterances for 50 shots" in w for w in capped.warnings)


# --------------------------------------------------------------------------- engine, Result, identity
@pytest.fixture()
def setup(tmp_path: Path):
    ws, store, _ = build_workspace(tmp_path)
    return ws, store, tmp_path


def config(**kw) -> ProbeConfig:
    return ProbeConfig(**{"source": "emodb", "target": "urdu", "model": MODEL, "seeds": 2, **kw})


def test_run_computes_stores_and_answers_again_from_the_ledger_as_a_typed_result(setup) -> None:
    ws, store, _ = setup
    cfg = config(shots=1)
    first = engine.run(cfg, store, ws)
    assert isinstance(first, Result) and not first.from_ledger and first.config == cfg
    assert len(first.predictions) == 2 and len(first.baseline_predictions) == 2 and first.uar_ci95 is not None
    assert first.identity == stored_identity(result_identity(cfg, store, ws))
    alone = run_probe(cfg, store, ws)
    assert alone.uar_per_seed == first.uar_per_seed and alone.baseline == first.baseline  # the same numbers
    again = engine.run(cfg, store, ws)
    assert again.from_ledger and again.uar_per_seed == first.uar_per_seed and again.uar_ci95 == first.uar_ci95
    assert again.shots == first.shots and again.layer == first.layer and again.identity == first.identity
    assert len(Ledger.open(ws)) == 1
    assert not engine.run(cfg, store, ws, rerun=True).from_ledger and len(Ledger.open(ws)) == 1
    assert len(Ledger.open(ws).predictions(cfg.key())) == 2  # the predictions live in the ledger


def test_a_record_reads_back_into_the_same_result(setup) -> None:
    ws, store, _ = setup
    result = run_probe(config(layer="best", seeds=1), store, ws)
    record = json.loads(json.dumps(result.to_record()))
    back = Result.from_record(record)
    assert back.config == result.config and json.loads(json.dumps(back.to_record())) == record
    older = {k: v for k, v in record.items() if k not in ("identity", "predictions", "baseline_predictions")}
    older["some_key_of_an_older_fs"] = 1
    kept = Result.from_record(older).to_record()
    assert kept["some_key_of_an_older_fs"] == 1 and kept["uar_per_seed"] == record["uar_per_seed"]


def test_a_moved_corpus_keeps_its_ledger_rows(setup) -> None:
    ws, store, tmp = setup
    cfg = config(seeds=1)
    assert not engine.run(cfg, store, ws).from_ledger
    before = ws.load_manifest("urdu")
    moved = tmp / "elsewhere" / "urdu"
    shutil.copytree(tmp / "urdu", moved)  # same audio, new root
    ws.save_manifest(build_manifest("urdu", "urdu", moved), force=True)
    after = ws.load_manifest("urdu")
    assert after.digest() != before.digest()  # the manifest digest holds the paths ...
    assert data_digest(after) == data_digest(before)  # ... the data digest does not
    again = engine.run(cfg, store, ws)
    assert again.from_ledger and len(Ledger.open(ws)) == 1


def test_a_relabel_makes_exactly_the_rows_that_read_the_corpus_stale(setup) -> None:
    ws, store, _ = setup
    configs = {"reads urdu": config(seeds=1), "urdu within": config(source="urdu", seeds=1),
               "emodb only": config(target="emodb", seeds=1)}
    for cfg in configs.values():
        engine.run(cfg, store, ws)
    manifest = ws.load_manifest("urdu")
    j = next(i for i, r in enumerate(manifest.rows) if r["label"] != manifest.rows[0]["label"])
    manifest.rows[0]["label"], manifest.rows[j]["label"] = manifest.rows[j]["label"], manifest.rows[0]["label"]
    ws.save_manifest(manifest, force=True)
    answered = {name: engine.run(cfg, store, ws).from_ledger for name, cfg in configs.items()}
    assert answered == {"reads urdu": False, "urdu within": False, "emodb only": True}
    assert all(engine.run(cfg, store, ws).from_ledger for cfg in configs.values())  # recomputed rows are current


def test_a_record_of_an_older_fs_is_judged_by_its_manifest_digests(setup) -> None:
    ws, store, _ = setup
    cfg = config(seeds=1)
    record = run_probe(cfg, store, ws).to_record()
    del record["identity"]  # as the previous fs stored it
    Ledger.open(ws).put(record)
    assert engine.run(cfg, store, ws).from_ledger  # read, not dropped
    identity = result_identity(cfg, store, ws)
    assert is_current(record, identity)
    record["provenance"]["target"]["label_map_digest"] = "0" * 16
    assert not is_current(record, identity)


def test_the_sweep_plans_with_the_engine_identity(setup) -> None:
    ws, store, _ = setup
    study = parse_study({"name": "s", "defaults": {"classifiers": "logreg", "seeds": 1},
                         "experiments": [{"name": "x", "pairs": ["emodb->urdu"], "models": MODEL}]})
    cells = expand_study(study)
    plan = plan_sweep(cells, store, ws)
    assert plan.identities[cells[0].key] == result_identity(cells[0].config, store, ws)


def test_the_ledger_row_identity_comes_from_the_record(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    ledger = Ledger.open(ws)
    record = {"config_key": "k" * 64, "config": {"source": "a", "target": "b"}, "uar_mean": 0.5, "uar_std": 0.0,
              "identity": {"store_keys": ["a/clean/m", "b/clean/m"], "weights_hashes": ["w"], "data_digests": {}},
              "provenance": {}}
    ledger.put(record)
    assert ledger.get("k" * 64, {"store_keys": ["a/clean/m", "b/clean/m"], "weights_hashes": ["w"]}) is not None


# --------------------------------------------------------------------------- a protocol added as one class
def test_a_named_protocol_keeps_the_keys_of_configurations_that_name_none() -> None:
    plain = config(shots=2)
    assert plain.protocol == "few-shot" and "protocol" not in plain.to_dict()
    held = config(shots=2, protocol="cross-language-heldout")
    assert held.to_dict()["protocol"] == "cross-language-heldout" and held.key() != plain.key()
    assert ProbeConfig.from_dict(held.to_dict()) == held
    with pytest.raises(ProtocolError, match="protocol few-shot is what source, target and shots make"):
        config(protocol="few-shot")  # no shots: cross-language
    with pytest.raises(ProtocolError, match="needs shots > 0"):
        config(protocol="cross-language-heldout")
    with pytest.raises(ProtocolError, match="needs a target other than the source"):
        config(target="emodb", shots=0, protocol="cross-language-heldout")
    study = parse_study({"name": "s", "defaults": {"classifiers": "logreg", "seeds": 1},
                         "experiments": [{"name": "x", "pairs": ["emodb->urdu"], "models": MODEL, "shots": 2,
                                          "protocols": ["cross-language-heldout"]}]})
    assert [c.config.protocol for c in expand_study(study)] == ["cross-language-heldout"]


def test_held_out_transfer_tests_on_the_few_shot_test_set_without_training_on_the_shots(setup) -> None:
    ws, store, _ = setup
    few = run_probe(config(shots=1), store, ws)
    held = run_probe(config(shots=1, protocol="cross-language-heldout"), store, ws)
    assert held.config.protocol == "cross-language-heldout" and held.baseline is None
    assert held.shots == few.shots  # the same utterances held out per seed ...
    assert [p["ids"] for p in held.predictions] == [p["ids"] for p in few.predictions]  # ... the same test set
    assert held.n_train == [len(ws.load_manifest("emodb"))] * 2  # the source alone
    transfer = run_probe(config(), store, ws)
    assert transfer.n_train == held.n_train


@pytest.mark.slow
def test_the_frame_trained_runner_runs_the_new_protocol_on_the_same_splits(setup) -> None:
    from featurestore.encoders import load_encoder
    from featurestore.extract import ExtractOptions, extract

    ws, store, _ = setup
    for name in ("emodb", "urdu"):
        extract(ws.load_manifest(name), load_encoder("logmel"), store, options=ExtractOptions(progress=False,
                                                                                            frame_layers=(0,)))
    ft = FinetuneConfig(method="cnn-lstm", source="emodb", target="urdu", shots=1, seeds=1, epochs=1,
                        protocol="cross-language-heldout")
    result = engine.run(ft, store, ws)
    probe = run_probe(config(shots=1, seeds=1, protocol="cross-language-heldout"), store, ws)
    assert result.config.protocol == "cross-language-heldout" and result.baseline is None
    assert result.shots == probe.shots and result.predictions[0]["ids"] == probe.predictions[0]["ids"]
    assert [t["role"] for t in result.training] == ["model"] and result.n_train == probe.n_train


def test_fs_probe_takes_the_protocol_by_name(setup) -> None:
    from click.testing import CliRunner

    from cli.main import fs

    ws, _, _ = setup
    args = ["--workspace", str(ws.root), "probe", "--source", "emodb", "--target", "urdu", "--model", MODEL,
            "--seeds", "1", "--no-progress", "--no-save-model", "--json"]
    out = CliRunner().invoke(fs, [*args, "--shots", "1", "--protocol", "cross-language-heldout"])
    assert out.exit_code == 0, out.output
    record = json.loads(out.stdout)
    assert record["protocol"] == "cross-language-heldout" and record["baseline"] is None and record["shots"]
    refused = CliRunner().invoke(fs, [*args, "--protocol", "cross-language-heldout"])
    assert refused.exit_code != 0 and "needs shots > 0" in refused.output
