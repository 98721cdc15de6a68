"""Stores on S3: a real S3-compatible server (moto's server mode) started by the test, s3fs in between.

Extraction, verify, info, views and export on ``s3://``; the group lease; a missing bucket and a
bucket that denies writes give clear errors and leave the store unchanged.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import fs
from data_manifests.manifest import Manifest, build_manifest
from data_manifests.synth import generate_corpus
from featurestore.encoders import load_encoder
from featurestore.errors import Interrupted
from featurestore.extract import ExtractOptions, extract, model_key
from featurestore.store import FeatureStore, StoreError, StoreGroup, StoreKey
from featurestore.view import load_view

moto_server = pytest.importorskip("moto.server")
pytest.importorskip("s3fs")

BUCKET, READ_ONLY = "fs-test", "fs-read-only"
OPTIONS = ExtractOptions(batch_size=4, frame_layers=(1,), commit_rows=1, progress=False)


@pytest.fixture(scope="module")
def s3() -> str:
    """The endpoint of a local S3 server with a writable bucket and one whose policy denies writes."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3
    import s3fs

    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    client.create_bucket(Bucket=READ_ONLY)
    deny = {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Principal": "*",
                                                    "Action": ["s3:PutObject", "s3:DeleteObject"],
                                                    "Resource": f"arn:aws:s3:::{READ_ONLY}/*"}]}
    client.put_bucket_policy(Bucket=READ_ONLY, Policy=json.dumps(deny))
    s3fs.S3FileSystem.clear_instance_cache()
    yield endpoint
    s3fs.S3FileSystem.clear_instance_cache()
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    root = generate_corpus("urdu", tmp_path_factory.mktemp("synth") / "urdu", size="tiny")
    return build_manifest("urdu", "urdu", root)


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("tiny-wav2vec2")


def _objects(bucket: str, prefix: str = "") -> list[str]:
    import boto3

    listing = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def _arrays(group: StoreGroup) -> dict[str, np.ndarray]:
    names = ["utt_ids", "audio_sha256", "mean", "std", "n_frames", "status", "batch_start", "batch_done",
             "frames/layer_1/offsets", "frames/layer_1/values"]
    return {name: np.asarray(group.group[name][:]) for name in names}


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    for name in a:
        assert np.array_equal(a[name], b[name]), name


def _cli(ws: Path, store: str, *args: str) -> object:
    return CliRunner().invoke(fs, ["--workspace", str(ws), "--store", store, *args])


def test_extract_verify_view_export_on_s3(tmp_path: Path, s3: str, manifest: Manifest, encoder) -> None:
    url = f"s3://{BUCKET}/stores/cli.zarr"
    ws = tmp_path / "ws"
    res = _cli(ws, url, "corpus", "add", "urdu", "--layout", "urdu", "--root", manifest.root)
    assert res.exit_code == 0, res.output
    res = _cli(ws, url, "extract", "--model", "tiny-wav2vec2", "--corpus", "urdu", "--batch-size", "4",
               "--frames", "1", "--commit-rows", "1")
    assert res.exit_code == 0, res.output
    assert not _objects(BUCKET, "stores/cli.zarr.locks/")  # the lease is released
    local = FeatureStore(tmp_path / "local.zarr")
    key = extract(manifest, encoder, local, options=OPTIONS).key
    store = FeatureStore(url)
    assert store.keys() == [key] and store.has(key) and store.open(key).is_complete
    _assert_same(_arrays(store.open(key)), _arrays(local.open(key)))

    res = _cli(ws, url, "extract", "--model", "tiny-wav2vec2", "--corpus", "urdu", "--batch-size", "4",
               "--frames", "1")
    assert res.exit_code == 0 and "already complete" in res.output
    res = _cli(ws, url, "store", "verify")
    assert res.exit_code == 0 and "OK" in res.output, res.output
    res = _cli(ws, url, "store", "info", key.path)
    assert res.exit_code == 0, res.output
    assert 0 < store.disk_bytes(key) <= store.disk_bytes()
    view = load_view(store, manifest, "tiny-wav2vec2", layers=1)
    assert view.X.shape == (len(manifest), encoder.info.dim) and set(view.labels) == set(manifest.column("label"))
    ids, frames = store.open(key).frames(1)
    assert len(frames) == len(manifest) and all(f.shape[0] > 0 for f in frames)
    out = tmp_path / "out.h5"
    res = _cli(ws, url, "store", "export", key.path, "--out", str(out))
    assert res.exit_code == 0, res.output
    with h5py.File(out) as h5:
        assert np.array_equal(h5["mean"][:], _arrays(local.open(key))["mean"])


def test_damage_is_found_and_repaired_on_s3(tmp_path: Path, s3: str, manifest: Manifest, encoder) -> None:
    store = FeatureStore(f"s3://{BUCKET}/stores/damage.zarr")
    key = extract(manifest, encoder, store, options=OPTIONS).key
    reference = _arrays(store.open(key))
    import boto3

    boto3.client("s3").delete_object(Bucket=BUCKET, Key=f"stores/damage.zarr/{key.path}/mean/c/0/0/0")
    bad, problems = store.open(key).damage()
    assert bad.all() and [str(p) for p in problems] == ["mean: chunk 0.0.0 is missing"]
    with pytest.raises(StoreError, match="missing|NaN"):
        store.open(key).pooled(layer=0)
    again = extract(manifest, encoder, store, options=OPTIONS)
    assert again.processed == len(manifest)
    _assert_same(_arrays(store.open(key)), reference)


