"""``fs corpus``: add, list, show, export and remove corpus manifests."""

from __future__ import annotations

from pathlib import Path

import click

from cli._output import echo_json, echo_table
from featurestore.workspace import Workspace


def _layout_names() -> list[str]:
    from data_manifests.layouts import LAYOUTS

    return sorted(LAYOUTS)


@click.group()
def corpus() -> None:
    """Corpora: scan native layouts into manifests."""


@corpus.command("add")
@click.argument("name")
@click.option("--layout", required=True, type=click.Choice(_layout_names()), help="Native layout of the corpus.")
@click.option("--root", required=True, type=click.Path(), help="Corpus folder (csv: the table; emobox: JSONL).")
@click.option("--labels", default="paper", show_default=True, help="Label map: paper, strict, or a YAML file.")
@click.option("--strict", is_flag=True, help="Fail when files do not match the layout's naming scheme or audio is implausible "
                   "(truncated, under 100 ms, silent).")
@click.option("--on-bad-audio", type=click.Choice(["fail", "skip"]), default="fail", show_default=True,
              help="Unreadable or empty audio: stop naming the files, or exclude them (recorded in the manifest).")
@click.option("--skip-bad-audio", is_flag=True, hidden=True, help="Deprecated: --on-bad-audio skip.")
@click.option("--overwrite", is_flag=True, help="Replace a corpus of the same name.")
@click.option("--force", is_flag=True, hidden=True, help="Deprecated: --overwrite.")
@click.pass_obj
def add(ws: Workspace, name: str, layout: str, root: str, labels: str, strict: bool, on_bad_audio: str,
        skip_bad_audio: bool, overwrite: bool, force: bool) -> None:
    """Scan ROOT in LAYOUT and save the manifest as NAME."""
    from data_manifests.manifest import build_manifest

    overwrite = overwrite or force
    if ws.manifest_path(name).exists() and not overwrite:
        raise click.ClickException(f"corpus {name!r} already exists in {ws.root}; pass --overwrite to replace it "
                                   f"(or `fs corpus rm {name}` first)")
    manifest = build_manifest(name, layout, root, labels=labels, strict=strict,
                              skip_bad_audio=skip_bad_audio or on_bad_audio == "skip")
    path = ws.save_manifest(manifest, force=overwrite)
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
    if manifest.suspicious_audio:
        click.echo(f"  warning: {len(manifest.suspicious_audio)} implausible audio file(s) kept (--strict refuses "
                   "them):", err=True)
        for path, why in manifest.suspicious_audio[:10]:
            click.echo(f"    {path}: {why}", err=True)


def _listing(ws: Workspace) -> list[dict]:
    """One dict per corpus; a manifest that cannot be read gets an ``error`` instead of its counts."""
    from featurestore.errors import FsError

    rows = []
    for name in ws.corpus_names():
        try:
            m = ws.load_manifest(name)
        except FsError as exc:
            rows.append({"name": name, "error": str(exc)})
            continue
        rows.append({"name": name, "layout": m.layout, "utterances": len(m),
                     "hours": round(m.total_duration() / 3600, 4), "speakers": len(set(m.column("speaker"))),
                     "label_map": m.label_map_name, "root": m.root})
    return rows


@corpus.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (a list of objects).")
@click.pass_obj
def ls(ws: Workspace, as_json: bool) -> None:
    """List the corpora of the workspace."""
    rows = _listing(ws)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo(f"no corpora in {ws.root}; add one with `fs corpus add`")
        return
    echo_table(("NAME", "LAYOUT", "UTTS", "HOURS", "SPEAKERS", "MAP", "ROOT"),
               [(r["name"], r.get("layout"), r.get("utterances"),
                 f"{r['hours']:.2f}" if "hours" in r else None, r.get("speakers"), r.get("label_map"),
                 r.get("root") or f"unreadable: {r.get('error')}") for r in rows],
               right=("UTTS", "HOURS", "SPEAKERS"))


@corpus.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def show(ws: Workspace, name: str, as_json: bool) -> None:
    """Counts per label and per speaker of corpus NAME."""
    summary = ws.load_manifest(name).summary()
    if as_json:
        echo_json(summary)
        return
    click.echo(f"{summary['name']} ({summary['layout']}, {summary['language'] or '?'}) from {summary['root']}")
    click.echo(f"  {summary['utterances']} utterances, {summary['hours']} h, {summary['speakers']} speakers, "
               f"label map {summary['label_map']!r}, digest {summary['digest']}")
    click.echo(f"  labels: {summary['labels']}")
    if summary["dropped_labels"]:
        click.echo(f"  left out by the map: {summary['dropped_labels']}")
    classes = sorted(summary["labels"])
    rows = [(spk, *(counts.get(c, 0) for c in classes)) for spk, counts in summary["per_speaker"].items()]
    echo_table(("SPEAKER", *classes), rows, right=classes)


@corpus.command("export")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["emobox", "csv"]), default="emobox", show_default=True,
              help="EmoBox JSONL or the manifest's CSV table (the csv layout reads it back).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Output file [default: WORKSPACE/exports/NAME.jsonl or .csv].")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.pass_obj
def export(ws: Workspace, name: str, fmt: str, out: str | None, overwrite: bool) -> None:
    """Export corpus NAME's manifest (EmoBox JSONL or CSV)."""
    from data_manifests.emobox import write_emobox_jsonl
    from data_manifests.manifest import write_manifest_csv

    manifest = ws.load_manifest(name)
    path = Path(out) if out else ws.root / "exports" / f"{name}.{'jsonl' if fmt == 'emobox' else 'csv'}"
    if path.exists() and not overwrite:
        raise click.ClickException(f"{path} exists; pass --overwrite to replace it, or choose --out")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "emobox":
        write_emobox_jsonl(manifest.rows, path, dataset=name)
    else:
        write_manifest_csv(manifest, path)
    click.echo(f"{len(manifest)} rows -> {path}")


@corpus.command("rm")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def rm(ws: Workspace, name: str, yes: bool) -> None:
    """Remove corpus NAME's manifest (its audio and stored features are left as they are)."""
    path = ws.manifest_path(name)
    if not path.exists():
        ws.load_manifest(name)  # the library's error: names the corpora that exist
    if not yes:
        click.confirm(f"remove corpus {name!r} ({path})?", abort=True)
    removed = ws.remove_manifest(name)
    click.echo(f"removed corpus {name} ({removed}); features extracted from it stay in the store "
               "(`fs store ls`, `fs store rm KEY`)")
