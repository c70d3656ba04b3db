"""What the command-line modules share: loading the configuration with a clear error, and the --config/--set
options every command that reads it takes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from rootward.config import Config, load_config
from rootward.errors import RootwardError

SET_HELP = "Override one setting, e.g. --set receiver.grpc.port=14317 (repeatable; YAML values)."

F = TypeVar("F", bound=Callable[..., object])


def load(path: Path | None, overrides: tuple[str, ...]) -> Config:
    """The configuration, or a ClickException naming the bad key and where it came from."""
    try:
        return load_config(path, overrides=overrides)
    except RootwardError as e:
        raise click.ClickException(str(e)) from e


def config_options(command: F) -> F:
    """``--config/-c FILE`` (as ``config_path``) and repeatable ``--set KEY=VALUE`` (as ``overrides``)."""
    command = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)(command)
    return click.option(
        "--config", "-c", "config_path", type=click.Path(path_type=Path, dir_okay=False), help="YAML file."
    )(command)
