"""Every public name (``__all__``) of every package is on its API reference page."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

API = Path(__file__).resolve().parent.parent / "api"
PACKAGES = ["align", "routing", "experts", "eplb", "reference", "conformance"]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_is_documented(package):
    module = importlib.import_module(f"moekit.{package}")
    page = (API / f"{package}.md").read_text()
    if "members:" not in page:  # the whole module is rendered
        assert f"::: moekit.{package}" in page
        return
    missing = [name for name in module.__all__
               if not re.search(rf"^\s+- {re.escape(name)}$", page, re.MULTILINE)]  # fmt: skip
    assert not missing, f"docs/api/{package}.md lacks {missing}"
