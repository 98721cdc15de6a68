"""``fs predict``: apply a probe result's fitted probe to new audio files (no retraining)."""

from __future__ import annotations

from typing import Any

import click

from cli._output import echo_json, echo_table
from cli.options import device_option, resolve_device
from featurestore.workspace import Workspace


@click.command()
@click.argument("audio", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--result", "result_key", required=True,
              help="The result whose probe to apply: its config key or first 6+ characters (see `fs results`), "
                   "or a saved .joblib file.")
@click.option("--speaker", "speakers", multiple=True,
              help="Speaker of each file, in order (only for probes with --norm speaker) [default: one speaker].")
@device_option("Where to run the encoder")
@click.option("--json", "as_json", is_flag=True, help="Print the probe and one object per file as JSON.")
@click.pass_context
def predict(ctx: click.Context, audio: tuple[str, ...], result_key: str, speakers: tuple[str, ...],
            device: str | None, as_json: bool) -> None:
    """Label AUDIO files with the probe fitted for a result, with class probabilities.

    Features are made as that result's were: the same encoder and weights (and Whisper input
    mode), layers, pooled statistic and normalisation. With --norm corpus the files given are
    standardised together (at least 2), with --norm speaker per --speaker (at least 2 files each);
    --norm source uses the probe's stored training statistics.
    """
    ws: Workspace = ctx.obj
    from classifiers.studies.predict import describe_saved, find_model, load_probe, normalisation_note, predict_files

    saved = load_probe(find_model(ws, result_key))
    if speakers and saved.norm != "speaker":
        raise click.UsageError(f"--speaker is only used by probes trained with --norm speaker (this one: {saved.norm})")
    rows = predict_files(saved, list(audio), device=resolve_device(device), speakers=list(speakers) or None)
    about = {**describe_saved(saved), "normalisation": normalisation_note(saved, speakers)}
    if as_json:
        echo_json({"probe": about, "predictions": rows})
        return
    click.echo(_about_line(about))
    classes = list(rows[0]["probabilities"])
    echo_table(("FILE", "LABEL", *(f"{c} %" for c in classes)),
               [(r["file"], r["label"], *(f"{100 * r['probabilities'][c]:.1f}" for c in classes)) for r in rows],
               right=tuple(f"{c} %" for c in classes))


def _about_line(about: dict[str, Any]) -> str:
    mode = f" (Whisper input {about['whisper_input']})" if about.get("whisper_input") else ""
    trained = about["trained_on"]
    return (f"probe {about['config_key'][:12]}: {about['source']} -> {about['target']}, model {about['model']}{mode}, "
            f"layer {about['layer']}→{about['layer_used']}, {about['stat']}, {about['classifier']}, trained on "
            f"{trained['n_train']} utterances (seed {trained['seed']}); normalisation {about['normalisation']}")
