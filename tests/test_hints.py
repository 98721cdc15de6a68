"""One builder of printed `fs extract` commands: every hint reproduces its group's settings and parses."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from classifiers.studies.finetune import frames_command
from classifiers.studies.sweep import extract_command as sweep_command
from classifiers.studies.views import resolve_group
from cli.extract import extract as extract_cli
from data_manifests.manifest import Manifest, build_manifest
from data_manifests.synth import generate_corpus
from featurestore.encoders import load_encoder
from featurestore.extract import ExtractError, ExtractOptions, extract
from featurestore.hints import command_for_group, extract_command
from featurestore.noise import NoiseSpec
from featurestore.store import FeatureStore, StoreError


def parse(command: str) -> dict:
    """The parameters the real ``fs extract`` command parses from ``command`` (nothing runs)."""
    args = shlex.split(command)
    assert args[:2] == ["fs", "extract"], command
    with extract_cli.make_context("extract", args[2:]) as ctx:
        return dict(ctx.params)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    return build_manifest("urdu", "urdu", generate_corpus("urdu", tmp_path_factory.mktemp("c") / "urdu", size="tiny"))


@pytest.fixture(scope="module")
def noise_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("noise")
    sf.write(folder / "hum.wav", np.random.default_rng(0).normal(0, 0.2, 16000 * 3).astype(np.float32), 16000)
    return folder


@pytest.fixture(scope="module")
def trim_store(tmp_path_factory: pytest.TempPathFactory, manifest: Manifest, noise_dir: Path) -> FeatureStore:
    """A clean and a 10 dB trim-mode Whisper group, the noisy one with frames of layer 1."""
    store = FeatureStore(tmp_path_factory.mktemp("s") / "s.zarr")
    encoder = load_encoder("tiny-whisper", whisper_input="trim")
    extract(manifest, encoder, store, options=ExtractOptions(progress=False))
    extract(manifest, encoder, store, noise=NoiseSpec(str(noise_dir), snr_db=10, seed=3),
            options=ExtractOptions(frame_layers=(1,), progress=False))
    return store


def test_missing_noisy_trim_group_hint_keeps_trim_and_parses(trim_store: FeatureStore, noise_dir: Path) -> None:
    noise = {"noise": str(noise_dir), "snr_db": 0.0, "noise_seed": 3}
    with pytest.raises(StoreError) as err:
        resolve_group(trim_store, "urdu", "tiny-whisper", noise, whisper_input="trim")
    command = str(err.value).split("Make it with: ")[1]
    assert "--whisper-input trim" in command
    params = parse(command)
    assert params["whisper_input"] == "trim" and params["model_name"] == "tiny-whisper"
    assert params["corpora"] == ("urdu",) and params["noise"] == str(noise_dir)
    assert params["snrs"] == (0.0,) and params["noise_seed"] == 3


def test_recorded_and_frames_commands_reproduce_the_group(trim_store: FeatureStore, noise_dir: Path) -> None:
    noisy = next(trim_store.open(k) for k in trim_store.keys() if k.condition != "clean")
    assert noisy.extract_command() == command_for_group(noisy.provenance, "urdu")
    params = parse(noisy.extract_command())
    assert (params["whisper_input"], params["snrs"], params["noise_seed"], params["frames"]) == ("trim", (10.0,), 3, (1,))
    more = parse(frames_command(noisy, 0))  # adds layer 0, keeps layer 1 and every other setting
    assert (more["frames"], more["overwrite"], more["whisper_input"], more["noise"]) == ((0, 1), True, "trim",
                                                                                          str(noise_dir))
    with pytest.raises(StoreError) as err:
        noisy.frame_offsets(2)
    assert parse(str(err.value).split("extract them with ")[1])["frames"] == (1, 2)


def test_adding_frames_says_why_not_in_place_and_how(trim_store: FeatureStore, manifest: Manifest) -> None:
    with pytest.raises(ExtractError) as err:
        extract(manifest, load_encoder("tiny-whisper", whisper_input="trim"), trim_store,
                options=ExtractOptions(frame_layers=(2,), progress=False))
    message = str(err.value)
    assert "cannot be added to a stored group in place" in message
    params = parse(message.split("To do it: ")[1])
    assert (params["frames"], params["overwrite"], params["whisper_input"]) == ((2,), True, "trim")


def test_sweep_and_builder_agree() -> None:
    filters = {"whisper_input": "trim", "seed": 2, "snr_db": 5.0, "noise": "/n", "noise_seed": 1}
    assert sweep_command(["a", "b"], "xlsr-random", filters) == extract_command(
        "xlsr-random", ["a", "b"], whisper_input="trim", seed=2, noise="/n", snr_db=5, noise_seed=1)
    params = parse(sweep_command(["a", "b"], "xlsr-random", filters))
    assert (params["corpora"], params["seed"], params["snrs"], params["noise_seed"]) == (("a", "b"), 2, (5.0,), 1)
    assert "NOISE_DIR" in extract_command("m", ["c"], noisy=True)
