"""Interchangeable inference engines behind one contract (``base.Backend``)."""
