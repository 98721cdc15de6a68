"""``fs predict``: probe → saved fitted probe → labels of new audio equal the probe's own model on stored features."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from test_protocols import MODEL, build_whisper_workspace, build_workspace

from classifiers.learners.metrics import uar
from classifiers.learners.normalise import _apply, standardise_set
from classifiers.studies.predict import load_probe, model_path
from classifiers.studies.views import cached_manifest, get_view, layer_matrix, resolve_group
from cli.main import fs
from featurestore.workspace import Workspace


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return build_workspace(tmp_path_factory.mktemp("predict"))[0]


def fs_run(ws: Workspace, *args: str) -> click.testing.Result:
    return CliRunner().invoke(fs, ["--workspace", str(ws.root), *args])


def probe(ws: Workspace, *args: str) -> dict:
    out = fs_run(ws, "probe", "--model", MODEL, "--json", "--no-progress", *args)
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


def stored_features(ws: Workspace, corpus: str, saved, ids: list[str],
                    model: str = MODEL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The saved probe's input (before normalisation) for stored utterances ``ids``, for all of the
    corpus, and the corpus's labels."""
    from featurestore.store import FeatureStore

    store = FeatureStore(ws.store_url)
    view = get_view(store, cached_manifest(ws, corpus), resolve_group(store, corpus, model), saved.layers, saved.stat)
    X = layer_matrix(view, saved.choice)
    rows = [int(np.flatnonzero(view.ids == u)[0]) for u in ids]
    return X[rows], X, view.labels


def files_of(ws: Workspace, corpus: str, n: int) -> tuple[list[str], list[str]]:
    rows = ws.load_manifest(corpus).rows[:n]
    return [r["path"] for r in rows], [r["utt_id"] for r in rows]


def test_probe_saves_its_model_and_predict_equals_it_on_stored_features(ws) -> None:
    result = probe(ws, "--source", "emodb", "--target", "urdu", "--layer", "best", "--norm", "source", "--seeds", "2")
    path = Path(result["saved_model"])
    assert path == model_path(ws, result["config_key"]) and path.is_file()
    saved = load_probe(path)
    assert saved.choice == result["layer"][0]  # seed 0's best layer
    # the saved model is the probe's own seed-0 model: it scores seed 0's UAR on the whole target
    _, every, labels = stored_features(ws, "urdu", saved, [])
    assert uar(labels, saved.estimator.predict(_apply(every, *saved.source_stats)),
               labels=saved.classes) == pytest.approx(result["uar_per_seed"][0])

    files, ids = files_of(ws, "urdu", 3)
    out = fs_run(ws, "predict", *files, "--result", result["config_key"][:8], "--json", "--device", "cpu")
    assert out.exit_code == 0, out.output
    got = json.loads(out.stdout)
    assert got["probe"]["config_key"] == result["config_key"] and got["probe"]["normalisation"].startswith("source")
    X = _apply(stored_features(ws, "urdu", saved, ids)[0], *saved.source_stats)
    assert [p["label"] for p in got["predictions"]] == saved.estimator.predict(X).tolist()
    proba = np.array([[p["probabilities"][c] for c in saved.estimator.classes_] for p in got["predictions"]])
    np.testing.assert_allclose(proba, saved.estimator.predict_proba(X), atol=1e-4)
    text = fs_run(ws, "predict", *files, "--result", result["config_key"][:8], "--device", "cpu")
    assert text.exit_code == 0 and "FILE" in text.output and "angry %" in text.output
    assert f"probe {result['config_key'][:12]}: emodb -> urdu, model {MODEL}, layer best→{saved.choice}" in text.output


def test_corpus_norm_uses_the_files_own_statistics_and_refuses_one_file(ws) -> None:
    result = probe(ws, "--source", "urdu", "--target", "urdu", "--norm", "corpus", "--seeds", "1")
    saved = load_probe(Path(result["saved_model"]))
    assert saved.trained_on["n_train"] == len(ws.load_manifest("urdu").rows)  # within: the whole corpus
    files, ids = files_of(ws, "urdu", 4)
    one = fs_run(ws, "predict", files[0], "--result", result["config_key"], "--device", "cpu")
    assert one.exit_code == 1 and "at least 2 files" in one.output and "Traceback" not in one.output
    out = fs_run(ws, "predict", *files, "--result", result["config_key"], "--json", "--device", "cpu")
    assert out.exit_code == 0, out.output
    X = standardise_set(stored_features(ws, "urdu", saved, ids)[0])
    assert [p["label"] for p in json.loads(out.stdout)["predictions"]] == saved.estimator.predict(X).tolist()


