"""Extraction on Ray: same bytes as a local run, worker and driver faults, clear errors.

One local Ray runtime (2 CPUs) is shared by the module: it takes ~15 s to start.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from cli.main import fs
from data_manifests.manifest import Manifest, build_manifest
from data_manifests.synth import generate_corpus
from featurestore.distributed import DistributedError, EncoderSpec, RayOptions, RayRunner, connect
from featurestore.encoders import load_encoder
from featurestore.extract import ExtractOptions, extract, run_extraction
from featurestore.noise import NoiseSpec
from featurestore.store import FeatureStore, StoreGroup

ray = pytest.importorskip("ray")

OPTIONS = ExtractOptions(batch_size=2, frame_layers=(1,), commit_rows=1, progress=False)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Local runs here use the workers' one thread: float sums differ in the last bits across thread counts."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ray_address() -> str:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    root = generate_corpus("urdu", tmp_path_factory.mktemp("synth") / "urdu", size="tiny")
    return build_manifest("urdu", "urdu", root)


@pytest.fixture(scope="module")
def noise_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(1)
    for name in ("hum", "babble"):
        sf.write(folder / f"{name}.wav", rng.normal(0, 0.2, 16000 * 3).astype(np.float32), 16000)
    return folder


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, manifest: Manifest) -> dict[str, np.ndarray]:
    """The local single-process store of the plan every test here uses."""
    store = FeatureStore(tmp_path_factory.mktemp("ref") / "s.zarr")
    result = extract(manifest, load_encoder("tiny-wav2vec2"), store, options=OPTIONS)
    return _arrays(store.open(result.key))


def _arrays(group: StoreGroup) -> dict[str, np.ndarray]:
    names = ["utt_ids", "audio_sha256", "mean", "std", "n_frames", "status", "batch_start", "batch_done"]
    if "noise" in group.group:
        names += ["noise/recording", "noise/offset", "noise/snr_db"]
    for layer in group.frame_layers:
        names += [f"frames/layer_{layer}/offsets", f"frames/layer_{layer}/values"]
    return {name: np.asarray(group.group[name][:]) for name in names}


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert np.array_equal(a[name], b[name], equal_nan=a[name].dtype.kind == "f"), name


def _spec() -> EncoderSpec:
    return EncoderSpec("tiny-wav2vec2")


def test_cli_ray_store_equals_local_store(tmp_path: Path, ray_address: str, manifest: Manifest,
                                          noise_dir: Path) -> None:
    noise = NoiseSpec(source=str(noise_dir), snr_db=5.0, seed=3)
    local = FeatureStore(tmp_path / "local.zarr")
    key = extract(manifest, load_encoder("tiny-wav2vec2"), local, noise=noise, options=OPTIONS).key
    ws = tmp_path / "ws"
    runner = CliRunner()
    res = runner.invoke(fs, ["--workspace", str(ws), "corpus", "add", "urdu", "--layout", "urdu",
                             "--root", manifest.root])
    assert res.exit_code == 0, res.output
    res = runner.invoke(fs, ["--workspace", str(ws), "extract", "--model", "tiny-wav2vec2", "--corpus", "urdu",
                             "--noise", str(noise_dir), "--snr", "5", "--noise-seed", "3", "--backend", "ray",
                             "--workers", "2", "--batch-size", "2", "--frames", "1", "--commit-rows", "1"])
    assert res.exit_code == 0, res.output
    store = FeatureStore(ws / "store.zarr")
    assert store.keys() == [key]
    group = store.open(key)
    assert group.is_complete and "ray, 2 workers" in group.attrs["device"]
    _assert_same(_arrays(group), _arrays(local.open(key)))


class _KillingRunner:
    """Passes blocks through; after the first one, kills worker 0 (Ray restarts it) and worker 1 for good."""

    def __init__(self, runner: RayRunner):
        self.runner, self.info, self.device = runner, runner.info, runner.device
        self.killed: list[int] = []

    def blocks(self, *args, **kwargs):
        for i, block in enumerate(self.runner.blocks(*args, **kwargs)):
            if i == 0:
                self.killed = [ray.get(a.hello.remote())["pid"] for a in self.runner.actors]
                ray.kill(self.runner.actors[0], no_restart=False)
                ray.kill(self.runner.actors[1], no_restart=True)
            yield block


def test_killed_workers_are_retried_and_the_store_is_identical(tmp_path: Path, ray_address: str,
                                                                manifest: Manifest,
                                                                reference: dict[str, np.ndarray]) -> None:
    store = FeatureStore(tmp_path / "s.zarr")
    with RayRunner(_spec(), RayOptions(workers=2, in_flight=3)) as runner:
        killer = _KillingRunner(runner)
        result = run_extraction(manifest, killer, store, options=OPTIONS)
        restarted = ray.get(runner.actors[0].hello.remote())["pid"]
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(runner.actors[1].hello.remote())
    assert restarted != killer.killed[0]  # worker 0 was really killed and came back
    assert result.processed == len(manifest)
    group = store.open(result.key)
    assert group.is_complete
    _assert_same(_arrays(group), reference)


def test_killed_driver_resumes_to_identical_store(tmp_path: Path, ray_address: str, manifest: Manifest,
                                                  reference: dict[str, np.ndarray]) -> None:
    manifest_path = manifest.save(tmp_path / "urdu.json")
    store_path = tmp_path / "s.zarr"
    script = textwrap.dedent(f"""
        import os, signal
        from data_manifests.manifest import Manifest
        from featurestore.distributed import EncoderSpec, RayOptions, RayRunner
        from featurestore.extract import ExtractOptions, run_extraction
        from featurestore.store import FeatureStore

        class DieAfterThree:
            def __init__(self, runner):
                self.runner, self.info, self.device = runner, runner.info, runner.device
            def blocks(self, *args):
                for i, block in enumerate(self.runner.blocks(*args)):
                    if i == 3:  # three blocks committed; this one is in hand: the driver dies
                        os.kill(os.getpid(), signal.SIGKILL)
                    yield block

        options = ExtractOptions(batch_size=2, frame_layers=(1,), commit_rows=1, progress=False)
        with RayRunner(EncoderSpec("tiny-wav2vec2"), RayOptions(address={ray_address!r}, workers=1)) as runner:
            run_extraction(Manifest.load({str(manifest_path)!r}), DieAfterThree(runner),
                           FeatureStore({str(store_path)!r}), options=options)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    store = FeatureStore(store_path)
    key, = store.keys()
    assert not store.open(key).is_complete and store.open(key).batches_done().sum() == 3
    with RayRunner(_spec(), RayOptions(workers=1)) as runner:  # one worker each: fewer processes to start
        resumed = run_extraction(manifest, runner, store, options=OPTIONS)
    assert resumed.resumed and resumed.rows_before == 6 and resumed.processed == len(manifest) - 6
    _assert_same(_arrays(store.open(key)), reference)


