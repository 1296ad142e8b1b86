"""The skeleton imports as a PEP 420 namespace member and exports nothing yet."""

import moekit.eplb


def test_skeleton_imports_and_exports_nothing():
    assert moekit.eplb.__all__ == []
    assert moekit.eplb.__version__ == "0.1.0"
