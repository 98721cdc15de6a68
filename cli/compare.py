"""``fs compare A B``: is result A's UAR different from B's on the same test utterances?"""

from __future__ import annotations

from typing import Any

import click

from cli._output import echo_json
from featurestore.workspace import Workspace


@click.command()
@click.argument("key_a")
@click.argument("key_b")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.pass_obj
def compare(ws: Workspace, key_a: str, key_b: str, as_json: bool) -> None:
    """Compare results KEY_A and KEY_B (config keys, or their first 6+ characters, from `fs results`).

    On the test utterances both were tested on (the same target, labels and speakers): the UAR
    difference A - B with its 95 % interval and p-value from a paired bootstrap over test speakers
    (every seed of each), and an exact McNemar test on utterances (one seed of each).
    """
    from classifiers.studies.intervals import compare as compare_predictions
    from classifiers.studies.ledger import Ledger
    from cli.probe import model_text

    ledger = Ledger.open(ws)
    a, b = ledger.result(key_a), ledger.result(key_b)
    found = compare_predictions(ledger.predictions(a["_row_key"]), ledger.predictions(b["_row_key"]),
                                (f"result {key_a}", f"result {key_b}"))
    if as_json:
        echo_json({"a": _about(a), "b": _about(b), **found.to_dict()})
        return
    p, m = found.paired, found.mcnemar
    for name, row in (("A", a), ("B", b)):
        c = row["config"]
        click.echo(f"{name}: {row['config_key'][:12]}  {c['source']} -> {c['target']}  {model_text(row)}  layer "
                   f"{c.get('layer')}  {c.get('classifier')}  norm {c.get('norm')}  shots {c.get('shots') or 0}")
    click.echo(f"on {found.n} common test utterances of {found.speakers} speakers: UAR A {100 * found.uar_a:.1f} %, "
               f"B {100 * found.uar_b:.1f} % (seeds {_seeds(found.seeds_a)} and {_seeds(found.seeds_b)})")
    click.echo(f"difference A - B: {100 * p.difference:+.1f} points, 95 % interval [{100 * p.low:+.1f}, "
               f"{100 * p.high:+.1f}], p = {p.p_value:.3g} (paired bootstrap over speakers, {p.n_resamples} resamples)")
    click.echo(f"McNemar (seed {found.mcnemar_seed}): {m.a_only} utterances right only under A, {m.b_only} only "
               f"under B, p = {m.p_value:.3g}")


def _seeds(seeds: list[int]) -> str:
    return ",".join(map(str, seeds))


def _about(row: dict[str, Any]) -> dict[str, Any]:
    return {"config_key": row["config_key"], "row_key": row["_row_key"], "config": row["config"],
            "uar_mean": row.get("uar_mean"), "uar_ci95": row.get("uar_ci95")}
