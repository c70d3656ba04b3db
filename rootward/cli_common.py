"""What the command-line modules share: loading the configuration with a clear error, the --config/--set options
every command that reads it takes, a call to a running Rootward's API, and how a time is printed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

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


def api_call(
    api: str,
    token: str | None,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    local: bool = False,
    params: dict[str, Any] | None = None,
) -> Any:
    """One API call; its JSON, or a ClickException with the server's message (or why it could not be reached).
    ``local``: a call that may go without a token (a write from the pod itself when no tokens are set)."""
    import httpx

    if not token and not local:
        raise click.UsageError("an operator token is needed: --token or ROOTWARD_TOKEN (policies.approvals.tokens)")
    url = api.rstrip("/") + path
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        r = httpx.request(method, url, headers=headers, json=body, params=params, timeout=30)
    except httpx.HTTPError as err:
        raise click.ClickException(f"cannot reach {api}: {err}") from err
    try:
        data = r.json()
    except ValueError:
        data = {"message": r.text[:300]}
    if r.status_code >= 400:
        raise click.ClickException(f"{r.status_code}: {data.get('message', data)}")
    return data


def when(t: float | None) -> str:
    """A time as the commands print it (RFC 3339, UTC), or "-"."""
    from rootward.topology.queries import format_time

    return "-" if t is None else format_time(t)


def config_options(command: F) -> F:
    """``--config/-c FILE`` (as ``config_path``) and repeatable ``--set KEY=VALUE`` (as ``overrides``)."""
    command = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)(command)
    return click.option(
        "--config", "-c", "config_path", type=click.Path(path_type=Path, dir_okay=False), help="YAML file."
    )(command)
