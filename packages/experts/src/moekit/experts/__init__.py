"""moekit.experts: the modular fused-MoE kernel and its implementations.

Not implemented yet: this package holds only its skeleton (see issue 4). It exports nothing,
so no function pretends to work.
"""

__all__: list[str] = []
__version__ = "0.1.0"
