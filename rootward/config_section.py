"""The base of every configuration section (rootward/config.py and its config_*.py parts): unknown keys are
errors, sections are immutable once loaded, and each field's docstring is its documentation."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
