"""``fs``: the command line. Every command is a few lines around a public library function."""

from __future__ import annotations

import click

from cli.errors import KNOWN_ERRORS
from featurestore.workspace import Workspace


class _FsGroup(click.Group):
    """Turns the library's known errors into a one-line message and exit status 1."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except KNOWN_ERRORS as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_FsGroup)
@click.option("--workspace", "workspace", envvar="FS_WORKSPACE", type=click.Path(file_okay=False),
              default="./fs-workspace", show_default=True, help="Folder for manifests, the store and results.")
@click.option("--store", "store_url", envvar="FS_STORE", default=None,
              help="Feature store path or fsspec URL [default: WORKSPACE/store.zarr].")
@click.version_option(package_name="fs-ser")
@click.pass_context
def fs(ctx: click.Context, workspace: str, store_url: str | None) -> None:
    """Feature store and classifiers for cross-language speech emotion recognition."""
    ctx.obj = Workspace.open(workspace, store_url)


def _register() -> None:
    from cli import corpus, demo, extract, store

    fs.add_command(corpus.corpus)
    fs.add_command(extract.extract)
    fs.add_command(extract.models)
    fs.add_command(store.store)
    fs.add_command(demo.demo)


_register()


def main() -> None:
    fs(prog_name="fs")


if __name__ == "__main__":
    main()
