"""Which rule picks a good setting for a target it has no labels for? Measured on real corpora.

For every ordered pair of the workspace's corpora and every candidate setting (layer x
normalisation x classifier), a transfer probe gives a UAR. Three rules then choose one setting per
target without reading its labels, and are scored on that target's pairs:

- ``lto``: leave-target-out, the mean UAR over the ordered pairs among the *other* corpora
  (:func:`classifiers.studies.selection.select_lto`, with its speaker guard);
- ``lto-unguarded``: the same without the guard (shows what the guard is for);
- ``source-dev``: today's ``--layer best`` (a speaker-independent dev split of the source), per norm;

against the best single fixed setting chosen in hindsight on the test pairs themselves.

    python bench/bench_selection.py                       # ../shared corpora + Whisper-base (trim)
    python bench/bench_selection.py --workspace WS --model NAME --out bench/out/selection.json
    python bench/bench_selection.py --workspace WS --rules lto,source,entropy,snd,iwcv --norms none,corpus,speaker

Without ``--workspace`` the script adds URDU, EMODB and RAVDESS from ``../shared`` to a workspace in
``bench/out/selection-ws`` and extracts the model there (about 4 minutes on 2 cores, once).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FS_SHARED", ROOT.parent / "shared"))
LAYOUTS = {"urdu": ("urdu", "URDU"), "emodb": ("emodb", "EMODB"), "ravdess": ("ravdess", "RAVDESS")}
# How each corpus was recorded (a design fact, never read from labels): acted corpora have every
# speaker in every emotion; URDU's talk-show speakers mostly carry one emotion each.
SPEAKERS_COVER_CLASSES = {"emodb": True, "ravdess": True, "emovo": True, "iemocap": True, "urdu": False}


def prepare(workspace: Path, model: str) -> None:
    """Add the three real corpora and extract ``model`` (trim input) where not done yet."""
    fs = [sys.executable, "-m", "cli.main", "--workspace", str(workspace)]
    for name, (layout, folder) in LAYOUTS.items():
        if not (workspace / "manifests" / f"{name}.json").exists():
            subprocess.run([*fs, "corpus", "add", name, "--layout", layout, "--root", str(SHARED / "corpora" / folder)],
                           check=True, cwd=ROOT)
    corpora = [a for name in LAYOUTS for a in ("--corpus", name)]
    subprocess.run([*fs, "extract", "--model", model, "--whisper-input", "trim", *corpora], check=True, cwd=ROOT)


def through_select(ws: object, store: object, model: str, corpora: list[str], norms: list[str],
                   classifiers: list[str], seeds: int) -> dict:
    """The library's ``--select lto`` path (:func:`classifiers.studies.engine.run_selected`) on every ordered
    pair, the best fixed grid setting in hindsight, and multi-source (each corpus as target from the others)
    with the setting LTO chose for that target, beside the single-source numbers. UARs in %."""
    from classifiers.studies.engine import candidate_config, run, select
    from classifiers.studies.protocols import ProbeConfig

    grid = {"norms": norms, "classifiers": classifiers}
    pairs = [(s, t) for s in corpora for t in corpora if s != t]
    cache: dict = {}

    def uar(setting: tuple, source: object, target: str) -> float:
        config = candidate_config(ProbeConfig(source=source, target=target, model=model, seeds=seeds), setting)
        return 100 * run(config, store, ws, cache=cache, ledger=False).uar_mean

    started = time.perf_counter()
    chosen, lto, settings = {}, {}, []
    for s, t in pairs:  # what `fs probe --select lto` does: engine.select, then the chosen setting on the pair
        selection = select(ProbeConfig(source=s, target=t, model=model, seeds=seeds), "lto", store, ws,
                           grid=grid, cache=cache, ledger=False)
        lto[f"{s}->{t}"] = uar(selection.chosen, s, t)
        chosen[t] = selection.chosen
        settings = [*selection.mean_scores, *selection.excluded]
    select_seconds = time.perf_counter() - started
    hindsight = {st: float(np.mean([uar(st, s, t) for s, t in pairs])) for st in settings}
    best = max(hindsight, key=hindsight.get)
    fixed = {f"{s}->{t}": uar(best, s, t) for s, t in pairs}
    multi = {}
    for t in corpora:
        setting = chosen[t]
        others = tuple(c for c in corpora if c != t)
        multi[f"{'+'.join(others)}->{t}"] = {
            "multi": uar(setting, others, t), **{f"{s}->{t}": uar(setting, s, t) for s in others}}
    return {"lto": lto, "lto_mean": float(np.mean(list(lto.values()))), "chosen": chosen,
            "best_fixed": list(best), "best_fixed_pairs": fixed, "best_fixed_mean": float(np.mean(list(fixed.values()))),
            "multi_source": multi, "select_seconds": select_seconds}


RULES: tuple[str, ...] = ("lto", "source", "entropy", "snd", "iwcv")  # every --select rule, label-free


def rule_table(ws: object, store: object, model: str, corpora: list[str], norms: list[str],
               classifiers: list[str], rules: tuple[str, ...] = RULES) -> dict:
    """Which rule to trust, measured: for every ``rule`` and ordered pair, the rule's choice through
    :func:`classifiers.studies.engine.select` (1 seed, no ledger), its UAR on the pair, the points lost against
    the best grid setting on that pair in hindsight and the Spearman correlation of the rule's candidate scores
    with the candidates' true UAR on the pair (:func:`~classifiers.studies.selection.rank_agreement`). UARs in %."""
    from classifiers.studies.engine import candidate_config, run, select
    from classifiers.studies.protocols import ProbeConfig
    from classifiers.studies.selection import rank_agreement

    grid = {"norms": norms, "classifiers": classifiers}
    pairs = [(s, t) for s in corpora for t in corpora if s != t]
    cache: dict = {}
    truth: dict[tuple, float] = {}

    def uar(setting: tuple, source: str, target: str) -> float:
        if (setting, source, target) not in truth:
            config = candidate_config(ProbeConfig(source=source, target=target, model=model, seeds=1), setting)
            truth[(setting, source, target)] = 100 * run(config, store, ws, cache=cache, ledger=False).uar_mean
        return truth[(setting, source, target)]

    table: dict[str, dict] = {}
    for rule in rules:
        started, per_pair = time.perf_counter(), {}
        for s, t in pairs:
            sel = select(ProbeConfig(source=s, target=t, model=model, seeds=1), rule, store, ws, grid=grid,
                         cache=cache, ledger=False)
            hindsight = {st: uar(st, s, t) for st in [*sel.mean_scores, *sel.excluded]}
            agree = rank_agreement(sel.mean_scores, hindsight)
            per_pair[f"{s}->{t}"] = {"chosen": list(sel.chosen), "uar": hindsight[sel.chosen],
                                     "best": list(agree["best_in_hindsight"]), "best_uar": hindsight[agree["best_in_hindsight"]],
                                     "points_lost": agree["points_lost"], "spearman": agree["spearman"], "n": agree["n"]}
        rows = list(per_pair.values())
        table[rule] = {"mean_uar": float(np.mean([r["uar"] for r in rows])),
                       "mean_points_lost": float(np.mean([r["points_lost"] for r in rows])),
                       "mean_spearman": float(np.nanmean([r["spearman"] for r in rows])),
                       "seconds": time.perf_counter() - started, "pairs": per_pair}
    return table


