"""The page's files reach every install: each file in rootward/web/ matches the package data that pyproject ships
(an editable install reads the folder; a wheel and the container image get only what package-data names), and the
page serves each script, style and icon the HTML and the modules ask for."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

from rootward.page import PAGE_PATHS, WEB_DIR, page_routes

ROOT = Path(__file__).parents[2]


def test_every_file_of_the_page_is_package_data() -> None:
    shipped = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["rootward"]
    files = sorted(p.relative_to(WEB_DIR.parent).as_posix() for p in WEB_DIR.iterdir())
    assert "web/index.html" in files
    assert [f for f in files if not any(fnmatch(f, pattern) for pattern in shipped)] == []


def test_every_file_the_page_refers_to_is_served() -> None:
    served = {p.name for p in WEB_DIR.iterdir() if p.suffix in (".js", ".css", ".svg")}
    html = (WEB_DIR / "index.html").read_text()
    wanted = set(re.findall(r'"\{root\}web/([\w.]+)"', html))
    for module in WEB_DIR.glob("*.js"):
        wanted |= set(re.findall(r'from "\./([\w.]+)"', module.read_text()))
    assert wanted
    assert wanted <= served
    assert {route.path for route in page_routes()} == PAGE_PATHS


def test_the_page_writes_no_markup_from_strings() -> None:
    """The scripts build the DOM with text nodes only (rootward/web/dom.js): none parses HTML."""
    for module in WEB_DIR.glob("*.js"):
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", module.read_text()), (
            module
        )
