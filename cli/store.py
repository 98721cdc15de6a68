"""``fs store``: list, inspect, verify, export and remove feature groups."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cli._output import MISSING, cell, echo_json, echo_table
from featurestore.provenance import Provenance
from featurestore.workspace import Workspace


@click.group()
def store() -> None:
    """The feature store: one group per (corpus, condition, model)."""


def _open_store(ws: Workspace):
    """The workspace's store, checked first: an unreachable or refusing remote store is an error here, and
    a store whose root metadata was lost (it would read as empty) gets it back, with a note."""
    from featurestore.store import FeatureStore

    fstore = FeatureStore(ws.store_url)
    fstore.exists()
    if fstore.restored_root:
        click.echo(f"note: store {ws.store_url} had lost its root metadata (zarr.json); restored it (the groups "
                   "were intact)", err=True)
    return fstore


def condition_text(s: dict[str, Any]) -> str:
    """``clean``, ``<noise> <snr> dB seed <n>`` for a lone noise step, else the condition chain's text
    (``reverb:drr=0,rt60=0.3 > noise:...``) from a group summary."""
    text = s.get("condition_text") or ""
    if text and text != "clean" and not (text.startswith("noise:") and " > " not in text):
        return text
    if s.get("snr_db") is None and not s.get("noise"):
        return "clean" if s.get("condition", "clean") == "clean" else cell(s.get("condition"))
    snr = s.get("snr_db")
    return f"{s.get('noise') or 'noise'} {cell(snr)} dB seed {cell(s.get('noise_seed'))}"


def _summaries(fstore) -> list[dict[str, Any]]:
    """Summaries of every group; a group that cannot be read gets ``error`` and the listing goes on."""
    rows = []
    for key in fstore.keys():
        try:
            rows.append(fstore.open(key).summary())
        except Exception as exc:  # one damaged group must not hide the others
            rows.append({"key": key.path, "corpus": key.corpus, "condition": key.condition,
                         "model_key": key.model, "error": f"{type(exc).__name__}: {exc}"})
    return rows


@store.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (a list of group summaries).")
@click.pass_obj
def ls(ws: Workspace, as_json: bool) -> None:
    """One line per (corpus, condition, model) group, with what tells them apart."""
    fstore = _open_store(ws)
    rows = _summaries(fstore)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo(f"store {ws.store_url} is empty; run `fs extract`")
        return
    table = []
    for s in rows:
        if "error" in s:
            table.append((s["corpus"], s["condition"], MISSING, MISSING, MISSING, MISSING, MISSING,
                          f"unreadable: {s['error']}", s["key"]))
            continue
        shape = f"{cell(s.get('layers'))}x{cell(s.get('dim'))}"
        rows_text = f"{cell(s.get('stored'))}/{cell(s.get('utterances'))}"
        complete = s.get("complete", s.get("state") == "complete")
        table.append((s.get("corpus"), condition_text(s), s.get("model"), s.get("whisper_input"), shape,
                      s.get("frame_layers"), rows_text, "yes" if complete else "no", s.get("key")))
    echo_table(("CORPUS", "CONDITION", "MODEL", "INPUT", "LAYERSxDIM", "FRAMES", "ROWS", "COMPLETE", "KEY"),
               table, right=("ROWS",))


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def info_lines(key: str, prov: Provenance, summary: dict[str, Any], disk: int | None) -> list[str]:
    """A person's view of a group: model, weights, condition, counts, frames, provenance, size."""
    model, corpus, noise = prov.model, prov.corpus, prov.noise
    kind = "pretrained" if model.pretrained else "random weights"
    lines = [key,
             f"  model         {cell(model.name)} ({cell(model.model_id)}; family "
             f"{cell(model.family)}, {kind})",
             f"  weights_hash  {cell(model.weights_hash)}"]
    if model.settings:
        lines.append("  settings      " + ", ".join(f"{k}={cell(v)}" for k, v in sorted(model.settings.items())))
    if noise is not None:
        envs = cell(list(noise.environments))
        lines.append(f"  condition     noise {noise.source} at {cell(noise.snr_db)} dB, seed "
                     f"{cell(noise.seed)}, environments {envs}, fingerprint {cell(noise.fingerprint)}")
    else:
        lines.append("  condition     clean")
    lines.append(f"  corpus        {cell(corpus.name)} ({cell(corpus.layout)}, "
                 f"{cell(corpus.utterances)} utterances, label map {cell(corpus.label_map)}, "
                 f"manifest {cell(corpus.manifest_digest)}) from {cell(corpus.root)}")
    complete = summary.get("complete", summary.get("state") == "complete")
    lines.append(f"  rows          {cell(summary.get('stored'))} stored, {cell(summary.get('skipped'))} skipped, "
                 f"{cell(summary.get('pending'))} pending of {cell(summary.get('utterances'))}; "
                 + ("complete" if complete else "INCOMPLETE"))
    lines.append(f"  layers        {cell(prov.layers)} x {cell(prov.dim)} (mean and std per layer); "
                 f"frame-level layers: {cell(prov.frame_layers) if prov.frame_layers else 'none'}")
    lines.append(f"  made          {cell(prov.created)} by fs {cell(prov.fs_version)} on "
                 f"{cell(prov.device)} (torch {cell(prov.torch)}, sample rate "
                 f"{cell(prov.sample_rate)} Hz)")
    if prov.command:
        lines.append(f"  command       {prov.command}")
    if prov.aliases:
        lines.append(f"  also named    {cell(prov.aliases)}")
    if prov.skipped:
        utt, why = next(iter(prov.skipped.items()))
        lines.append(f"  skipped       {len(prov.skipped)} utterance(s), e.g. {utt}: {why}")
    lines.append(f"  on disk       {_size(disk) if disk is not None else MISSING}")
    return lines


