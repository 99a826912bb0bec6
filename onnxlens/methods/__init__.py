"""Explanation methods over an engine (forward, vjp), one module per family, registered by name."""
