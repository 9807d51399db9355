"""Shipped configuration and data (emotion presets, puppet profile, distill configs, the demo
character). Code finds them through ``CONFIGS``, so they work installed as well as editable."""
from importlib.resources import files
from pathlib import Path

CONFIGS = Path(str(files(__name__)))
