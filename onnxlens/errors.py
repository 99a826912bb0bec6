"""Typed errors: every failure a user can cause has its own class and one clear sentence.

The command line prints ``str(error)`` on one line and exits non-zero; the Python API raises
the class, so callers can catch exactly what they expect.
"""


class OnnxLensError(Exception):
    """Base class of every error onnxlens raises on purpose."""


class ModelLoadError(OnnxLensError):
    """The model file could not be read or is not a usable ONNX model."""


class ModelNotFoundError(ModelLoadError):
    """The model path does not exist or is not a file."""


class NotOnnxError(ModelLoadError):
    """The bytes are not an ONNX model (not a ModelProto, or one without a graph)."""


class TruncatedModelError(ModelLoadError):
    """The bytes start like an ONNX model but end before the message does."""


class ModelTooLargeError(ModelLoadError):
    """The model (with its external data) is larger than the configured cap."""


class UnsafeExternalDataError(ModelLoadError):
    """An external-data location points outside the model's folder or is otherwise unsafe."""


class MissingExternalDataError(ModelLoadError):
    """An external-data file that the model names is not there."""


class InvalidModelError(ModelLoadError):
    """The ONNX checker or shape inference rejects the model."""


class EmptyGraphError(InvalidModelError):
    """The graph has no nodes."""


class UnsupportedOpsetError(InvalidModelError):
    """The model's default-domain opset is outside the supported range."""


class UnknownOperatorError(InvalidModelError):
    """The graph uses op types that ONNX does not define."""


class NoImageInputError(InvalidModelError):
    """No graph input is a floating-point image tensor (rank 4)."""


class CanonicalizationError(InvalidModelError):
    """The model could not be brought to onnxlens's canonical form."""


class UnsupportedOperatorError(OnnxLensError):
    """An op on the differentiated path has no backward rule."""

    def __init__(self, message: str, missing: tuple[str, ...] = ()):
        super().__init__(message)
        self.missing = missing  #: the op types without a rule


class RuntimeFailure(OnnxLensError):
    """ONNX Runtime could not create a session for, or run, a model."""


class DeviceUnavailableError(RuntimeFailure):
    """The requested device (e.g. CUDA) is not available on this machine."""


class ImageReadError(OnnxLensError):
    """An input image file could not be read or decoded."""


class NonFiniteResultError(OnnxLensError):
    """A score or attribution came out NaN or infinite: the result cannot be trusted."""


class InputShapeError(OnnxLensError):
    """An array given to a model does not match the model's input."""


class InvalidTargetError(OnnxLensError):
    """What is to be explained does not fit the model: an unknown kind of score, for one."""


def quote(text: object, limit: int = 80) -> str:
    """Render an untrusted string (a model's node or tensor name) for a one-line message.

    Control characters and newlines are escaped and long strings are cut, so a hostile
    name can neither break the one-line error contract nor send terminal escape codes.
    """
    s = str(text)
    cut = len(s) > limit
    s = s[:limit].encode("unicode_escape").decode("ascii")
    return f"'{s}…'" if cut else f"'{s}'"