def print_rule_table(table: dict) -> None:
    """The rule table: mean UAR of each rule's choice, points lost against hindsight, Spearman; then per pair."""
    pairs = list(next(iter(table.values()))["pairs"])
    print("rule | mean UAR of choice | points lost vs hindsight | mean Spearman | " + " | ".join(pairs))
    for rule, row in table.items():
        cells = [f"{row['pairs'][p]['uar']:.1f} ({row['pairs'][p]['spearman']:+.2f})" for p in pairs]
        print(f"{rule} | {row['mean_uar']:.1f} | {row['mean_points_lost']:.1f} | {row['mean_spearman']:+.2f} | "
              + " | ".join(cells) + f"   [{row['seconds']:.0f} s]")
    best = next(iter(table.values()))["pairs"]
    print("hindsight best per pair | " + " | ".join(f"{p} {best[p]['best_uar']:.1f}" for p in pairs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspace", type=Path, default=None)
    parser.add_argument("--model", default=str(SHARED / "models" / "whisper-base-encoder"))
    parser.add_argument("--corpora", default="urdu,emodb,ravdess")
    parser.add_argument("--norms", default="none,source,corpus,speaker")
    parser.add_argument("--classifiers", default="logreg")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "selection.json")
    parser.add_argument("--via-select", action="store_true",
                        help="Run through `--select lto` and multi-source (engine.run_selected) instead of the grid.")
    parser.add_argument("--rules", default=None, metavar="lto,source,entropy,snd,iwcv",
                        help="Compare these --select rules on every ordered pair (choice UAR, points lost, Spearman).")
    args = parser.parse_args()

    from classifiers.studies.protocols import ProbeConfig, run_probe
    from classifiers.studies.selection import Candidate, TargetFacts, rank_agreement, select_lto
    from featurestore.store import FeatureStore
    from featurestore.workspace import Workspace

    workspace = args.workspace
    if workspace is None:
        workspace = ROOT / "bench" / "out" / "selection-ws"
        prepare(workspace, args.model)
    ws = Workspace.open(workspace)
    store = FeatureStore(ws.store_url)
    corpora = args.corpora.split(",")
    if args.rules:
        norms = [n for n in args.norms.split(",") if n != "source"]
        table = rule_table(ws, store, args.model, corpora, norms, args.classifiers.split(","), tuple(args.rules.split(",")))
        print_rule_table(table)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_name(args.out.stem + "-rules.json").write_text(json.dumps(table, indent=1, default=str))
        return
    if args.via_select:
        norms = [n for n in args.norms.split(",") if n != "source"]
        out = through_select(ws, store, args.model, corpora, norms, args.classifiers.split(","), seeds=1)
        print(f"--select lto: mean {out['lto_mean']:.1f} | " + " | ".join(f"{k} {v:.1f}" for k, v in out["lto"].items()))
        print(f"best fixed in hindsight {out['best_fixed']}: mean {out['best_fixed_mean']:.1f} | "
              + " | ".join(f"{k} {v:.1f}" for k, v in out["best_fixed_pairs"].items()))
        print("lto choices: " + "; ".join(f"{t}: {c}" for t, c in out["chosen"].items()))
        for pair, row in out["multi_source"].items():
            print(f"multi-source {pair}: {row['multi']:.1f} vs single " + ", ".join(
                f"{k} {v:.1f}" for k, v in row.items() if k != "multi"))
        print(f"--select lto for {len(out['lto'])} pairs: {out['select_seconds']:.1f} s (cold cache, no ledger)")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_name(args.out.stem + "-via-select.json").write_text(json.dumps(out, indent=1, default=str))
        return
    num_layers = store.open(store.resolve(corpora[0], args.model)).num_layers
    norms, classifiers = args.norms.split(","), args.classifiers.split(",")
    settings = [(layer, norm, clf) for clf in classifiers for norm in norms for layer in range(num_layers)]
    pairs = [(s, t) for s in corpora for t in corpora if s != t]
    cache: dict = {}
    started = time.perf_counter()

    def probe(**kw: object) -> float:
        config = ProbeConfig(model=args.model, seeds=1, **kw)
        return run_probe(config, store, ws, views=cache).uar_mean

    uar = {(st, s, t): probe(source=s, target=t, layer=st[0], norm=st[1], classifier=st[2])
           for st in settings for s, t in pairs}
    grid_seconds = time.perf_counter() - started

    def on_pairs(setting: tuple, target: str) -> float:
        return float(np.mean([uar[(setting, s, target)] for s in corpora if s != target]))

    hindsight = {st: float(np.mean([uar[(st, s, t)] for s, t in pairs])) for st in settings}
    best_fixed = max(hindsight, key=hindsight.get)
    rules: dict[str, dict[str, float]] = {"lto": {}, "lto-unguarded": {}, "hindsight-fixed": {}}
    choices: dict[str, dict[str, str]] = {"lto": {}, "lto-unguarded": {}}
    agreement = {}
    started = time.perf_counter()
    for target in corpora:
        speakers = ws.load_manifest(target).column("speaker")  # ids only: the labels are never read
        facts = TargetFacts.from_speakers(speakers, n_classes=4,
                                          speakers_cover_classes=SPEAKERS_COVER_CLASSES.get(target, False))
        for rule, guard in (("lto", facts), ("lto-unguarded", TargetFacts(4, 10**6, 10**6, True))):
            cands = [Candidate(st, needs_speaker_variety=st[1] == "speaker") for st in settings]
            sel = select_lto(cands, corpora, target, lambda st, s, t: uar[(st, s, t)], facts=guard)
            for s in corpora:
                if s != target:
                    rules[rule][f"{s}->{target}"] = uar[(sel.chosen, s, target)]
            choices[rule][target] = "layer {} norm {} {}".format(*sel.chosen)
            if rule == "lto":
                agreement[target] = rank_agreement(sel.mean_scores, {st: on_pairs(st, target) for st in sel.mean_scores})
        for s in corpora:
            if s != target:
                rules["hindsight-fixed"][f"{s}->{target}"] = uar[(best_fixed, s, target)]
    for norm in norms:
        rule = f"source-dev ({norm})"
        rules[rule] = {f"{s}->{t}": probe(source=s, target=t, layer="best", norm=norm, classifier=classifiers[0])
                       for s, t in pairs}
    select_seconds = time.perf_counter() - started

    header = ["rule", "mean", *[f"{s}->{t}" for s, t in pairs]]
    print(" | ".join(header))
    for rule, row in rules.items():
        print(" | ".join([rule, f"{100 * np.mean(list(row.values())):.1f}", *[f"{100 * row[h]:.1f}" for h in header[2:]]]))
    print(f"best fixed setting in hindsight: layer {best_fixed[0]} norm {best_fixed[1]} {best_fixed[2]}")
    for rule, chosen in choices.items():
        print(f"{rule} choices: " + "; ".join(f"{t}: {c}" for t, c in chosen.items()))
    for target, agree in agreement.items():
        print(f"lto on {target}: spearman {agree['spearman']:.2f} over {agree['n']} settings, "
              f"{100 * agree['points_lost']:.1f} points lost")
    print(f"grid: {len(settings)} settings x {len(pairs)} pairs in {grid_seconds:.1f} s; rules in {select_seconds:.1f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "model": args.model, "corpora": corpora, "settings": [list(s) for s in settings],
        "rules": {k: v for k, v in rules.items()}, "choices": choices,
        "best_fixed": list(best_fixed), "agreement": {t: {**a, "chosen": list(a["chosen"]),
                                                          "best_in_hindsight": list(a["best_in_hindsight"])}
                                                      for t, a in agreement.items()},
        "grid_seconds": grid_seconds, "select_seconds": select_seconds,
        "grid": {f"{st}|{s}->{t}": v for (st, s, t), v in uar.items()},
    }, indent=1, default=str))
    print(f"figures: {args.out}")


if __name__ == "__main__":
    main()
