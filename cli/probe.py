"""``fs probe``: train a probe on one corpus's stored features and test it on another (or the same)."""

from __future__ import annotations

from typing import Any

import click
from click.core import ParameterSource

from classifiers.studies import settings
from cli._output import echo_json
from featurestore.workspace import Workspace


def _shots(ctx: click.Context, param: click.Parameter, text: str) -> tuple[int, ...]:
    """``--shots 0,50,100`` -> (0, 50, 100)."""
    try:
        values = tuple(settings.check("shots", int(x) if x.strip().lstrip("-").isdigit() else x.strip(), "--shots")
                       for x in text.split(",") if x.strip())
    except settings.SettingError as exc:
        raise click.BadParameter(f"{exc} (several: 0,50,100)") from None
    if not values:
        raise click.BadParameter(f"{text!r}: give shots per class as numbers >= 0, e.g. 0,50,100")
    return tuple(dict.fromkeys(values))


def _params(ctx: click.Context, param: click.Parameter, items: tuple[str, ...]) -> dict[str, Any]:
    """``--param C=0.5 --param class_weight=balanced`` -> {"C": 0.5, "class_weight": "balanced"}."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{item!r}: give NAME=VALUE, e.g. C=0.5")
        try:
            out[name.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[name.strip()] = value
    return out


def _noise(directory: str | None, snr: float | None, seed: int, condition: str | None = None) -> dict[str, Any] | None:
    """A side's store condition: clean (None), today's noise ``{noise, snr_db, noise_seed}``, or a condition
    chain ``{condition, noise (the source of its noise step), noise_seed}``."""
    if condition is not None:
        return {"condition": condition, "noise_seed": seed, **({"noise": directory} if directory else {})}
    return None if directory is None else {"noise": directory, "snr_db": 10.0 if snr is None else snr,
                                           "noise_seed": seed}


@click.command()
@click.option("--source", required=True,
              help="Corpus to train on (a name from `fs corpus ls`); several (emodb,ravdess): their union.")
@click.option("--target", required=True, help="Corpus to test on; the source itself for speaker-independent folds.")
@click.option("--model", required=True, help="The model as given to `fs extract --model` (alias, id or folder).")
@settings.options("whisper_input", "model_seed", "layer", "stat", "classifier")
@click.option("--param", "params", multiple=True, callback=_params,
              help="Classifier parameter NAME=VALUE (repeatable), e.g. --param C=0.1.")
@settings.options("norm", "tune", "seeds")
@settings.click_option("shots", type=str, default="0", callback=_shots,
                       help=settings.setting("shots").help + " Several: 0,50,100 (one result each).")
@settings.options("shot_weight", "shot_augment")
@settings.options("shots_speaker_disjoint", "dev_fraction", "protocol", "select", "select_on")
@click.option("--select-grid", callback=lambda ctx, param, text: _grid(text), default=None, metavar="YAML",
              help=settings.setting("select_grid").help)
@click.option("--target-noise", type=click.Path(), default=None,
              help="Test on the target mixed with this noise (the folder given to `fs extract --noise`).")
@click.option("--source-noise", type=click.Path(), default=None, help="Train on the source mixed with this noise.")
@click.option("--target-condition", default=None, metavar="TEXT",
              help="Test on the target under this acoustic condition, as `fs extract --condition` wrote it (steps "
                   "joined by ' > ', e.g. 'reverb:rt60=0.3-0.9 > noise:snr=5' with --target-noise DIR).")
@click.option("--source-condition", default=None, metavar="TEXT", help="Train on the source under this condition.")
@click.option("--snr", type=float, default=None, help="SNR in dB of the noisy groups [default: 10].")
@click.option("--noise-seed", type=int, default=0, show_default=True,
              help="Noise (or condition) seed of the noisy groups.")
@click.option("--rerun", is_flag=True, help="Compute again even if the results ledger holds this configuration.")
@click.option("--save-model/--no-save-model", default=True, show_default=True,
              help="Save the fitted probe (seed 0) with the result, for `fs predict --result KEY`.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Report fits done on stderr: a bar on a terminal, else a plain line every 15 s with an ETA.")
@click.option("--json", "as_json", is_flag=True, help="Print the result object (a list for several --shots).")
@click.pass_context
def probe(ctx: click.Context, source: str, target: str, model: str, whisper_input: str | None,
          model_seed: int | None, layer: str, stat: str, classifier: str, params: dict[str, Any], norm: str,
          tune: bool, shot_weight: str | float, shot_augment: bool,
          seeds: int, shots: tuple[int, ...], shots_speaker_disjoint: bool, dev_fraction: float, protocol: str | None,
          select: str | None, select_on: tuple[str, ...] | None, select_grid: dict[str, Any] | None,
          target_noise: str | None, source_noise: str | None, target_condition: str | None,
          source_condition: str | None, snr: float | None, noise_seed: int, rerun: bool,
          save_model: bool, progress: bool, as_json: bool) -> None:
    """Train a probe on SOURCE's stored features and report UAR on TARGET (mean ± std over seeds).

    Results go to the workspace's results ledger; an identical configuration on the same store
    groups is answered from it (--rerun computes again). The fitted probe (seed 0, trained on all
    of the source) is saved beside the ledger, so `fs predict AUDIO --result KEY` applies it to
    new audio.
    """
    if (target_condition or source_condition) and snr is not None:
        raise click.UsageError("--snr goes with --target-noise/--source-noise alone; under a condition write the SNR "
                               "in its noise step: --target-condition noise:snr=5")
    if target_noise is None and source_noise is None and not (target_condition or source_condition):
        for name, flag in (("snr", "--snr"), ("noise_seed", "--noise-seed")):
            if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None):
                raise click.UsageError(f"{flag} needs --target-noise DIR or --source-noise DIR")
    if source == target and any(shots):
        raise click.UsageError("--shots needs a target other than the source (within a corpus, folds are used)")
    ws: Workspace = ctx.obj

    from classifiers.studies.engine import run, run_selected
    from classifiers.studies.predict import ensure_saved
    from classifiers.studies.protocols import ProbeConfig
    from classifiers.studies.result import result_identity, stored_identity
    from featurestore.progress import Progress
    from featurestore.store import FeatureStore

    store = FeatureStore(ws.store_url)
    if select is None and (select_on or select_grid):
        raise click.UsageError("--select-on and --select-grid go with --select lto|source")
    configs = [ProbeConfig(source=source, target=target, model=model, whisper_input=whisper_input,
                           model_seed=model_seed, layer=layer, stat=stat, classifier=classifier,
                           classifier_params=params, norm=norm, seeds=seeds, shots=n, tune=tune,
                           shot_weight=shot_weight, shot_augment=shot_augment,
                           shots_speaker_disjoint=shots_speaker_disjoint,
                           source_noise=_noise(source_noise, snr, noise_seed, source_condition),
                           target_noise=_noise(target_noise, snr, noise_seed, target_condition),
                           dev_fraction=dev_fraction, protocol=protocol)
               for n in shots]
    ledger = _ledger(ws)
    cache: dict[Any, Any] = {}
    results = []
    for config in configs:
        if select:
            found = run_selected(config, select, store, ws, on=select_on, grid=select_grid, rerun=rerun, cache=cache,
                                 ledger=ledger, progress=Progress if progress else None)
            config = found.config
        else:
            found = run(config, store, ws, rerun=rerun, cache=cache, ledger=ledger,
                        progress=Progress if progress else None)
        result = {**found.to_record(), "from_ledger": found.from_ledger}
        if save_model and unsaved_reason(config):
            result["saved_model_note"] = unsaved_reason(config)
        elif save_model:
            identity = stored_identity(result_identity(config, store, ws, cache))
            result["saved_model"] = str(ensure_saved(config, identity, store, ws, cache, refit=not found.from_ledger))
        results.append(result)
    if as_json:
        echo_json(results[0] if len(results) == 1 else results)
        return
    for i, result in enumerate(results):
        if i:
            click.echo("")
        click.echo(describe(result))
    if ledger is None:
        click.echo("\n(results ledger unavailable in this build: results were not recorded)", err=True)


def _grid(text: str | None) -> dict[str, Any] | None:
    """``--select-grid "{norms: [none, corpus], layers: [2, 3]}"`` -> the mapping (checked by the selection)."""
    import yaml

    if text is None:
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict):
        raise click.BadParameter(f"{text!r}: give a mapping, e.g. \"{{layers: [2, 3], norms: [none, corpus]}}\"")
    return value


def _selection_lines(selection: dict[str, Any]) -> list[str]:
    """What ``--select`` chose, from how many candidates, on which pairs, and what it excluded."""
    pairs = ", ".join(f"{'+'.join(a) if isinstance(a, list) else a}->{b}" for a, b in selection["pairs"])
    best = sorted(selection["candidates"], key=lambda c: -c["mean_uar"])[:3]
    lines = [f"  selected by {selection['rule']}: {selection['chosen']} of {len(selection['candidates'])} candidates "
             f"(scored on {pairs}; target labels not read)",
             f"  top candidates{_score_name(selection)}: "
             + "; ".join(f"{c['setting']} {_score(c['mean_uar'], selection)}" for c in best)]
    lines += [f"  excluded {e['setting']}: {e['reason']}" for e in selection["excluded"][:1]]
    if len(selection["excluded"]) > 1:
        lines.append(f"  ({len(selection['excluded'])} candidates excluded for that reason or others)")
    lines += [f"  warning (selection): {w}" for w in selection.get("warnings", [])]
    return lines


def _score(value: float, selection: dict[str, Any]) -> str:
    """A candidate's score as printed: a UAR in %, else the rule's own score (``selection["score"]`` names it)."""
    return _pct(value) if selection.get("score", "UAR") == "UAR" else f"{value:.4f}"


def _score_name(selection: dict[str, Any]) -> str:
    """`` by <score>`` for a rule whose score is not a UAR (entropy, snd, iwcv), else nothing."""
    name = selection.get("score", "UAR")
    return "" if name == "UAR" else f" by {name}"


def unsaved_reason(config: Any) -> str | None:
    """Why no probe for new audio is saved for ``config`` (``fs predict`` does not apply it yet), else None."""
    what = "--norm coral" if config.norm == "coral" else "--layer weighted" if config.layer == "weighted" else None
    return f"no fitted probe saved: fs predict does not apply {what} yet" if what else None


def _ledger(ws: Workspace) -> Any:
    try:
        from classifiers.studies.ledger import Ledger
    except ImportError:  # the ledger module is optional in a partial checkout
        return None
    return Ledger.open(ws)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _uar(record: dict[str, Any]) -> str:
    """``55.2 [50.1, 60.3] (95 % CI over test speakers), seed spread ± 1.0`` with an interval, else ``55.2 ± 1.0``."""
    from classifiers.studies.intervals import uar_text

    if not record.get("uar_ci95"):
        return f"{_pct(record['uar_mean'])} ± {_pct(record['uar_std'])}"
    return f"{uar_text(record)} (95 % CI over test speakers), seed spread ± {_pct(record.get('uar_std'))}"


def _best_layer_lines(result: dict[str, Any]) -> list[str]:
    """Two lines for a ``--layer best`` result: the layer chosen per seed (per fold within a corpus),
    the single layer a table shows, and the mean dev UAR per layer (``*`` at the highest)."""
    from classifiers.studies.layer_choice import best_layer_choice

    dev = result.get("layer_dev_uar") or {}
    choice = result.get("layer_choice") or best_layer_choice(result["layer"], dev)
    if result["protocol"] == "within-corpus":
        picks = " · ".join(f"seed {i}: {','.join(map(str, seed))}" for i, seed in enumerate(choice["per_seed"]))
    else:
        picks = "per seed: " + ",".join(str(k) for seed in choice["per_seed"] for k in seed)
    most, best_dev = choice["most_chosen"], choice["best_mean_dev"]
    lines = [f"  layer: best on a source-only dev split, {picks}; layer used: {most} (most chosen, "
             f"{choice['times_chosen']} of {choice['choices']}; the UAR uses each seed's own choice)"]
    curve = " · ".join(f"{k} {_pct(v)}" + ("*" if int(k) == best_dev else "")
                       for k, v in sorted(dev.items(), key=lambda kv: int(kv[0])))
    other = "" if best_dev == most else f", not the most chosen {most}"
    lines.append(f"  dev UAR by layer (mean over seeds): {curve}  (* highest: layer {best_dev}{other})")
    return lines


def _layer_text(result: dict[str, Any]) -> str:
    asked, used = result["config"]["layer"], result["layer"]
    if asked == "last":
        return f"{used} (last)"
    if isinstance(used, list):
        return "concat " + ",".join(str(k) for k in used)
    return str(used)


def model_text(result: dict[str, Any]) -> str:
    """The model of a result as people name it, with the Whisper input mode when there is one."""
    from classifiers.studies.ledger import whisper_input_of

    mode = whisper_input_of(result)
    return result["config"]["model"] + (f" (Whisper input {mode})" if mode else "")


def describe(result: dict[str, Any]) -> str:
    """A human-readable account of one result record (``Result.to_record()``)."""
    c = result["config"]
    noise = []
    for side in ("source", "target"):
        if c.get(f"{side}_noise"):
            n = c[f"{side}_noise"]
            if "condition" in n:
                from classifiers.studies.ledger import condition_label

                noise.append(f"{side} under {condition_label(n)} (seed {n['noise_seed']})")
            else:
                noise.append(f"{side} + {n['noise']} @ {n['snr_db']:g} dB (seed {n['noise_seed']})")
    source = "+".join(c["source"]) if isinstance(c["source"], (list, tuple)) else c["source"]
    lines = [
        f"{source} -> {c['target']}  [{result['protocol']}]  model {model_text(result)}  {c['classifier']}  "
        f"norm {c['norm']}  {c['stat']}  {c['seeds']} seed(s)" + ("  (from the ledger)" if result.get("from_ledger")
                                                                 else f"  {result['seconds']:.1f} s"),
        f"  UAR {_uar(result)} %   (chance {_pct(result['chance'])} %)   "
        f"per seed: {' '.join(_pct(u) for u in result['uar_per_seed'])}",
        "  per-class recall: " + "  ".join(f"{k} {_pct(v)}" for k, v in result["per_class_recall"].items()),
    ]
    if c["layer"] == "best":
        lines += _best_layer_lines(result)
    else:
        lines.append(f"  layer: {_layer_text(result)}")
    lines += learned_lines(result)
    if noise:
        lines.append("  noise: " + "; ".join(noise))
    if result.get("transductive"):
        lines.append(f"  normalisation {c['norm']} is transductive: {result['normalisation'].get('note', '')}")
    if result.get("baseline"):
        b = result["baseline"]
        capped = sorted({k for s in result.get("shots") or [] for k in s.get("capped", {})})
        lines.append(f"  shots: {c['shots']} per class from {c['target']}"
                     + (f" (capped for {', '.join(capped)})" if capped else "")
                     + f"; tested on {result['metrics'][0]['n']} other utterances")
        verdict = "  <- beats source+shots" if b.get("beats_source_plus_shots") else ""
        lines.append(f"  target-only baseline (shots alone): UAR {_uar(b)} %"
                     + verdict)
    if result.get("selection"):
        lines += _selection_lines(result["selection"])
    for warning in result.get("warnings", []):
        lines.append(f"  warning: {warning}")
    if result.get("saved_model_note"):
        lines.append(f"  {result['saved_model_note']}")
    if result.get("saved_model"):
        lines.append(f"  fitted probe saved: fs predict AUDIO... --result {result['config_key'][:12]}")
    return "\n".join(lines)


def _weight_text(weight: Any) -> str:
    return "shots only" if weight == "inf" else f"{float(weight):g}"


def learned_lines(result: dict[str, Any]) -> list[str]:
    """Lines for what a result's fits learned per seed: layer weights (``--layer weighted``), the tuned
    parameters (``--tune``) and the few-shot shot weight (``--shot-weight``)."""
    lines = []
    weights = result.get("layer_weights")
    if weights:
        mean = [sum(seed[k] for seed in weights) / len(weights) for k in range(len(weights[0]))]
        top = max(range(len(mean)), key=lambda k: mean[k])
        lines.append("  layer weights (mean over seeds): " + " · ".join(
            f"{k} {w:.2f}" + ("*" if k == top else "") for k, w in enumerate(mean)) + f"  (* largest: layer {top})")
    tuning = result.get("tuning")
    if tuning:
        picks = [", ".join(f"{k}={v}" for k, v in fold["best_params"].items()) for seed in tuning for fold in seed]
        counts = {p: picks.count(p) for p in dict.fromkeys(picks)}
        lines.append("  tuned on source speaker folds: " + "; ".join(f"{p} ({n}/{len(picks)})" for p, n in counts.items()))
    shot = result.get("shot_weights")
    if shot:
        lines.append("  shot weight per seed: " + " ".join(_weight_text(s["weight"]) for s in shot)
                     + ("  (chosen by cross-validation on the shots)" if result["config"].get("shot_weight") == "auto"
                        else "")
                     + ("  features augmented (EasyAdapt)" if result["config"].get("shot_augment") else ""))
    return lines
