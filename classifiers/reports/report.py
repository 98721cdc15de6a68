"""Reports from ledger rows: Markdown tables and PNG plots in ``<workspace>/reports/<name>/``.

``report.md`` holds the cross-language table in the study's Table II layout (pairs × models, UAR %
with its 95 % speaker-bootstrap interval, ``55.2 [50.1, 60.3]``, or mean ± std over seeds for results
stored without predictions; per pair the best in bold and ``≈`` on those not significantly different
from it; optionally the published numbers beside ours), the few-shot table (source
+ shots against the target-only baseline), the clean-vs-noisy table and a list of every
configuration. Every table row points to a footnote with the configuration keys, weights hashes,
layers, normalisation and seeds of its cells. Plots (matplotlib, Agg backend): ``heatmap.png``
(source × target per model; one per setting, ``heatmap-1.png`` ... when there are several),
``layers.png`` (UAR per layer, one line per configuration), ``fewshot.png`` (curves with the
target-only baseline), ``noise.png`` (clean vs noisy bars) and ``embedding.png`` (a 2-D map of one
layer's pooled features coloured by corpus and by emotion, before and after per-corpus
normalisation). Every file is written atomically.

    write_report(Ledger.open(ws).rows(study="paper"), ws, name="paper", store=store, paper=True)
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import tempfile
from collections import defaultdict
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from classifiers.studies.intervals import PredictionsError, compare, uar_text
from classifiers.studies.layer_choice import layer_label, layer_used_text
from classifiers.studies.ledger import group_attrs_reader, model_names, whisper_input_of
from data_manifests.atomic import atomic_write_text
from featurestore.errors import FsError
from featurestore.workspace import Workspace

# configuration keys that vary within a table; the rest make a table's "setting"
_CELL_KEYS = ("source", "target", "model", "whisper_input", "model_seed", "shots", "source_noise", "target_noise")
PAPER_TABLE = "paper_table2.yaml"
SIMILAR_P = 0.05  # a cell whose paired-bootstrap p-value against the pair's best is at least this is marked ≈
# row -> its per-utterance predictions (one entry per seed), or None when the ledger has none
PredictionsOf = Callable[[dict[str, Any]], list[dict[str, Any]] | None]


class ReportError(FsError):
    """A report that cannot be written as asked (no rows, unwritable folder, unreadable store)."""


# --------------------------------------------------------------------------- rows
def latest_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per ``config_key``: the most recent (ledger rows come oldest first)."""
    by_key: dict[str, dict[str, Any]] = {}
    for row in rows:
        by_key.pop(row["config_key"], None)
        by_key[row["config_key"]] = row
    return list(by_key.values())


def _config(row: dict[str, Any]) -> dict[str, Any]:
    return row.get("config") or {}


def setting_of(row: dict[str, Any]) -> str:
    """Canonical JSON of the settings shared by a table (layer, classifier, norm, stat, seeds, ...)."""
    return json.dumps({k: v for k, v in sorted(_config(row).items()) if k not in _CELL_KEYS}, sort_keys=True,
                      default=str)


def setting_line(setting: str) -> str:
    """A compact line describing a setting: ``layer last · mlp · norm none · mean · 5 seeds``."""
    s = json.loads(setting)
    seeds = s.get("seeds")
    parts = [f"layer {s['layer']}"] if "layer" in s else []
    parts += [str(s.get("classifier")), f"norm {s.get('norm')}", f"stat {s.get('stat')}",
             f"{len(seeds) if isinstance(seeds, list) else seeds} seeds"]
    if s.get("classifier_params"):
        parts.append("params " + json.dumps(s["classifier_params"], sort_keys=True))
    extra = {k: v for k, v in s.items() if k not in ("layer", "classifier", "norm", "stat", "seeds",
                                                      "classifier_params") and v not in (None, False, {}, [])}
    parts += [f"{k} {v}" for k, v in sorted(extra.items())]
    return " · ".join(parts)


def model_label(row: dict[str, Any]) -> str:
    """The model as a column name: alias (a folder by its name), plus the Whisper input mode the result
    used and the model seed when set; a fine-tuning method names itself (``CNN-LSTM``, ``whisper + LoRA@3``)."""
    c = _config(row)
    method = c.get("method")
    if method == "cnn-lstm":
        return "CNN-LSTM"
    label = str(c.get("model"))
    if "/" in label and (label.startswith(("/", ".")) or pathlib.Path(label).exists()):
        label = pathlib.Path(label).name  # a model folder: its name, not the whole path
    if method == "lora":
        label += f" + LoRA@{c.get('from_layer')}"
    mode = whisper_input_of(row)
    if mode:
        label += f" ({mode})"
    if c.get("model_seed") is not None:
        label += f" seed {c['model_seed']}"
    return label


def pct(mean: float | None, std: float | None = None) -> str:
    """``0.5812, 0.0103`` → ``58.12 ± 1.03`` (UAR %)."""
    if mean is None:
        return "–"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def layer_used(row: dict[str, Any]) -> str:
    """The layer(s) a result used: ``12``, ``0,2``; for best-layer selection the most chosen (``7 (3/5 picks)``)."""
    return layer_used_text(row)


def is_noisy(row: dict[str, Any]) -> bool:
    c = _config(row)
    return bool(c.get("source_noise") or c.get("target_noise"))


def shots_of(row: dict[str, Any]) -> int:
    return int(_config(row).get("shots") or 0)


def _identity(row: dict[str, Any]) -> dict[str, list[str]]:
    from classifiers.studies.ledger import identity_of

    return identity_of(row.get("provenance", {}))


def cell_note(row: dict[str, Any], label: str | None = None) -> str:
    """One cell's configuration for a footnote: model (or ``label``), config key, weights hash, layer
    (asked → used), norm, seeds."""
    c = _config(row)
    hashes = ",".join(h[:12] for h in _identity(row)["weights_hashes"]) or "?"
    seeds = c.get("seeds")
    return (f"{label or model_label(row)}: config `{row['config_key'][:12]}`, weights `{hashes}`, layer "
            f"{c.get('layer')}→{layer_used(row)}, norm {c.get('norm')}, "
            f"{len(seeds) if isinstance(seeds, list) else seeds} seeds")