@pytest.mark.slow
def test_sigterm_to_a_ray_extract_exits_143_and_resumes_exactly(tmp_path: Path, ray_address: str, manifest: Manifest,
                                                                 reference: dict[str, np.ndarray]) -> None:
    """`fs extract --backend ray` under SIGTERM: the local contract (rows committed, exit 143), not a C++ abort."""
    from featurestore.workspace import Workspace

    ws = tmp_path / "ws"
    Workspace.open(ws).save_manifest(manifest)
    script = textwrap.dedent(f"""
        import os, signal, sys
        from featurestore import distributed

        compute = distributed.RayRunner.blocks

        def blocks(self, *args):  # SIGTERM arrives with the fourth block in hand
            for i, block in enumerate(compute(self, *args)):
                if i == 3:
                    os.kill(os.getpid(), signal.SIGTERM)
                yield block

        distributed.RayRunner.blocks = blocks
        sys.argv = ["fs", "extract", "--backend", "ray", "--address", {ray_address!r}, "--workers", "1",
                    "--model", "tiny-wav2vec2", "--corpus", "urdu", "--batch-size", "2", "--frames", "1",
                    "--commit-rows", "1"]
        from cli.main import main
        main()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180,
                          cwd=Path(__file__).resolve().parents[1], env={**os.environ, "FS_WORKSPACE": str(ws)})
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert "SIGTERM: stopped urdu/clean/" in proc.stderr and "rows committed; re-run the same command" in proc.stderr
    assert "SIGTERM received" not in proc.stderr  # no C++ stack stub
    store = FeatureStore(ws / "store.zarr")
    key, = store.keys()
    assert not store.open(key).is_complete
    with RayRunner(_spec(), RayOptions(address=ray_address, workers=1)) as runner:
        resumed = run_extraction(manifest, runner, store, options=OPTIONS)
    assert resumed.resumed and resumed.rows_before > 0
    _assert_same(_arrays(store.open(key)), reference)


def test_unreachable_address_is_a_clear_error(tmp_path: Path, ray_address: str, manifest: Manifest) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DistributedError, match=rf"127\.0\.0\.1:{port}.*ray start --head"):
        connect(f"127.0.0.1:{port}")
    ws = tmp_path / "ws"
    runner = CliRunner()
    runner.invoke(fs, ["--workspace", str(ws), "corpus", "add", "urdu", "--layout", "urdu", "--root", manifest.root])
    res = runner.invoke(fs, ["--workspace", str(ws), "extract", "--model", "tiny-wav2vec2", "--corpus", "urdu",
                             "--backend", "ray", "--address", f"127.0.0.1:{port}"])
    assert res.exit_code == 1 and f"127.0.0.1:{port}" in res.output and "Traceback" not in res.output
    assert not (ws / "store.zarr").exists()
    res = runner.invoke(fs, ["--workspace", str(ws), "extract", "--model", "tiny-wav2vec2", "--corpus", "urdu",
                             "--address", "auto"])
    assert res.exit_code == 2 and "--backend ray" in res.output


def test_worker_that_cannot_load_the_model_names_node_and_fix(tmp_path: Path, ray_address: str) -> None:
    missing = tmp_path / "weights-only-on-the-driver"
    with pytest.raises(DistributedError, match=r"worker on node .*cannot load encoder.*Every node needs the weights"):
        with RayRunner(EncoderSpec(str(missing)), RayOptions(workers=1)):
            pass
    assert not os.path.exists(tmp_path / "s.zarr")


def test_sweep_on_ray_equals_the_local_sweep(tmp_path: Path, ray_address: str) -> None:
    """`fs sweep --backend ray`: the cells run as Ray tasks, the driver alone writes the ledger."""
    from classifiers.studies.ledger import Ledger
    from classifiers.studies.sweep import parse_study, run_sweep
    from featurestore.workspace import Workspace

    results = {}
    for backend in ("local", "ray"):
        ws = Workspace.open(tmp_path / backend)
        store = FeatureStore(ws.store_url)
        for layout in ("urdu", "emodb"):
            root = tmp_path / "corpora" / layout
            if not root.exists():
                generate_corpus(layout, root, size="tiny")
            manifest = build_manifest(layout, layout, root)
            ws.save_manifest(manifest)
            extract(manifest, load_encoder("logmel"), store, options=ExtractOptions(progress=False))
        study = parse_study({"name": "r", "defaults": {"seeds": 2, "classifiers": "logreg"}, "experiments": [
            {"name": "x", "pairs": ["urdu->emodb", "emodb->urdu"], "models": "logmel", "shots": [0, 2]}]})
        results[backend] = run_sweep(study, store, ws, n_jobs=2, progress=False, backend=backend,
                                     address=ray_address if backend == "ray" else None)
        assert len(Ledger.open(ws).rows(study="r")) == 4
    assert [r["config_key"] for r in results["ray"]] == [r["config_key"] for r in results["local"]]
    assert [r["uar_per_seed"] for r in results["ray"]] == [r["uar_per_seed"] for r in results["local"]]
