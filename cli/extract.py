"""``fs extract`` and ``fs models``: run an encoder over corpora into the store.

torch and transformers are imported inside the commands, so that other commands start fast.
"""

from __future__ import annotations

import os

import click
from click.core import ParameterSource

from cli._output import echo_json, echo_table
from cli.options import DEFAULT_WHISPER_INPUT, device_option, resolve_device, whisper_input_option
from featurestore.workspace import Workspace

_NOISE_ONLY = (("snrs", "--snr"), ("noise_seed", "--noise-seed"), ("noise_env", "--noise-env"))


def _layers(ctx: click.Context, param: click.Parameter, text: str | None) -> tuple[int, ...]:
    """``--frames 6,12`` -> (6, 12); a clear message for anything else."""
    if not text:
        return ()
    try:
        layers = {int(x) for x in text.split(",") if x.strip()}
    except ValueError:
        raise click.BadParameter(f"{text!r}: give layer numbers like 6,12 (see `fs store info` for a "
                                 "model's layers)") from None
    if any(layer < 0 for layer in layers) or not layers:
        raise click.BadParameter(f"{text!r}: layer numbers are 0 (the input to the first layer) or more")
    return tuple(sorted(layers))


@click.command()
@click.option("--model", "model_name", required=True,
              help="Alias (see `fs models`), <alias>-random, HF id or local model folder.")
@click.option("--corpus", "corpora", required=True, multiple=True, help="Corpus name (repeatable).")
@click.option("--condition", "conditions", multiple=True, metavar="KIND[:NAME=VALUE,...]",
              help="An acoustic condition step: noise, reverb, telephone, gain or clipping, e.g. reverb:rt60=0.3-0.9, "
                   "noise:snr=5 (with --noise DIR), telephone:codec=mp3; repeat for a chain, applied in order.")
@click.option("--noise", default=None, type=click.Path(), help="Noise folder, file or DEMAND root.")
@click.option("--snr", "snrs", type=float, multiple=True,
              help="Target SNR in dB (needs --noise); repeat for several conditions [default with --noise: 10].")
@click.option("--noise-seed", default=0, show_default=True, type=int,
              help="Seed of each utterance's draws: noise recording and offset, condition parameters "
                   "(needs --noise or --condition).")
@click.option("--noise-env", default="", help="Comma-separated DEMAND environments / noise file stems (needs --noise).")
@device_option("Where to run the encoder")
@click.option("--batch-seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Audio seconds per batch, padding included: bounds memory whatever the mix of lengths "
                   "[default: 240].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="At most this many utterances per batch [default: 8].")
@click.option("--chunk-seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Cut audio longer than this into windows of this many seconds (any model family) "
                   "[default: the family's own rule].")
@click.option("--frames", "frames", default=None, callback=_layers,
              help="Also store frame-level states of these layers, e.g. 6,12.")
@whisper_input_option()
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of randomly initialised models.")
@click.option("--on-bad-audio", type=click.Choice(["fail", "skip"]), default="fail", show_default=True,
              help="Unreadable audio: stop, or skip it with a recorded reason.")
@click.option("--retry-skipped", is_flag=True, help="Try skipped utterances again (e.g. after fixing their files).")
@click.option("--workers", default=None, type=click.IntRange(min=0),
              help="DataLoader workers decoding and resampling [default: 0 on CPU, up to 4 on CUDA]; with "
                   "--backend ray: Ray workers, each loading the model once [default: 2].")
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where to compute: this process, or Ray workers (pip install 'fs-ser[ray]'); the store is "
                   "written by this process either way, with the same bytes.")
@click.option("--address", default=None,
              help="With --backend ray: 'auto' (the cluster `ray start` runs here) or HOST:PORT of a Ray head "
                   "[default: a Ray runtime on this machine].")
@click.option("--gpus-per-worker", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="With --backend ray: GPUs per Ray worker (0.5: two workers share a GPU; 0: CPU workers).")
@click.option("--commit-rows", default=256, show_default=True, type=click.IntRange(min=1),
              help="Rows buffered per store commit (a killed run redoes at most this many).")
