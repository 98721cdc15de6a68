"""The `fs` command line: start-up without torch, one error path, validation, consistent options."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from cli.main import COMMANDS, fs
from data_manifests.manifest import build_manifest
from data_manifests.synth import generate_corpus
from featurestore.encoders import load_encoder
from featurestore.errors import Terminated
from featurestore.extract import ExtractOptions, extract
from featurestore.noise import NoiseSpec
from featurestore.store import FeatureStore
from featurestore.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]


def run(ws: Path, *args: str, **env: str) -> click.testing.Result:
    return CliRunner(env=env or None).invoke(fs, ["--workspace", str(ws), *args])


def _env(ws: Path) -> dict[str, str]:
    return {**os.environ, "FS_WORKSPACE": str(ws), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def urdu_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_corpus("urdu", tmp_path_factory.mktemp("synth") / "urdu", size="tiny")


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory, urdu_root: Path) -> Path:
    """A workspace with corpus ``urdu`` and four groups: logmel clean (frames 0) and 5 dB noise,
    tiny-whisper full and trim."""
    ws = Workspace.open(tmp_path_factory.mktemp("ws"))
    manifest = build_manifest("urdu", "urdu", urdu_root)
    ws.save_manifest(manifest)
    noise = ws.root.parent / "street"
    noise.mkdir()
    sf.write(noise / "hum.wav", np.random.default_rng(1).normal(0, 0.2, 16000 * 3).astype(np.float32), 16000)
    store = FeatureStore(ws.store_url)
    logmel = load_encoder("logmel")
    extract(manifest, logmel, store, options=ExtractOptions(frame_layers=(0,), progress=False))
    extract(manifest, logmel, store, noise=NoiseSpec(source=str(noise), snr_db=5.0, seed=3),
            options=ExtractOptions(progress=False))
    for mode in ("full", "trim"):
        extract(manifest, load_encoder("tiny-whisper", whisper_input=mode), store,
                options=ExtractOptions(progress=False))
    return ws.root


def _copy(ws: Path, dst: Path) -> Path:
    shutil.copytree(ws, dst)
    return dst


def _keys(ws: Path) -> list[str]:
    return [k.path for k in FeatureStore(ws / "store.zarr").keys()]


# -- 1. start-up: no torch, no transformers for help, corpus and store listings ----------------

def test_light_commands_never_import_torch(filled: Path) -> None:
    key = _keys(filled)[0]
    script = (
        "import sys\n"
        "from cli.main import fs\n"
        "for args in (['--help'], ['--version'], ['corpus', 'ls'], ['corpus', 'show', 'urdu'], ['store', 'ls'],\n"
        "             ['store', 'ls', '--help'], ['store', 'info', sys.argv[1]], ['extract', '--help'],\n"
        "             ['store', 'verify', '--help'], ['demo', '--help'], ['models', '--help']):\n"
        "    try:\n"
        "        fs.main(args, prog_name='fs')\n"
        "    except SystemExit as exc:\n"
        "        assert not exc.code, (args, exc.code)\n"
        "loaded = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "print('LOADED', loaded, file=sys.stderr)\n"
        "sys.exit(3 if loaded else 0)\n")
    res = subprocess.run([sys.executable, "-c", script, key], env=_env(filled), capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert "LOADED []" in res.stderr
    assert "CORPUS" in res.stdout and "Commands:" in res.stdout


def test_help_names_environment_and_every_option_has_help() -> None:
    res = CliRunner().invoke(fs, ["--help"])
    assert res.exit_code == 0
    for word in ("FS_WORKSPACE", "FS_STORE", "FS_DEBUG", "corpus", "extract", "store", "demo", "models"):
        assert word in res.output

    def walk(cmd: click.Command, path: str) -> None:
        for param in cmd.params:
            if isinstance(param, click.Option) and not param.hidden and param.name != "help":
                assert param.help, f"{path} {param.opts} has no help text"
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd)
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), f"{path} {name}")

    walk(fs, "fs")


def test_lazy_registration_is_a_plain_list() -> None:
    names = [name for name, _, _ in COMMANDS]
    assert {"corpus", "extract", "models", "store", "demo"} <= set(names)
    assert all(":" in target and short for _, target, short in COMMANDS)


def test_extract_help_states_the_library_defaults() -> None:
    """Help text and ExtractOptions must not drift apart."""
    text = " ".join(CliRunner().invoke(fs, ["extract", "--help"]).output.split())
    defaults = ExtractOptions()
    assert f"[default: {defaults.batch_seconds:g}]" in text
    assert f"[default: {defaults.batch_size}]" in text


# -- 2. one error path: FsError, Ctrl-C, SIGTERM, bugs, OSError, broken pipe ----------------------

def test_fs_error_is_one_line_on_stderr(tmp_path: Path) -> None:
    res = run(tmp_path, "corpus", "show", "nope")
    assert res.exit_code == 1
    assert res.stderr.startswith("error: corpus 'nope' is not added") and res.stdout == ""
    assert "Traceback" not in res.output and len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("exc, code, line", [(KeyboardInterrupt(), 130, "interrupted"),
                                             (Terminated(), 143, "interrupted (SIGTERM)")])
def test_interrupt_during_model_loading(tmp_path: Path, urdu_root: Path, monkeypatch: pytest.MonkeyPatch,
                                        exc: BaseException, code: int, line: str) -> None:
    import featurestore.encoders

    assert run(tmp_path, "corpus", "add", "u", "--layout", "urdu", "--root", str(urdu_root)).exit_code == 0

    def loading(*_a, **_k):
        raise exc

    monkeypatch.setattr(featurestore.encoders, "load_encoder", loading)
    res = run(tmp_path, "extract", "--model", "logmel", "--corpus", "u")
    assert res.exit_code == code and res.stderr.strip() == line and "Traceback" not in res.output


def test_unexpected_error_names_a_bug_and_hides_the_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self, name):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(Workspace, "load_manifest", boom)
    res = run(tmp_path, "corpus", "show", "x")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "ZeroDivisionError: boom" in res.stderr and "bug in fs" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = run(tmp_path, "corpus", "show", "x", FS_DEBUG="1")
    assert res.exit_code == 1 and "Traceback" in res.stderr and "bug in fs" in res.stderr
    res = CliRunner().invoke(fs, ["--debug", "--workspace", str(tmp_path), "corpus", "show", "x"])
    assert "Traceback" in res.stderr


def test_disk_full_is_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(self, name):
        raise OSError(28, "No space left on device", str(tmp_path / "m.json"))

    monkeypatch.setattr(Workspace, "load_manifest", full)
    res = run(tmp_path, "corpus", "show", "x")
    assert res.exit_code == 1 and res.stderr.startswith("error: disk full") and str(tmp_path) in res.stderr
    assert "bug" not in res.stderr


def test_broken_pipe_is_silent(filled: Path) -> None:
    """`fs store ls | head -1`: the reader is gone before fs writes."""
    read, write = os.pipe()
    os.close(read)
    proc = subprocess.run([sys.executable, "-m", "cli.main", "store", "ls"], stdout=write, stderr=subprocess.PIPE,
                          env=_env(filled), timeout=60)
    os.close(write)
    err = proc.stderr.decode()
    assert proc.returncode in (0, 141), err
    assert err == "", err


def _csv_corpus(folder: Path, n: int) -> Path:
    """A csv corpus of ``n`` one-second utterances (four recordings, each listed under many ids)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    labels = ("angry", "happy", "neutral", "sad")
    for label in labels:
        sf.write(folder / f"{label}.wav", rng.normal(0, 0.1, 16000).astype(np.float32), 16000)
    rows = [f"{labels[i % 4]}.wav,{labels[i % 4]},s{i % 5},u{i:03d}" for i in range(n)]
    (folder / "t.csv").write_text("path,label,speaker,utt_id\n" + "\n".join(rows) + "\n")
    return folder / "t.csv"