def test_ledger_answer_keeps_or_refits_the_saved_model(ws) -> None:
    args = ("--source", "emodb", "--target", "urdu", "--seeds", "1", "--layer", "1")
    first = probe(ws, *args)
    path = Path(first["saved_model"])
    stamp = path.stat().st_mtime_ns
    again = probe(ws, *args)
    assert again["from_ledger"] and path.stat().st_mtime_ns == stamp  # same data: the saved probe is kept
    path.unlink()
    third = probe(ws, *args)
    assert third["from_ledger"] and path.is_file() and load_probe(path).choice == 1  # lost: fitted again


def test_bad_keys_and_files_are_one_line_errors(ws, tmp_path) -> None:
    files, _ = files_of(ws, "urdu", 2)
    missing = fs_run(ws, "predict", *files, "--result", "0123456789ab")
    assert missing.exit_code == 1 and "no saved probe for result" in missing.output and "fs probe" in missing.output
    short = fs_run(ws, "predict", *files, "--result", "ab")
    assert short.exit_code == 1 and "first 6+ characters" in short.output
    junk = tmp_path / "junk.joblib"
    junk.write_bytes(b"not a pickle")
    bad = fs_run(ws, "predict", *files, "--result", str(junk))
    assert bad.exit_code == 1 and "not a saved probe" in bad.output and "Traceback" not in bad.output
    noprobe = fs_run(ws, "predict", "--result", "0123456789ab")
    assert noprobe.exit_code == 2  # no AUDIO: usage error


def test_whisper_probe_predicts_with_the_stored_input_mode(tmp_path) -> None:
    from classifiers.studies.predict import embed_files, load_probe_encoder
    from featurestore.encoders import load_encoder

    ws, _ = build_whisper_workspace(tmp_path)
    out = fs_run(ws, "probe", "--model", "tiny-whisper", "--source", "emodb", "--target", "urdu", "--seeds", "1",
                 "--layer", "concat:0,2", "--stat", "mean+std", "--json", "--no-progress")
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert result["whisper_input"] == "trim"
    saved = load_probe(Path(result["saved_model"]))
    assert saved.whisper_input == "trim" and saved.choice == "concat:0,2"
    files, ids = files_of(ws, "urdu", 3)
    got = fs_run(ws, "predict", *files, "--result", result["config_key"], "--json", "--device", "cpu")
    assert got.exit_code == 0, got.output
    body = json.loads(got.stdout)
    assert body["probe"]["whisper_input"] == "trim" and body["probe"]["layer_used"] == "concat:0,2"
    X = stored_features(ws, "urdu", saved, ids, model="tiny-whisper")[0]
    assert [p["label"] for p in body["predictions"]] == saved.estimator.predict(X).tolist()
    proba = np.array([[p["probabilities"][c] for c in saved.estimator.classes_] for p in body["predictions"]])
    np.testing.assert_allclose(proba, saved.estimator.predict_proba(X), atol=1e-4)
    # the mode matters: the full-input encoder gives other vectors, which predict does not use
    trim, _ = embed_files(files, load_probe_encoder(saved))
    full, _ = embed_files(files, load_encoder("tiny-whisper", whisper_input="full"))
    assert not np.allclose(trim, full, atol=1e-3)


def test_speaker_norm_standardises_each_given_speaker(ws) -> None:
    result = probe(ws, "--source", "emodb", "--target", "urdu", "--norm", "speaker", "--seeds", "1")
    saved = load_probe(Path(result["saved_model"]))
    rows = ws.load_manifest("urdu").rows
    by_speaker: dict[str, list[dict]] = {}
    for r in rows:
        by_speaker.setdefault(r["speaker"], []).append(r)
    chosen = [r for rs in list(by_speaker.values())[:2] for r in rs[:2]]  # 2 speakers, 2 files each
    files, ids, speakers = [r["path"] for r in chosen], [r["utt_id"] for r in chosen], [r["speaker"] for r in chosen]
    flags = [x for s in speakers for x in ("--speaker", s)]
    out = fs_run(ws, "predict", *files, "--result", result["config_key"], "--json", "--device", "cpu", *flags)
    assert out.exit_code == 0, out.output
    X = standardise_set(stored_features(ws, "urdu", saved, ids)[0], np.array(speakers))
    assert [p["label"] for p in json.loads(out.stdout)["predictions"]] == saved.estimator.predict(X).tolist()
    lone = fs_run(ws, "predict", *files[:3], "--result", result["config_key"], "--device", "cpu", *flags[:6])
    assert lone.exit_code == 1 and f"speaker(s) {speakers[2]} have 1" in lone.output
    other = probe(ws, "--source", "emodb", "--target", "urdu", "--seeds", "1")  # norm none: --speaker is refused
    refused = fs_run(ws, "predict", *files, "--result", other["config_key"], *flags)
    assert refused.exit_code == 2 and "only used by probes trained with --norm speaker" in refused.output
