"""moekit-conformance: the cases every moekit-compatible implementation must pass.

See :mod:`moekit.conformance.adapters` for how an implementation is plugged in and
:mod:`moekit.conformance.plugin` for the pytest options.
"""

from moekit.conformance.adapters import AlignAdapter, MoekitAdapter, ReferenceAdapter, load_adapter

__all__ = ["AlignAdapter", "MoekitAdapter", "ReferenceAdapter", "load_adapter"]
__version__ = "0.1.0"