@store.command("info")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="The group's raw attributes (provenance) as JSON.")
@click.pass_obj
def info(ws: Workspace, key: str, as_json: bool) -> None:
    """Provenance and counts of group KEY (CORPUS/CONDITION/MODEL, see `fs store ls`)."""
    fstore = _open_store(ws)
    group = fstore.open(key)
    if as_json:
        echo_json(group.attrs)
        return
    try:
        disk = fstore.disk_bytes(group.key)
    except OSError:
        disk = None
    click.echo("\n".join(info_lines(group.key.path, group.provenance, group.summary(), disk)))


@store.command("verify")
@click.argument("keys", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (a list of reports).")
@click.option("--records", default=8, show_default=True, type=click.IntRange(min=0),
              help="Under a condition: stored rows whose condition records are re-derived from (utterance id, seed).")
@click.option("--replay", default=0, show_default=True, type=click.IntRange(min=0),
              help="Under a condition: of those rows, rebuild this many from their records alone, encode them "
                   "(loads each group's model on the CPU) and compare with the stored features.")
@click.pass_obj
def verify(ws: Workspace, keys: tuple[str, ...], as_json: bool, records: int, replay: int) -> None:
    """Check groups (all by default): chunks, checksums, counts, NaNs, provenance vs the manifests,
    condition records.

    Exits 1 if any group fails.
    """
    from featurestore.store import StoreKey
    from featurestore.verify import verify_store

    fstore = _open_store(ws)
    if not keys and not fstore.keys():
        raise click.ClickException(f"nothing to verify: store {ws.store_url} is empty")
    reports = verify_store(fstore, ws, keys=[StoreKey.parse(k) for k in keys] or None, records=records,
                           replay=replay)
    failed = [r for r in reports if not r.ok]
    if as_json:
        echo_json([r.to_dict() for r in reports])
    else:
        for r in reports:
            facts = ", ".join(f"{k} {cell(v)}" for k, v in r.facts.items())
            click.echo(f"{'OK  ' if r.ok else 'FAIL'} {r.key}" + (f"  ({facts})" if facts else ""))
            for err in r.errors:
                click.echo(f"     error: {err}")
            for warn in r.warnings:
                click.echo(f"     warning: {warn}")
        click.echo(f"{len(reports)} group(s) verified, {len(failed)} failed")
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(reports)} group(s) failed verification")


@store.command("export")
@click.argument("key")
@click.option("--format", "fmt", type=click.Choice(["h5"]), default="h5", show_default=True,
              help="File format (HDF5).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Output file [default: WORKSPACE/exports/<key with / as __>.h5].")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.pass_obj
def export(ws: Workspace, key: str, fmt: str, out: str | None, overwrite: bool) -> None:
    """Export group KEY to HDF5, with labels and speakers from the corpus manifest and noise records."""
    from featurestore.errors import FsError
    from featurestore.export import export_h5

    group = _open_store(ws).open(key)
    path = Path(out) if out else ws.root / "exports" / (group.key.path.replace("/", "__") + ".h5")
    if path.exists() and not overwrite:
        raise click.ClickException(f"{path} exists; pass --overwrite to replace it, or choose --out")
    try:
        manifest = ws.load_manifest(group.key.corpus)
    except FsError as exc:  # missing or unreadable: the group is still worth exporting
        manifest = None
        click.echo(f"note: {exc}; exporting without labels", err=True)
    export_h5(group, path, manifest=manifest)
    click.echo(f"{group.key} -> {path}")


@store.command("rm")
@click.argument("key")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def rm(ws: Workspace, key: str, yes: bool) -> None:
    """Delete group KEY (CORPUS/CONDITION/MODEL) from the store."""
    fstore = _open_store(ws)
    from featurestore.store import StoreKey

    k = StoreKey.parse(key)
    if not fstore.has(k):
        fstore.open(k)  # the library's error: names the fix
    if not yes:
        click.confirm(f"delete {k} from {ws.store_url}?", abort=True)
    with fstore.lock(k):
        fstore.delete(k)
    click.echo(f"deleted {k}")
