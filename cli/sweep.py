"""``fs sweep``, ``fs results``, ``fs report``: studies, the results ledger and reports."""

from __future__ import annotations

from typing import Any

import click

from classifiers.studies import settings
from cli._output import echo_json, echo_table
from featurestore.workspace import Workspace


def _filter_options(func: Any) -> Any:
    """The ledger filters shared by ``fs results`` and ``fs report``."""
    options = [
        click.option("--study", default=None, help="Rows of this study (the name in its file, e.g. paper)."),
        click.option("--source", default=None, help="Training corpus."),
        click.option("--target", default=None, help="Test corpus."),
        click.option("--model", default=None, help="Model under any of its names: alias, id, folder (relative, "
                     "absolute or its name), family, or weights hash."),
        settings.click_option("layer", default=None, show_default=False,
                              help="Layer choice as asked (last, best, 6, mean, concat:3,6, weighted)."),
        settings.click_option("classifier", default=None, show_default=False),
        settings.click_option("norm", default=None, show_default=False),
        click.option("--shots", default=None, type=int, help="Target utterances per class in training."),
        click.option("--condition", default=None, help="clean, target@10dB, source@10dB, ..."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _filters(**kwargs: Any) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if v is not None}


@click.command()
@click.argument("study")
@click.option("--jobs", "-j", "n_jobs", type=click.IntRange(min=1), default=None,
              help="Worker processes [default: the CPU cores].")
@click.option("--rerun", is_flag=True, help="Run every configuration again, even those in the ledger.")
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: worker processes here; ray: tasks on a Ray cluster (pip install -e '.[ray]').")
@click.option("--address", default=None,
              help="With --backend ray: HOST:PORT of the Ray head, or auto [default: a local Ray runtime].")
@click.option("--report/--no-report", "make_report", default=False, show_default=True,
              help="Write the study's report when the sweep ends.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (a list of objects).")
@click.option("--yes", "-y", is_flag=True, help="Run a large study (thousands of configurations) without asking.")
@click.pass_obj
def sweep(ws: Workspace, study: str, n_jobs: int | None, rerun: bool, backend: str, address: str | None,
          make_report: bool, as_json: bool, yes: bool) -> None:
    """Run every configuration of STUDY (a YAML file, or a shipped study: paper, demo).

    Results go to the workspace's ledger; configurations already there are answered from it.
    """
    from classifiers.studies.sweep import load_study, run_sweep
    from featurestore.store import FeatureStore

    if address and backend != "ray":
        raise click.UsageError("--address needs --backend ray")
    spec = load_study(study)
    store = FeatureStore(ws.store_url)
    results = run_sweep(spec, store, ws, n_jobs=n_jobs, progress=not as_json, rerun=rerun, backend=backend,
                        address=address, echo=None if as_json else lambda line: click.echo(line, err=True),
                        confirm=None if yes else _ask)
    if make_report:
        from classifiers.reports.report import ledger_predictions, write_report
        from classifiers.studies.ledger import Ledger

        folder = write_report(results, ws, name=spec.name, store=store,
                              predictions=ledger_predictions(Ledger.open(ws)))
    if as_json:
        echo_json(results)
        return
    cached = sum(bool(r.get("from_ledger")) for r in results)
    _print_rows(results)
    click.echo(f"{len(results)} configurations of study {spec.name!r}: {len(results) - cached} run, {cached} "
               f"answered from the ledger ({ws.results_dir / 'ledger.sqlite'})")
    click.echo(f"report: {folder / 'report.md'}" if make_report else f"report: fs report --study {spec.name}")


def _ask(size: str) -> bool:
    """Whether to run a large study: asked on a terminal; elsewhere (batch jobs) only ``--yes`` runs it."""
    import sys

    from classifiers.studies.sweep import SweepError

    if not sys.stdin.isatty():
        raise SweepError(f"{size}: not run; pass --yes to run a study this large")
    return click.confirm("run it?", default=False, err=True)


def _print_rows(results: list[dict[str, Any]]) -> None:
    from classifiers.studies.intervals import uar_text
    from classifiers.studies.ledger import flat_row

    table = []
    for r in results:
        f = flat_row(r)
        model = f"{f['model']} ({f['whisper_input']})" if f["whisper_input"] else f["model"]
        uar = uar_text(r) if f["uar_mean"] is not None else "-"
        table.append((f["source"], f["target"], model, f"{f['layer']}→{_layer(f['layer_used'])}",
                      f["classifier"], f["norm"], f["shots"], f["condition"], uar,
                      f"{100 * f['chance']:.1f}" if f["chance"] else None, str(f["config_key"])[:12]))
    echo_table(("SOURCE", "TARGET", "MODEL", "LAYER", "CLASSIFIER", "NORM", "SHOTS", "CONDITION", "UAR %", "CHANCE",
                "CONFIG"), table, right=("SHOTS", "UAR %", "CHANCE"))


def _layer(value: Any) -> str:
    if isinstance(value, list):
        return value[0] if len(set(map(str, value))) == 1 else ",".join(map(str, value))
    return str(value)


@click.command()
@_filter_options
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None,
              help="Write the matching rows to this CSV file (atomically).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --csv file.")
