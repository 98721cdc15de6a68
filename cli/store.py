"""``fs store``: list, inspect, verify and export feature groups."""

from __future__ import annotations

import json
from pathlib import Path

import click

from data_manifests.manifest import ManifestError
from featurestore.export import export_h5
from featurestore.store import FeatureStore, StoreKey
from featurestore.verify import verify_group
from featurestore.workspace import Workspace


def _keys(store: FeatureStore, key: str | None) -> list[StoreKey]:
    if key:
        return [StoreKey.parse(key)]
    return store.keys()


@click.group()
def store() -> None:
    """The feature store."""


@store.command("ls")
@click.pass_obj
def ls(ws: Workspace) -> None:
    """One line per (corpus, condition, model) group."""
    fstore = FeatureStore(ws.store_url)
    keys = fstore.keys()
    if not keys:
        click.echo(f"store {ws.store_url} is empty; run `fs extract`")
    for key in keys:
        s = fstore.open(key).summary()
        click.echo(f"{key.path:<64} {s['state']:<10} {s['stored']:>6}/{s['utterances']:<6} L={s['layers']} "
                   f"D={s['dim']} frames={s['frame_layers']}")


@store.command("info")
@click.argument("key")
@click.pass_obj
def info(ws: Workspace, key: str) -> None:
    """Provenance and counts of group KEY (CORPUS/CONDITION/MODEL)."""
    group = FeatureStore(ws.store_url).open(StoreKey.parse(key))
    click.echo(json.dumps({"summary": group.summary(), "provenance": group.attrs}, indent=1, default=str))


@store.command("verify")
@click.argument("key", required=False)
@click.pass_obj
def verify(ws: Workspace, key: str | None) -> None:
    """Check counts, NaNs, frame offsets and provenance vs manifest (all groups by default)."""
    fstore = FeatureStore(ws.store_url)
    keys = _keys(fstore, key)
    if not keys:
        raise click.ClickException(f"nothing to verify: store {ws.store_url} is empty")
    failed = 0
    for k in keys:
        try:
            manifest = ws.load_manifest(k.corpus)
        except ManifestError:
            manifest = None
        report = verify_group(fstore.open(k), manifest)
        click.echo(f"{'OK  ' if report.ok else 'FAIL'} {k.path}  {report.facts}")
        for err in report.errors:
            click.echo(f"     error: {err}")
        for warn in report.warnings:
            click.echo(f"     warning: {warn}")
        failed += not report.ok
    if failed:
        raise click.ClickException(f"{failed} of {len(keys)} group(s) failed verification")


@store.command("export")
@click.argument("key")
@click.option("--format", "fmt", type=click.Choice(["h5"]), default="h5", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="[default: WORKSPACE/exports/<key>.h5]")
@click.pass_obj
def export(ws: Workspace, key: str, fmt: str, out: str | None) -> None:
    """Export group KEY to HDF5."""
    k = StoreKey.parse(key)
    path = Path(out) if out else ws.root / "exports" / (k.path.replace("/", "__") + ".h5")
    export_h5(FeatureStore(ws.store_url).open(k), path)
    click.echo(f"{k} -> {path}")


@store.command("rm")
@click.argument("key")
@click.option("--yes", is_flag=True, help="Do not ask.")
@click.pass_obj
def rm(ws: Workspace, key: str, yes: bool) -> None:
    """Delete group KEY (CORPUS/CONDITION/MODEL) from the store."""
    fstore = FeatureStore(ws.store_url)
    k = StoreKey.parse(key)
    fstore.open(k)  # a clear error when it does not exist
    if not yes:
        click.confirm(f"delete {k} from {ws.store_url}?", abort=True)
    with fstore.lock(k):
        fstore.delete(k)
    click.echo(f"deleted {k}")
