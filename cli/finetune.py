"""``fs finetune``: train the study's head, the CNN-LSTM or top-layer LoRA from the store; report like ``fs probe``."""

from __future__ import annotations

from typing import Any

import click
from click.core import ParameterSource

from classifiers.studies import settings
from cli._output import echo_json
from cli.options import device_option, resolve_device
from cli.probe import _noise, _shots, describe
from featurestore.workspace import Workspace


def _modules(ctx: click.Context, param: click.Parameter, text: str | None) -> tuple[str, ...] | None:
    """``--target-modules q_proj,v_proj`` -> ("q_proj", "v_proj")."""
    if text is None:
        return None
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    if not names:
        raise click.BadParameter(f"{text!r}: give module names separated by commas, e.g. q_proj,v_proj")
    return names


@click.command()
@settings.click_option("method", required=True)
@click.option("--source", required=True, help="Corpus to train on (a name from `fs corpus ls`).")
@click.option("--target", required=True, help="Corpus to test on; the source itself for one speaker-independent split.")
@click.option("--model", default=None,
              help="The model as given to `fs extract --model` [default for cnn-lstm: logmel].")
@settings.options("whisper_input", "model_seed", "from_layer")
@settings.click_option("layer", help="The layer the head reads (head: also best, mean, concat:3,6 as in fs probe; "
                                     "lora: last or a number).")
@settings.click_option("norm", help="head: as fs probe; cnn-lstm: none or corpus (per-corpus log-mel statistics, "
                                    "transductive).")
@settings.click_option("seeds")
@settings.click_option("shots", type=str, default="0", callback=_shots,
                       help=settings.setting("shots").help + " Several: 0,50 (one result each).")
@settings.options("shots_speaker_disjoint", "recipe", "epochs", "batch_size", "lr", "rank", "alpha")
@settings.click_option("target_modules", type=str, callback=_modules)
@settings.options("head_hidden", "max_frames", "dev_fraction", "protocol")
@click.option("--target-noise", type=click.Path(), default=None,
              help="Test on the target mixed with this noise (the folder given to `fs extract --noise`).")
@click.option("--source-noise", type=click.Path(), default=None, help="Train on the source mixed with this noise.")
@click.option("--snr", type=float, default=None, help="SNR in dB of the noisy groups [default: 10].")
@click.option("--noise-seed", type=int, default=0, show_default=True, help="Noise seed of the noisy groups.")
@device_option("Where to train (not part of the configuration)")
@click.option("--rerun", is_flag=True,
              help="Train again even if the ledger or the checkpoints hold this configuration.")
@click.option("--json", "as_json", is_flag=True, help="Print the result object (a list for several --shots).")
@click.pass_context
def finetune(ctx: click.Context, method: str, source: str, target: str, model: str | None,
             whisper_input: str | None, model_seed: int | None, from_layer: int | None, layer: str, norm: str,
             seeds: int, shots: tuple[int, ...], shots_speaker_disjoint: bool, recipe: str | None, epochs: int,
             batch_size: int,
             lr: float, rank: int, alpha: float, target_modules: tuple[str, ...] | None, head_hidden: int,
             max_frames: int | None, dev_fraction: float, protocol: str | None, target_noise: str | None,
             source_noise: str | None,
             snr: float | None, noise_seed: int, device: str | None, rerun: bool, as_json: bool) -> None:
    """Train on SOURCE from the store and report UAR on TARGET (mean ± std over seeds), like fs probe.

    Results go to the results ledger (an identical configuration on the same store groups is
    answered from it; --rerun trains again); checkpoints to WORKSPACE/checkpoints/<config key>/.
    Progress (seed, epoch, dev UAR, ETA) goes to stderr: a bar on a terminal, plain lines in logs.
    """
    if target_noise is None and source_noise is None:
        for name, flag in (("snr", "--snr"), ("noise_seed", "--noise-seed")):
            if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None):
                raise click.UsageError(f"{flag} needs --target-noise DIR or --source-noise DIR")
    if source == target and any(shots):
        raise click.UsageError("--shots needs a target other than the source (within a corpus, a speaker split is "
                               "used)")
    if method != "lora":
        for name, flag in (("from_layer", "--from-layer"), ("rank", "--rank"), ("alpha", "--alpha"),
                           ("target_modules", "--target-modules")):
            if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None):
                raise click.UsageError(f"{flag} is for --method lora")
    if recipe is not None:
        for name in ("epochs", "batch_size", "lr"):
            if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None):
                raise click.UsageError(f"--recipe {recipe} sets epochs, batch size and lr; drop "
                                       f"{settings.setting(name).flag} (or drop --recipe)")
    ws: Workspace = ctx.obj

    from classifiers.studies.engine import run
    from classifiers.studies.finetune import FinetuneConfig
    from featurestore.store import FeatureStore

    store = FeatureStore(ws.store_url)
    configs = [FinetuneConfig(method=method, source=source, target=target, model=model, whisper_input=whisper_input,
                              model_seed=model_seed, layer=layer, from_layer=from_layer, norm=norm, seeds=seeds,
                              shots=n, shots_speaker_disjoint=shots_speaker_disjoint,
                              source_noise=_noise(source_noise, snr, noise_seed),
                              target_noise=_noise(target_noise, snr, noise_seed), dev_fraction=dev_fraction,
                              epochs=epochs, batch_size=batch_size, lr=lr, rank=rank, alpha=alpha,
                              target_modules=target_modules, head_hidden=head_hidden, max_frames=max_frames,
                              protocol=protocol, recipe=recipe)
               for n in shots]
    cache: dict[Any, Any] = {}
    device = resolve_device(device)
    results = []
    for config in configs:
        found = run(config, store, ws, device=device, rerun=rerun, cache=cache, progress=True)
        results.append({**found.to_record(), "from_ledger": found.from_ledger})
    if as_json:
        echo_json(results[0] if len(results) == 1 else results)
        return
    for i, result in enumerate(results):
        if i:
            click.echo("")
        click.echo(describe_finetune(result))


