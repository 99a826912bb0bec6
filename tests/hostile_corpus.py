"""A corpus of hostile model files and arrays over the shipped models, and a runner that holds
the command line to its promises on each: exit 0, or exit 1 with exactly one stderr line that
is an onnxlens error (never an internal error); a bounded time and memory; nothing read from
outside the model's folder (a canary in the working directory and beside the folder never
shows up in any output, and a model that points at it never succeeds); no NaN in a result.

    python tests/hostile_corpus.py --cases 1000 [--seed 0] [--workers 2] [--out results.json]

Each case runs ``onnxlens.cli.main`` in a child forked from a warm parent (imports paid
once), with its working directory, stdout and stderr of its own; the parent measures its
wall time and peak resident memory (``wait4``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # children are forked: keep BLAS single-threaded

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

MODELS = Path(__file__).resolve().parent.parent / "models"
CANARY = b"CANARY-7d41c9-secret"
TIME_LIMIT_S = 60
MEMORY_LIMIT_MB = 6 * 1024
COMMANDS = (("inspect",), ("inspect", "--json"), ("explain", "--method", "gradient"), ("explain", "--method", "lrp"),
            ("explain", "--method", "gradcam"))
HOSTILE_STRINGS = ("\x1b[2J\x1b]0;pwned\x07", "line1\nonnxlens: error: forged", "x" * 5000, "\u202eevil", "", "../../etc/passwd",
                   "\x00nul", "%s%n{0}")


@dataclass
class Case:
    id: str
    kind: str
    model: bytes
    command: tuple[str, ...]
    files: dict[str, bytes] = field(default_factory=dict)  #: extra files beside the model
    array: np.ndarray | bytes | None = None  #: the explain input (bytes: a raw .npy file)
    fifo: str | None = None  #: a FIFO to create beside the model


def _seed_models() -> list[tuple[onnx.ModelProto, np.ndarray]]:
    seeds = []
    for name, folder in (("digits_cnn", "digits"), ("shapes_cnn", "shapes")):
        seeds.append((onnx.load(MODELS / f"{name}.onnx"), np.load(MODELS / "samples" / folder / "test.npz")["x"][:2]))
    return seeds


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _pick(rng, items):
    return items[int(rng.integers(len(items)))]


# --- mutations: (model, rng) -> (model bytes, extra files, fifo name) -------------------------

def byte_flips(m, rng):
    data = bytearray(m.SerializeToString())
    for _ in range(int(rng.integers(1, 24))):
        data[int(rng.integers(len(data)))] = int(rng.integers(256))
    return bytes(data)


def truncated(m, rng):
    data = m.SerializeToString()
    return data[: int(rng.integers(1, len(data)))]


def byte_inserts(m, rng):
    data = m.SerializeToString()
    at = int(rng.integers(len(data)))
    return data[:at] + rng.bytes(int(rng.integers(1, 64))) + data[at:]


def _dim_values(rng):
    return _pick(rng, [0, -1, -7, 1, 2, 3, 7, 10 ** 6, 2 ** 40, 2 ** 62, "sym", "N"])


def io_dims(m, rng):
    m = _copy(m)
    vi = _pick(rng, [*m.graph.input, *m.graph.output])
    dims = vi.type.tensor_type.shape.dim
    if len(dims) and rng.random() < 0.8:
        d = dims[int(rng.integers(len(dims)))]
        v = _dim_values(rng)
        if isinstance(v, str):
            d.dim_param = v
        else:
            d.dim_value = v
    else:
        vi.type.tensor_type.shape.ClearField("dim") if rng.random() < 0.5 else vi.type.tensor_type.ClearField("shape")
    return m.SerializeToString()


def tensor_dims(m, rng):
    m = _copy(m)
    t = _pick(rng, list(m.graph.initializer))
    if len(t.dims) and rng.random() < 0.7:
        t.dims[int(rng.integers(len(t.dims)))] = int(_pick(rng, [0, 1, 2, 3, 1000, 2 ** 31]))
    else:
        t.dims.append(int(rng.integers(1, 4)))
    return m.SerializeToString()


def data_types(m, rng):
    m = _copy(m)
    dtype = int(_pick(rng, [0, 2, 3, 6, 7, 8, 9, 10, 11, 16, 17, 21, 22, 23, 99, 1000]))
    if rng.random() < 0.5:
        _pick(rng, list(m.graph.initializer)).data_type = dtype
    else:
        _pick(rng, [*m.graph.input, *m.graph.output]).type.tensor_type.elem_type = dtype
    return m.SerializeToString()


def attributes(m, rng):
    m = _copy(m)
    nodes = [n for n in m.graph.node if n.attribute]
    node = _pick(rng, nodes)
    attr = _pick(rng, list(node.attribute))
    roll = rng.random()
    if roll < 0.2:
        node.attribute.remove(attr)
    elif attr.type == onnx.AttributeProto.INTS:
        attr.ints[:] = [int(_pick(rng, [-5, -1, 0, 1, 7, 10 ** 9])) for _ in range(int(rng.integers(0, 7)))]
    elif attr.type == onnx.AttributeProto.INT:
        attr.i = int(_pick(rng, [-5, -1, 0, 2, 99, 10 ** 12]))
    elif attr.type == onnx.AttributeProto.FLOAT:
        attr.f = float(_pick(rng, [np.nan, np.inf, -np.inf, 0.0, -1.0, 1e30]))
    elif attr.type == onnx.AttributeProto.STRING:
        attr.s = _pick(rng, [b"", b"SAME_UPPER", b"bogus", b"\xff\xfe"])
    else:
        attr.type = int(_pick(rng, [0, 1, 2, 7, 50]))
    if roll > 0.9:
        node.attribute.add().CopyFrom(helper.make_attribute(_pick(rng, ["bogus", "axis", "kernel_shape"]), 3))
    return m.SerializeToString()


_OPS = [s.name for s in onnx.defs.get_all_schemas() if s.domain == ""]


def op_types(m, rng):
    m = _copy(m)
    node = _pick(rng, list(m.graph.node))
    node.op_type = _pick(rng, _OPS) if rng.random() < 0.8 else _pick(rng, ["", "Conv\x00", "MyOp"])
    if rng.random() < 0.2:
        node.domain = _pick(rng, ["com.microsoft", "ai.onnx.ml", "evil.domain"])
    return m.SerializeToString()


def rewiring(m, rng):
    m = _copy(m)
    names = [o for n in m.graph.node for o in n.output] + [t.name for t in m.graph.initializer] + ["ghost", ""]
    node = _pick(rng, list(m.graph.node))
    roll = rng.random()
    if roll < 0.4 and node.input:
        node.input[int(rng.integers(len(node.input)))] = _pick(rng, names)
    elif roll < 0.6:
        node.output[0] = _pick(rng, names)
    elif roll < 0.75:
        m.graph.node.remove(node)
    elif roll < 0.9:
        m.graph.node.append(node)  # a duplicate: two producers of one tensor
    else:
        nodes = list(m.graph.node)
        rng.shuffle(nodes)
        del m.graph.node[:]
        m.graph.node.extend(nodes)
    return m.SerializeToString()


def versions(m, rng):
    m = _copy(m)
    if rng.random() < 0.5:
        m.opset_import[0].version = int(rng.integers(1, 31))
    else:
        m.ir_version = int(rng.integers(0, 16))
    if rng.random() < 0.2:
        m.opset_import.add().CopyFrom(helper.make_opsetid(_pick(rng, ["", "com.microsoft", "x"]), int(rng.integers(1, 99))))
    return m.SerializeToString()


def removals(m, rng):
    m = _copy(m)
    what = _pick(rng, ["initializer", "input", "output", "value_info"])
    items = getattr(m.graph, what)
    if len(items):
        del items[int(rng.integers(len(items)))]
    return m.SerializeToString()


def hostile_strings(m, rng):
    m = _copy(m)
    s = _pick(rng, HOSTILE_STRINGS)
    where = _pick(rng, ["node", "input", "output", "metadata", "doc", "producer", "initializer"])
    if where == "node":
        _pick(rng, list(m.graph.node)).name = s
    elif where in ("input", "output"):
        vi = m.graph.input[0] if where == "input" else m.graph.output[0]
        old = vi.name
        for node in m.graph.node:
            node.input[:] = [s if i == old else i for i in node.input]
            node.output[:] = [s if o == old else o for o in node.output]
        vi.name = s
    elif where == "metadata":
        m.metadata_props.add(key=s, value=s)
    elif where == "doc":
        m.doc_string = m.graph.doc_string = s
    elif where == "producer":
        m.producer_name, m.producer_version = s, s
    else:
        t = _pick(rng, list(m.graph.initializer))
        old = t.name
        for node in m.graph.node:
            node.input[:] = [s if i == old else i for i in node.input]
        t.name = s
    data = m.SerializeToString()
    if rng.random() < 0.3:  # text that is not UTF-8, same length so the message still parses
        m.doc_string = "UTF8MARKER"
        data = m.SerializeToString().replace(b"UTF8MARKER", b"UTF8\xff\xfe\xc3KER")
    return data


def non_finite_weights(m, rng):
    m = _copy(m)
    t = _pick(rng, list(m.graph.initializer))
    values = numpy_helper.to_array(t).copy()
    if values.dtype.kind == "f" and values.size:
        values.reshape(-1)[: max(1, values.size // int(rng.integers(1, 50)))] = _pick(rng, [np.nan, np.inf, -np.inf, 3e38])
        t.CopyFrom(numpy_helper.from_array(values, t.name))
    return m.SerializeToString()


def external_data(m, rng):
    """An initializer (or a Constant inside a model-local function) moved to external data at a
    location that may leave the folder, name a device, a FIFO or the canary."""
    m = _copy(m)
    t = _pick(rng, [t for t in m.graph.initializer if t.data_type == TensorProto.FLOAT])
    raw = numpy_helper.to_array(t).tobytes()
    location = _pick(rng, ["w.bin", "w.bin", "../canary.bin", "canary_cwd.bin", "/dev/zero", "/proc/self/environ",
                           "sub/../../canary.bin", "fifo", "link.bin", "missing.bin", "", "w.bin\x00.txt"])
    offset = int(_pick(rng, [0, 0, 0, 8, -4, len(raw), 2 ** 40]))
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(len(raw)))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    return m.SerializeToString(), {"w.bin": b"\0" * 8 + raw}


def control_flow(m, rng):
    """The image input first goes through a Loop (a huge or modest trip count) or an If."""
    m = _copy(m)
    x = m.graph.input[0].name
    inner = "hostile__x"
    for node in m.graph.node:
        node.input[:] = [inner if i == x else i for i in node.input]
    shape = [d.dim_value or 1 for d in m.graph.input[0].type.tensor_type.shape.dim]
    shape[0] = 1
    body_out = helper.make_tensor_value_info("v_out", TensorProto.FLOAT, shape)
    if rng.random() < 0.6:
        body = helper.make_graph(
            [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Relu", ["v_in"], ["v_out"])], "body",
            [helper.make_tensor_value_info("i", TensorProto.INT64, []),
             helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
             helper.make_tensor_value_info("v_in", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []), body_out])
        trips = int(_pick(rng, [10 ** 12, 2 ** 62, 3, 100_001]))
        m.graph.initializer.extend([numpy_helper.from_array(np.array(trips, np.int64), "hostile__M"),
                                    numpy_helper.from_array(np.array(True), "hostile__c")])
        m.graph.node.insert(0, helper.make_node("Loop", ["hostile__M", "hostile__c", x], [inner], body=body))
    else:
        branch = helper.make_graph([helper.make_node("Identity", [x], ["v_out"])], "branch", [], [body_out])
        m.graph.initializer.append(numpy_helper.from_array(np.array(True), "hostile__cond"))
        m.graph.node.insert(0, helper.make_node("If", ["hostile__cond"], [inner], then_branch=branch, else_branch=branch))
    return m.SerializeToString()


def deep_chain(m, rng, length: int | None = None):
    """A long chain of cheap elementwise nodes between the image input and the model: deep
    graphs cost ONNX Runtime super-linear time to prepare."""
    m = _copy(m)
    x = m.graph.input[0].name
    length = length or int(_pick(rng, [300, 1000, 3000]))
    m.graph.initializer.extend([numpy_helper.from_array(np.array(0.999, np.float32), "hostile__k"),
                                numpy_helper.from_array(np.array(0.001, np.float32), "hostile__b")])
    chain, previous = [], x
    for i in range(length):
        op, second = (("Mul", ["hostile__k"]), ("Add", ["hostile__b"]), ("Relu", []))[i % 3]
        chain.append(helper.make_node(op, [previous, *second], [f"hostile__t{i}"]))
        previous = chain[-1].output[0]
    for node in m.graph.node:
        node.input[:] = [previous if i == x else i for i in node.input]
    nodes = list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(chain + nodes)
    return m.SerializeToString()


MUTATIONS = [byte_flips, truncated, byte_inserts, io_dims, tensor_dims, data_types, attributes, op_types, rewiring,
             versions, removals, hostile_strings, non_finite_weights, external_data, control_flow,
             deep_chain]


def _bad_array(x: np.ndarray, rng) -> np.ndarray | bytes:
    kind = _pick(rng, ["nan", "inf", "big", "shape", "rank", "dtype", "empty", "header", "strings", "fine"])
    if kind == "nan":
        y = x.copy()
        y.reshape(-1)[int(rng.integers(y.size))] = np.nan
        return y
    if kind == "inf":
        return np.full_like(x, np.inf)
    if kind == "big":
        return x.astype(np.float64) * 1e300
    if kind == "shape":
        return np.zeros((1, *[d + 1 for d in x.shape[1:]]), np.float32)
    if kind == "rank":
        return x.reshape(-1)
    if kind == "dtype":
        return x.astype(_pick(rng, [np.complex64, np.int8, np.bool_, np.float16]))
    if kind == "empty":
        return x[:0]
    if kind == "header":  # a .npy whose header claims an enormous shape
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (100000, 100000, 1000)})
        return header.getvalue() + b"\0" * 64
    if kind == "strings":
        return np.array([["a", "b"]])
    return x


def corpus(count: int, seed: int = 0):
    """``count`` cases, deterministic for a seed: mostly mutated models, some bad arrays."""
    rng = np.random.default_rng(seed)
    seeds = _seed_models()
    for i in range(count):
        model, x = seeds[i % len(seeds)]
        command = COMMANDS[int(rng.integers(len(COMMANDS)))]
        if rng.random() < 0.1:
            yield Case(f"{i:05d}-array", "bad_array", model.SerializeToString(), COMMANDS[2 + i % 3],
                       array=_bad_array(x, rng))
            continue
        mutation = MUTATIONS[int(rng.integers(len(MUTATIONS)))]
        made = mutation(model, rng)
        data, files = made if isinstance(made, tuple) else (made, {})
        yield Case(f"{i:05d}-{mutation.__name__}", mutation.__name__, data, command, files, x,
                   fifo="fifo" if mutation is external_data else None)


# --- the runner ------------------------------------------------------------------------------

def _prepare(case: Case, root: Path) -> tuple[list[str], Path, Path]:
    """Folders and files of one case; returns (argv, working directory, output path)."""
    model_dir, cwd = root / "model", root / "cwd"
    model_dir.mkdir(parents=True)
    cwd.mkdir()
    (root / "canary.bin").write_bytes(CANARY * 64)
    (cwd / "canary_cwd.bin").write_bytes(CANARY * 64)
    (model_dir / "model.onnx").write_bytes(case.model)
    for name, data in case.files.items():
        (model_dir / name).write_bytes(data)
    (model_dir / "link.bin").symlink_to(root / "canary.bin")
    (model_dir / "sub").mkdir()
    if case.fifo:
        os.mkfifo(model_dir / case.fifo)
    argv = [case.command[0], str(model_dir / "model.onnx"), *case.command[1:]]
    out = cwd / "out.npz"
    if case.command[0] == "explain":
        if isinstance(case.array, bytes):
            (cwd / "x.npy").write_bytes(case.array)
        else:
            np.save(cwd / "x.npy", case.array)
        argv += ["--input", str(cwd / "x.npy"), "--out", str(out)]
    return argv, cwd, out


def _child(argv: list[str], cwd: Path) -> None:
    """In the forked child: run the command line as a user would, then exit with its code."""
    os.chdir(cwd)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        handle = os.open(cwd / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(handle, fd)
        os.close(handle)
    resource.setrlimit(resource.RLIMIT_CPU, (TIME_LIMIT_S * 4, TIME_LIMIT_S * 4))
    sys.argv = ["onnxlens", *argv]
    code = 0
    try:
        from onnxlens.cli import main

        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 — anything escaping main() is a broken promise
        code = 99
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _verdict(case: Case, code: int | None, cwd: Path, out: Path, seconds: float, rss_mb: float) -> list[str]:
    """Every promise this run broke (empty when it kept them all)."""
    stdout = (cwd / "stdout").read_bytes()
    stderr = (cwd / "stderr").read_bytes().decode(errors="replace")
    lines = stderr.splitlines()
    broken = []
    if code is None:
        broken.append(f"ran past {TIME_LIMIT_S} s")
    elif code == 0:
        if any(not line.startswith("onnxlens: warning: ") for line in lines):
            broken.append("stderr on success: " + stderr[:200])
        if case.command[0] == "explain" and out.exists():
            with np.load(out) as saved:
                if any(not np.isfinite(saved[k]).all() for k in saved.files if saved[k].dtype.kind == "f"):
                    broken.append("a NaN-bearing success")
    elif code == 1:
        if len(lines) != 1 or not lines[0].startswith("onnxlens: error: "):
            broken.append(f"{len(lines)} stderr line(s): " + stderr[:300])
    else:
        broken.append(f"exit {code}: " + stderr[:300])
    if "\x1b" in stderr or b"\x1b" in stdout:
        broken.append("a raw escape code reached the terminal")
    if any(CANARY in data for data in (stdout, stderr.encode(), out.read_bytes() if out.exists() else b"")):
        broken.append("the canary was read")
    if rss_mb > MEMORY_LIMIT_MB:
        broken.append(f"peak memory {rss_mb:.0f} MB")
    return broken


def run(cases, workers: int = 2) -> list[dict]:
    """Run every case in a forked child, ``workers`` at a time; one result dict per case."""
    results, running = [], {}
    pending = iter(cases)
    top = Path(tempfile.mkdtemp(prefix="onnxlens-hostile-"))
    try:
        while True:
            while len(running) < workers:
                case = next(pending, None)
                if case is None:
                    break
                root = top / case.id
                argv, cwd, out = _prepare(case, root)
                pid = os.fork()
                if pid == 0:
                    _child(argv, cwd)
                running[pid] = (case, cwd, out, time.monotonic())
            if not running:
                break
            for pid, (case, cwd, out, start) in list(running.items()):
                done, status, usage = os.wait4(pid, os.WNOHANG)
                elapsed = time.monotonic() - start
                if done == 0 and elapsed <= TIME_LIMIT_S:
                    continue
                if done == 0:
                    os.kill(pid, signal.SIGKILL)
                    _, status, usage = os.wait4(pid, 0)
                code = None if done == 0 else os.waitstatus_to_exitcode(status)
                rss_mb = usage.ru_maxrss / 1024
                broken = _verdict(case, code, cwd, out, elapsed, rss_mb)
                results.append({"id": case.id, "kind": case.kind, "command": " ".join(case.command), "exit": code,
                                "seconds": round(elapsed, 2), "peak_mb": round(rss_mb), "broken": broken,
                                "stderr": (cwd / "stderr").read_text(errors="replace")[:300]})
                del running[pid]
                shutil.rmtree(cwd.parent, ignore_errors=True)
            time.sleep(0.01)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    return results


def summary(results: list[dict]) -> str:
    exits = {}
    for r in results:
        exits[r["exit"]] = exits.get(r["exit"], 0) + 1
    broken = [r for r in results if r["broken"]]
    slowest = max(results, key=lambda r: r["seconds"])
    heaviest = max(results, key=lambda r: r["peak_mb"])
    return (f"{len(results)} cases: exits {dict(sorted(exits.items(), key=str))}; {len(broken)} broke a promise; "
            f"slowest {slowest['seconds']} s ({slowest['id']}), peak memory {heaviest['peak_mb']} MB ({heaviest['id']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import onnxlens.cli  # noqa: F401 — warm: every forked child starts with it imported

    results = run(corpus(args.cases, args.seed), args.workers)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    print(summary(results))
    for r in results:
        if r["broken"]:
            print(f"{r['id']} [{r['command']}]: {'; '.join(r['broken'])}")
    sys.exit(1 if any(r["broken"] for r in results) else 0)


if __name__ == "__main__":
    main()
