"""moekit.eplb: expert-parallel load balancing: default and ILP policies.

Not implemented yet: this package holds only its skeleton (see issue 5). It exports nothing,
so no function pretends to work.
"""

__all__: list[str] = []
__version__ = "0.1.0"
