"""The Dockerfile (no container engine runs here): it parses with Docker's own parser (the ``dockerfile``
package wraps BuildKit's), builds in a stage with a C compiler and runs in a slim one as a non-root user, copies what
the package build needs and nothing .dockerignore leaves out, starts ``rootward serve``, and its health check works
against a running Rootward."""

from __future__ import annotations

import fnmatch
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import dockerfile
import pytest

from rootward.app import App
from rootward.cli import main
from rootward.config import LOCAL_PORTS, Config, load_config
from rootward.testing import free_ports

from deploy_files import REPO, pod_spec
from kustomize_reader import render

DEFAULTS = Config()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _stages() -> list[list[dockerfile.Command]]:
    """The Dockerfile's instructions, split into its stages (each starts with FROM)."""
    stages: list[list[dockerfile.Command]] = []
    for command in dockerfile.parse_file(str(REPO / "Dockerfile")):
        if command.cmd == "FROM":
            stages.append([])
        elif not stages:
            assert command.cmd == "ARG", f"{command.original} before the first FROM"
            continue
        stages[-1].append(command)
    return stages


def _all(stage: list[dockerfile.Command], cmd: str) -> list[dockerfile.Command]:
    return [c for c in stage if c.cmd == cmd]


def _last(stage: list[dockerfile.Command], cmd: str) -> dockerfile.Command:
    found = _all(stage, cmd)
    assert found, f"the stage has no {cmd}"
    return found[-1]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore leaves ``path`` (relative, with /) out of the build context: Docker's rules, the last
    matching pattern wins, ``!`` re-includes, ``**`` matches any number of folders, and a folder that matches
    takes what is under it along."""
    parts = path.split("/")
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern_parts = pattern.strip("/").split("/")
        if any(_match(pattern_parts, parts[:n]) for n in range(1, len(parts) + 1)):
            ignored = not negate
    return ignored


def _match(pattern: list[str], parts: list[str]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match(pattern[1:], parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _match(pattern[1:], parts[1:])


def _dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_the_dockerfile_parses_into_a_builder_and_a_runtime_stage() -> None:
    froms = [c for c in dockerfile.parse_file(str(REPO / "Dockerfile")) if c.cmd == "FROM"]
    assert [c.value[1:] for c in froms] == [("AS", "builder"), ()]
    assert len({c.value[0] for c in froms}) == 1, "both stages on one base image (the venv's interpreter path)"
    args = dict(c.value[0].split("=", 1) for c in dockerfile.parse_file(str(REPO / "Dockerfile")) if c.cmd == "ARG")
    assert froms[0].value[0] == "${PYTHON_IMAGE}"
    assert "-slim" in args["PYTHON_IMAGE"]
    python = args["PYTHON_IMAGE"].split(":", 1)[1].split("-", 1)[0]
    minimum = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.split("."))) >= tuple(map(int, minimum.split(".")))


def test_the_builder_has_a_c_compiler_and_the_runtime_none() -> None:
    builder, runtime = _stages()
    installs = " ".join(c.value[0] for c in _all(builder, "RUN"))
    assert "apt-get install" in installs
    assert " gcc" in installs, "a C compiler for the Cython kernels"
    assert "libc6-dev" in installs, "the C library's headers"
    assert not any("apt-get install" in c.value[0] for c in _all(runtime, "RUN"))
    copies = _all(runtime, "COPY")
    assert [(c.flags, c.value) for c in copies] == [(("--from=builder",), ("/opt/rootward", "/opt/rootward"))]


def test_the_builder_installs_the_package_without_dev_extras() -> None:
    builder, _ = _stages()
    runs = [shlex.split(c.value[0].replace("\\\n", " ")) for c in _all(builder, "RUN")]
    pip_installs = [r for r in runs if "pip" in " ".join(r) and "install" in r]
    assert pip_installs, "the builder installs nothing"
    words = [w for r in pip_installs for w in r]
    assert "." in words
    assert not any("[dev]" in w or w.startswith(".[") for w in words), "no dev extras in the image"
    assert PYPROJECT["project"]["scripts"]["rootward"] == "rootward.cli:main"


def test_every_copied_source_exists_and_is_in_the_build_context() -> None:
    builder, _ = _stages()
    patterns = _dockerignore()
    copied: set[str] = set()
    for command in _all(builder, "COPY"):
        assert not command.flags, command.original
        *sources, _destination = command.value
        for source in sources:
            path = REPO / source
            assert path.exists(), f"COPY {source}: no such file or folder"
            assert not _ignored(source.rstrip("/"), patterns), f"COPY {source}: .dockerignore leaves it out"
            copied.add(source.rstrip("/"))
            for file in path.rglob("*") if path.is_dir() else []:
                relative = file.relative_to(REPO).as_posix()
                if file.suffix in (".py", ".pyx", ".pyi", ".rego", ".typed") and "__pycache__" not in relative:
                    assert not _ignored(relative, patterns), f"{relative} is needed but .dockerignore leaves it out"
    # What `pip install .` reads: pyproject.toml, its readme, every package folder and every Cython source.
    needed = {
        "pyproject.toml",
        PYPROJECT["project"]["readme"],
        *PYPROJECT["tool"]["setuptools"]["package-dir"].values(),
    }
    for extension in PYPROJECT["tool"]["setuptools"]["ext-modules"]:
        needed |= {source.split("/", 1)[0] for source in extension["sources"]}
    assert needed <= copied, f"the image build would miss {sorted(needed - copied)}"


def test_dockerignore_leaves_out_local_state_and_build_output() -> None:
    patterns = _dockerignore()
    for path in (".git", ".venv", ".venv/bin/python", "tests/conftest.py", "receiver/_wire.c", "rootward-data/x.db"):
        assert _ignored(path, patterns), path
    for path in REPO.glob("*/*.so"):
        assert _ignored(path.relative_to(REPO).as_posix(), patterns), path
    assert not _ignored("receiver/_wire.pyx", patterns)


def test_the_image_runs_rootward_serve_as_a_non_root_user_on_the_default_ports() -> None:
    _, runtime = _stages()
    entrypoint, cmd = _last(runtime, "ENTRYPOINT"), _last(runtime, "CMD")
    assert entrypoint.json, "exec form: rootward is PID 1 and gets SIGTERM to drain"
    assert cmd.json
    assert [*entrypoint.value, *cmd.value] == ["rootward", "serve"]
    assert {"serve", "version"} <= set(main.commands)
    user = _last(runtime, "USER").value[0]
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), "numeric, for runAsNonRoot"
    assert gid.isdigit()
    assert int(uid) > 0
    assert int(gid) > 0
    security = pod_spec(render(REPO / "otel-config" / "deploy" / "base"))["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"]) == (int(uid), int(gid))
    exposed = {int(p) for c in _all(runtime, "EXPOSE") for p in c.value}
    assert exposed == {DEFAULTS.receiver.grpc.port, DEFAULTS.receiver.http.port, DEFAULTS.api.listen.port}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    local = [*LOCAL_PORTS, "topology.history.enabled=false", f"storage.data_dir={tmp_path}"]
    rootward = App(load_config(environ={}, overrides=local))
    rootward.start()
    try:
        yield rootward
    finally:
        rootward.shutdown()


def test_the_health_check_passes_on_a_running_rootward_and_fails_without_one(app: App) -> None:
    _, runtime = _stages()
    check = _last(runtime, "HEALTHCHECK")
    assert check.json
    assert check.value[0] == "CMD"
    argv = list(check.value[1:])
    assert argv[0] == "python"
    argv[0] = sys.executable  # the image's python is on PATH; here, the test's

    def run(port: int) -> int:
        env = {"ROOTWARD_API__LISTEN__PORT": str(port), "PATH": "/usr/bin:/bin"}
        return subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False).returncode

    assert run(app.api.port) == 0
    (closed,) = free_ports(1)
    assert run(closed) != 0