def describe_finetune(result: dict[str, Any]) -> str:
    """:func:`cli.probe.describe` plus the method, training time, best epochs and checkpoints."""
    c = result["config"]
    text = describe(result)
    method = c.get("method") or result.get("method") or "head"
    extra = [f"  method {method}"]
    if method == "lora":
        extra[0] += (f": LoRA rank {c['rank']} on layers {c['from_layer'] + 1}..{result['layer']} from stored "
                     f"frames of layer {c['from_layer']}")
    elif method == "cnn-lstm":
        extra[0] += f" on stored log-mel frames of {c['model']}"
    recipe = result.get("recipe") or {}
    if recipe.get("name") == "tuned" and isinstance(recipe.get("chosen"), dict):  # the CNN-LSTM's choice
        chosen = recipe["chosen"]
        extra[0] += (f"; recipe tuned: lr {chosen['lr']:g} and {chosen['epochs']} epochs chosen on a {recipe['dev_split']} "
                     f"dev split of {recipe['on']} (of {recipe['max_epochs']} epochs x {len(recipe['candidates'])} lr)")
    elif recipe.get("name") == "tuned":  # the head: the probe's --tune, per seed
        extra[0] += f"; recipe tuned: lr x epochs chosen on {recipe['on']}: {recipe['chosen']}"
    else:
        extra[0] += f"; {c.get('epochs', 5)} epochs, batch {c.get('batch_size', 16)}, lr {c.get('lr', 1e-4):g}"
    extra[0] += f"; training {result.get('train_seconds') or 0:.1f} s"
    training = [t for t in result.get("training") or [] if t.get("role") == "model"]
    if training:
        extra.append("  best epoch per seed: " + " ".join(str(t.get("best_epoch")) for t in training)
                     + f" (dev split: {training[0].get('dev_split')})")
        extra += epoch_curves(training)
    if result.get("checkpoints"):
        root = str(result["checkpoints"][0]).rsplit("/", 1)[0]
        extra.append(f"  checkpoints: {root}/ ({len(result['checkpoints'])})")
    lines = text.split("\n")
    return "\n".join(lines[:1] + extra + lines[1:])


def epoch_curves(training: list[dict[str, Any]]) -> list[str]:
    """``  dev UAR % by epoch, seed 0: 31.2 40.5 [44.1] 43.0`` per seed (the kept epoch in brackets)."""
    lines = []
    for t in training:
        scores = [h.get("dev_uar") for h in t.get("history") or []]
        if not any(v is not None for v in scores):
            continue
        cells = [("-" if v is None else f"{100 * v:.1f}") for v in scores]
        best = t.get("best_epoch")
        if isinstance(best, int) and 1 <= best <= len(cells):
            cells[best - 1] = f"[{cells[best - 1]}]"
        lines.append(f"  dev UAR % by epoch, seed {t.get('seed')}: {' '.join(cells)}")
    return lines
