"""Interchangeable inference engines behind one contract (``base.Backend``)."""

# What --precision takes. Here, not in base.py: the CLI builds its choices from it without
# loading torch, and both the registry (renderer) and the backends read it.
PRECISIONS = ("fp16", "fp32")
