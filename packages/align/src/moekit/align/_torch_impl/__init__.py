"""Plain-PyTorch implementations: correct on any device, and the fallback without Triton."""
