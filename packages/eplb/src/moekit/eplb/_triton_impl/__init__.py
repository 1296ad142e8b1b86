"""Triton kernels of moekit.eplb (imported only when the Triton backend is used)."""
