"""One settings table drives the run configurations, the study-file validation and the click options."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from classifiers.learners.normalise import MODES
from classifiers.learners.probes import classifier_names
from classifiers.studies import settings
from classifiers.studies.finetune import FinetuneConfig, FinetuneError
from classifiers.studies.protocols import ProbeConfig, ProtocolError
from classifiers.studies.sweep import SETTING_KEYS, StudyError, parse_study


def _study(**values) -> dict:
    return {"name": "s", "experiments": [{"name": "x", "pairs": ["a->b"], "models": "m", **values}]}


def test_choices_come_from_the_registries() -> None:
    assert settings.setting("classifier").valid_choices() == tuple(classifier_names())
    assert settings.setting("norm").valid_choices() == tuple(MODES)


def test_defaults_of_the_configs_are_the_tables() -> None:
    probe = ProbeConfig(source="a", target="b", model="m")
    for name in ("layer", "stat", "classifier", "norm", "seeds", "shots", "dev_fraction", "whisper_input"):
        assert getattr(probe, name) == settings.setting(name).default, name
    tune = FinetuneConfig(method="head", source="a", target="b", model="m")
    for name in ("epochs", "batch_size", "lr", "seeds", "dev_fraction", "head_hidden"):
        assert getattr(tune, name) == settings.setting(name).default, name


def test_every_study_key_is_a_setting_and_every_setting_a_study_key() -> None:
    assert set(SETTING_KEYS) == {"models"} | {s.study_key for s in settings.SETTINGS if s.study_key}


@pytest.mark.parametrize(("name", "bad", "hint"), [
    ("classifier", "logrge", "did you mean 'logreg'?"), ("norm", "corpse", "did you mean 'corpus'?"),
    ("stat", "meen", "did you mean 'mean'?"), ("seeds", 0, "a whole number >= 1"), ("shots", -5, ">= 0"),
    ("dev_fraction", 1.5, "a number > 0 and < 1"), ("whisper_input", "trimmed", "did you mean 'trim'?"),
])
def test_probe_config_study_file_and_cli_refuse_with_the_tables_message(name, bad, hint) -> None:
    s = settings.setting(name)
    expected = f"is not valid{' (' + hint + ')' if 'did you mean' in hint else ''}; use {s.valid_text()}"
    assert hint in str(s.refusal(bad))
    with pytest.raises(ProtocolError) as probe:
        ProbeConfig(source="a", target="b", model="m", **{name: bad})
    assert str(probe.value) == f"{name} {bad!r} {expected}"
    with pytest.raises(StudyError) as study:
        parse_study(_study(**{s.study_key: bad}))
    assert str(study.value).endswith(f"{s.study_key} {bad!r} {expected}")
    command = settings.click_option(name)(click.command()(lambda **kw: None))
    out = CliRunner().invoke(command, [s.flag, str(bad)])
    assert out.exit_code == 2 and f"{s.flag} {bad!r} {expected}" in " ".join(out.output.split())


def test_fine_tune_config_reads_the_same_table() -> None:
    with pytest.raises(FinetuneError, match=r"lr 0 is not valid; use a number > 0"):
        FinetuneConfig(method="head", source="a", target="b", model="m", lr=0)
    with pytest.raises(FinetuneError, match=r"method 'lroa' is not valid \(did you mean 'lora'\?\)"):
        FinetuneConfig(method="lroa", source="a", target="b", model="m")
    with pytest.raises(StudyError, match=r"method 'lroa' is not valid \(did you mean 'lora'\?\)"):
        parse_study(_study(method="lroa"))
    with pytest.raises(FinetuneError, match="layer weighted: --method head does not support it yet"):
        FinetuneConfig(method="head", source="a", target="b", model="m", layer="weighted")
    assert ProbeConfig(source="a", target="b", model="m", layer="weighted").layer == "weighted"  # the probe learns them


def test_click_options_carry_the_tables_choices_default_and_help() -> None:
    @click.command()
    @settings.options("classifier", "norm", "seeds", "layer", "dev_fraction")
    def command(**kw) -> None:
        click.echo(repr(sorted(kw.items())))

    params = {p.name: p for p in command.params}
    for name in ("classifier", "norm", "seeds", "layer", "dev_fraction"):
        assert params[name].default == settings.setting(name).default
        assert params[name].help == settings.option_help(settings.setting(name))
    help_text = " ".join(CliRunner().invoke(command, ["--help"]).output.split())
    assert all(c in help_text for c in classifier_names())
    out = CliRunner().invoke(command, ["--layer", "concat:3, 6", "--seeds", "2", "--classifier", "svm"])
    assert out.exit_code == 0 and "('layer', 'concat:3,6')" in out.output and "('seeds', 2)" in out.output