@click.option("--progress/--no-progress", default=True,
              help="Progress on stderr: a bar on a terminal, else a plain line every 15 s (for logs) [default: on].")
@click.option("--repair", is_flag=True,
              help="Read every chunk, drop corrupt ones and recompute their rows (after `fs store verify` FAILs).")
@click.option("--overwrite", is_flag=True, help="Re-extract even if the group exists.")
@click.pass_context
def extract(ctx: click.Context, model_name: str, corpora: tuple[str, ...], conditions: tuple[str, ...],
            noise: str | None,
            snrs: tuple[float, ...], noise_seed: int, noise_env: str, device: str | None,
            batch_seconds: float | None, batch_size: int | None, chunk_seconds: float | None,
            frames: tuple[int, ...], whisper_input: str | None, seed: int, on_bad_audio: str, retry_skipped: bool,
            workers: int | None, backend: str, address: str | None, gpus_per_worker: float, commit_rows: int,
            progress: bool, repair: bool, overwrite: bool) -> None:
    """Extract layer-wise embeddings of MODEL over CORPUS into the store (idempotent, resumable).

    Ctrl-C or SIGTERM keeps the finished rows (exit 130 / 143); the same command resumes.
    """
    if noise is None:
        for name, flag in _NOISE_ONLY:
            if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None) and not (
                    conditions and name == "noise_seed"):
                raise click.UsageError(f"{flag} needs --noise DIR (a noise folder, file or DEMAND root)")
    if conditions and ctx.get_parameter_source("snrs") not in (ParameterSource.DEFAULT, None):
        raise click.UsageError("--snr goes with --noise alone; in a --condition chain write the SNR in its noise "
                               "step: --condition noise:snr=5")
    if backend != "ray":
        for name, flag in (("address", "--address"), ("gpus_per_worker", "--gpus-per-worker")):
            if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None):
                raise click.UsageError(f"{flag} needs --backend ray")
    ws: Workspace = ctx.obj
    manifests = [ws.load_manifest(name) for name in corpora]  # before loading a model: fail fast
    whisper_input = whisper_input or DEFAULT_WHISPER_INPUT

    from featurestore.encoders import load_encoder
    from featurestore.extract import ExtractOptions
    from featurestore.extract import extract as run_extract
    from featurestore.store import FeatureStore

    specs = _chains(conditions, noise, snrs, noise_seed, noise_env)
    if backend == "ray":
        _extract_ray(ws, manifests, specs, model_name, seed, whisper_input, chunk_seconds, device, workers,
                     address, gpus_per_worker, frames, on_bad_audio, commit_rows, overwrite, retry_skipped, repair,
                     progress, batch_size, batch_seconds)
        return
    device = resolve_device(device)
    if workers is None:
        workers = min(4, max((os.cpu_count() or 1) - 1, 0)) if device.startswith("cuda") else 0
    limits = {k: v for k, v in (("batch_size", batch_size), ("batch_seconds", batch_seconds)) if v is not None}
    options = ExtractOptions(frame_layers=frames, on_bad_audio=on_bad_audio, num_workers=workers,
                             commit_rows=commit_rows, overwrite=overwrite, retry_skipped=retry_skipped,
                             repair=repair, progress=progress,
                             **limits)
    encoder = load_encoder(model_name, device=device, seed=seed, whisper_input=whisper_input,
                           chunk_seconds=chunk_seconds)
    fstore = FeatureStore(ws.store_url)
    for manifest, spec in [(m, s) for s in specs for m in manifests]:
        result = run_extract(manifest, encoder, fstore, condition=spec, options=options)
        _report(result)


