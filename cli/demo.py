"""``fs demo``: run the main job on the embedded synthetic corpora."""

from __future__ import annotations

import click

from featurestore.demo import DEMO_MODELS
from featurestore.workspace import Workspace


@click.command()
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the corpora and random encoders.")
@click.option("--model", "models", multiple=True, default=DEMO_MODELS, show_default=True,
              help="Encoders to extract (download-free ones by default); repeatable.")
@click.option("--size", type=click.Choice(["demo", "tiny"]), default="demo", show_default=True,
              help="Size of the generated corpora (tiny: a few utterances per class).")
@click.pass_obj
def demo(ws: Workspace, seed: int, models: tuple[str, ...], size: str) -> None:
    """Demo corpora (demo-iemocap, ...) → extract → verify → sweep → report; print where outputs are.

    Your own corpora are never touched: the demo only adds or updates corpora it made itself.
    """
    from classifiers.reports.demo_study import demo_study_step
    from featurestore.demo import DEMO_STEPS, real_model_status, run_demo

    click.echo(f"workspace: {ws.root}")
    outcome = run_demo(ws, models=tuple(models), seed=seed, size=size, echo=click.echo,
                       steps=[*DEMO_STEPS, demo_study_step])
    click.echo(f"manifests: {ws.manifests_dir}  (fs corpus ls)")
    click.echo(f"store:     {ws.store_url}  (fs store ls / fs store info KEY)")
    if outcome.get("report"):
        click.echo(f"report:    {outcome['report']}/report.md  (fs results / fs report)")
    click.echo("real encoders for the study (fs extract --model ALIAS --corpus NAME):")
    for alias, where in real_model_status().items():
        click.echo(f"  {alias:<9} {where}")
    if not outcome.get("verified", True):
        raise click.ClickException("some store groups failed verification (see above)")
