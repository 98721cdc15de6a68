"""Protocols on stored features: cross-language, within-corpus folds, best layer, few-shot, noise, checks."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from classifiers.learners.splits import few_shot_split
from classifiers.studies import protocols
from classifiers.studies.protocol_registry import align
from classifiers.studies.protocols import ProbeConfig, ProtocolError, run_probe
from classifiers.studies.result import is_current, result_identity
from data_manifests.manifest import build_manifest
from data_manifests.synth import generate_corpus
from featurestore.encoders import load_encoder
from featurestore.extract import ExtractOptions, extract
from featurestore.noise import NoiseSpec
from featurestore.store import FeatureStore, StoreError
from featurestore.workspace import Workspace

MODEL = "tiny-wav2vec2"  # layers 0..2, 32 wide


def build_workspace(tmp: Path) -> tuple[Workspace, FeatureStore, Path]:
    """Tiny EMODB / URDU / EMOVO corpora (3 speakers each) in a workspace; tiny-wav2vec2 clean groups,
    URDU also at 10 dB; EMOVO extracted with other random weights (seed 1) only."""
    ws = Workspace.open(tmp / "ws")
    store = FeatureStore(ws.store_url)
    noise = tmp / "noise"
    noise.mkdir()
    sf.write(noise / "hum.wav", np.random.default_rng(0).normal(0, 0.1, 48000).astype(np.float32), 16000)
    options = ExtractOptions(progress=False)
    for name in ("emodb", "urdu", "emovo"):
        manifest = build_manifest(name, name, generate_corpus(name, tmp / name, size="tiny"))
        ws.save_manifest(manifest)
        encoder = load_encoder(MODEL, seed=1 if name == "emovo" else 0)
        extract(manifest, encoder, store, options=options)
        if name == "urdu":
            extract(manifest, encoder, store, noise=NoiseSpec(str(noise), 10.0), options=options)
    return ws, store, noise


def build_whisper_workspace(tmp: Path) -> tuple[Workspace, FeatureStore]:
    """Tiny EMODB and URDU with tiny-whisper groups of the trim input mode only."""
    ws = Workspace.open(tmp / "ws")
    store = FeatureStore(ws.store_url)
    encoder = load_encoder("tiny-whisper", whisper_input="trim")
    for name in ("emodb", "urdu"):
        manifest = build_manifest(name, name, generate_corpus(name, tmp / name, size="tiny"))
        ws.save_manifest(manifest)
        extract(manifest, encoder, store, options=ExtractOptions(progress=False))
    return ws, store


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    return build_workspace(tmp_path_factory.mktemp("protocols"))


def config(**kw) -> ProbeConfig:
    base = {"source": "emodb", "target": "urdu", "model": MODEL, "seeds": 2}
    return ProbeConfig(**{**base, **kw})


def test_cross_language_result_record(setup) -> None:
    ws, store, _ = setup
    result = run_probe(config(), store, ws).to_dict()
    for key in ("uar_mean", "uar_std", "uar_per_seed", "layer", "chance", "metrics", "config", "provenance",
                "baseline", "shots", "layer_dev_uar", "warnings", "seconds", "config_key"):
        assert key in result
    json.dumps(result)  # the record is JSON as it is
    assert result["protocol"] == "cross-language" and result["layer"] == 2 and result["chance"] == 0.25
    assert len(result["uar_per_seed"]) == 2 and result["metrics"][0]["n"] == 12  # all of the target tested
    assert result["n_train"] == [15, 15] and result["baseline"] is None and result["shots"] is None
    prov = result["provenance"]
    assert prov["source"]["store_key"].startswith("emodb/clean/") and prov["target"]["store_key"].startswith("urdu/")
    assert prov["source"]["weights_hash"] == prov["target"]["weights_hash"]
    assert prov["source"]["label_map"] == "paper" and prov["target"]["audio_digest"] and prov["fs_version"]
    assert result["config_key"] == config().key() and result["config"]["model"] == MODEL
    assert result["whisper_input"] is None and result["layer_choice"] is None  # not Whisper, not best


def test_within_corpus_folds_are_speaker_disjoint(setup, monkeypatch) -> None:
    ws, store, _ = setup
    seen = []
    original = protocols._Runner.fit_predict

    def spy(self, train, test, choice, seed, memo=True):
        seen.append((np.concatenate([s.groups if i is None else s.groups[i] for s, i in train]),
                     test[0].groups if test[1] is None else test[0].groups[test[1]]))
        return original(self, train, test, choice, seed, memo)

    monkeypatch.setattr(protocols._Runner, "fit_predict", spy)
    result = run_probe(config(target="emodb", seeds=1), store, ws).to_dict()
    assert result["protocol"] == "within-corpus" and result["metrics"][0]["n"] == 15  # every utterance tested once
    assert len(seen) == 3  # 3 speakers: 3 folds
    for train_speakers, test_speakers in seen:
        assert not set(train_speakers) & set(test_speakers)
    assert sorted(s for _, t in seen for s in set(t)) == sorted({s for _, t in seen for s in t})
    assert any("confounded" in w for w in result["warnings"])  # 3 speakers per class: named


def test_best_layer_is_chosen_without_target_labels(setup, tmp_path) -> None:
    ws, store, _ = setup
    cfg = config(layer="best")
    first = run_probe(cfg, store, ws).to_dict()
    assert len(first["layer"]) == 2 and all(0 <= k <= 2 for k in first["layer"])
    assert set(first["layer_dev_uar"]) == {"0", "1", "2"}
    assert any("chosen on a dev split of 'emodb'" in w for w in first["warnings"])  # 3 speakers: confounded
    # the same store, the target's labels shuffled: the chosen layers and dev curve do not move
    other = Workspace.open(tmp_path / "perm", store_url=ws.store_url)
    for name in ("emodb", "urdu"):
        manifest = ws.load_manifest(name)
        if name == "urdu":
            labels = [r["label"] for r in manifest.rows]
            random.Random(3).shuffle(labels)
            manifest.rows = [{**r, "label": lab} for r, lab in zip(manifest.rows, labels)]
        other.save_manifest(manifest)
    permuted = run_probe(cfg, store, other).to_dict()
    assert permuted["layer"] == first["layer"] and permuted["layer_dev_uar"] == first["layer_dev_uar"]


def test_best_layer_within_corpus_chooses_per_fold(setup) -> None:
    ws, store, _ = setup
    result = run_probe(config(target="emodb", layer="best", seeds=1), store, ws).to_dict()
    assert len(result["layer"]) == 1 and len(result["layer"][0]) == 3  # one choice per fold


def test_few_shot_shots_never_tested_and_baseline(setup) -> None:
    ws, store, _ = setup
    cfg = config(shots=1)
    result = run_probe(cfg, store, ws).to_dict()
    assert result["protocol"] == "few-shot" and result["baseline"] is not None
    assert len(result["baseline"]["uar_per_seed"]) == 2
    view_ids = np.array(sorted(r["utt_id"] for r in ws.load_manifest("urdu").rows))
    for seed, shot in enumerate(result["shots"]):
        assert len(shot["ids"]) == 4 and shot["n_test"] == 8 == result["metrics"][seed]["n"]
        assert result["baseline"]["metrics"][seed]["n"] == 8
        assert set(shot["ids"]) <= set(view_ids)
    from classifiers.studies.views import cached_manifest, get_view, resolve_group  # the split the protocol made
    group = resolve_group(store, "urdu", MODEL)
    view = get_view(store, cached_manifest(ws, "urdu"), group, [2])
    split = few_shot_split(view.labels, np.char.add("urdu:", view.speakers), 1, 0)
    assert sorted(view.ids[split.train_idx]) == sorted(result["shots"][0]["ids"])
    assert not set(view.ids[split.test_idx]) & set(result["shots"][0]["ids"])
    assert result["n_train"][0] == 15 + 4


def test_few_shot_speaker_disjoint_tests_other_speakers(setup) -> None:
    ws, store, _ = setup
    result = run_probe(config(shots=1, seeds=1, shots_speaker_disjoint=True), store, ws).to_dict()
    shot = result["shots"][0]
    assert shot["speaker_disjoint"] and shot["excluded_speakers"] >= 1
    speakers = {r["utt_id"]: r["speaker"] for r in ws.load_manifest("urdu").rows}
    shot_speakers = {speakers[u] for u in shot["ids"]}
    assert result["metrics"][0]["n"] == sum(1 for s in speakers.values() if s not in shot_speakers)


def test_few_shot_cap_is_reported(setup) -> None:
    ws, store, _ = setup
    result = run_probe(config(shots=5, seeds=1), store, ws).to_dict()  # 3 per class: 2 shots, 1 test each
    assert result["shots"][0]["capped"] == {c: [5, 2] for c in ("angry", "happy", "neutral", "sad")}
    assert result["metrics"][0]["n"] == 4
    assert any("too few utterances" in w for w in result["warnings"])


def test_noisy_target_and_missing_condition(setup) -> None:
    ws, store, noise = setup
    noisy = run_probe(config(target_noise={"noise": str(noise), "snr_db": 10}, seeds=1), store, ws).to_dict()
    assert noisy["provenance"]["target"]["noise"]["snr_db"] == 10.0
    assert "noise-" in noisy["provenance"]["target"]["store_key"]
    with pytest.raises(StoreError, match=f"fs extract --model {MODEL} --corpus urdu --noise .* --snr 5"):
        run_probe(config(target_noise={"noise": str(noise), "snr_db": 5}), store, ws)


def test_mismatched_inputs_are_refused(setup, tmp_path) -> None:
    ws, store, _ = setup
    with pytest.raises(ProtocolError, match="different weights"):
        run_probe(config(target="emovo"), store, ws)
    with pytest.raises(ProtocolError, match="out of range"):
        run_probe(config(layer=7), store, ws)
    other = Workspace.open(tmp_path / "maps", store_url=ws.store_url)
    other.save_manifest(ws.load_manifest("emodb"))
    urdu = ws.load_manifest("urdu")
    urdu.rows = [r for r in urdu.rows if r["label"] != "sad"]
    urdu.label_map = {**urdu.label_map, "name": "three", "classes": ["angry", "happy", "neutral"]}
    other.save_manifest(urdu)
    with pytest.raises(ProtocolError, match="different classes.*only in source: \\['sad'\\]"):
        run_probe(config(), store, other)


def test_config_validation_and_key() -> None:
    cfg = config(layer="4", classifier_params={"C": 0.5})
    assert cfg.layer == 4 and ProbeConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.key() == ProbeConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))).key()
    assert cfg.key() != replace(cfg, seeds=3).key()
    with pytest.raises(ProtocolError, match="did you mean 'layer'.*valid keys"):
        ProbeConfig.from_dict({"source": "a", "target": "b", "model": "m", "layr": 3})
    for bad in ({"layer": "middle"}, {"norm": "global"}, {"classifier": "knn"}, {"seeds": 0}, {"shots": -1},
                {"target_noise": {"noise": "n"}}, {"dev_fraction": 1.5}, {"target": "emodb", "shots": 5}):
        with pytest.raises(ProtocolError):
            config(**bad)
    assert config(layer="concat:3, 6").layer == "concat:3,6"


def test_config_paths_are_one_key(tmp_path, monkeypatch) -> None:
    (tmp_path / "models" / "enc").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    relative = config(model="./models/enc", target_noise={"noise": "models", "snr_db": 10})
    absolute = config(model=str(tmp_path / "models" / "enc"), target_noise={"noise": str(tmp_path / "models"),
                                                                            "snr_db": 10.0, "noise_seed": 0})
    assert relative.key() == absolute.key() and config(model="org/name").model == "org/name"


def test_deterministic_per_seed_and_cache_reuse(setup) -> None:
    ws, store, _ = setup
    cfg = config(classifier="mlp", classifier_params={"epochs": 2, "hidden": 16}, shots=1, norm="speaker")
    a = run_probe(cfg, store, ws).to_dict()
    cache: dict = {}
    b = run_probe(cfg, store, ws, views=cache).to_dict()
    assert a["uar_per_seed"] == b["uar_per_seed"] and a["metrics"] == b["metrics"] and a["shots"] == b["shots"]
    assert a["transductive"] and a["normalisation"]["mode"] == "speaker"
    assert any("no dev split possible on 4 training utterances" in w for w in a["warnings"])  # baseline: 4 shots
    assert any(w.startswith("speaker normalisation on emodb, urdu") for w in a["warnings"])
    views = [k for k in cache if k[0] == "view"]
    c = run_probe(cfg, store, ws, views=cache).to_dict()  # answered from the cache: no new view, same numbers
    assert [k for k in cache if k[0] == "view"] == views and c["uar_per_seed"] == a["uar_per_seed"]


def test_layer_choices_mean_concat_and_stats(setup) -> None:
    ws, store, _ = setup
    mean = run_probe(config(layer="mean", seeds=1, stat="mean+std", norm="corpus"), store, ws).to_dict()
    assert mean["layer"] == "mean" and mean["transductive"]
    concat = run_probe(config(layer="concat:0,2", seeds=1, classifier="ridge"), store, ws).to_dict()
    assert concat["layer"] == [0, 2]


def test_identity_for_the_ledger(setup) -> None:
    ws, store, _ = setup
    cfg = config(seeds=1)
    identity = result_identity(cfg, store, ws)
    result = run_probe(cfg, store, ws).to_dict()
    assert identity["store_keys"] == sorted({result["provenance"][s]["store_key"] for s in ("source", "target")})
    assert identity["weights_hashes"] == [result["provenance"]["source"]["weights_hash"]]
    assert result["identity"]["data_digests"] == identity["data_digests"]  # the record keeps what it was computed from
    assert is_current(result, identity)
    stale = json.loads(json.dumps(result))
    stale["identity"]["data_digests"]["target"] = "0" * 16
    assert not is_current(stale, identity)
    legacy = json.loads(json.dumps(result))  # a record of an older fs: judged by its provenance's manifest digests
    del legacy["identity"]
    assert is_current(legacy, identity)
    legacy["provenance"]["target"]["label_map_digest"] = "0" * 16
    assert not is_current(legacy, identity)


def test_within_corpus_sides_align_on_common_utterances(setup) -> None:
    ws, store, _ = setup
    from classifiers.studies.views import cached_manifest, get_view, resolve_group

    view = get_view(store, cached_manifest(ws, "urdu"), resolve_group(store, "urdu", MODEL), [2])
    a = protocols._Side("urdu", view, "none")
    b = protocols._Side("urdu", view.subset(np.arange(len(view))[::-1][1:]), "none")  # reversed, one row short
    left, right = align(a, b)
    assert len(left.labels) == len(view) - 1 and np.array_equal(left.view.ids, right.view.ids)
    assert np.array_equal(left.view.X, right.view.X) and left.ident != a.ident


def test_whisper_input_of_the_group_read_is_recorded(tmp_path) -> None:
    ws, store = build_whisper_workspace(tmp_path)
    cfg = ProbeConfig(source="emodb", target="urdu", model="tiny-whisper", seeds=1)  # the mode left to the store
    result = run_probe(cfg, store, ws).to_dict()
    assert result["whisper_input"] == "trim" and result["config"]["whisper_input"] is None
    assert result["config_key"] == cfg.key()  # the ledger identity of existing configs is unchanged
    from classifiers.studies.ledger import whisper_input_of

    assert whisper_input_of(result) == "trim"
    older = {**result, "whisper_input": None}  # a result stored before the field: read from its provenance
    assert whisper_input_of(older) == "trim"
    from cli.probe import describe

    assert "model tiny-whisper (Whisper input trim)  logreg" in describe(result)


def test_best_layer_choice_names_the_most_chosen_and_the_best_dev_layer() -> None:
    from classifiers.studies.layer_choice import best_layer_choice, layer_used_text

    dev = {"0": 0.412, "1": 0.44, "2": 0.479, "3": 0.481}
    cross = best_layer_choice([2, 2, 3], dev)
    assert cross == {"per_seed": [[2], [2], [3]], "most_chosen": 2, "times_chosen": 2, "choices": 3,
                     "best_mean_dev": 3}
    within = best_layer_choice([[3, 3, 1], [1, 1, 3]], dev)  # 3 and 1 chosen 3 times each
    assert within["most_chosen"] == 3 and within["choices"] == 6 and within["per_seed"] == [[3, 3, 1], [1, 1, 3]]
    best = {"config": {"layer": "best"}, "layer": [[3, 3, 1], [1, 1, 3]], "layer_dev_uar": dev}
    assert layer_used_text(best) == "3 (3/6 picks)"  # the table's one cell: the most chosen, and how often
    assert layer_used_text({**best, "layer": [2, 2]}) == "2"
    assert layer_used_text({"config": {"layer": "concat:0,2"}, "layer": [0, 2]}) == "0,2"
    assert layer_used_text({"config": {"layer": "last"}, "layer": 12}) == "12"


def test_best_layer_result_records_its_choice(setup) -> None:
    ws, store, _ = setup
    result = run_probe(config(target="emodb", layer="best", seeds=2), store, ws).to_dict()
    from classifiers.studies.layer_choice import best_layer_choice

    assert result["layer_choice"] == best_layer_choice(result["layer"], result["layer_dev_uar"])


def test_progress_counts_every_fit_with_seed_and_fold(setup) -> None:
    import io
    from functools import partial

    from featurestore.progress import Progress

    ws, store, _ = setup
    out = io.StringIO()
    run_probe(config(target="emodb", layer="best", seeds=2), store, ws,
              progress=partial(Progress, stream=out, interval_s=0, bar=False))
    lines = out.getvalue().splitlines()
    assert lines[0] == f"probe emodb->emodb {MODEL} layer best: started, 24 fit to do"  # 2 seeds x 3 folds x 4 fits
    assert any("seed 2/2, fold 3/3" in line and "ETA" in line for line in lines)
    assert lines[-1].startswith(f"probe emodb->emodb {MODEL} layer best: finished 24/24 fit in ")
    out = io.StringIO()  # a cached selection still counts its dev fits: the count reaches the total
    cache: dict = {}
    run_probe(config(shots=1, layer="best", seeds=2), store, ws, views=cache)
    run_probe(config(shots=1, layer="best", seeds=2), store, ws, views=cache,
              progress=partial(Progress, stream=out, interval_s=0, bar=False))
    assert "finished 10/10 fit" in out.getvalue().splitlines()[-1]  # 2 seeds x (3 dev + probe + baseline)


def test_baseline_warning_gives_percent_as_the_tables() -> None:
    text = protocols.baseline_wins_warning(5, 0.6123, 0.5)
    assert "scores UAR 61.2 %, above source+shots (50.0 %)" in text
