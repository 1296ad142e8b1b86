"""The skeleton imports as a PEP 420 namespace member and exports nothing yet."""

import moekit.experts


def test_skeleton_imports_and_exports_nothing():
    assert moekit.experts.__all__ == []
    assert moekit.experts.__version__ == "0.1.0"
