"""``fs demo``'s last step: the shipped ``demo`` study swept on the demo corpora, then its report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from classifiers.reports.report import write_report
from classifiers.studies.ledger import Ledger
from classifiers.studies.sweep import load_study, run_sweep
from featurestore.store import FeatureStore
from featurestore.workspace import Workspace


def run_demo_study(ws: Workspace, echo: Callable[[str], None] = print, n_jobs: int = 1) -> Path:
    """Run the shipped ``demo`` study on the demo corpora and write its report; returns the report folder."""
    store = FeatureStore(ws.store_url)
    study = load_study("demo")
    results = run_sweep(study, store, ws, n_jobs=n_jobs, progress=False)
    cached = sum(r["from_ledger"] for r in results)
    echo(f"sweep {study.name}: {len(results)} configurations ({cached} answered from the ledger)")
    rows = Ledger.open(ws).rows(study=study.name)
    folder = write_report(rows, ws, name=study.name, store=store, title=f"fs demo study ({study.name})")
    echo(f"report: {folder / 'report.md'}")
    return folder


def demo_study_step(run: Any) -> None:
    """``fs demo``'s last step (a :class:`featurestore.demo.DemoRun` step): the demo study + its report.

    Runs only on a verified store; puts the report folder in ``run.outcome["report"]``.
    """
    if not run.outcome.get("verified", False):
        return
    if run.size != "demo" or set(run.models) != {"logmel", "tiny-wav2vec2"}:
        run.echo("study: the demo study needs the default demo corpora and models; skipped")
        return
    run.outcome["report"] = run_demo_study(run.ws, run.echo)
