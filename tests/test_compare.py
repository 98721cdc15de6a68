"""``fs compare A B``: paired bootstrap and McNemar of two ledger results on their common test utterances."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from test_intervals import fake_predictions, record

from classifiers.studies.intervals import compare
from classifiers.studies.ledger import Ledger
from cli.main import fs


def _result(key: str, predictions: list[dict[str, Any]], target: str = "urdu") -> dict[str, Any]:
    out = record(predictions)
    out.update({"config_key": key, "chance": 0.25,
                "config": {"source": "emodb", "target": target, "model": "whisper", "layer": "last",
                           "classifier": "logreg", "norm": "none", "seeds": 3, "shots": 0},
                "provenance": {"target": {"store_key": f"{target}/clean/whisper-abc", "weights_hash": "w"}}})
    return out


def _workspace(tmp_path: Path) -> tuple[Path, dict[str, list[dict[str, Any]]]]:
    preds = {"strong": fake_predictions(n_speakers=16, skill=0.8, rng_seed=1),
             "weak": fake_predictions(n_speakers=16, skill=0.4, rng_seed=2)}
    ledger = Ledger.open(tmp_path)
    ledger.put(_result("aaaa11" + "0" * 58, preds["strong"]))
    ledger.put(_result("bbbb22" + "0" * 58, preds["weak"]))
    other = [{**e, "ids": [f"emodb-{i}" for i in e["ids"]]} for e in preds["weak"]]
    ledger.put(_result("cccc33" + "0" * 58, other, target="emodb"))
    ledger.put(_result("dddd44" + "0" * 58, [{**e, "y_true": list(reversed(e["y_true"]))} for e in preds["weak"]]))
    old = _result("eeee55" + "0" * 58, preds["weak"])
    del old["predictions"]
    ledger.put(old)
    return tmp_path, preds


def test_compare_prints_the_difference_its_interval_and_both_p_values(tmp_path: Path) -> None:
    root, preds = _workspace(tmp_path)
    expected = compare(preds["strong"], preds["weak"])
    out = CliRunner().invoke(fs, ["--workspace", str(root), "compare", "aaaa11", "bbbb22"])
    assert out.exit_code == 0, out.output
    p = expected.paired
    assert f"difference A - B: {100 * p.difference:+.1f} points, 95 % interval [{100 * p.low:+.1f}, " \
           f"{100 * p.high:+.1f}], p = {p.p_value:.3g}" in out.output
    assert f"McNemar (seed 0): {expected.mcnemar.a_only} utterances right only under A" in out.output
    assert "on 320 common test utterances of 16 speakers" in out.output
    out = CliRunner().invoke(fs, ["--workspace", str(root), "compare", "aaaa11", "bbbb22", "--json"])
    data = json.loads(out.output)
    assert data["difference"] == expected.paired.difference and data["ci95"] == [p.low, p.high]
    assert data["mcnemar"]["p_value"] == expected.mcnemar.p_value and data["a"]["config_key"].startswith("aaaa11")


def test_compare_refuses_what_cannot_be_compared(tmp_path: Path) -> None:
    root, _ = _workspace(tmp_path)
    for args, message in ((["aaaa11", "cccc33"], "share no test utterance"),
                          (["aaaa11", "dddd44"], "different true labels"),
                          (["aaaa11", "eeee55"], "no stored predictions"),
                          (["aaaa11", "ffff66"], "no result"),
                          (["aaaa", "bbbb22"], "first 6")):
        out = CliRunner().invoke(fs, ["--workspace", str(root), "compare", *args])
        assert out.exit_code == 1 and message in out.output, (args, out.output)
        assert "Traceback" not in out.output and len(out.output.strip().splitlines()) == 1
