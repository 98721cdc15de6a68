"""One layer vocabulary: parsed once, indices range-checked once, one label, one record; every door agrees."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from classifiers.studies.layer_choice import LayerChoice, LayerError, layer_label
from classifiers.studies.settings import click_option
from classifiers.studies.sweep import StudyError, parse_study
from classifiers.studies.views import canonical_layer, layer_indices

GOOD = [("last", "last", "last layer"), (6, 6, "layer 6"), ("-1", -1, "layer -1"), (" Best ", "best", "best layer (dev)"),
        ("mean", "mean", "mean of layers"), ("concat:3, 6", "concat:3,6", "layers 3+6"),
        ("weighted", "weighted", "weighted layers"), (np.int64(2), 2, "layer 2")]
BAD = ["middle", "concat:3", "concat:3,3", "concat:a,b", True, 2.5, None, "", "all"]


@pytest.mark.parametrize(("given", "value", "label"), GOOD)
def test_parse_value_label_and_record_round_trip(given, value, label) -> None:
    choice = LayerChoice.parse(given)
    assert choice.value == value and choice.label == label and layer_label(given) == label
    assert LayerChoice.parse(choice.value) == choice == LayerChoice.parse(choice)
    record = choice.to_record(13)
    assert record["choice"] == value and record["label"] == label and LayerChoice.from_record(record) == choice


def test_indices_for_a_model() -> None:
    assert LayerChoice.parse("last").indices(13) == [12]
    assert LayerChoice.parse("best").indices(3) == LayerChoice.parse("mean").indices(3) == [0, 1, 2]
    assert LayerChoice.parse("weighted").indices(3) == [0, 1, 2]
    assert LayerChoice.parse(-1).indices(13) == [12] and LayerChoice.parse("concat:0,-1").indices(13) == [0, 12]
    with pytest.raises(LayerError, match=r"layer 13 out of range: the model has layers 0..12"):
        LayerChoice.parse(13).indices(13)
    assert LayerChoice.parse("best").to_record(3, used=[[1], [2]])["used"] == [[1], [2]]


def test_refuse_unless_names_the_runner() -> None:
    with pytest.raises(LayerError, match="layer weighted: the pooled-feature probe does not support it yet"):
        LayerChoice.parse("weighted").refuse_unless(("last", "index"), "the pooled-feature probe")


def _message(call) -> str:
    try:
        call()
    except Exception as exc:  # any door's error: compared by message
        return str(exc)
    raise AssertionError("accepted")


@pytest.mark.parametrize("bad", BAD)
def test_every_door_refuses_a_bad_choice_with_one_message(bad) -> None:
    import click

    from classifiers.studies.protocols import ProbeConfig

    one = _message(lambda: LayerChoice.parse(bad))
    assert one.startswith("layer ")
    assert _message(lambda: canonical_layer(bad)) == one
    assert _message(lambda: layer_indices(bad, 3)) == one
    assert _message(lambda: ProbeConfig(source="a", target="b", model="m", layer=bad)) == one
    study = {"name": "s", "experiments": [{"name": "x", "pairs": ["a->b"], "models": "m", "layers": [bad]}]}
    with pytest.raises(StudyError) as caught:
        parse_study(study)
    assert str(caught.value).endswith(one)
    if isinstance(bad, str) and bad:  # the command line gives text
        command = click_option("layer")(click.command()(lambda layer: None))
        out = CliRunner().invoke(command, ["--layer", bad])
        assert out.exit_code == 2 and one in " ".join(out.output.split())


def test_the_store_view_speaks_the_vocabulary() -> None:
    from types import SimpleNamespace

    from featurestore.view import resolve_layers

    group = SimpleNamespace(num_layers=4)
    assert resolve_layers(group, "mean") == [0, 1, 2, 3] and resolve_layers(group, "concat:1,-1") == [1, 3]
    assert resolve_layers(group, [0, 2]) == [0, 2] and resolve_layers(group, "last") == [3]
    with pytest.raises(LayerError, match="out of range"):
        resolve_layers(group, 4)
    with pytest.raises(LayerError) as caught:
        resolve_layers(group, "middle")
    assert str(caught.value) == _message(lambda: LayerChoice.parse("middle"))
