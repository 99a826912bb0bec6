"""``python -m onnxlens.cli``."""

from onnxlens.cli import main

main()