class _Notes:
    """Footnotes of one report: ``ref(title, rows, labels)`` gives ``[^n]`` and remembers the text."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def ref(self, title: str, rows: list[dict[str, Any]], labels: list[str] | None = None) -> str:
        labels = labels or [None] * len(rows)
        self.items.append(f"{title}: " + "; ".join(cell_note(r, lab) for r, lab in zip(rows, labels)))
        return f"[^{len(self.items)}]"

    def markdown(self) -> list[str]:
        return [f"[^{i}]: {text}" for i, text in enumerate(self.items, 1)]


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in body]


def _pair(row: dict[str, Any]) -> tuple[str, str]:
    c = _config(row)
    return str(c.get("source")), str(c.get("target"))


STUDY_CORPORA = ("iemocap", "emodb", "emovo", "urdu")


def corpus_rank(name: str) -> tuple[int, str]:
    """Sort key of a corpus: the study's order (IEMOCAP, EMODB, EMOVO, URDU; demo-* alike), then by name."""
    base = name.removeprefix("demo-")
    return (STUDY_CORPORA.index(base) if base in STUDY_CORPORA else len(STUDY_CORPORA), name)


def _corpora(values: list[str]) -> list[str]:
    return sorted(dict.fromkeys(values), key=corpus_rank)


def _pair_rank(pair: tuple[str, str]) -> tuple:
    return (corpus_rank(pair[0]), pair[0] != pair[1], corpus_rank(pair[1]))


