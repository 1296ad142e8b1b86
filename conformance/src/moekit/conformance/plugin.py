"""The pytest plugin: chooses the adapter, applies its xfails file, sets hypothesis profiles.

Installed with moekit-conformance it loads by itself (a ``pytest11`` entry point). Run the
cases with ``pytest --pyargs moekit.conformance.cases --moekit-impl NAME``.
"""

from __future__ import annotations

import os
import warnings

import pytest
from hypothesis import HealthCheck, settings

from moekit.conformance.adapters import AlignAdapter, load_adapter
from moekit.conformance.xfails import load_xfails, packaged_xfails

settings.register_profile(
    "ci",
    max_examples=25,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "dev",
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("thorough", max_examples=500, deadline=None, print_blob=True)

_ADAPTER_KEY = pytest.StashKey[AlignAdapter]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("moekit", "moekit conformance")
    group.addoption(
        "--moekit-impl",
        default=os.environ.get("MOEKIT_IMPL", "reference"),
        help="implementation under test: reference, moekit[BACKEND,DEVICE] or module:object "
        "(default: $MOEKIT_IMPL or reference)",
    )
    group.addoption(
        "--moekit-xfails",
        default=None,
        help="xfails file for the implementation (default: the one shipped for it, if any)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requires(*capabilities): skip without these capabilities")
    if not os.environ.get("HYPOTHESIS_PROFILE_SET"):
        settings.load_profile("ci" if os.environ.get("CI") else "dev")


def adapter_for(config: pytest.Config) -> AlignAdapter:
    if _ADAPTER_KEY not in config.stash:
        config.stash[_ADAPTER_KEY] = load_adapter(config.getoption("--moekit-impl"))
    return config.stash[_ADAPTER_KEY]


def pytest_report_header(config: pytest.Config) -> str:
    return f"moekit conformance: implementation {config.getoption('--moekit-impl')}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cases = [item for item in items if "moekit/conformance/cases" in str(item.path)]
    if not cases:
        return
    adapter = adapter_for(config)
    for item in cases:
        for mark in item.iter_markers("requires"):
            missing = [c for c in mark.args if c not in adapter.capabilities]
            if missing:
                item.add_marker(
                    pytest.mark.skip(reason=f"{adapter.name} lacks capability {missing}")
                )
    path = config.getoption("--moekit-xfails") or packaged_xfails(adapter.name)
    entries = load_xfails(path)
    used = set()
    for item in cases:
        for entry in entries:
            if entry.matches(item.nodeid):
                item.add_marker(pytest.mark.xfail(reason=entry.reason, strict=True))
                used.add(entry)
    for entry in entries:
        if entry not in used:
            warnings.warn(
                f"{path}:{entry.line}: xfail entry {entry.pattern!r} matches no test",
                stacklevel=1,
            )


@pytest.fixture(scope="session")
def adapter(request: pytest.FixtureRequest) -> AlignAdapter:
    """The implementation under test."""
    return adapter_for(request.config)
