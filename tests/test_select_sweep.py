"""``select:`` in study files: a cell whose setting a rule chooses (engine.run_selected), its selection kept in the
ledger and shown by ``fs report`` beside the learned layer weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from classifiers.reports.report import learned_section, write_report
from classifiers.studies.ledger import Ledger
from classifiers.studies.sweep import StudyError, expand_study, parse_study, run_sweep
from tests.test_select import MODEL, build_four

GRID = {"layers": [1], "norms": ["none", "corpus"]}


def study(**experiment: Any) -> dict[str, Any]:
    return {"name": "sel", "experiments": [{"name": "e", "pairs": ["emodb->urdu"], "models": MODEL, "seeds": 1,
                                            **experiment}]}


def test_select_keys_make_a_selected_cell_of_their_own() -> None:
    plain, = expand_study(parse_study(study()))
    chosen, = expand_study(parse_study(study(select="lto", select_on=["emodb", "emovo", "berlin"], select_grid=GRID)))
    assert plain.select is None and chosen.select == {"rule": "lto", "on": ["berlin", "emodb", "emovo"], "grid": GRID}
    assert chosen.config == plain.config and chosen.key != plain.key
    assert chosen.payload()["_select"] == chosen.select and "_select" not in plain.payload()


@pytest.mark.parametrize("experiment, message", [
    ({"select": "lot"}, "did you mean 'lto'"),
    ({"select_on": ["emodb", "emovo"]}, "select_on and select_grid need select"),
    ({"select": "lto", "select_grid": {"norms": ["nonsense"]}}, "nonsense"),
    ({"select": "source", "method": "cnn-lstm", "models": "logmel"}, "leave select out of fine-tuning"),
])
def test_bad_select_settings_are_refused_before_anything_runs(experiment: dict[str, Any], message: str) -> None:
    with pytest.raises(StudyError, match=message):
        expand_study(parse_study(study(**experiment)))


@pytest.mark.slow
def test_a_selected_cell_runs_the_rule_and_the_ledger_keeps_which_rule_chose_what(tmp_path: Path) -> None:
    ws, store = build_four(tmp_path)
    data = study(select="lto", select_grid=GRID)
    first, = run_sweep(parse_study(data), store, ws, n_jobs=1, progress=False)
    selection = first["selection"]
    assert selection["rule"] == "lto" and selection["target"] == "urdu"
    assert all("urdu" not in pair for pair in selection["pairs"])
    best = max(selection["candidates"], key=lambda c: c["mean_uar"])
    assert selection["chosen"] == best["setting"]
    c = first["config"]
    assert best["setting"] == repr((c["layer"], c["norm"], c["classifier"]))  # the chosen setting is what ran
    assert first["experiments"] == ["e"] and first["from_ledger"] is False

    ledger = Ledger.open(ws)
    row, = [r for r in ledger.rows(study="sel") if r["config_key"] == first["config_key"]]
    assert row["selection"] == selection  # stored with the chosen run, not only returned
    assert len(ledger.predictions(row["_row_key"])) == 1  # its predictions kept when the selection was written

    again, = run_sweep(parse_study(data), store, ws, n_jobs=1, progress=False)
    assert again["selection"] == selection and again["uar_mean"] == first["uar_mean"]

    folder = write_report(ledger.rows(study="sel"), ws, "sel", out=tmp_path / "report")
    text = (folder / "report.md").read_text()
    assert "`--select lto` chose" in text and "from 2 candidate(s)" in text


def test_report_lists_learned_layer_weights_and_selections() -> None:
    config = {"source": "emodb", "target": "urdu", "model": MODEL, "layer": "weighted"}
    rows = [{"config": config, "layer_weights": [[0.2, 0.3, 0.5], [0.4, 0.3, 0.3]]},
            {"config": {**config, "layer": 1}, "selection": {
                "rule": "source", "chosen": [1, "none", "logreg"], "pairs": [["emodb", "emodb"]],
                "candidates": [{"setting": [1, "none", "logreg"], "mean_uar": 0.5}]}},
            {"config": {**config, "layer": 2}}]
    lines = learned_section(rows)
    assert lines[0] == "## Learned and selected"
    weights, chosen = lines[2], lines[3]
    assert "learned layer weights 0.30 0.30 0.40 (layers 0..2; heaviest: layer 2)" in weights
    assert "`--select source` chose [1, 'none', 'logreg'] (its score 50.0 over 1 pair(s)) from 1 candidate(s)" in chosen
    assert len(lines) == 5 and learned_section(rows[2:]) == []
