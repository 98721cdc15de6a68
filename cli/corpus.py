"""``fs corpus``: add, list, show and export corpus manifests."""

from __future__ import annotations

import json
from pathlib import Path

import click

from data_manifests.emobox import write_emobox_jsonl
from data_manifests.layouts import LAYOUTS, get_layout
from data_manifests.manifest import build_manifest, write_manifest_csv
from featurestore.workspace import Workspace


def _layout_names() -> list[str]:
    get_layout("emodb")  # loads the built-in parsers
    return sorted(LAYOUTS)


@click.group()
def corpus() -> None:
    """Corpora: scan native layouts into manifests."""


@corpus.command("add")
@click.argument("name")
@click.option("--layout", required=True, type=click.Choice(_layout_names()), help="Native layout of the corpus.")
@click.option("--root", required=True, type=click.Path(), help="Corpus folder (csv: the table; emobox: JSONL).")
@click.option("--labels", default="paper", show_default=True, help="Label map: paper, strict, or a YAML file.")
@click.option("--strict", is_flag=True, help="Fail when files do not match the layout's naming scheme.")
@click.option("--skip-bad-audio", is_flag=True, help="Exclude (and record) unreadable or empty audio files.")
@click.option("--force", is_flag=True, help="Replace a corpus of the same name.")
@click.pass_obj
def add(ws: Workspace, name: str, layout: str, root: str, labels: str, strict: bool, skip_bad_audio: bool,
        force: bool) -> None:
    """Scan ROOT in LAYOUT and save the manifest as NAME."""
    if ws.manifest_path(name).exists() and not force:
        raise click.ClickException(f"corpus {name!r} already exists in {ws.root}; pass --force to replace it")
    manifest = build_manifest(name, layout, root, labels=labels, strict=strict, skip_bad_audio=skip_bad_audio)
    path = ws.save_manifest(manifest, force=force)
    click.echo(f"{name}: {len(manifest)} utterances, {len(set(manifest.column('speaker')))} speakers, "
               f"labels {manifest.counts()} (map {manifest.label_map_name!r}) -> {path}")
    if manifest.dropped_labels:
        click.echo(f"  not in the map (left out): {manifest.dropped_labels}")
    if manifest.rejected:
        click.echo(f"  {len(manifest.rejected)} file(s) did not match the {layout} naming scheme:", err=True)
        for p, why in manifest.rejected[:10]:
            click.echo(f"    {p}: {why}", err=True)
        if len(manifest.rejected) > 10:
            click.echo(f"    ... and {len(manifest.rejected) - 10} more (see the manifest)", err=True)
    if manifest.excluded_audio:
        click.echo(f"  {len(manifest.excluded_audio)} unreadable audio file(s) excluded:", err=True)
        for _, why in manifest.excluded_audio[:10]:
            click.echo(f"    {why}", err=True)


@corpus.command("ls")
@click.pass_obj
def ls(ws: Workspace) -> None:
    """List the corpora of the workspace."""
    names = ws.corpus_names()
    if not names:
        click.echo(f"no corpora in {ws.root}; add one with `fs corpus add`")
    for name in names:
        m = ws.load_manifest(name)
        click.echo(f"{name:<16} {m.layout:<8} {len(m):>6} utts  {m.total_duration() / 3600:7.2f} h  "
                   f"map={m.label_map_name:<8} {m.root}")


@corpus.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def show(ws: Workspace, name: str, as_json: bool) -> None:
    """Counts per label and per speaker of corpus NAME."""
    summary = ws.load_manifest(name).summary()
    if as_json:
        click.echo(json.dumps(summary, indent=1))
        return
    click.echo(f"{summary['name']} ({summary['layout']}, {summary['language'] or '?'}) from {summary['root']}")
    click.echo(f"  {summary['utterances']} utterances, {summary['hours']} h, {summary['speakers']} speakers, "
               f"label map {summary['label_map']!r}, digest {summary['digest']}")
    click.echo(f"  labels: {summary['labels']}")
    if summary["dropped_labels"]:
        click.echo(f"  left out by the map: {summary['dropped_labels']}")
    classes = sorted(summary["labels"])
    click.echo("  " + f"{'speaker':<14}" + "".join(f"{c:>9}" for c in classes))
    for spk, counts in summary["per_speaker"].items():
        click.echo("  " + f"{spk:<14}" + "".join(f"{counts.get(c, 0):>9}" for c in classes))


@corpus.command("export")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["emobox", "csv"]), default="emobox", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Output file [default: WORKSPACE/exports/NAME.*].")
@click.pass_obj
def export(ws: Workspace, name: str, fmt: str, out: str | None) -> None:
    """Export corpus NAME's manifest (EmoBox JSONL or CSV)."""
    manifest = ws.load_manifest(name)
    path = Path(out) if out else ws.root / "exports" / f"{name}.{'jsonl' if fmt == 'emobox' else 'csv'}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "emobox":
        write_emobox_jsonl(manifest.rows, path, dataset=name)
    else:
        write_manifest_csv(manifest, path)
    click.echo(f"{len(manifest)} rows -> {path}")