def layer_sweeps(rows: list[dict[str, Any]]) -> dict[tuple, dict[str, dict[str, Any]]]:
    """``{(source, target, model label, setting without layer): {layer: row}}`` for groups of clean
    results at two or more layer choices (a layer sweep)."""
    groups: dict[tuple, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        if shots_of(r) or is_noisy(r):
            continue
        rest = json.dumps({k: v for k, v in sorted(_config(r).items()) if k not in _CELL_KEYS and k != "layer"},
                          sort_keys=True, default=str)
        groups[(*_pair(r), model_label(r), rest)][str(_config(r).get("layer"))] = r
    return {k: v for k, v in groups.items() if len(v) >= 2}


def _layer_rank(layer: str) -> tuple[int, int, str]:
    return (0, int(layer), "") if layer.lstrip("-").isdigit() else (1, 0, layer)


def load_paper_table() -> dict[str, Any]:
    """The published Table II: ``{"models": {alias: column}, "families": {family: alias},
    "table": {"src->tgt": {alias: UAR %}}}``."""
    path = resources.files("classifiers") / "studies" / PAPER_TABLE
    return yaml.safe_load(path.read_text())


def paper_column(row: dict[str, Any], published: dict[str, Any],
                 group_attrs: Callable[[str], dict[str, Any]] | None = None) -> str | None:
    """The published column of ``row``'s model: ``cnn-lstm`` for the CNN-LSTM, the alias it was given,
    else the one column of its family (from the store groups it read: a Whisper given as a folder takes
    the paper's Whisper); None when there is none."""
    c = _config(row)
    if c.get("method") == "cnn-lstm":
        return "cnn-lstm"
    if c.get("method") or c.get("model_seed") is not None:
        return None  # fine-tuned or randomly initialised: not the published model
    if c.get("model") in published["models"]:
        return str(c["model"])
    by_family = published.get("families") or {}
    return next((by_family[f] for f in sorted(model_names(row, group_attrs).families) if f in by_family), None)


def ledger_predictions(ledger: Any) -> PredictionsOf:
    """Row → its predictions in ``ledger`` (a :class:`~classifiers.studies.ledger.Ledger`), None when it has none."""
    from classifiers.studies.ledger import NoPredictionsError, NoSuchResultError

    def of(row: dict[str, Any]) -> list[dict[str, Any]] | None:
        if row.get("_predictions") is False:
            return None
        try:  # a ledger row by its row key; a result of a sweep by its configuration (the latest row)
            return ledger.predictions(row.get("_row_key") or row["config_key"])
        except (NoPredictionsError, NoSuchResultError):
            return None
    return of


# --------------------------------------------------------------------------- sections
def similar_to_best(cells: dict[str, dict[str, Any]], predictions: PredictionsOf | None) -> tuple[str | None, set[str]]:
    """Of one pair's ``cells`` (``{model label: row}``): the label of the highest UAR, and the labels whose
    UAR is not significantly different from it (paired speaker bootstrap on their common test
    utterances, p >= :data:`SIMILAR_P`). Cells without predictions, or not comparable, are never marked."""
    if len(cells) < 2:
        return None, set()
    best = max(cells, key=lambda m: cells[m]["uar_mean"])
    best_pred = predictions(cells[best]) if predictions else None
    similar = set()
    for label, row in cells.items():
        other = predictions(row) if best_pred and label != best else None
        if other:
            try:
                if compare(best_pred, other, (best, label)).paired.p_value >= SIMILAR_P:
                    similar.add(label)
            except PredictionsError:
                continue
    return best, similar


def cross_language_sections(rows: list[dict[str, Any]], notes: _Notes, paper: bool,
                            group_attrs: Callable[[str], dict[str, Any]] | None = None,
                            predictions: PredictionsOf | None = None) -> list[str]:
    """Table II layout per setting: one row per (source → target), one column per model; with ``paper``
    the published column of each model (:func:`paper_column`) beside it. With ``predictions`` each
    pair's best cell is bold and the cells not significantly different from it carry ``≈``
    (:func:`similar_to_best`)."""
    swept = {id(r) for g in layer_sweeps(rows).values() for layer, r in g.items() if layer != "last"}
    clean = [r for r in rows if shots_of(r) == 0 and not is_noisy(r) and id(r) not in swept]
    if not clean:
        return []
    published = load_paper_table() if paper else None
    out = ["## Cross-language UAR (Table II layout)", "",
           "UAR % with its 95 % interval (bootstrap over test speakers, pooled over seeds; `mean ± std` over seeds "
           "for results stored without predictions); rows are source → target, columns models. Per row the best "
           f"is **bold**; `≈` marks a configuration not significantly different from it (paired bootstrap over "
           f"speakers, p ≥ {SIMILAR_P:g}; only results with stored predictions are compared)."]
    if published:
        out.append(f"Published numbers ({published['source']}) are shown as *paper* beside ours where the corpus "
                   "and model names match.")
    out.append("")
    by_setting: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in clean:
        by_setting[setting_of(r)].append(r)
    for setting, group in by_setting.items():
        models = list(dict.fromkeys(model_label(r) for r in group))
        cells = {(_pair(r), model_label(r)): r for r in group}
        pairs = sorted(dict.fromkeys(_pair(r) for r in group), key=_pair_rank)
        column = {model_label(r): paper_column(r, published, group_attrs) for r in group} if published else {}
        shown = published if published and any(f"{a}->{b}" in published["table"] for a, b in pairs) else None
        if published and not shown:
            out += ["(`--paper`: none of these pairs is in the published table; the study's corpora are named "
                    "iemocap, emodb, emovo and urdu.)", ""]
        header = ["source → target"]
        for m in models:
            header += [m, f"{m} (paper: {shown['models'][column[m]]})"] if shown and column[m] else [m]
        if shown and "cnn-lstm" not in column.values():
            header.append("CNN-LSTM (paper)")
        body = []
        for pair in pairs:
            present = [cells[(pair, m)] for m in models if (pair, m) in cells]
            title = f"{pair[0]} → {pair[1]}" + (" (within)" if pair[0] == pair[1] else "")
            line = [title + " " + notes.ref(title, present)]
            paper_row = (shown or {}).get("table", {}).get(f"{pair[0]}->{pair[1]}", {})
            best, similar = similar_to_best({m: cells[(pair, m)] for m in models if (pair, m) in cells}, predictions)
            for m in models:
                r = cells.get((pair, m))
                text = uar_text(r) if r else "–"
                line.append(f"**{text}**" if m == best else f"{text} ≈" if m in similar else text)
                if shown and column[m]:
                    line.append(f"*{paper_row[column[m]]:.2f}*" if column[m] in paper_row else "–")
            if shown and "cnn-lstm" not in column.values():
                line.append(f"*{paper_row['cnn-lstm']:.2f}*" if "cnn-lstm" in paper_row else "–")
            body.append(line)
        chance = {round(float(r["chance"]), 4) for r in group if r.get("chance") is not None}
        out += [f"Setting: {setting_line(setting)}" + (f" · chance {', '.join(pct(c) for c in sorted(chance))}"
                                                        if chance else ""), ""]
        out += _table(header, body) + [""]
    return out


def layer_section(rows: list[dict[str, Any]], notes: _Notes) -> list[str]:
    """UAR per layer choice (columns) for every pair and model swept over layers; ``best`` shows the
    layer it chose (per seed) on the source's dev split."""
    sweeps = layer_sweeps(rows)
    if not sweeps:
        return []
    layers = sorted({layer for g in sweeps.values() for layer in g}, key=_layer_rank)
    body = []
    several = len({k[3] for k in sweeps}) > 1
    for (source, target, model, rest), by_layer in sorted(sweeps.items(), key=lambda kv: _pair_rank(kv[0][:2])):
        title = f"{source} → {target}, {model}" + (f" ({setting_line(rest)})" if several else "")
        present = [layer for layer in layers if layer in by_layer]
        line = [f"{title} {notes.ref(title, [by_layer[k] for k in present], [f'layer {k}' for k in present])}"]
        for layer in layers:
            r = by_layer.get(layer)
            cell = uar_text(r) if r else "–"
            line.append(cell + (f" (→ {layer_used(r)})" if r and layer in ("best", "last") else ""))
        body.append(line)
    return ["## UAR per layer", "", "UAR % on the target for each layer choice (`best`: chosen on a speaker-"
            "independent dev split of the source only; the chosen layer in brackets).", ""] + _table(
        ["source → target, model", *[f"layer {k}" for k in layers]], body) + [""]


def few_shot_groups(rows: list[dict[str, Any]]) -> dict[tuple, dict[int, dict[str, Any]]]:
    """``{(source, target, model label, setting, noisy): {shots: row}}`` for groups with some shots > 0."""
    groups: dict[tuple, dict[int, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        groups[(*_pair(r), model_label(r), setting_of(r), is_noisy(r))][shots_of(r)] = r
    return {k: v for k, v in groups.items() if any(s > 0 for s in v)}


def few_shot_section(rows: list[dict[str, Any]], notes: _Notes) -> list[str]:
    """Per (pair, model): UAR of source + shots, and of the target-only baseline (the shots alone)."""
    groups = few_shot_groups(rows)
    if not groups:
        return []
    shots = sorted({s for g in groups.values() for s in g})
    out = ["## Few-shot adaptation", "",
           "UAR % with `k` target utterances per class added to the source (*target only*: the same shots "
           "alone, same test set). Shots are never tested; capped classes are listed under Warnings.", ""]
    body = []
    for (source, target, model, setting, noisy), by_shots in groups.items():
        title = f"{source} → {target}, {model}" + (" (noisy)" if noisy else "")
        ref = notes.ref(f"{title} ({setting_line(setting)})", [by_shots[s] for s in sorted(by_shots)],
                        [f"{s} shots" for s in sorted(by_shots)])
        ours, base = [f"{title} {ref}", "source + shots"], ["", "target only"]
        for s in shots:
            r = by_shots.get(s)
            ours.append(uar_text(r))
            base.append(uar_text((r or {}).get("baseline")))
        body += [ours, base]
    return out + _table(["source → target, model", "training", *[f"{s} shots" for s in shots]], body) + [""]


def noise_pairs(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """(noisy row, matching clean row or None) for every noisy result."""
    clean = {(_pair(r), model_label(r), setting_of(r), shots_of(r)): r for r in rows if not is_noisy(r)}
    return [(r, clean.get((_pair(r), model_label(r), setting_of(r), shots_of(r)))) for r in rows if is_noisy(r)]


def _noise_name(row: dict[str, Any]) -> str:
    from classifiers.studies.ledger import condition_of

    return condition_of(_config(row))


def noise_section(rows: list[dict[str, Any]], notes: _Notes) -> list[str]:
    """Clean against noisy UAR per (pair, model, condition), with the drop in points."""
    pairs = noise_pairs(rows)
    if not pairs:
        return []
    out = ["## Noise robustness", "", "UAR % on clean against noise-mixed data (the drop is in UAR points).", ""]
    body = []
    for noisy, clean in pairs:
        title = f"{noisy['config']['source']} → {noisy['config']['target']}, {model_label(noisy)}"
        ref = notes.ref(f"{title} ({setting_line(setting_of(noisy))})", [r for r in (clean, noisy) if r],
                        ["clean", "noisy"] if clean else ["noisy"])
        drop = f"{100 * (clean['uar_mean'] - noisy['uar_mean']):.2f}" if clean else "–"
        body.append([f"{title} {ref}", _noise_name(noisy), uar_text(clean), uar_text(noisy), drop])
    return out + _table(["source → target, model", "condition", "clean", "noisy", "drop"], body) + [""]


def condition_model_section(rows: list[dict[str, Any]], notes: _Notes) -> list[str]:
    """Per source → target pair with results under two or more conditions: UAR % per condition (rows) and
    model (columns); a model probed with several settings gets a column per setting."""
    by_pair: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if shots_of(row) == 0:
            by_pair[_pair(row)].append(row)
    out: list[str] = []
    for pair in sorted(by_pair, key=_pair_rank):
        group = by_pair[pair]
        conditions = sorted({_noise_name(r) for r in group}, key=lambda c: (c != "clean", condition_snr_rank(c), c))
        if len(conditions) < 2:
            continue
        settings = {setting_of(r) for r in group}
        column = {id(r): model_label(r) + (f" [{setting_line(setting_of(r))}]" if len(settings) > 1 else "")
                  for r in group}
        columns = sorted(set(column.values()))
        cells = {(_noise_name(r), column[id(r)]): r for r in group}
        if not out:
            out = ["## Conditions × models", "", "UAR % per acoustic condition (rows) and model (columns), "
                   "with the 95% speaker interval when the results have one.", ""]
        body = [[condition, *[uar_text(cells.get((condition, c))) for c in columns]] for condition in conditions]
        ref = notes.ref(f"{pair[0]} → {pair[1]} under {len(conditions)} conditions", group)
        out += [f"### {pair[0]} → {pair[1]} {ref}", ""] + _table(["condition", *columns], body) + [""]
    return out


def condition_snr_rank(name: str) -> float:
    """Sort key of a condition name by its SNR (higher first), conditions without one last."""
    match = re.search(r"(?:@|snr=)(-?[0-9.]+)", name)
    return -float(match.group(1).rstrip(".")) if match else float("inf")


def target_snr(row: dict[str, Any]) -> float | None:
    """The SNR of a result whose target is noise-mixed and nothing else (a noise dict, or a condition chain
    that is one noise step) and whose source is clean; None otherwise."""
    config = _config(row)
    side = config.get("target_noise")
    if config.get("source_noise") or not isinstance(side, dict):
        return None
    if "condition" not in side:
        return float(side["snr_db"]) if side.get("snr_db") is not None else None
    from featurestore.conditions import ConditionChain, ConditionError

    try:
        chain = ConditionChain.parse(str(side["condition"]), seed=int(side.get("noise_seed", 0)))
    except ConditionError:
        return None
    return chain.snr_db() if [s.kind for s in chain.steps] == ["noise"] else None


def plot_snr(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """UAR against the target's SNR, one panel per source → target pair and one line per model and setting,
    clean drawn right of the highest SNR; error bars are the 95% speaker intervals (``uar_ci95``) when present.
    None unless some line has two or more SNRs."""
    lines: dict[tuple[str, str], dict[str, dict[float | None, dict[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    chosen_rows = [r for r in rows if not shots_of(r) and (target_snr(r) is not None or not is_noisy(r))]
    several = len({setting_of(r) for r in chosen_rows}) > 1  # a line per setting too: say which
    for row in chosen_rows:
        name = model_label(row) + (f" · {setting_line(setting_of(row))}" if several else "")
        lines[_pair(row)][name][target_snr(row)] = row
    panels = {pair: {name: points for name, points in by_line.items() if sum(k is not None for k in points) >= 2}
              for pair, by_line in lines.items()}
    panels = {pair: by_line for pair, by_line in panels.items() if by_line}
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False, layout="constrained")
    for ax, pair in zip(axes[0], sorted(panels, key=_pair_rank)):
        snrs = sorted({k for points in panels[pair].values() for k in points if k is not None})
        clean_x = snrs[-1] + max(5.0, (snrs[-1] - snrs[0]) / 4)
        for name, points in sorted(panels[pair].items()):
            xs = sorted(points, key=lambda k: clean_x if k is None else k)
            chosen = [points[k] for k in xs]
            ys = [100 * r["uar_mean"] for r in chosen]
            ci = [r.get("uar_ci95") for r in chosen]
            yerr = None
            if all(ci):
                yerr = [[y - 100 * c[0] for y, c in zip(ys, ci)], [100 * c[1] - y for y, c in zip(ys, ci)]]
            ax.errorbar([clean_x if k is None else k for k in xs], ys, yerr=yerr, marker="o", capsize=3,
                        label=name if len(name) < 60 else name[:57] + "...")
        ax.set_xticks([*snrs, clean_x], [f"{k:g}" for k in snrs] + ["clean"])
        ax.set_xlabel("target SNR (dB)")
        ax.set_title(f"{pair[0]} → {pair[1]}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("UAR %")
    return save_figure(fig, path)


def all_rows_section(rows: list[dict[str, Any]]) -> list[str]:
    """Every result with its full configuration key."""
    body = []
    for r in rows:
        c = _config(r)
        body.append([f"{c.get('source')} → {c.get('target')}", model_label(r), f"{c.get('layer')}→{layer_used(r)}",
                     str(c.get("classifier")), str(c.get("norm")), str(c.get("stat")), str(shots_of(r)),
                     _noise_name(r), uar_text(r), pct(r.get("chance")),
                     f"`{r['config_key'][:16]}`"])
    return ["## Every configuration", ""] + _table(
        ["pair", "model", "layer (asked→used)", "classifier", "norm", "stat", "shots", "condition", "UAR %",
         "chance", "config"], body) + [""]


def warnings_section(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, list[str]] = {}
    for r in rows:
        for w in r.get("warnings") or []:
            seen.setdefault(str(w), []).append(f"{r['config']['source']}→{r['config']['target']}")
    if not seen:
        return []
    out = ["## Warnings", ""]
    for text, where in seen.items():
        pairs = sorted(set(where))
        out.append(f"- {text} ({len(where)} result(s): {', '.join(pairs[:6])}{' …' if len(pairs) > 6 else ''})")
    return out + [""]


# --------------------------------------------------------------------------- plots
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Save ``fig`` as PNG atomically (temp file in the same folder, then rename) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=100)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        _pyplot().close(fig)
    return path


def heatmap_settings(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Clean, zero-shot rows by setting (:func:`setting_of`), the setting with the most results first."""
    by_setting: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if shots_of(r) == 0 and not is_noisy(r):
            by_setting[setting_of(r)].append(r)
    return dict(sorted(by_setting.items(), key=lambda kv: -len(kv[1])))


def plot_heatmaps(rows: list[dict[str, Any]], folder: Path, only: str | None = None) -> list[Path]:
    """One source × target heatmap per setting: ``heatmap.png`` when there is one setting, else
    ``heatmap-1.png``, ``heatmap-2.png``, ... (most results first). ``only``: draw just the settings whose
    line (:func:`setting_line`) contains this text; :class:`ReportError` lists the lines when none does."""
    settings = heatmap_settings(rows)
    if only is not None:
        chosen = {k: v for k, v in settings.items() if only.strip().lower() in setting_line(k).lower()}
        if not chosen:
            lines = "; ".join(setting_line(k) for k in settings) or "none (no clean zero-shot results)"
            raise ReportError(f"--setting {only!r} matches no setting of these results; settings: {lines}")
        settings = chosen
    if len(settings) == 1:
        return [plot_heatmap(group, folder / "heatmap.png", setting) for setting, group in settings.items()]
    return [plot_heatmap(group, folder / f"heatmap-{i}.png", setting)
            for i, (setting, group) in enumerate(settings.items(), start=1)]


def plot_heatmap(group: list[dict[str, Any]], path: Path, setting: str) -> Path:
    """Source × target UAR matrix per model of the rows of one ``setting``."""
    models = list(dict.fromkeys(model_label(r) for r in group))
    corpora = _corpora([c for r in group for c in _pair(r)])
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(models), figsize=(3.4 * len(models) + 2.2, 3.9), squeeze=False,
                             layout="constrained")
    for n, (ax, model) in enumerate(zip(axes[0], models)):
        matrix = np.full((len(corpora), len(corpora)), np.nan)
        for r in group:
            if model_label(r) == model:
                s, t = _pair(r)
                matrix[corpora.index(s), corpora.index(t)] = 100 * r["uar_mean"]
        image = ax.imshow(matrix, vmin=0, vmax=100, cmap="viridis")
        for i, j in np.ndindex(matrix.shape):
            if not np.isnan(matrix[i, j]):
                ax.text(j, i, f"{matrix[i, j]:.1f}", ha="center", va="center", fontsize=8,
                        color="white" if matrix[i, j] < 60 else "black")
        ax.set_xticks(range(len(corpora)), corpora, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(corpora)), corpora if n == 0 else [""] * len(corpora), fontsize=8)
        ax.set_xlabel("target")
        if n == 0:
            ax.set_ylabel("source")
        ax.set_title(model, fontsize=9)
    fig.colorbar(image, ax=axes[0].tolist(), label="UAR %", shrink=0.8)
    fig.suptitle(f"Cross-language UAR ({setting_line(setting)})", fontsize=9)
    return save_figure(fig, path)


def _curve_setting(row: dict[str, Any]) -> str:
    """The configuration of a row less its layer and cell keys: one UAR-per-layer line per value."""
    return json.dumps({k: v for k, v in sorted(_config(row).items()) if k not in ("layer", *_CELL_KEYS)},
                      sort_keys=True, default=str)


def layer_curves(rows: list[dict[str, Any]]) -> dict[str, dict[int, float]]:
    """UAR per layer, one line per configuration: ``{label: {layer: UAR}}`` from ``layer_dev_uar``
    (source dev UAR of best-layer runs) and from results at integer layers (test UAR) of one pair, model
    and other settings (normalisation, classifier, stat, ...). Labels name the pair and model, plus the
    settings that differ between lines (``norm corpus``) when there are several."""
    raw: dict[tuple, dict[int, float]] = defaultdict(dict)
    for r in rows:
        dev = r.get("layer_dev_uar") or {}
        if dev:
            key = ("dev", _pair(r)[0], "", model_label(r), _curve_setting(r))
            raw[key].update({int(k): float(v) for k, v in dev.items()})
    for r in rows:
        layer = _config(r).get("layer")
        if isinstance(layer, int) and not isinstance(layer, bool):
            raw[("test", *_pair(r), model_label(r), _curve_setting(r))][layer] = float(r["uar_mean"])
    lines = {k: v for k, v in raw.items() if k[0] == "dev" or len(v) >= 2}
    varying = _varying_settings([k[4] for k in lines])
    curves: dict[str, dict[int, float]] = {}
    for (kind, source, target, model, setting), values in lines.items():
        label = f"{source} dev, {model}" if kind == "dev" else f"{source}→{target} test, {model}"
        extra = " · ".join(f"{k} {v}" for k, v in json.loads(setting).items() if k in varying)
        curves[label + (f" [{extra}]" if extra else "")] = values
    return curves


def _varying_settings(settings: list[str]) -> list[str]:
    """Keys whose value differs between the given settings (canonical JSON)."""
    parsed = [json.loads(s) for s in settings]
    keys = sorted({k for p in parsed for k in p})
    return [k for k in keys if len({json.dumps(p.get(k), sort_keys=True, default=str) for p in parsed}) > 1]


def plot_layers(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """UAR against layer index (SUPERB-style), one line per curve of :func:`layer_curves`."""
    curves = layer_curves(rows)
    if not curves:
        return None
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    for label, values in sorted(curves.items()):
        layers = sorted(values)
        ax.plot(layers, [100 * values[k] for k in layers], marker="o", markersize=3, label=label,
                linestyle="--" if " dev, " in label else "-")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer (0 = input of the first transformer layer; dashed: source dev split, solid: target)")
    ax.set_ylabel("UAR %")
    ax.set_title("UAR per layer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    return save_figure(fig, path)


def plot_few_shot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """UAR against shots per class, one panel per target: source + shots (solid), target only (dashed)."""
    groups = few_shot_groups(rows)
    if not groups:
        return None
    panels = list(dict.fromkeys((k[0], k[1], k[4]) for k in groups))
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False, sharey=True,
                             layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (source, target, noisy) in zip(axes[0], panels):
        keys = [k for k in groups if (k[0], k[1], k[4]) == (source, target, noisy)]
        for i, key in enumerate(keys):
            by_shots = groups[key]
            shots = sorted(by_shots)
            colour = colours[i % len(colours)]
            label = key[2] + (f" [{setting_line(key[3])}]" if len({k[3] for k in keys}) > 1 else "")
            ax.plot(shots, [100 * by_shots[s]["uar_mean"] for s in shots], marker="o", color=colour,
                    label=f"{label}: source + shots")
            base = [(s, (by_shots[s].get("baseline") or {}).get("uar_mean")) for s in shots]
            base = [(s, b) for s, b in base if b is not None]
            if base:
                ax.plot([s for s, _ in base], [100 * b for _, b in base], marker="x", linestyle="--", color=colour,
                        label=f"{label}: target only")
        ax.set_title(f"{source} → {target}" + (" (noisy)" if noisy else ""), fontsize=9)
        ax.set_xlabel("target utterances per class")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("UAR %")
    return save_figure(fig, path)


def plot_noise(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Grouped bars: clean and noisy UAR per (pair, model, condition)."""
    pairs = [(n, c) for n, c in noise_pairs(rows) if c is not None]
    if not pairs:
        return None
    plt = _pyplot()
    labels = [f"{n['config']['source']}→{n['config']['target']}\n{model_label(n)}\n{_noise_name(n)}" for n, _ in pairs]
    x = np.arange(len(pairs))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(pairs) + 2), 4), layout="constrained")
    for shift, name, side in ((-0.2, "clean", 1), (0.2, "noisy", 0)):
        chosen = [pair[side] for pair in pairs]
        ax.bar(x + shift, [100 * r["uar_mean"] for r in chosen], 0.4, capsize=2, label=name,
               yerr=[100 * (r.get("uar_std") or 0) for r in chosen])
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("UAR %")
    ax.set_title("Clean vs noisy")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)


def embedding_points(views: list[Any], max_per_corpus: int = 400, method: str = "pca",
                     seed: int = 0) -> dict[str, Any]:
    """2-D maps of feature views (one per corpus, same model and layer), raw and per-corpus standardised.

    Returns ``{"raw": (n, 2), "normalised": (n, 2), "corpus": (n,), "label": (n,)}`` for up to
    ``max_per_corpus`` rows of each view; ``method`` is ``pca`` or ``tsne`` (scikit-learn).
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    from classifiers.learners.normalise import normalise

    if method not in ("pca", "tsne"):
        raise ReportError(f"unknown embedding method {method!r}; use pca or tsne")
    rng = np.random.default_rng(seed)
    raw, norm, corpora, labels = [], [], [], []
    for view in views:
        idx = np.sort(rng.permutation(len(view))[:max_per_corpus])
        X = np.asarray(view.X[idx], dtype=np.float64).reshape(len(idx), -1)
        raw.append(X)
        norm.append(normalise(X, X, "corpus")[0])
        corpora += [view.key.corpus] * len(idx)
        labels += view.labels[idx].tolist()
    out: dict[str, Any] = {"corpus": np.array(corpora), "label": np.array(labels)}
    for name, parts in (("raw", raw), ("normalised", norm)):
        X = np.concatenate(parts)
        if method == "pca":
            out[name] = PCA(n_components=2, random_state=seed).fit_transform(X)
        else:
            X50 = PCA(n_components=min(50, *X.shape), random_state=seed).fit_transform(X)
            out[name] = TSNE(n_components=2, perplexity=float(min(30, max(5, len(X) // 4))), init="pca",
                             random_state=seed).fit_transform(X50)
    return out


def plot_embedding(points: dict[str, Any], path: Path, title: str) -> Path:
    """2 × 2 scatter: raw and normalised maps, coloured by corpus and by emotion."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(9, 8), layout="constrained")
    for row, name in enumerate(("raw", "normalised")):
        for col, colour_by in enumerate(("corpus", "label")):
            ax = axes[row][col]
            values = points[colour_by]
            for value in sorted(set(values.tolist())):
                mask = values == value
                ax.scatter(points[name][mask, 0], points[name][mask, 1], s=6, alpha=0.6, label=value)
            ax.set_title(f"{'before' if name == 'raw' else 'after'} per-corpus normalisation, by "
                         f"{'corpus' if colour_by == 'corpus' else 'emotion'}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.legend(fontsize=7, markerscale=2)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def embedding_views(rows: list[dict[str, Any]], store: Any, workspace: Workspace, model: str | None = None,
                    layer: int | str = "last") -> tuple[list[Any], str]:
    """Clean views (one per corpus in ``rows``) of ``model`` (default: the most frequent) at ``layer`` (any
    :class:`~featurestore.layers.LayerChoice` a view can serve alone: last, K, mean, concat:a,b); each
    view's X is the ``(n, D')`` matrix of that choice."""
    from dataclasses import replace

    from classifiers.studies.views import choice_matrix
    from featurestore.view import load_view

    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        counts[str(_config(r).get("model"))] += 1
    if model is not None:  # any name of the model (alias, folder, weights hash), as `fs results --model`
        chosen = next((r for r in rows if _config(r).get("model") == model or model in model_names(r).names
                       or model in model_names(r).hashes), None)
        model = str(_config(chosen).get("model")) if chosen else model
    model = model or max(counts, key=lambda m: counts[m])
    example = next((_config(r) for r in rows if _config(r).get("model") == model), {})
    corpora = _corpora([c for r in rows for c in _pair(r)])
    views = []
    for corpus in corpora:
        manifest = workspace.load_manifest(corpus)
        view = load_view(store, manifest, model, layers=layer, stat="mean", condition="clean",
                         whisper_input=example.get("whisper_input"), seed=example.get("model_seed"))
        views.append(replace(view, X=choice_matrix(view, layer)))
    return views, model


# --------------------------------------------------------------------------- which setting: ranks across pairs
def configuration_matrix(rows: list[dict[str, Any]]) -> tuple[list[str], list[tuple[str, str]], np.ndarray]:
    """Clean zero-shot cross-language UARs as ``(settings, pairs, U)``, ``U`` ``(n_pairs, n_settings)`` in %:
    only the settings (:func:`setting_of`) scored on every pair that has any of them (a complete block)."""
    cells: dict[str, dict[tuple[str, str], float]] = defaultdict(dict)
    for r in rows:
        source, target = _pair(r)
        if source != target and not shots_of(r) and not is_noisy(r):
            cells[setting_of(r)][(source, target)] = 100 * float(r["uar_mean"])
    pairs = sorted({p for by_pair in cells.values() for p in by_pair}, key=_pair_rank)
    settings = [s for s, by_pair in cells.items() if all(p in by_pair for p in pairs)]
    return settings, pairs, np.array([[cells[s][p] for s in settings] for p in pairs]).reshape(len(pairs), -1)


def friedman_nemenyi(U: np.ndarray, alpha: float = 0.05) -> dict[str, Any]:
    """Friedman test over ``U`` ``(n_pairs, k settings)`` (higher is better) and the Nemenyi critical difference
    of mean ranks (rank 1 = best): ``q_alpha(k, inf) / sqrt(2) * sqrt(k (k + 1) / (6 n))``."""
    from scipy.stats import friedmanchisquare, rankdata, studentized_range

    n, k = U.shape
    if n < 2 or k < 3:
        raise ReportError(f"a Friedman test needs at least 3 settings on at least 2 pairs, got {k} on {n}")
    stat, p = friedmanchisquare(*U.T)
    ranks = np.vstack([rankdata(-row) for row in U]).mean(axis=0)
    q = float(studentized_range.ppf(1 - alpha, k, np.inf)) / np.sqrt(2)
    return {"statistic": float(stat), "p": float(p), "mean_ranks": ranks.tolist(), "n_pairs": n,
            "cd": q * float(np.sqrt(k * (k + 1) / (6 * n))), "alpha": alpha}


def plot_critical_difference(names: list[str], test: dict[str, Any], path: Path) -> Path:
    """Mean ranks on one axis (best at the left) with the Nemenyi critical difference as a bar; settings whose
    ranks differ by less than it are joined by a line (not significantly different)."""
    plt = _pyplot()
    ranks = np.asarray(test["mean_ranks"])
    order = np.argsort(ranks)
    k = len(ranks)
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.3 * k), layout="constrained")
    ax.set_xlim(0.5, k + 0.5)
    ax.set_ylim(-k - 1, 2)
    ax.hlines(0, 1, k, color="black")
    for i, j in enumerate(order):
        ax.plot([ranks[j], ranks[j]], [0, -i - 1], color="grey", lw=0.8)
        ax.text(ranks[j], -i - 1, f" {names[j]} ({ranks[j]:.2f})", va="center", fontsize=7)
    start = 0  # cliques: runs of settings (in rank order) within the CD of each other
    for i in range(k):
        while ranks[order[i]] - ranks[order[start]] > test["cd"]:
            start += 1
        if i > start:
            ax.hlines(0.4 + 0.15 * (start % 4), ranks[order[start]], ranks[order[i]], color="tab:red", lw=3)
    ax.hlines(1.4, 1, 1 + test["cd"], color="black", lw=2)
    ax.text(1, 1.6, f"CD = {test['cd']:.2f} (Nemenyi, alpha {test['alpha']:g}, {test['n_pairs']} pairs)", fontsize=8)
    ax.set_yticks([])
    ax.set_xlabel("mean rank over pairs (1 = best)")
    ax.set_title(f"Friedman chi2 = {test['statistic']:.1f}, p = {test['p']:.3g}", fontsize=9)
    return save_figure(fig, path)


def _lto_agreement(settings: list[str], pairs: list[tuple[str, str]], U: np.ndarray,
                   workspace: Workspace | None) -> list[list[str]]:
    """Per target: how the LTO rule's choice (guarded, over the pairs among the other corpora in ``U``) tracks
    the best setting on that target's pairs in hindsight (:func:`~classifiers.studies.selection.rank_agreement`)."""
    from classifiers.studies.selection import Candidate, SelectionError, rank_agreement, select_lto

    score = {(s, p): U[i, j] for i, p in enumerate(pairs) for j, s in enumerate(settings)}
    corpora = sorted({c for p in pairs for c in p})
    lines = []
    for target in corpora:
        facts = None
        if workspace is not None and workspace.manifest_path(target).exists():
            from classifiers.studies.engine import target_facts

            facts = target_facts(workspace, target)
        cands = [Candidate(s, needs_speaker_variety=json.loads(s).get("norm") == "speaker") for s in settings]
        on = [c for c in corpora if c != target]
        try:
            sel = select_lto(cands, corpora, target, lambda s, a, b: score[(s, (a, b))] if (s, (a, b)) in score
                             else float("nan"), on=on, facts=facts)
        except SelectionError:
            continue
        hind = {s: float(np.mean([score[(s, p)] for p in pairs if p[1] == target])) for s in settings}
        if any(np.isnan(v) for v in sel.mean_scores.values()) or not any(p[1] == target for p in pairs):
            continue
        agree = rank_agreement(sel.mean_scores, hind)
        lines.append([target, setting_line(agree["chosen"]), f"{hind[agree['chosen']]:.1f}",
                      setting_line(agree["best_in_hindsight"]), f"{hind[agree['best_in_hindsight']]:.1f}",
                      f"{agree['points_lost']:.1f}", f"{agree['spearman']:.2f}"])
    return lines


def selection_section(rows: list[dict[str, Any]], folder: Path,
                      workspace: Workspace | None = None) -> tuple[list[str], Path | None]:
    """Which setting to trust across the study's pairs: each rule's choice against the best in hindsight per
    target, a Friedman test over settings x pairs and the critical-difference plot (``cd.png``)."""
    settings, pairs, U = configuration_matrix(rows)
    if len(settings) < 3 or len(pairs) < 2:
        return [], None
    out = ["## Which setting: ranks across pairs", ""]
    agreement = _lto_agreement(settings, pairs, U, workspace)
    if agreement:
        out += ["Leave-target-out (LTO, guarded) choice per target, scored on that target's pairs against the best "
                "setting in hindsight (Spearman: rank correlation of the LTO scores with the hindsight scores):", ""]
        out += _table(["target", "LTO choice", "UAR", "best in hindsight", "UAR", "points lost", "Spearman"],
                      agreement) + [""]
    test = friedman_nemenyi(U)
    path = plot_critical_difference([setting_line(s) for s in settings], test, folder / "cd.png")
    out += [f"Friedman test over {len(settings)} settings x {len(pairs)} pairs: chi2 = {test['statistic']:.1f}, "
            f"p = {test['p']:.3g}; Nemenyi critical difference of mean ranks {test['cd']:.2f} (see cd.png).", ""]
    return out, path


def learned_section(rows: list[dict[str, Any]]) -> list[str]:
    """What results learned or chose on their own: the softmax layer weights of ``--layer weighted`` (mean over
    seeds, the heaviest layer named) and, for ``--select`` results, which rule chose which setting."""
    out = []
    for r in rows:
        weights = r.get("layer_weights")
        if weights:
            w = np.asarray(weights, dtype=float).reshape(-1, np.shape(weights)[-1]).mean(axis=0)  # (L,)
            out.append(f"- {' → '.join(_pair(r))}, {model_label(r)}: learned layer weights "
                       f"{' '.join(f'{x:.2f}' for x in w)} (layers 0..{w.size - 1}; heaviest: layer {int(np.argmax(w))})")
        sel = r.get("selection")
        if isinstance(sel, dict) and sel.get("rule"):
            best = max(sel.get("candidates") or [{}], key=lambda c: c.get("mean_uar", float("-inf")))
            score = f" (its score {100 * best['mean_uar']:.1f} over {len(sel.get('pairs') or [])} pair(s))" \
                if "mean_uar" in best else ""
            out.append(f"- {' → '.join(_pair(r))}, {model_label(r)}: `--select {sel['rule']}` chose {sel.get('chosen')}"
                       f"{score} from {len(sel.get('candidates') or [])} candidate(s)")
    return ["## Learned and selected", ""] + out + [""] if out else []


# --------------------------------------------------------------------------- the report
def write_report(rows: list[dict[str, Any]], workspace: Workspace, name: str = "report", *, store: Any = None,
                 paper: bool = False, out: str | Path | None = None, title: str | None = None,
                 embedding: str = "pca", map_model: str | None = None, map_layer: int | str = "last",
                 echo: Callable[[str], None] | None = None, predictions: PredictionsOf | None = None,
                 heatmap_setting: str | None = None) -> Path:
    """Write ``report.md`` and the PNG plots for ``rows`` (ledger results) into
    ``out`` or ``<workspace>/reports/<name>/``; returns the folder.

    ``store`` (a FeatureStore) enables the embedding map (``embedding`` pca|tsne|none, of
    ``map_model`` at ``map_layer``); ``paper`` adds the published Table II beside ours;
    ``predictions`` (row → its per-utterance predictions or None, e.g. :func:`ledger_predictions`)
    marks the configurations not significantly different from each pair's best; ``heatmap_setting``
    draws only the heatmaps of the settings it names (:func:`plot_heatmaps`; default one per setting).
    """
    rows = latest_rows([r for r in rows if "error" not in r])
    if not rows:
        raise ReportError("no results to report; run `fs sweep STUDY` or `fs probe` first, or loosen the filters "
                          "(see `fs results`)")
    folder = Path(out) if out else workspace.root / "reports" / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot create the report folder {folder} ({exc.strerror}); pass --out DIR") from None
    notes = _Notes()
    body: list[str] = []
    attrs = group_attrs_reader(store.url) if store is not None else None
    body += cross_language_sections(rows, notes, paper, attrs, predictions)
    body += layer_section(rows, notes)
    body += few_shot_section(rows, notes)
    body += noise_section(rows, notes)
    body += condition_model_section(rows, notes)
    ranked, cd_plot = selection_section(rows, folder, workspace)
    body += ranked
    body += learned_section(rows)
    heatmaps = plot_heatmaps(rows, folder, heatmap_setting)
    plots: dict[str, Path | None] = {
        **{("Cross-language heatmap" + (f" {i}" if len(heatmaps) > 1 else "")): p
           for i, p in enumerate(heatmaps, start=1)},
        "UAR per layer": plot_layers(rows, folder / "layers.png"),
        "Few-shot curves": plot_few_shot(rows, folder / "fewshot.png"),
        "Clean vs noisy": plot_noise(rows, folder / "noise.png"),
        "UAR against SNR": plot_snr(rows, folder / "snr.png"),
        "Critical difference": cd_plot,
    }
    if store is not None and embedding != "none":
        try:
            views, model = embedding_views(rows, store, workspace, map_model, map_layer)
            points = embedding_points(views, method=embedding)
            label = next((model_label(r) for r in rows if _config(r).get("model") == model), model)
            plots["Embedding map"] = plot_embedding(
                points, folder / "embedding.png",
                f"{label}, {layer_label(map_layer)} ({embedding.upper()}): corpus and emotion")
        except FsError as exc:
            plots["Embedding map"] = None
            body += ["## Embedding map", "", f"Not drawn: {exc}", ""]
    figures = ["## Figures", ""] + [f"![{label}]({path.name})" for label, path in plots.items() if path] + [""]
    studies = sorted({s for r in rows for s in r.get("_studies", [])})
    head = [f"# {title or 'fs report: ' + name}", "",
            f"{len(rows)} result(s)" + (f" of study {', '.join(studies)}" if studies else "") +
            f"; workspace `{workspace.root}`. UAR = unweighted average recall (mean of per-class recall).", ""]
    text = "\n".join(head + body + figures + all_rows_section(rows) + warnings_section(rows)
                     + ["## Configurations", ""] + notes.markdown() + [""])
    atomic_write_text(folder / "report.md", text)
    if echo:
        echo(f"report: {folder / 'report.md'} ({sum(p is not None for p in plots.values())} figures)")
    return folder

