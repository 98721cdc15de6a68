"""The learners wired into the probe runner: --norm coral, --layer weighted, --tune, --shot-weight.

Each one reaches its learner, is recorded in the result, changes the configuration key only when set and
is refused, when bad, with the settings table's one message (probe config, study file and CLI alike)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from test_protocols import MODEL, build_workspace

from classifiers.learners import coral, layer_weights, shot_weighting, tuning
from classifiers.studies.protocols import ProbeConfig, ProtocolError, run_probe
from classifiers.studies.result import Result
from classifiers.studies.sweep import StudyError, expand_study, parse_study
from cli.main import fs
from cli.probe import describe


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    return build_workspace(tmp_path_factory.mktemp("learners"))


def config(**kw) -> ProbeConfig:
    return ProbeConfig(**{"source": "emodb", "target": "urdu", "model": MODEL, "seeds": 2, **kw})


def spy(monkeypatch: pytest.MonkeyPatch, cls: type, method: str) -> list[tuple]:
    """Record the positional arguments of every call of ``cls.method`` (the real method still runs)."""
    calls: list[tuple] = []
    real = getattr(cls, method)

    def wrapped(self, *args, **kwargs):
        calls.append((self, args, kwargs))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, wrapped)
    return calls


# --------------------------------------------------------------------------- keys and refusals
def test_new_settings_leave_existing_keys_alone():
    plain = config()
    assert "tune" not in plain.to_dict() and "shot_weight" not in plain.to_dict()
    assert config(tune=False, shot_weight="none").key() == plain.key()
    assert config(tune=True).key() != plain.key()
    assert config(shots=3, shot_weight="auto").key() != config(shots=3).key()
    assert config(norm="coral").key() != config(norm="corpus").key()
    assert config(layer="weighted").key() != plain.key()
    # shots that are not trained on have no weight: the same configuration as without it
    assert config(shot_weight="auto").key() == plain.key()
    assert config(shots=3, shot_weight="2").shot_weight == 2.0


@pytest.mark.parametrize("kw, message", [
    ({"shots": 3, "shot_weight": "heavy"}, "shot_weight 'heavy' is not valid; use none, auto"),
    ({"shots": 3, "shot_weight": -1}, "shot_weight -1 is not valid; use none, auto"),
    ({"norm": "corall"}, "norm 'corall' is not valid (did you mean 'coral'?)"),
    ({"tune": "yes"}, "tune 'yes' is not valid; use true or false"),
    ({"norm": "coral", "target": "emodb"}, "within 'emodb' there is no shift to align: use --norm corpus"),
    ({"layer": "weighted", "classifier": "svm"}, "use --classifier logreg with it"),
    ({"layer": "weighted", "tune": True}, "--tune has no grid for the weighted-layer probe"),
    ({"shots": 3, "shot_weight": "auto", "classifier": "mlp"}, "needs a classifier that takes sample weights"),
    ({"shots": 1, "shot_weight": "auto"}, "needs at least 2 shots per class (got 1)"),
])
def test_bad_learner_settings_are_refused_in_one_line(kw, message):
    with pytest.raises(ProtocolError, match=None) as info:
        config(**kw)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_study_files_take_the_new_settings_and_a_list_of_classifier_params():
    study = parse_study({"experiments": [{"pairs": ["emodb->urdu"], "models": [MODEL], "norms": ["corpus", "coral"],
                                          "classifier_params": [{"C": 0.1}, {"C": 1.0}], "tune": False,
                                          "shots": [0, 3], "shot_weights": ["none", "auto"]}]})
    cells = expand_study(study)
    # 2 norms x 2 params x (shots 0: shot weights collapse to none; shots 3: none and auto)
    assert len(cells) == 2 * 2 * 3
    assert {json.dumps(c.config.classifier_params) for c in cells} == {'{"C": 0.1}', '{"C": 1.0}'}
    with pytest.raises(StudyError, match="shot_weights 'lots' is not valid; use none, auto"):
        parse_study({"experiments": [{"pairs": ["emodb->urdu"], "models": [MODEL], "shot_weights": ["lots"]}]})


def test_cli_refuses_a_bad_shot_weight_with_the_same_message(setup):
    ws, _, _ = setup
    out = CliRunner().invoke(fs, ["--workspace", str(ws.root), "probe", "--model", MODEL, "--source", "emodb",
                                  "--target", "urdu", "--shots", "3", "--shot-weight", "heavy"])
    assert out.exit_code != 0 and "--shot-weight 'heavy' is not valid; use none, auto" in out.output


# --------------------------------------------------------------------------- each learner reached and recorded
def test_coral_aligns_the_source_to_the_whole_target(setup, monkeypatch):
    ws, store, _ = setup
    fits = spy(monkeypatch, coral.CoralAligner, "fit")
    result = run_probe(config(norm="coral", shots=3), store, ws)
    n_source = result.provenance["source"]["utterances"]
    n_target = result.provenance["target"]["utterances"]
    # the source rows alone are mapped (not the shots), onto every target row's covariance
    assert fits and all(args[0].shape[0] == n_source and args[1].shape[0] == n_target for _, args, _ in fits)
    assert result.normalisation["mode"] == "coral" and result.normalisation["transductive"]
    assert result.to_record()["transductive"] is True


def test_coral_standardises_each_corpus_first(setup):
    ws, store, _ = setup
    from classifiers.studies import protocols

    cache: dict = {}
    src = protocols._load_side(config(norm="coral"), "source", store, ws, cache)
    X = src.matrix(src.view.layers[-1])
    np.testing.assert_allclose(X.mean(axis=0), 0, atol=1e-5)


def test_weighted_layers_are_learned_recorded_and_printed(setup, monkeypatch):
    ws, store, _ = setup
    fits = spy(monkeypatch, layer_weights.WeightedLayerProbe, "fit")
    result = run_probe(config(layer="weighted", norm="corpus"), store, ws)
    n_layers = result.provenance["source"]["num_layers"]
    X, y = fits[0][1][:2]
    assert X.shape[1] == n_layers and X.ndim == 3  # (n, L, D): every layer
    assert all(str(g).startswith("emodb:") for g in fits[0][2]["groups"])  # speaker groups of the source
    assert {f[0].random_state for f in fits} == {0, 1}  # seeded per seed
    assert len(result.layer_weights) == 2 and all(len(w) == n_layers for w in result.layer_weights)
    assert all(math.isclose(sum(w), 1.0, rel_tol=1e-6) for w in result.layer_weights)
    record = result.to_record()
    assert Result.from_record(json.loads(json.dumps(record))).layer_weights == result.layer_weights
    assert "layer weights (mean over seeds): 0 " in describe({**record, "from_ledger": False})


def test_weighted_layers_within_a_corpus_average_the_folds(setup):
    ws, store, _ = setup
    result = run_probe(config(layer="weighted", target="emodb", seeds=1), store, ws)
    assert len(result.layer_weights) == 1 and math.isclose(sum(result.layer_weights[0]), 1.0, rel_tol=1e-6)


def test_tuning_reads_source_speaker_folds_only(setup, monkeypatch):
    ws, store, _ = setup
    seen = []
    real = tuning.tune

    def spy_tune(name, X, y, groups, random_state=0, **kw):
        seen.append((name, np.asarray(groups), random_state))
        return real(name, X, y, groups, random_state=random_state, **kw)

    monkeypatch.setattr(tuning, "tune", spy_tune)
    result = run_probe(config(tune=True, shots=3), store, ws)
    assert [s[2] for s in seen] == [0, 1] and all(s[0] == "logreg" for s in seen)
    assert all(all(str(g).startswith("emodb:") for g in s[1]) for s in seen)  # never a target utterance
    assert len(result.tuning) == 2
    entry = result.tuning[0][0]
    assert entry["best_params"]["C"] in tuning.GRIDS["logreg"]["C"]
    assert {tuple(r["params"].items()) for r in entry["cv_results"]} == {(("C", c),) for c in tuning.GRIDS["logreg"]["C"]}
    assert "tuned on source speaker folds: C=" in describe({**result.to_record(), "from_ledger": False})


def test_shot_weight_auto_chooses_on_the_shots_and_is_recorded(setup, monkeypatch):
    ws, store, _ = setup
    fits = spy(monkeypatch, shot_weighting.ShotWeightedClassifier, "fit")
    result = run_probe(config(shots=3, shot_weight="auto"), store, ws)
    assert len(fits) == 2  # one per seed: the target-only baseline is not weighted
    est, (X, y), kw = fits[0]
    n_source = result.provenance["source"]["utterances"]
    assert kw["shot_mask"].sum() == X.shape[0] - n_source and not kw["shot_mask"][:n_source].any()
    assert len(result.shot_weights) == 2
    for record in result.shot_weights:
        candidates = set(record["cv_uar"])
        assert "inf" in candidates and "1.0" in candidates and str(record["weight"]) in candidates
    assert "shot weight per seed:" in describe({**result.to_record(), "from_ledger": False})


def test_a_fixed_shot_weight_reaches_the_learner(setup):
    ws, store, _ = setup
    result = run_probe(config(shots=3, shot_weight=2.5), store, ws)
    assert [s["weight"] for s in result.shot_weights] == [2.5, 2.5]
    assert "shot_weights" not in run_probe(config(shots=3), store, ws).to_record()


def test_cli_prints_learned_weights_and_saves_no_probe_it_cannot_apply(setup):
    ws, _, _ = setup
    out = CliRunner().invoke(fs, ["--workspace", str(ws.root), "probe", "--model", MODEL, "--source", "emodb",
                                  "--target", "urdu", "--layer", "weighted", "--norm", "coral", "--seeds", "1",
                                  "--no-progress"])
    assert out.exit_code == 0, out.output
    assert "layer weights (mean over seeds)" in out.output
    assert "no fitted probe saved: fs predict does not apply --norm coral yet" in out.output
