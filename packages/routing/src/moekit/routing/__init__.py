"""moekit.routing: top-k routing, routers and the routing simulator.

Not implemented yet: this package holds only its skeleton (see issue 3). It exports nothing,
so no function pretends to work.
"""

__all__: list[str] = []
__version__ = "0.1.0"
