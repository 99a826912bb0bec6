"""A cache of compiled graphs: one ONNX Runtime session per (model sha256, transform spec,
session config), so a graph is built and optimized once per process."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping

import onnx

from onnxlens.runtime.session import Session, SessionConfig, create_session


def transform_key(spec: Mapping) -> str:
    """A stable digest of a transform spec (a JSON-serializable mapping)."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class CompiledGraphCache:
    """Least-recently-used sessions keyed by (model sha256, transform spec, session config).

    ``build`` is called only on a miss; it returns the transformed model. Thread-safe: a key
    is built once even when several threads ask for it at the same time.
    """

    def __init__(self, max_entries: int = 16):
        self.max_entries = max_entries
        self.hits = self.misses = 0
        self._entries: OrderedDict[tuple, Session] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[tuple, threading.Lock] = {}

    def get(
        self,
        model_sha256: str,
        spec: Mapping,
        build: Callable[[], onnx.ModelProto],
        config: SessionConfig | None = None,
    ) -> Session:
        config = config or SessionConfig()
        key = (model_sha256, transform_key(spec), config)
        with self._lock:
            if key in self._entries:
                self.hits += 1
                self._entries.move_to_end(key)
                return self._entries[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._entries:
                    self.hits += 1
                    return self._entries[key]
                self.misses += 1
            session = create_session(build(), config)
            with self._lock:
                self._entries[key] = session
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
                self._key_locks.pop(key, None)
        return session

    def providers(self) -> list[str]:
        """The ONNX Runtime providers the cached sessions run on."""
        with self._lock:
            return sorted({session.provider for session in self._entries.values()})

    def __len__(self) -> int:
        return len(self._entries)
