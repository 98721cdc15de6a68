"""`fs demo`: the main job end to end on the embedded corpora, and idempotent when re-run."""

from pathlib import Path

from click.testing import CliRunner

from cli.main import fs
from featurestore.store import FeatureStore


def test_demo_runs_end_to_end_and_reruns_as_no_op(tmp_path: Path) -> None:
    args = ["--workspace", str(tmp_path), "demo", "--size", "tiny"]
    first = CliRunner().invoke(fs, args)
    assert first.exit_code == 0, first.output
    assert "verify: 8/8 groups OK" in first.output
    assert str(tmp_path / "store.zarr") in first.output
    for alias in ("wav2vec2", "xlsr", "whisper", "mms"):
        assert alias in first.output
    keys = FeatureStore(tmp_path / "store.zarr").keys()
    assert {k.corpus for k in keys} == {"iemocap", "emodb", "emovo", "urdu"}
    assert len({k.model for k in keys}) == 2
    second = CliRunner().invoke(fs, args)
    assert second.exit_code == 0 and second.output.count("already complete") == 8
