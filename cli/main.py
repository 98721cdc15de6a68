"""``fs``: the command line. Every command is a few lines around a public library function.

Commands are registered in :data:`COMMANDS` as ``(name, "module:attribute", short help)`` and
imported only when they run, so ``fs --help`` and light commands never load torch. To add a
command, append one line, e.g. ``("probe", "cli.probe:probe", "Train probes on stored features.")``.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

COMMANDS: list[tuple[str, str, str]] = [
    ("corpus", "cli.corpus:corpus", "Corpora: scan native layouts into manifests."),
    ("models", "cli.extract:models", "List the encoder registry."),
    ("extract", "cli.extract:extract", "Extract layer-wise embeddings of a model over corpora into the store."),
    ("store", "cli.store:store", "The feature store: list, inspect, verify, export, remove groups."),
    ("demo", "cli.demo:demo", "Run the main job on embedded synthetic corpora (no data or weights)."),
    ("probe", "cli.probe:probe", "Train a probe on one corpus's stored features, report UAR on another."),
    ("finetune", "cli.finetune:finetune",
     "Fine-tune from the store (head, CNN-LSTM, top-layer LoRA), report like probe."),
    ("sweep", "cli.sweep:sweep", "Run a study (YAML) of probe configurations in parallel into the ledger."),
    ("results", "cli.sweep:results", "List, filter and export the results ledger (CSV, JSON)."),
    ("report", "cli.sweep:report", "Markdown tables and PNG plots from the results ledger."),
    ("compare", "cli.compare:compare", "Compare two results: UAR difference, its interval, paired bootstrap and McNemar."),
    ("predict", "cli.predict:predict", "Label new audio with a probe result's saved probe (label + probabilities)."),
]

ENVIRONMENT = """\b
Environment:
  FS_WORKSPACE  default for --workspace
  FS_STORE      default for --store
  FS_DEBUG=1    show the traceback of an unexpected error (same as --debug)
"""


class LazyGroup(click.Group):
    """A group whose subcommands (``COMMANDS``) are imported on first use; errors become one line.

    Every exception a command raises ends here: :func:`cli.errors.report` prints one line on
    stderr and gives the exit status (no traceback unless ``--debug``/``FS_DEBUG=1``).
    """

    def __init__(self, *args: Any, lazy: list[tuple[str, str, str]] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy = {name: (target, short) for name, target, short in (lazy or [])}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module, _, attr = self.lazy[cmd_name][0].partition(":")
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the registered short help, without importing any command."""
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                rows.append((name, self.commands[name].get_short_help_str(80)))
            else:
                rows.append((name, self.lazy[name][1]))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except BaseException as exc:  # every error ends as one line and an exit status
            if isinstance(exc, SystemExit):
                raise
            from cli.errors import report

            ctx.exit(report(exc, debug=_debug(ctx)))


def _debug(ctx: click.Context) -> bool:
    return bool(ctx.params.get("debug")) or os.environ.get("FS_DEBUG", "") not in ("", "0")


CONTEXT_SETTINGS = {"max_content_width": 110, "help_option_names": ["-h", "--help"]}  # inherited by every command


@click.group(cls=LazyGroup, lazy=COMMANDS, epilog=ENVIRONMENT, context_settings=CONTEXT_SETTINGS)
@click.option("--workspace", "workspace", envvar="FS_WORKSPACE", type=click.Path(file_okay=False),
              default="./fs-workspace", show_default=True,
              help="Folder for manifests, the store and results (env FS_WORKSPACE).")
@click.option("--store", "store_url", envvar="FS_STORE", default=None,
              help="Feature store path or fsspec URL (env FS_STORE) [default: WORKSPACE/store.zarr].")
@click.option("--debug", is_flag=True, help="Show the traceback of an unexpected error (env FS_DEBUG=1).")
@click.version_option(package_name="fs-ser")
@click.pass_context
def fs(ctx: click.Context, workspace: str, store_url: str | None, debug: bool) -> None:
    """Feature store and classifiers for cross-language speech emotion recognition."""
    from featurestore.errors import raise_on_sigterm
    from featurestore.workspace import Workspace

    raise_on_sigterm()
    ctx.obj = Workspace.open(workspace, store_url)


def main() -> None:
    """Console entry point: ``fs`` (also ``python -m cli.main``)."""
    from cli.errors import exit_quietly_on_broken_pipe, report

    try:
        fs.main(prog_name="fs")
    except SystemExit as done:
        exit_quietly_on_broken_pipe()
        if done.code in INTERRUPTED:
            _leave_now(int(done.code))
        raise done
    except BaseException as exc:  # Ctrl-C before a command starts, and anything else
        status = report(exc, debug=os.environ.get("FS_DEBUG", "") not in ("", "0") or "--debug" in sys.argv)
        if status in INTERRUPTED:
            _leave_now(status)
        sys.exit(status)


INTERRUPTED = (130, 143)  # Ctrl-C, SIGTERM


def _leave_now(status: int) -> None:
    """Exit an interrupted run with ``status`` at once: exit handlers run and streams are flushed, but not the
    interpreter's teardown, which takes seconds with torch loaded on a busy machine (measured: 5-7 s)."""
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


if __name__ == "__main__":
    main()