def test_sigterm_keeps_rows_exits_143_and_resumes(tmp_path: Path) -> None:
    table = _csv_corpus(tmp_path / "c", 64)
    ws = tmp_path / "ws"
    env = _env(ws)
    assert run(ws, "corpus", "add", "urdu", "--layout", "csv", "--root", str(table)).exit_code == 0
    args = [sys.executable, "-m", "cli.main", "extract", "--model", "tiny-wav2vec2", "--corpus", "urdu",
            "--no-progress", "--batch-size", "1", "--commit-rows", "1"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = FeatureStore(ws / "store.zarr")
    deadline = time.time() + 60
    committed = 0
    while time.time() < deadline and proc.poll() is None and not committed:
        try:
            committed = int(store.open(store.keys()[0]).batches_done().sum()) if store.keys() else 0
        except Exception:  # the writer is creating the group
            committed = 0
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert committed, "no commit observed before the run ended"
    assert proc.returncode == 143, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "SIGTERM" in err or "interrupted" in err
    group = store.open(store.keys()[0])
    assert not group.is_complete and group.batches_done().sum() >= committed
    again = run(ws, *args[3:-2])  # the same command, in this process (torch is loaded), one commit at the end
    assert again.exit_code == 0, again.output
    assert "resumed with" in again.stdout
    res = run(ws, "store", "verify")
    assert res.exit_code == 0 and res.output.startswith("OK"), res.output


# -- 3. validation instead of tracebacks --------------------------------------------------------

@pytest.mark.parametrize("args, expected", [
    (["--workers", "-1"], "--workers"),
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-seconds", "0"], "--batch-seconds"),
    (["--chunk-seconds", "-2"], "--chunk-seconds"),
    (["--commit-rows", "0"], "--commit-rows"),
    (["--frames", "x"], "give layer numbers like 6,12"),
    (["--frames", "-1"], "0 (the input to the first layer) or more"),
    (["--device", "gpu"], "use cpu, cuda, cuda:N or mps"),
    (["--snr", "5"], "--snr needs --noise DIR"),
    (["--noise-seed", "2"], "--noise-seed needs --noise DIR"),
    (["--noise-env", "KITCHEN"], "--noise-env needs --noise DIR"),
])
def test_extract_refuses_bad_values(tmp_path: Path, args: list[str], expected: str) -> None:
    res = run(tmp_path, "extract", "--model", "logmel", "--corpus", "u", *args)
    assert res.exit_code == 2, res.output
    assert expected in res.stderr and "Traceback" not in res.output
    assert not (tmp_path / "store.zarr").exists()


# -- 4. consistency: --overwrite, --on-bad-audio, corpus rm, --json, headers -----------------------

def test_corpus_add_overwrite_force_alias_and_on_bad_audio(tmp_path: Path, urdu_root: Path) -> None:
    args = ("corpus", "add", "u", "--layout", "urdu", "--root", str(urdu_root))
    assert run(tmp_path, *args).exit_code == 0
    res = run(tmp_path, *args)
    assert res.exit_code == 1 and "--overwrite" in res.stderr
    assert run(tmp_path, *args, "--overwrite").exit_code == 0
    assert run(tmp_path, *args, "--force").exit_code == 0  # deprecated, hidden
    assert "--force" not in run(tmp_path, "corpus", "add", "--help").output
    bad = tmp_path / "bad"
    shutil.copytree(urdu_root, bad)
    broken = sorted((bad / "Sad").glob("*.wav"))[0]
    broken.write_bytes(b"not audio")
    res = run(tmp_path, "corpus", "add", "b", "--layout", "urdu", "--root", str(bad))
    assert res.exit_code == 1 and str(broken) in res.stderr
    res = run(tmp_path, "corpus", "add", "b", "--layout", "urdu", "--root", str(bad), "--on-bad-audio", "skip")
    assert res.exit_code == 0, res.output
    assert [p for p, _ in Workspace.open(tmp_path).load_manifest("b").excluded_audio] == [str(broken)]


def test_corpus_rm_and_ls_json(tmp_path: Path, urdu_root: Path) -> None:
    for name in ("a", "b"):
        assert run(tmp_path, "corpus", "add", name, "--layout", "urdu", "--root", str(urdu_root)).exit_code == 0
    (tmp_path / "manifests" / "c.json").write_text("{not json")
    listing = run(tmp_path, "corpus", "ls")
    assert listing.exit_code == 0
    lines = listing.output.splitlines()
    assert lines[0].split() == ["NAME", "LAYOUT", "UTTS", "HOURS", "SPEAKERS", "MAP", "ROOT"]
    assert "unreadable" in lines[3] and lines[1].split()[:3] == ["a", "urdu", "12"]
    rows = json.loads(run(tmp_path, "corpus", "ls", "--json").output)
    assert [r["name"] for r in rows] == ["a", "b", "c"] and rows[0]["utterances"] == 12 and "error" in rows[2]
    res = run(tmp_path, "corpus", "rm", "a")  # no input: the confirmation aborts
    assert res.exit_code != 0 and (tmp_path / "manifests" / "a.json").exists()
    res = run(tmp_path, "corpus", "rm", "a", "--yes")
    assert res.exit_code == 0 and not (tmp_path / "manifests" / "a.json").exists()
    res = run(tmp_path, "corpus", "rm", "a", "--yes")
    assert res.exit_code == 1 and "not added" in res.stderr


def test_models_table_and_json() -> None:
    res = CliRunner().invoke(fs, ["models"])
    assert res.exit_code == 0 and res.output.split()[:4] == ["ALIAS", "FAMILY", "WEIGHTS", "MODEL_ID"]
    entries = json.loads(CliRunner().invoke(fs, ["models", "--json"]).output)
    assert {"wav2vec2", "whisper", "tiny-wav2vec2"} <= {e["alias"] for e in entries}


def test_every_listing_has_json(filled: Path) -> None:
    key = _keys(filled)[0]
    for args in (["corpus", "ls"], ["corpus", "show", "urdu"], ["store", "ls"], ["store", "info", key],
                 ["store", "verify"]):
        res = run(filled, *args, "--json")
        assert res.exit_code == 0, (args, res.output)
        json.loads(res.stdout)


# -- 5. store ls / info ----------------------------------------------------------------------------

def _columns(listing: str) -> list[dict[str, str]]:
    """Rows of `fs store ls` by column, cut at the header's (left-aligned) column starts."""
    lines = listing.splitlines()
    header = lines[0]
    names = [n for n in header.split() if n != "ROWS"]
    starts = [header.index(f" {n} ") + 1 if i else 0 for i, n in enumerate(names[:-1])] + [header.index(" KEY") + 1]
    rows = []
    for line in lines[1:]:
        row = {n: line[a:b].strip() for n, a, b in zip(names, starts, [*starts[1:], None])}
        row["FRAMES"], row["ROWS"] = row["FRAMES"].split()  # ROWS is right-aligned under its header
        rows.append(row)
    return rows


def test_store_ls_tells_groups_apart(filled: Path) -> None:
    res = run(filled, "store", "ls")
    assert res.exit_code == 0, res.output
    header = res.output.splitlines()[0].split()
    assert header == ["CORPUS", "CONDITION", "MODEL", "INPUT", "LAYERSxDIM", "FRAMES", "ROWS", "COMPLETE", "KEY"]
    rows = _columns(res.output)
    assert {r["KEY"] for r in rows} == set(_keys(filled))  # the KEY column is aligned
    assert sorted(r["INPUT"] for r in rows if r["MODEL"] == "tiny-whisper") == ["full", "trim"]
    assert sorted(r["CONDITION"] for r in rows if r["MODEL"] == "logmel") == ["clean", "street 5 dB seed 3"]
    clean_logmel = [r for r in rows if r["MODEL"] == "logmel" and r["CONDITION"] == "clean"][0]
    assert (clean_logmel["LAYERSxDIM"], clean_logmel["FRAMES"], clean_logmel["ROWS"]) == ("1x64", "0", "12/12")
    assert {r["COMPLETE"] for r in rows} == {"yes"} and {r["CORPUS"] for r in rows} == {"urdu"}
    summaries = json.loads(run(filled, "store", "ls", "--json").output)
    assert {s["key"] for s in summaries} == set(_keys(filled))
    assert {s["whisper_input"] for s in summaries if s["model"] == "tiny-whisper"} == {"full", "trim"}


def test_store_ls_lists_a_damaged_group_and_goes_on(filled: Path, tmp_path: Path) -> None:
    ws = _copy(filled, tmp_path / "ws")
    broken = _keys(ws)[0]
    (ws / "store.zarr" / broken / "zarr.json").write_text("garbage{")
    res = run(ws, "store", "ls")
    assert res.exit_code == 0 and "Traceback" not in res.output
    assert "unreadable:" in res.output and res.output.count("\n") == 5
    line = [x for x in res.output.splitlines() if broken in x][0]
    assert "unreadable" in line
    assert "error" in [s for s in json.loads(run(ws, "store", "ls", "--json").output) if s["key"] == broken][0]


def test_store_info_is_readable_and_json_is_raw(filled: Path) -> None:
    key = [k for k in _keys(filled) if "snr5" in k][0]
    res = run(filled, "store", "info", key)
    assert res.exit_code == 0, res.output
    text = res.output
    for word in ("model", "weights_hash", "condition     noise", "at 5 dB, seed 3", "12 stored", "complete",
                 "1 x 64", "on disk", "label map paper"):
        assert word in text, word
    assert not text.lstrip().startswith("{")
    attrs = json.loads(run(filled, "store", "info", key, "--json").output)
    assert attrs["model"]["name"] == "logmel" and attrs["condition"]["noise"]["spec"]["snr_db"] == 5.0


# -- 6. store verify ---------------------------------------------------------------------------------

def test_store_verify_ok_fail_and_json(filled: Path, tmp_path: Path) -> None:
    res = run(filled, "store", "verify")
    assert res.exit_code == 0 and res.output.count("OK  ") == 4
    ws = _copy(filled, tmp_path / "ws")
    damaged = [k for k in _keys(ws) if "/clean/logmel" in k][0]
    for chunk in (ws / "store.zarr" / damaged / "mean" / "c").rglob("*"):
        if chunk.is_file():
            chunk.unlink()
            break
    res = run(ws, "store", "verify")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert f"FAIL {damaged}" in res.output and res.output.count("OK  ") == 3
    assert "1 of 4 group(s) failed verification" in res.stderr
    reports = json.loads(run(ws, "store", "verify", "--json").stdout)
    assert len(reports) == 4 and [r["key"] for r in reports if not r["ok"]] == [damaged]
    res = run(ws, "store", "verify", damaged)
    assert res.exit_code == 1 and res.output.startswith("FAIL")


# -- 7. extract: batching flags, chunking, resumed ------------------------------------------------------

def test_extract_passes_batch_seconds_and_chunk_seconds(tmp_path: Path, urdu_root: Path) -> None:
    assert run(tmp_path, "corpus", "add", "u", "--layout", "urdu", "--root", str(urdu_root)).exit_code == 0
    res = run(tmp_path, "extract", "--model", "tiny-wav2vec2", "--corpus", "u", "--batch-seconds", "2.5",
              "--batch-size", "3", "--chunk-seconds", "0.5", "--retry-skipped")
    assert res.exit_code == 0, res.output
    group = FeatureStore(tmp_path / "store.zarr").open(_keys(tmp_path)[0])
    assert group.attrs["plan"]["batch_seconds"] == 2.5 and group.attrs["plan"]["batch_size"] == 3
    assert group.attrs["model"]["settings"]["chunk_seconds"] == 0.5
    assert "resumed" not in res.output
    res = run(tmp_path, "extract", "--model", "tiny-wav2vec2", "--corpus", "u", "--chunk-seconds", "0.5")
    assert res.exit_code == 0 and "already complete" in res.output


def _every_command(group: click.Group, ctx: click.Context, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        found.append((*path, name))
        if isinstance(command, click.Group):
            found += _every_command(command, ctx, (*path, name))
    return found


def test_dash_h_is_help_everywhere(tmp_path: Path) -> None:
    """`-h` works like `--help` on the root and on every command and subcommand."""
    ctx = click.Context(fs)
    commands = _every_command(fs, ctx)
    assert ("store", "ls") in commands and ("extract",) in commands
    for path in [(), *commands]:
        short, long = run(tmp_path, *path, "-h"), run(tmp_path, *path, "--help")
        assert short.exit_code == 0 and short.output == long.output and "Usage: fs" in short.output, path


def test_device_and_whisper_input_declared_once() -> None:
    """--device and --whisper-input: one declaration (cli.options), same default and choices in every command."""
    ctx = click.Context(fs)

    def option(command: str, name: str) -> click.Option:
        return next(p for p in fs.get_command(ctx, command).params if p.name == name)

    modes = [option(c, "whisper_input") for c in ("extract", "probe", "finetune")]
    assert {(o.default, o.type.get_metavar(o), o.help) for o in modes} == {(None, "[full|trim]", modes[0].help)}
    assert all(o.type.convert("trim", o, None) == "trim" for o in modes)
    devices = [option(c, "device") for c in ("extract", "finetune")]
    assert {o.default for o in devices} == {None} and devices[0].callback is devices[1].callback
    bad = CliRunner().invoke(fs, ["finetune", "--source", "a", "--target", "b", "--device", "gpu0"])
    assert bad.exit_code == 2 and "'gpu0': use cpu, cuda, cuda:N or mps" in bad.output


def test_errors_name_flags_not_python_parameters(tmp_path: Path) -> None:
    from featurestore.encoders import EncoderError
    from featurestore.store import StoreError

    with pytest.raises(EncoderError, match="--whisper-input must be one of full, trim"):
        load_encoder("tiny-whisper", whisper_input="half")
    with pytest.raises(StoreError) as err:
        FeatureStore(tmp_path / "s.zarr").resolve("urdu", "whisper", None, whisper_input="trim", snr_db=5.0)
    assert "with --whisper-input trim --snr 5.0." in str(err.value) and "whisper_input" not in str(err.value)


@pytest.mark.slow
def test_every_real_data_test_is_marked_shared() -> None:
    """`pytest -m shared` selects every test that uses the real data (the shared_dir fixture)."""
    import ast

    uses = set()
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_") and \
                    any(a.arg == "shared_dir" for a in node.args.args):
                uses.add(f"tests/{path.name}::{node.name}")
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "shared", "-p",
                          "no:cacheprovider", "tests"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    selected = {line.split("[")[0] for line in out.stdout.splitlines() if "::" in line}
    assert len(uses) >= 11 and uses <= selected, (uses - selected, out.stdout[-2000:])