@click.option("--json", "as_json", is_flag=True, help="Print the full results as JSON.")
@click.pass_obj
def results(ws: Workspace, csv_path: str | None, overwrite: bool, as_json: bool, **filters: Any) -> None:
    """List, filter and export the results ledger of the workspace."""
    from classifiers.studies.ledger import Ledger

    ledger = Ledger.open(ws)
    chosen = _filters(**filters)
    rows = ledger.rows(**chosen)
    if not rows and chosen:
        raise _nothing_matches(ledger, chosen)
    if csv_path:
        path, count = ledger.export_csv(csv_path, overwrite=overwrite, **chosen)
        if not as_json:
            click.echo(f"{count} row(s) written to {path}")
    if as_json:
        echo_json(rows)
        return
    if csv_path:
        return
    if not rows:
        click.echo("the results ledger is empty; run `fs sweep STUDY` or `fs probe` first")
        return
    _print_rows(rows)


def _nothing_matches(ledger: Any, chosen: dict[str, Any]) -> Exception:
    """The error for filters that match no row, naming the studies and models the ledger holds."""
    from classifiers.studies.ledger import LedgerError

    studies = ", ".join(ledger.studies()) or "none"
    models = ", ".join(sorted({str(r.get("config", {}).get("model")) for r in ledger.rows()})) or "none"
    given = " ".join(f"--{k} {v}" for k, v in chosen.items())
    return LedgerError(f"no results match {given} (studies: {studies}; models: {models}); loosen the filters or "
                       "run `fs sweep STUDY` / `fs probe` first")


@click.command()
@_filter_options
@click.option("--name", default=None, help="Report folder name [default: the study, else 'report'].")
@click.option("--paper", is_flag=True, help="Put the study's published Table II numbers beside ours.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Write into this folder [default: WORKSPACE/reports/NAME].")
@click.option("--embedding", type=click.Choice(["pca", "tsne", "none"]), default="pca", show_default=True,
              help="2-D map of one layer's features (coloured by corpus and emotion).")
@click.option("--map-model", default=None, help="Model of the embedding map [default: the most frequent].")
@settings.click_option("layer", flag="--map-layer",
                       help="Layer of the embedding map: last, a layer number, mean or concat:3,6.")
@click.option("--setting", "heatmap_setting", default=None,
              help="Draw the heatmap of this setting only (words of its line, e.g. 'layer 6 · logreg'); "
                   "default: one heatmap per setting.")
@click.pass_obj
def report(ws: Workspace, name: str | None, paper: bool, out: str | None, embedding: str, map_model: str | None,
           map_layer: str | int, heatmap_setting: str | None, **filters: Any) -> None:
    """Markdown tables and PNG plots from the ledger (a study, or filtered rows)."""
    from classifiers.reports.report import ledger_predictions, write_report
    from classifiers.studies.ledger import Ledger
    from featurestore.store import FeatureStore

    chosen = _filters(**filters)
    ledger = Ledger.open(ws)
    rows = ledger.rows(**chosen)
    if not rows and chosen:
        raise _nothing_matches(ledger, chosen)
    folder = write_report(rows, ws, name=name or chosen.get("study") or "report", store=FeatureStore(ws.store_url),
                          paper=paper, out=out, embedding=embedding, map_model=map_model, map_layer=map_layer,
                          predictions=ledger_predictions(ledger), heatmap_setting=heatmap_setting)
    click.echo(f"report: {folder / 'report.md'}")
    for path in sorted(folder.glob("*.png")):
        click.echo(f"figure: {path}")