def _chains(conditions: tuple[str, ...], noise: str | None, snrs: tuple[float, ...], noise_seed: int,
            noise_env: str) -> list:
    """The condition chains to extract, checked before any model loads (a bad one: ConditionError, one line):
    the ``--condition`` steps as one chain, else one noise chain per ``--snr`` (today's store keys), else clean."""
    from featurestore.conditions import ConditionChain
    from featurestore.noise import NoiseSpec

    envs = tuple(e for e in noise_env.split(",") if e)
    if conditions:
        chains = [ConditionChain.parse(list(conditions), seed=noise_seed, noise=noise, noise_env=envs)]
        if noise and chains[0].noise_spec() is None:
            raise click.UsageError(f"--noise {noise} is given but no --condition is a noise step; add "
                                   "--condition noise:snr=DB or drop --noise")
    elif noise:
        chains = [ConditionChain.from_noise(NoiseSpec(source=noise, snr_db=snr, seed=noise_seed, environments=envs))
                  for snr in snrs or (10.0,)]
    else:
        chains = [ConditionChain()]
    for chain in chains:
        chain.key  # noqa: B018 - hashes the noise recordings / impulse responses: a missing folder fails here
    return chains


def _extract_ray(ws: Workspace, manifests: list, specs: list, model_name: str, seed: int, whisper_input: str,
                 chunk_seconds: float | None, device: str | None, workers: int | None, address: str | None,
                 gpus_per_worker: float, frames: tuple[int, ...], on_bad_audio: str, commit_rows: int,
                 overwrite: bool, retry_skipped: bool, repair: bool, progress: bool,
                 batch_size: int | None, batch_seconds: float | None) -> None:
    """``fs extract --backend ray``: Ray workers compute, this process writes (see featurestore.distributed)."""
    from featurestore.distributed import EncoderSpec, RayOptions, RayRunner
    from featurestore.extract import ExtractOptions, run_extraction
    from featurestore.store import FeatureStore

    worker_device = "cuda" if gpus_per_worker > 0 else "cpu"
    if device is not None and device.split(":")[0] != worker_device:
        raise click.UsageError(f"--device {device} with --backend ray: workers use {worker_device} "
                               f"({'--gpus-per-worker > 0' if gpus_per_worker else 'no --gpus-per-worker'}); "
                               "drop --device or set --gpus-per-worker")
    limits = {k: v for k, v in (("batch_size", batch_size), ("batch_seconds", batch_seconds)) if v is not None}
    options = ExtractOptions(frame_layers=frames, on_bad_audio=on_bad_audio, commit_rows=commit_rows,
                             overwrite=overwrite, retry_skipped=retry_skipped, repair=repair,
                             progress=progress, **limits)
    spec = EncoderSpec(model_name, seed=seed, whisper_input=whisper_input, chunk_seconds=chunk_seconds,
                       device=worker_device)
    fstore = FeatureStore(ws.store_url)
    with RayRunner(spec, RayOptions(address=address, workers=workers or 2, gpus_per_worker=gpus_per_worker)) as runner:
        for manifest, chain in [(m, s) for s in specs for m in manifests]:
            _report(run_extraction(manifest, runner, fstore, condition=chain, options=options))


def _report(result) -> None:
    """One line per group: nothing to do, resumed, or done, with throughput."""
    if result.already_done:
        click.echo(f"{result.key}: already complete, nothing to do")
        return
    how = f"resumed with {result.rows_before} row(s) already stored; " if result.resumed else ""
    click.echo(f"{result.key}: {how}{result.processed} utterances in {result.wall_seconds:.1f} s "
               f"({result.utterances_per_second:.1f} utt/s, RTF {result.real_time_factor:.4f}, "
               f"peak RSS {result.peak_rss_mb:.0f} MB)")
    for problem in result.repaired:
        click.echo(f"  repaired: {problem}", err=True)
    if result.skipped:
        click.echo(f"  {len(result.skipped)} skipped (reasons recorded in the store; --retry-skipped tries "
                   "them again):", err=True)
        for utt, why in list(result.skipped.items())[:10]:
            click.echo(f"    {utt}: {why}", err=True)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (a list of registry entries).")
def models(as_json: bool) -> None:
    """List the encoder registry."""
    from featurestore.encoders import list_encoders

    entries = list_encoders()
    if as_json:
        echo_json(entries)
        return
    echo_table(("ALIAS", "FAMILY", "WEIGHTS", "MODEL_ID"),
               [(e["alias"], e["family"], "pretrained" if e["pretrained"] else "random", e["model_id"])
                for e in entries])
