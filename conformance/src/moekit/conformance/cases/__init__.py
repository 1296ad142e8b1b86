"""The conformance cases (run with ``pytest --pyargs moekit.conformance.cases``)."""
