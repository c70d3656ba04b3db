"""``rootward policy test``: run the ``test_`` rules of Rego files, as ``opa test`` does.

A test passes when its rule is true. The shipped bundle (without its own tests) and the files under test are
loaded together with the settings as ``data.rootward.settings``, so tests can call the shipped rules.

regopy (rego-cpp 1.5) can crash the process on some programs (``with input as`` over a complete rule built from a
set, seen in tests/policies/test_regotest.py), so the tests run in a child process that reports each test as it
starts and ends; when the child dies, the test it was running is reported as crashed with the signal, and a new
child runs the rest.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rootward.policies.engine import Module, default_bundle, interpreter, load_modules, read_modules

_PACKAGE = re.compile(r"^package\s+([\w.]+)", re.MULTILINE)
_TEST_RULE = re.compile(r"^(test_\w+)\b", re.MULTILINE)


@dataclass(frozen=True)
class TestResult:
    """One test rule's outcome."""

    name: str
    """``data.<package>.<rule>``."""
    file: str
    passed: bool
    error: str | None = None
    """Why it did not pass: ``undefined`` (false or a failed body), an evaluation error, or a crash."""
    ms: float = 0.0


def discover(modules: Sequence[Module]) -> list[tuple[str, str]]:
    """(``data.<package>.<rule>``, file) of every ``test_`` rule, in file order, each once."""
    found: dict[str, str] = {}
    for module in modules:
        package = _PACKAGE.search(module.source)
        if package is None:
            continue
        for rule in _TEST_RULE.findall(module.source):
            found.setdefault(f"data.{package.group(1)}.{rule}", module.name)
    return list(found.items())


def _targets(dirs: Sequence[Path]) -> tuple[list[Module], list[Module]]:
    """(everything to load, the modules whose tests run)."""
    if not dirs:
        shipped = default_bundle()
        return shipped, shipped
    tested = [m for d in dirs for m in read_modules(d)]
    return load_modules((), default=True) + tested, tested


def run_tests(
    dirs: Sequence[Path],
    settings: dict[str, Any],
    on_result: Callable[[TestResult], None] | None = None,
    timeout_s: float = 60.0,
) -> list[TestResult]:
    """Run the tests of ``dirs`` (none: the shipped bundle's own tests) in child processes; return every result.

    Raises:
        PolicyLoadError: a directory or file cannot be read, or a file does not parse (named, with its line:
            before, a file with a syntax error only showed as no tests found).
    """
    everything, tested = _targets(dirs)
    interpreter(everything, settings)  # parsing is safe here; evaluating some rules crashes regopy (the children)
    pending = discover(tested)
    results: list[TestResult] = []
    first_crashes = 0
    while pending:
        names = [name for name, _ in pending]
        args = json.dumps({"dirs": [str(d) for d in dirs], "settings": settings, "names": names})
        running: str | None = None
        done: set[str] = set()
        with subprocess.Popen(
            [sys.executable, "-m", "rootward.policies.regotest"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as child:
            assert child.stdin is not None
            assert child.stdout is not None
            assert child.stderr is not None
            child.stdin.write(args)
            child.stdin.close()
            for line in child.stdout:
                event = json.loads(line)
                if "start" in event:
                    running = event["start"]
                    continue
                result = TestResult(**event)
                results.append(result)
                done.add(result.name)
                running = None
                if on_result:
                    on_result(result)
            try:
                code = child.wait(timeout_s)
            except subprocess.TimeoutExpired:
                child.kill()
                code = child.wait()
            stderr = child.stderr.read()
        if code == 0 and running is None:
            break
        files = dict(pending)
        if running is None:  # died before its first test: loading failed
            message = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {code}"
            for name, file in pending:
                if name not in done:
                    results.append(TestResult(name, file, False, f"not run: {message}"))
                    if on_result:
                        on_result(results[-1])
            break
        signal = f"signal {-code}" if code < 0 else f"exit status {code}"
        crashed = TestResult(running, files[running], False, f"the Rego engine crashed ({signal}) evaluating it")
        results.append(crashed)
        if on_result:
            on_result(crashed)
        done.add(running)
        # regopy compiles the whole program at the first query: when two children in a row crash on their first
        # test, every query crashes, so the rest are reported at once rather than one child each.
        first_crashes = first_crashes + 1 if len(done) == 1 else 0
        pending = [(n, f) for n, f in pending if n not in done]
        if first_crashes >= 2:
            for name, file in pending:
                results.append(TestResult(name, file, False, f"the Rego engine crashed ({signal}) on every test"))
                if on_result:
                    on_result(results[-1])
            break
    return results


def _child() -> int:
    """The child: read the arguments on stdin, then print a start and a result line per test."""
    args = json.loads(sys.stdin.read())
    everything, _ = _targets([Path(d) for d in args["dirs"]])
    rego = interpreter(everything, args["settings"])
    files = {name: file for name, file in discover(everything)}
    for name in args["names"]:
        print(json.dumps({"start": name}), flush=True)
        started = time.perf_counter()
        output = rego.query(name)
        text = str(output)
        error: str | None
        if not output.ok():
            passed, error = False, " ".join(text.split())[:300]
        elif text == "undefined":
            passed, error = False, "undefined (false, or a failed expression)"
        else:
            value = json.loads(text)["expressions"][0]
            passed, error = value is True, None if value is True else f"evaluated to {json.dumps(value)[:200]}"
        ms = (time.perf_counter() - started) * 1000
        print(json.dumps({"name": name, "file": files.get(name, "?"), "passed": passed, "error": error, "ms": ms}))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_child())