def test_group_lease_excludes_a_second_writer_and_is_freed(tmp_path: Path, s3: str, manifest: Manifest,
                                                           encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"s3://{BUCKET}/stores/lease.zarr"
    store = FeatureStore(url)
    key = StoreKey(manifest.name, "clean", model_key(encoder.info))
    lease_key = f"stores/lease.zarr.locks/{key.path.replace('/', '__')}.lock"
    with store.lock(key):
        assert _objects(BUCKET, lease_key) == [lease_key]
        held = json.loads(_read(lease_key))
        assert held["pid"] == os.getpid() and held["expires"] > time.time()
        with pytest.raises(StoreError, match=rf"another process \(pid {os.getpid()}.*is writing {key}"):
            extract(manifest, encoder, store, options=OPTIONS)
    assert not _objects(BUCKET, lease_key)

    original = StoreGroup.commit

    def stop_after_first(self, *args, **kwargs):
        original(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(StoreGroup, "commit", stop_after_first)
    with pytest.raises(Interrupted):
        extract(manifest, encoder, store, options=OPTIONS)
    monkeypatch.setattr(StoreGroup, "commit", original)
    assert not _objects(BUCKET, lease_key)  # released on the way out

    # a writer killed with its lease held: same host, dead pid -> taken over at once
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _write(lease_key, {"host": socket.gethostname(), "pid": int(dead.stdout), "token": "x",
                       "expires": time.time() + 60})
    resumed = extract(manifest, encoder, store, options=OPTIONS)
    assert resumed.resumed and resumed.rows_before == 4
    local = FeatureStore(tmp_path / "local.zarr")
    extract(manifest, encoder, local, options=OPTIONS)
    _assert_same(_arrays(store.open(key)), _arrays(local.open(key)))
    # another host's lease, expired -> taken over; alive -> refused
    _write(lease_key, {"host": "elsewhere", "pid": 1, "token": "y", "expires": time.time() - 1})
    with store.lock(key):
        pass
    _write(lease_key, {"host": "elsewhere", "pid": 1, "token": "y", "expires": time.time() + 60})
    with pytest.raises(StoreError, match="pid 1 on elsewhere"):
        with store.lock(key):
            pass


def _read(key: str) -> bytes:
    import boto3

    return boto3.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()


def _write(key: str, body: dict) -> None:
    import boto3

    boto3.client("s3").put_object(Bucket=BUCKET, Key=key, Body=json.dumps(body).encode())


def test_missing_bucket_is_a_clear_error(tmp_path: Path, s3: str, manifest: Manifest) -> None:
    url = "s3://no-such-bucket/s.zarr"
    ws = tmp_path / "ws"
    assert _cli(ws, url, "corpus", "add", "urdu", "--layout", "urdu", "--root", manifest.root).exit_code == 0
    res = _cli(ws, url, "extract", "--model", "tiny-wav2vec2", "--corpus", "urdu")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert url in res.output and "'no-such-bucket' does not exist" in res.output and "create it" in res.output


def test_bucket_that_denies_writes_is_a_clear_error_and_stays_unchanged(tmp_path: Path, s3: str,
                                                                        manifest: Manifest) -> None:
    url = f"s3://{READ_ONLY}/s.zarr"
    ws = tmp_path / "ws"
    assert _cli(ws, url, "corpus", "add", "urdu", "--layout", "urdu", "--root", manifest.root).exit_code == 0
    res = _cli(ws, url, "extract", "--model", "tiny-wav2vec2", "--corpus", "urdu")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert url in res.output and "access denied" in res.output and "s3:PutObject" in res.output
    assert _objects(READ_ONLY) == []


def test_missing_bucket_is_an_error_for_read_commands_too(tmp_path: Path, s3: str) -> None:
    url = "s3://no-such-bucket/s.zarr"
    for args in (("store", "ls"), ("store", "verify"), ("store", "info", "urdu/clean/m")):
        res = _cli(tmp_path / "ws", url, *args)
        assert res.exit_code == 1 and "Traceback" not in res.output and "empty" not in res.output, res.output
        assert "'no-such-bucket' does not exist" in res.output and s3 in res.output


def test_refused_credentials_are_not_a_missing_bucket(tmp_path: Path, s3: str, manifest: Manifest,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from moto import settings
    from moto.core.responses import ActionAuthenticatorMixin

    ws = tmp_path / "ws"
    assert _cli(ws, f"s3://{BUCKET}/s.zarr", "corpus", "add", "urdu", "--layout", "urdu", "--root",
                manifest.root).exit_code == 0
    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # moto checks credentials: "testing" is unknown
    monkeypatch.setattr(ActionAuthenticatorMixin, "request_count", 0)
    for args in (("store", "ls"), ("extract", "--model", "tiny-wav2vec2", "--corpus", "urdu")):
        res = _cli(ws, f"s3://{BUCKET}/s.zarr", *args)
        assert res.exit_code == 1 and "Traceback" not in res.output, res.output
        assert "access denied" in res.output and "credentials" in res.output and s3 in res.output, res.output
        assert "does not exist; create it" not in res.output and "empty" not in res.output


@pytest.mark.slow
def test_unreachable_endpoint_is_named_within_seconds(tmp_path: Path, s3: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import s3fs

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        for args in (("store", "ls"), ("store", "verify")):
            started = time.perf_counter()
            res = _cli(tmp_path / "ws", f"s3://{BUCKET}/s.zarr", *args)
            assert time.perf_counter() - started < 20
            assert res.exit_code == 1 and "Traceback" not in res.output and "empty" not in res.output, res.output
            assert f"cannot reach the endpoint {closed}" in res.output and len(res.output.splitlines()) == 1
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
