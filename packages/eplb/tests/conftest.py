import os

# The Triton kernels run under the CPU interpreter in these tests; it must be on before import.
os.environ.setdefault("TRITON_INTERPRET", "1")
