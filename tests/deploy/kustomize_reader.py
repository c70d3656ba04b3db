"""Render otel-config/deploy's kustomizations: with ``kubectl kustomize`` when kubectl is on PATH (the machine image
has it), else by reading the kustomization here.

The reader implements only what our kustomizations use, and fails on anything else rather than render it wrong:
``resources`` (files and directories), ``configMapGenerator`` with ``files`` (the name gets kustomize's content hash,
and pod templates' references to it follow; ``behavior: replace`` replaces an included kustomization's ConfigMap),
and ``patches`` that delete an object (``$patch: delete``). Where
kubectl exists, a test renders both ways and compares, so the reader cannot drift from kustomize unnoticed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "configMapGenerator", "patches"}

Doc = dict[str, Any]


def kubectl() -> str | None:
    """The kubectl binary, or None."""
    return shutil.which("kubectl")


def render(directory: Path) -> list[Doc]:
    """The objects the kustomization in ``directory`` renders to: ``kubectl kustomize`` if there is a kubectl, else
    :func:`read`."""
    binary = kubectl()
    if binary is None:
        return read(directory)
    out = subprocess.run([binary, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False)
    if out.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def read(directory: Path) -> list[Doc]:
    """Render the kustomization in ``directory`` without kustomize (the subset in the module docstring)."""
    docs, renamed = _read(directory)
    for doc in docs:
        _rename_config_maps(doc, renamed)
    return docs


def _read(directory: Path) -> tuple[list[Doc], dict[str, str]]:
    """The objects, and the generated ConfigMaps' names (as written -> with their hash), of this kustomization
    and the ones it includes."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise NotImplementedError(f"{directory}/kustomization.yaml uses {sorted(unknown)}: teach kustomize_reader")
    docs: list[Doc] = []
    renamed: dict[str, str] = {}
    for entry in spec.get("resources", []):
        path = directory / entry
        if path.is_dir():
            included, names = _read(path)
            docs.extend(included)
            renamed.update(names)
        else:
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for generator in spec.get("configMapGenerator", []):
        config_map = _generate(directory, generator)
        if generator.get("behavior") == "replace":
            old = renamed.get(generator["name"])
            before = len(docs)
            docs = [d for d in docs if not (d["kind"] == "ConfigMap" and d["metadata"]["name"] == old)]
            if len(docs) != before - 1:
                raise AssertionError(f"configMapGenerator {generator['name']} replaces a ConfigMap not generated below")
        renamed[generator["name"]] = config_map["metadata"]["name"]
        docs.append(config_map)
    for patch in spec.get("patches", []):
        docs = _apply(docs, patch, directory)
    return docs, renamed


def _generate(directory: Path, generator: Doc) -> Doc:
    unknown = set(generator) - {"name", "namespace", "files", "behavior"}
    if unknown or generator.get("behavior", "replace") != "replace":
        raise NotImplementedError(f"configMapGenerator {generator['name']} uses {sorted(unknown)}")
    data = {Path(f).name: (directory / f).read_text() for f in generator["files"]}
    name = generator["name"]
    metadata: Doc = {"name": f"{name}-{content_hash(data)}"}
    if "namespace" in generator:
        metadata["namespace"] = generator["namespace"]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def content_hash(data: dict[str, str]) -> str:
    """kustomize's name suffix of a generated ConfigMap (api/hasher): the first 10 hex digits of the sha256 of
    Go's JSON of {data, kind, name}, with 0, 1, 3, a, e replaced so that it is never all digits. The name is always
    empty there: kustomize looks it up as one field called "metadata/name", which no object has."""
    text = json.dumps({"data": data, "kind": "ConfigMap", "name": ""}, sort_keys=True, separators=(",", ":"))
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):  # as Go's encoding/json does
        text = text.replace(char, escaped)
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans({"0": "g", "1": "h", "3": "k", "a": "m", "e": "t"}))


def _apply(docs: list[Doc], patch: Doc, directory: Path) -> list[Doc]:
    body = yaml.safe_load(patch["patch"] if "patch" in patch else (directory / patch["path"]).read_text())
    if set(patch) - {"patch", "path"} or body.get("$patch") != "delete":
        raise NotImplementedError(f"only deleting patches are read here, not {patch}")
    key = _key(body)
    kept = [d for d in docs if _key(d) != key]
    if len(kept) != len(docs) - 1:
        raise AssertionError(f"the patch deletes {key}, which the resources do not hold once")
    return kept


def _key(doc: Doc) -> tuple[str, str, str]:
    meta = doc["metadata"]
    return doc["kind"], meta.get("namespace", ""), meta["name"]


def _rename_config_maps(doc: Doc, renamed: dict[str, str]) -> None:
    template = doc.get("spec", {}).get("template", {}).get("spec")
    if not template:
        return
    for volume in template.get("volumes", []):
        if "configMap" in volume and volume["configMap"]["name"] in renamed:
            volume["configMap"]["name"] = renamed[volume["configMap"]["name"]]
