"""sceneclass: classify very large satellite scenes into value classes, out of core."""

__version__ = "0.1.0"
