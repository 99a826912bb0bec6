"""What a method explains: a class of one of the model's outputs, given as a ``Target`` or as
the command line's spec (``class=K,output=NAME``; a bare integer is a class)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from onnxlens.errors import OnnxLensError, quote


class TargetError(OnnxLensError):
    """A target spec that does not parse."""


#: the keys a target spec takes
KEYS = ("class", "output")


@dataclass(frozen=True)
class Target:
    """Class ``cls`` (an int, one per input row, or None: the predicted class) of the model
    output ``output`` (None: the first output)."""

    cls: int | Sequence[int] | None = None
    output: str | None = None

    @classmethod
    def parse(cls, spec: str) -> Target:
        """``"3"``, ``"class=3"``, ``"output=NAME"`` or ``"class=3,output=NAME"``."""
        text = spec.strip()
        if text.lstrip("-").isdigit():
            return cls(cls=int(text))
        fields: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or key not in KEYS or key in fields or not value.strip():
                raise TargetError(f"target {quote(spec)}: expected a class index or comma-separated "
                                  f"{', '.join(k + '=…' for k in KEYS)} (each once); got {quote(part)}")
            fields[key] = value.strip()
        if not fields:
            raise TargetError(f"target {quote(spec)} is empty; give a class index or class=K,output=NAME")
        number = fields.get("class")
        if number is not None and not number.lstrip("-").isdigit():
            raise TargetError(f"target {quote(spec)}: class must be an integer, got {quote(number)}")
        return cls(cls=None if number is None else int(number), output=fields.get("output"))
