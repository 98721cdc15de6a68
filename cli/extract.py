"""``fs extract`` and ``fs models``: run an encoder over a corpus into the store."""

from __future__ import annotations

import os

import click

from featurestore.encoders import list_encoders, load_encoder
from featurestore.extract import ExtractOptions, extract as run_extract
from featurestore.noise import NoiseSpec
from featurestore.store import FeatureStore
from featurestore.workspace import Workspace


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _layers(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise click.BadParameter(f"{text!r}: give layer numbers like 6,12") from None


@click.command()
@click.option("--model", "model_name", required=True,
              help="Alias (see `fs models`), <alias>-random, HF id or local dir.")
@click.option("--corpus", "corpora", required=True, multiple=True, help="Corpus name (repeatable).")
@click.option("--noise", default=None, type=click.Path(), help="Noise folder, file or DEMAND root.")
@click.option("--snr", "snrs", default=(10.0,), show_default=True, type=float, multiple=True,
              help="Target SNR in dB (with --noise); repeat for several conditions.")
@click.option("--noise-seed", default=0, show_default=True, type=int, help="Seed choosing noise segments.")
@click.option("--noise-env", default="", help="Comma-separated DEMAND environments / noise file stems.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... [default: cuda if available].")
@click.option("--batch-size", default=8, show_default=True, type=int)
@click.option("--frames", "frames", default=None, help="Also store frame-level states of these layers, e.g. 6,12.")
@click.option("--whisper-input", type=click.Choice(["full", "trim"]), default="full", show_default=True,
              help="Whisper: pad to 30 s as trained (full) or run only the real frames (trim).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of randomly initialised models.")
@click.option("--on-bad-audio", type=click.Choice(["fail", "skip"]), default="fail", show_default=True,
              help="Unreadable audio: stop, or skip it with a recorded reason.")
@click.option("--workers", default=None, type=int,
              help="DataLoader workers decoding and resampling [default: 0 on CPU, up to 4 on CUDA].")
@click.option("--commit-rows", default=256, show_default=True, type=int,
              help="Rows buffered per store commit (a killed run redoes at most this many).")
@click.option("--overwrite", is_flag=True, help="Re-extract even if the group exists.")
@click.pass_obj
def extract(ws: Workspace, model_name: str, corpora: tuple[str, ...], noise: str | None, snrs: tuple[float, ...],
            noise_seed: int, noise_env: str, device: str | None, batch_size: int, frames: str | None,
            whisper_input: str, seed: int, on_bad_audio: str, workers: int | None, commit_rows: int,
            overwrite: bool) -> None:
    """Extract layer-wise embeddings of MODEL over CORPUS into the store (idempotent, resumable)."""
    manifests = [ws.load_manifest(name) for name in corpora]
    envs = tuple(e for e in noise_env.split(",") if e)
    specs = ([NoiseSpec(source=noise, snr_db=snr, seed=noise_seed, environments=envs) for snr in snrs]
             if noise else [None])
    device = device or _default_device()
    if workers is None:
        workers = min(4, max((os.cpu_count() or 1) - 1, 0)) if device.startswith("cuda") else 0
    encoder = load_encoder(model_name, device=device, seed=seed, whisper_input=whisper_input)
    store = FeatureStore(ws.store_url)
    options = ExtractOptions(batch_size=batch_size, frame_layers=_layers(frames), on_bad_audio=on_bad_audio,
                             num_workers=workers, commit_rows=commit_rows, overwrite=overwrite)
    for manifest, spec in [(m, s) for s in specs for m in manifests]:
        result = run_extract(manifest, encoder, store, noise=spec, options=options)
        if result.already_done:
            click.echo(f"{result.key}: already complete, nothing to do")
            continue
        click.echo(f"{result.key}: {result.processed} utterances in {result.wall_seconds:.1f} s "
                   f"({result.utterances_per_second:.1f} utt/s, RTF {result.real_time_factor:.4f}, "
                   f"peak RSS {result.peak_rss_mb:.0f} MB)")
        if result.skipped:
            click.echo(f"  {len(result.skipped)} skipped (reasons recorded in the store):", err=True)
            for utt, why in list(result.skipped.items())[:10]:
                click.echo(f"    {utt}: {why}", err=True)


@click.command()
def models() -> None:
    """List the encoder registry."""
    for entry in list_encoders():
        click.echo(f"{entry['alias']:<20} {entry['family']:<9} {'pretrained' if entry['pretrained'] else 'random':<10} "
                   f"{entry['model_id']}")
