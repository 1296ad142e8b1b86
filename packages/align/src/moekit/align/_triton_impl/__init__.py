"""Triton kernels and their launchers. Imported only when the Triton backend is chosen."""
