"""The skeleton imports as a PEP 420 namespace member and exports nothing yet."""

import moekit.routing


def test_skeleton_imports_and_exports_nothing():
    assert moekit.routing.__all__ == []
    assert moekit.routing.__version__ == "0.1.0"
