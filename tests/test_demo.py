"""`fs demo`: the main job end to end on the embedded corpora, idempotent, and never touching a user's corpora."""

from pathlib import Path

from click.testing import CliRunner

from cli.main import fs
from data_manifests.synth import generate_corpus
from featurestore.demo import DEMO_STEPS, DemoRun, add_demo_corpora, run_demo
from featurestore.store import FeatureStore
from featurestore.workspace import Workspace

DEMO_NAMES = {"demo-iemocap", "demo-emodb", "demo-emovo", "demo-urdu"}


def test_demo_runs_end_to_end_and_reruns_as_no_op(tmp_path: Path) -> None:
    user_root = generate_corpus("urdu", tmp_path / "URDU", size="tiny")
    base = ["--workspace", str(tmp_path / "ws")]
    assert CliRunner().invoke(fs, [*base, "corpus", "add", "urdu", "--layout", "urdu", "--root", str(user_root)]
                              ).exit_code == 0
    mine = (tmp_path / "ws" / "manifests" / "urdu.json").read_bytes()
    args = [*base, "demo", "--size", "tiny"]
    first = CliRunner().invoke(fs, args)
    assert first.exit_code == 0, first.output
    assert "verify: 8/8 groups OK" in first.output
    assert str(tmp_path / "ws" / "store.zarr") in first.output
    for alias in ("wav2vec2", "xlsr", "whisper", "mms"):
        assert alias in first.output
    keys = FeatureStore(tmp_path / "ws" / "store.zarr").keys()
    assert {k.corpus for k in keys} == DEMO_NAMES
    assert len({k.model for k in keys}) == 2
    assert (tmp_path / "ws" / "manifests" / "urdu.json").read_bytes() == mine  # the user's corpus is untouched
    second = CliRunner().invoke(fs, args)
    assert second.exit_code == 0 and second.output.count("already complete") == 8
    assert (tmp_path / "ws" / "manifests" / "urdu.json").read_bytes() == mine


def test_demo_refuses_a_corpus_it_did_not_make(tmp_path: Path) -> None:
    user_root = generate_corpus("urdu", tmp_path / "mine", size="tiny")
    base = ["--workspace", str(tmp_path / "ws")]
    add = CliRunner().invoke(fs, [*base, "corpus", "add", "demo-urdu", "--layout", "urdu", "--root", str(user_root)])
    assert add.exit_code == 0
    before = (tmp_path / "ws" / "manifests" / "demo-urdu.json").read_bytes()
    res = CliRunner().invoke(fs, [*base, "demo", "--size", "tiny"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "'demo-urdu'" in res.stderr and "not made by the demo" in res.stderr and "fs corpus rm" in res.stderr
    assert (tmp_path / "ws" / "manifests" / "demo-urdu.json").read_bytes() == before


def test_demo_is_a_list_of_steps(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path)
    seen: list[str] = []

    def later_step(run: DemoRun) -> None:
        seen.append(f"{len(run.manifests)} manifests, {len(run.keys)} keys")
        run.outcome["later"] = True

    outcome = run_demo(ws, size="tiny", echo=lambda _: None, steps=[add_demo_corpora, later_step])
    assert set(outcome) == {"manifests", "later"} and set(outcome["manifests"]) == DEMO_NAMES
    assert seen == ["4 manifests, 0 keys"]
    assert set(ws.corpus_names()) == DEMO_NAMES and not (tmp_path / "store.zarr").exists()
    assert [s.__name__ for s in DEMO_STEPS] == ["add_demo_corpora", "extract_demo", "verify_demo"]
