"""The child side of the conformance kit's sandbox, and the wire format both sides speak.

A learner's code runs in a child process; the kit (:mod:`.sandbox`) sends it arguments and reads back
results, so nothing the learner's code does (exit, signals, a patched NumPy, a changed error state, threads
left running, an endless loop) reaches the kit. This module runs in that child, started either as a fresh
interpreter (``python -c BOOT``: it is loaded by path, so it imports only the standard library and NumPy,
never rnn_scratch) or as a fork of the kit's process. The kit imports it too, for the wire format.

Wire format: a message is ``<len(json), n_buffers>`` (two little-endian uint32), a JSON header, then each
buffer as ``<len>`` (uint64) and its bytes. Values travel as trees of JSON (:func:`encode`/:func:`decode`):
numbers, strings, None, tuples, lists, dicts and numeric NumPy arrays (dtype, shape, raw bytes in a buffer);
anything else as its type's name only. The kit never unpickles what a child sends.

Requests (kit -> child): ``load`` (the target, by path, by module name or pickled; answers which names it has)
and ``run`` (named arrays and a list of steps: calls and attribute reads, each answered as soon as it ends,
with the named arrays as they are after a call, so the kit sees what a call changed in place).
"""

from __future__ import annotations

import builtins
import faulthandler
import importlib
import importlib.util
import io
import json
import os
import pickle
import re
import struct
import sys
import sysconfig
import tokenize
import traceback

import numpy as np

MAX_MESSAGE = 64 << 20  # bytes: a message larger than this is refused (the kit's cases are tiny)
MAX_ARRAY = 8 << 20  # elements: a larger array travels as its description only
MAX_ITEMS = 256  # items of a list, tuple or dict that travel
MAX_DEPTH = 8
MAX_TEXT = 2000
NUMERIC_KINDS = "biufc"

# what the child uses, taken before any learner code runs (a learner may patch numpy or builtins)
_frombuffer, _ascontiguousarray, _ndarray, _generic = np.frombuffer, np.ascontiguousarray, np.ndarray, np.generic
_isinstance, _len, _str, _repr, _type = builtins.isinstance, builtins.len, builtins.str, builtins.repr, builtins.type
_dumps, _loads = json.dumps, json.loads
_read, _write = os.read, os.write


class ProtocolError(Exception):
    """A message that does not follow the wire format."""


class Opaque:
    """A value that did not travel: its type's name (and a short description)."""

    def __init__(self, type_name, text=""):
        self.type_name, self.text = type_name, text

    def __repr__(self):
        return f"<{self.type_name}{': ' + self.text if self.text else ''}>"


# -- values as trees ------------------------------------------------------------------------------------
def _type_name(value):
    try:
        t = _type(value)
        return f"{t.__module__}.{t.__qualname__}" if t.__module__ not in ("builtins", None) else t.__qualname__
    except Exception:  # a learner's class may break even this
        return "object"


def encode(value, buffers, depth=0):
    """A JSON tree for ``value``; the bytes of its arrays are appended to ``buffers``."""
    if value is None or _isinstance(value, (bool, int, float)) and _type(value) in (bool, int, float):
        if _type(value) is int and not -(1 << 63) <= value < (1 << 63):
            return {"o": "int", "x": "an integer too large to send"}
        return {"v": value}
    if _type(value) is str:
        return {"v": value[:MAX_TEXT]}
    if _isinstance(value, (_ndarray, _generic)):
        arr = value if _isinstance(value, _ndarray) else np.asarray(value)
        dtype = arr.dtype
        if dtype.kind not in NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
            return {"o": "numpy.ndarray", "x": f"dtype {dtype}, shape {tuple(arr.shape)}"}
        if arr.size > MAX_ARRAY:
            return {"o": "numpy.ndarray", "x": f"too large to send: shape {tuple(arr.shape)}"}
        buffers.append(_ascontiguousarray(arr).tobytes())
        tree = {"a": _len(buffers) - 1, "d": dtype.str, "s": [int(n) for n in arr.shape]}
        if _isinstance(value, _generic):
            tree["scalar"] = _type_name(value)
        elif _type(value) is not _ndarray:
            tree["cls"] = _type_name(value)
        return tree
    if depth >= MAX_DEPTH:
        return {"o": _type_name(value), "x": "nested too deeply to send"}
    if _isinstance(value, (tuple, list)):  # a namedtuple is a tuple
        if _len(value) > MAX_ITEMS:
            return {"o": _type_name(value), "x": f"{_len(value)} items"}
        key = "t" if _isinstance(value, tuple) else "l"
        return {key: [encode(v, buffers, depth + 1) for v in value]}
    if _isinstance(value, dict):
        if _len(value) > MAX_ITEMS:
            return {"o": "dict", "x": f"{_len(value)} items"}
        return {"m": [[_str(k)[:200] if _type(k) is str else _safe_repr(k), encode(v, buffers, depth + 1)]
                      for k, v in value.items()]}
    return {"o": _type_name(value)}


def _safe_repr(value):
    try:
        return _repr(value)[:200]
    except Exception:
        return _type_name(value)


def decode(tree, buffers):
    """The value a tree from :func:`encode` describes. Arrays are checked (numeric dtype, shape against the
    bytes) and copied; anything unexpected is a :class:`ProtocolError`."""
    if not _isinstance(tree, dict) or _len(tree) == 0:
        raise ProtocolError(f"not a value: {tree!r:.80}")
    if "v" in tree:
        value = tree["v"]
        if value is not None and _type(value) not in (bool, int, float, str):
            raise ProtocolError("a plain value of an unexpected type")
        return value
    if "a" in tree:
        try:
            dtype = np.dtype(tree["d"]) if _type(tree["d"]) is str and _len(tree["d"]) <= 8 else None
        except TypeError:
            dtype = None
        if dtype is None or dtype.kind not in NUMERIC_KINDS or dtype.fields is not None or dtype.itemsize > 32:
            raise ProtocolError(f"refused dtype {tree.get('d')!r:.40}")
        shape, k = tree["s"], tree["a"]
        if (not _isinstance(shape, list) or _len(shape) > 32 or not all(_type(n) is int and n >= 0 for n in shape)
                or _type(k) is not int or not 0 <= k < _len(buffers)):
            raise ProtocolError("bad array header")
        count = 1
        for n in shape:
            count *= n
        if count * dtype.itemsize != _len(buffers[k]):
            raise ProtocolError("array bytes do not match its shape")
        arr = _frombuffer(buffers[k], dtype=dtype).reshape(shape).copy()
        return arr[()] if "scalar" in tree else arr
    if "t" in tree or "l" in tree:
        items = tree.get("t", tree.get("l"))
        if not _isinstance(items, list):
            raise ProtocolError("bad sequence")
        values = [decode(v, buffers) for v in items]
        return tuple(values) if "t" in tree else values
    if "m" in tree:
        if not _isinstance(tree["m"], list):
            raise ProtocolError("bad mapping")
        out = {}
        for pair in tree["m"]:
            if not (_isinstance(pair, list) and _len(pair) == 2 and _type(pair[0]) is str):
                raise ProtocolError("bad mapping item")
            out[pair[0]] = decode(pair[1], buffers)
        return out
    if "o" in tree:
        return Opaque(_str(tree["o"])[:200], _str(tree.get("x", ""))[:200])
    raise ProtocolError("unknown value")


# -- framing --------------------------------------------------------------------------------------------
def pack(header, buffers=()):
    """One message as bytes."""
    head = _dumps(header, allow_nan=True).encode()
    parts = [struct.pack("<II", _len(head), _len(buffers)), head]
    for b in buffers:
        parts += [struct.pack("<Q", _len(b)), b]
    return b"".join(parts)


def unpack_header(prefix):
    n_head, n_buffers = struct.unpack("<II", prefix)
    if n_head > MAX_MESSAGE or n_buffers > 100_000:
        raise ProtocolError("message too large")
    return n_head, n_buffers


def _read_exactly(fd, n):
    chunks, got = [], 0
    while got < n:
        chunk = _read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        got += _len(chunk)
    return b"".join(chunks)


def receive(fd):
    """(header, buffers) of the next message on ``fd`` (blocking; the child's side)."""
    n_head, n_buffers = unpack_header(_read_exactly(fd, 8))
    header = _loads(_read_exactly(fd, n_head))
    buffers = []
    for _ in range(n_buffers):
        (n,) = struct.unpack("<Q", _read_exactly(fd, 8))
        if n > MAX_MESSAGE:
            raise ProtocolError("buffer too large")
        buffers.append(_read_exactly(fd, n))
    return header, buffers


def send(fd, header, buffers=()):
    data = memoryview(pack(header, buffers))
    while data:
        n = _write(fd, data)
        data = data[n:]


# -- errors as data -------------------------------------------------------------------------------------
PY2_MODULES = {"cPickle": "pickle", "cStringIO": "io", "StringIO": "io", "Queue": "queue", "urllib2": "urllib.request",
               "ConfigParser": "configparser", "itertools.izip": "zip"}


def describe_error(exc, tb, focus=None):
    """A dict saying what a BaseException raised by the learner's code was, and where."""
    try:
        message = _str(exc)
    except BaseException:  # noqa: BLE001 - a learner's exception may fail even here
        message = "(its message could not be shown)"
    info = {"type": _type_name(exc).rsplit(".", 1)[-1], "message": message[:MAX_TEXT]}
    if _isinstance(exc, SystemExit):
        code = exc.code
        info["exit_code"] = code if code is None or _type(code) is int else _str(code)[:200]
    name = getattr(exc, "name", None) if _isinstance(exc, (NameError, AttributeError, ImportError)) else None
    if _type(name) is str:
        renamed = PY2_MODULES if _isinstance(exc, ImportError) else PY2_RUNTIME
        if name in renamed:
            info["python2"] = f"{name} is Python 2; Python 3 has {renamed[name]}"
    if _isinstance(exc, ModuleNotFoundError) and _type(exc.name) is str:
        info["missing_module"] = exc.name
        top = exc.name.split(".")[0]
        if top != exc.name:
            try:
                info["top_installed"] = importlib.util.find_spec(top) is not None
            except (ImportError, ValueError):
                info["top_installed"] = False
            version = getattr(sys.modules.get(top), "__version__", None)
            if _type(version) is str:
                info["top_version"] = version[:40]
    info["where"] = _where(tb, focus)
    return info


def _library_dirs():
    paths = sysconfig.get_paths()
    kinds = ("stdlib", "platstdlib", "purelib", "platlib")
    return tuple({os.path.abspath(paths[k]) + os.sep for k in kinds if k in paths})


def _where(tb, focus=None):
    """'line N of file.py (in fn)' for the deepest frame of the learner's code: in ``focus`` (the checked file's
    folder) when there is one, else outside the standard library and installed packages."""
    frames = [f for f in traceback.extract_tb(tb) if f.filename != __file__ and not f.filename.startswith("<")]
    libraries = _library_dirs()
    chosen = ([f for f in frames if focus and os.path.abspath(f.filename).startswith(focus + os.sep)]
              or [f for f in frames if not os.path.abspath(f.filename).startswith(libraries)] or frames)
    if not chosen:
        return ""
    f = chosen[-1]
    return f"line {f.lineno} of {os.path.basename(f.filename)}" + (f", in {f.name}" if f.name != "<module>" else "")


# -- Python 2 ------------------------------------------------------------------------------------------------
PY2_RUNTIME = {"xrange": "range", "raw_input": "input", "unicode": "str", "basestring": "str", "unichr": "chr",
               "iteritems": "items", "itervalues": "values", "iterkeys": "keys", "has_key": "in"}


def python2_construct(path, lineno=None, message=""):
    """(line, text, what) of the first Python 2 construct in the file (read by the tokenizer, so strings and
    comments are skipped), or None."""
    try:
        with open(path, "rb") as fh:
            source = fh.read(4 << 20).decode("utf-8", "replace")
    except OSError:
        return None
    lines = source.splitlines()

    def found(line, what):
        return line, lines[line - 1].strip()[:80] if 0 < line <= _len(lines) else "", what

    found_at = []
    logical = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT):
                continue
            if tok.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
                hit = _python2_in(logical)
                if hit:
                    found_at.append(hit)
                    break
                logical = []
                continue
            logical.append(tok)
    except (tokenize.TokenError, SyntaxError):
        hit = _python2_in(logical)
        if hit:
            found_at.append(hit)
    if message.startswith("Missing parentheses in call to 'print'") and lineno:
        found_at.append((lineno, "a Python 2 print statement; write print(...)"))
    if "tabs and spaces" in message and lineno:
        found_at.append((lineno, "tabs and spaces mixed in the indentation, which Python 2 allowed and Python 3 "
                                 "refuses; indent with spaces only"))
    return found(*min(found_at, key=lambda hit: hit[0])) if found_at else None


def _python2_in(toks):
    """(line, what) for a Python 2 construct in one logical line of tokens, or None."""
    if not toks:
        return None
    S, N, O = tokenize.STRING, tokenize.NAME, tokenize.OP
    first = toks[0]
    nxt = toks[1] if _len(toks) > 1 else None
    for k, tok in enumerate(toks):  # `print x`, also after a colon: `if verbose: print x`
        after = toks[k + 1] if k + 1 < _len(toks) else None
        if (tok.type == N and tok.string == "print" and (k == 0 or toks[k - 1].string == ":") and after is not None
                and not (after.type == O and after.string in ("(", "=", ".", ",", ")", ";", "[", ":"))):
            return tok.start[0], "a Python 2 print statement; write print(...)"
    if first.type == N and first.string == "exec" and nxt is not None and nxt.type in (S, N):
        return first.start[0], "a Python 2 exec statement; write exec(...)"
    if first.type == N and first.string == "raise" and _len(toks) > 3 and toks[2].type == O and toks[2].string == ",":
        return first.start[0], "Python 2's 'raise E, message'; write 'raise E(message)'"
    if first.type == N and first.string == "except":
        depth = 0
        for k, tok in enumerate(toks[1:], 1):
            depth += tok.string in "([{" if tok.type == O else 0
            depth -= tok.string in ")]}" if tok.type == O else 0
            if tok.type == O and tok.string == "," and depth == 0 and k + 2 < _len(toks) and toks[k + 2].string == ":":
                return first.start[0], "Python 2's 'except E, e:'; write 'except E as e:'"
    for k, tok in enumerate(toks):
        if tok.type == tokenize.ERRORTOKEN and tok.string == "`":
            return tok.start[0], "Python 2's backquotes; write repr(...)"
        if tok.type == O and tok.string == "<>":
            return tok.start[0], "Python 2's '<>'; write '!='"
        if tok.type == tokenize.NUMBER and tok.string[-1] in "lL":
            return tok.start[0], "a Python 2 long literal; drop the L"
        if tok.type == N and tok.string in PY2_RUNTIME and (k == 0 or toks[k - 1].string != "def"):
            return tok.start[0], f"Python 2's {tok.string}; Python 3 has {PY2_RUNTIME[tok.string]}"
    return None


# -- loading the target ----------------------------------------------------------------------------------
def _package_of(path):
    """(the folder to put on sys.path, the dotted module name) when ``path`` lies in a package (folders with an
    __init__.py whose names are identifiers), else None."""
    folder, name = os.path.split(path)
    parts = [os.path.splitext(name)[0]]
    if not parts[0].isidentifier():
        return None
    while os.path.isfile(os.path.join(folder, "__init__.py")) and os.path.basename(folder).isidentifier():
        parts.insert(0, os.path.basename(folder))
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return (folder, ".".join(parts)) if _len(parts) > 1 else None


def load(spec, buffers):
    """The target a load request names. Raises what importing it raised."""
    extra = [p for p in spec.get("sys_path", []) if p not in sys.path]
    sys.path[:0] = extra
    how = spec["how"]
    if how == "path":
        path = spec["path"]
        folder = os.path.dirname(path)
        package = _package_of(path)
        if folder not in sys.path:
            sys.path.insert(0, folder)  # siblings import as the learner runs them: `import layers`
        top = package[1].split(".")[0] if package is not None else None
        if top in sys.modules and not os.path.abspath(getattr(sys.modules[top], "__file__", "") or "").startswith(
                os.path.join(package[0], top) + os.sep):
            package = None  # the package's name is taken (a folder named json or numpy): load the file on its own
        if package is not None:
            root, dotted = package
            if root not in sys.path:
                sys.path.insert(0, root)  # `from cs231n.layers import *` and `from .layers import *`
            module = importlib.import_module(dotted)
            if os.path.abspath(getattr(module, "__file__", "") or "") == path:
                return _attr(module, spec)
            # the dotted name is taken by another module: load the file on its own
        name = "rnn_scratch_checked_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
        return _attr(module, spec)
    if how == "name":
        return _attr(importlib.import_module(spec["name"]), spec)
    if how == "pickle":
        return pickle.loads(buffers[0])
    raise ProtocolError(f"unknown load request {how!r}")


def _attr(module, spec):
    attr = spec.get("attr")
    if attr is None:
        return module
    if not hasattr(module, attr):
        raise LookupError(f"has no attribute {attr!r}")
    return getattr(module, attr)


def _kind(target):
    if _isinstance(target, type(sys)):
        return "module"
    if _isinstance(target, type):
        return "class"
    if callable(getattr(target, "backward", None)) and callable(getattr(target, "state_dict", None)):
        return "layer"
    return "callable" if callable(target) else "object"


# -- running steps --------------------------------------------------------------------------------------
class _RefError(Exception):
    """A step refers to something that does not exist (an item the learner's result does not have)."""


def _resolve(ref, target, slots):
    kind = ref[0]
    if kind == "target":
        return target
    if kind == "slot":
        if ref[1] not in slots:
            raise _RefError("an earlier step failed")
        return slots[ref[1]]
    base = _resolve(ref[1], target, slots)
    if kind == "attr":
        if not hasattr(base, ref[2]):
            raise _RefError(f"no attribute {ref[2]}")
        return getattr(base, ref[2])
    if kind == "item":
        try:
            return base[ref[2]]
        except Exception as exc:
            raise _RefError(f"no item {ref[2]}") from exc
    raise ProtocolError(f"bad reference {ref!r:.60}")


def _argument(spec, arrays, target, slots, buffers):
    if "arr" in spec:
        return arrays[spec["arr"]]
    if "tuple" in spec:
        return tuple(_argument(s, arrays, target, slots, buffers) for s in spec["tuple"])
    if "dict" in spec:
        return {k: _argument(s, arrays, target, slots, buffers) for k, s in spec["dict"].items()}
    if "ref" in spec:
        return _resolve(spec["ref"], target, slots)
    return decode(spec["lit"], buffers)


def _encode_result(value, how, buffers):
    if how == "type":
        return {"o": _type_name(value)}
    if _isinstance(how, dict) and _isinstance(value, (tuple, list)):
        n = how["items"]
        items = [encode(v, buffers, 1) if k < n else {"o": _type_name(v)} for k, v in enumerate(value[:MAX_ITEMS])]
        return {"t" if _isinstance(value, tuple) else "l": items}
    return encode(value, buffers)


def _copying(fn):
    """``fn`` called with copies of its array arguments (the in-place experiment)."""
    def wrapper(*args, **kwargs):
        copy = [a.copy() if _isinstance(a, _ndarray) else a for a in args]
        return fn(*copy, **kwargs)
    return wrapper


def run(header, buffers, target, out_fd, focus):
    """Run a program: ``header["arrays"]`` are named arrays (fresh copies here), ``header["steps"]`` a list of

    - ``{"call": REF, "args": [ARG, ...]}``: call what REF names; ``{"get": REF}``: read it;
    - ``{"patch": NAME}``: until the program ends, the target's NAME is called with copies of its array arguments;

    where REF is ``["target"]``, ``["attr", REF, name]``, ``["item", REF, index]`` or ``["slot", k]`` (what step k
    gave) and ARG is ``{"arr": name}``, ``{"ref": REF}``, ``{"lit": value}``, ``{"tuple": [ARG...]}`` or
    ``{"dict": {key: ARG}}``. A step may add ``"send"`` ("all", "type", or ``{"items": n}``: of a tuple, the first
    n items and the type of the rest), ``"report": True`` (send the named arrays as they are after it) and
    ``"soft": True`` (go on if it raises). Each step is answered as it ends; the first that raises (unless soft)
    ends the program; ``{"done": True}`` closes it."""
    arrays = {name: decode(tree, buffers) for name, tree in header["arrays"].items()}
    slots, patched = {}, []
    try:
        for k, step in enumerate(header["steps"]):
            reply = {"k": k}
            out = []
            if "patch" in step:  # the learner's own function, called with copies (undone after the run)
                name = step["patch"]
                patched.append((name, getattr(target, name)))
                setattr(target, name, _copying(getattr(target, name)))
                send(out_fd, {**reply, "ok": True, "value": {"v": None}})
                continue
            try:
                if "get" in step:
                    value = _resolve(step["get"], target, slots)
                else:
                    fn = _resolve(step["call"], target, slots)
                    args = [_argument(a, arrays, target, slots, buffers) for a in step.get("args", [])]
                    value = fn(*args)
                slots[k] = value
                reply.update(ok=True, value=_encode_result(value, step.get("send", "all"), out))
            except _RefError as exc:
                reply.update(ok=False, error={"type": "RefError", "message": _str(exc), "ref": True})
            except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt, GeneratorExit too
                reply.update(ok=False, error=describe_error(exc, exc.__traceback__, focus))
            if step.get("report"):
                reply["arrays"] = {name: encode(a, out) for name, a in arrays.items()}
            send(out_fd, reply, out)
            if not reply["ok"] and not step.get("soft"):
                break
    finally:
        for name, fn in reversed(patched):
            setattr(target, name, fn)
    send(out_fd, {"done": True})


def serve(in_fd, out_fd, target=None):
    """Answer the kit's requests (``load``, then ``run`` after ``run``) until it closes the pipe or kills this
    process. ``target``: the object to check, in a forked child (the load request then only describes it)."""
    focus = None
    while True:
        try:
            header, buffers = receive(in_fd)
        except EOFError:
            return
        op = header.get("op")
        if op == "load":
            spec = header["target"]
            focus = os.path.dirname(spec["path"]) if spec.get("path") else None
            try:
                if target is None or spec["how"] != "object":
                    target = load(spec, buffers)
                reply = {"ok": True, "kind": _kind(target),
                         "names": {n: _kind_of_attr(target, n) for n in header.get("names", [])}}
            except SyntaxError as exc:  # TabError too
                reply = {"ok": False, "error": _syntax(exc)}
            except BaseException as exc:  # noqa: BLE001
                reply = {"ok": False, "error": describe_error(exc, exc.__traceback__, focus)}
            send(out_fd, reply)
        elif op == "run":
            run(header, buffers, target, out_fd, focus)
        else:
            raise ProtocolError(f"unknown request {op!r}")


def _kind_of_attr(target, name):
    try:
        value = getattr(target, name)
    except Exception:  # noqa: BLE001
        return "missing"
    return "callable" if callable(value) else _type_name(value)


def _syntax(exc):
    info = {"type": _type_name(exc), "message": _str(exc.msg), "line": exc.lineno,
            "file": exc.filename or "", "where": f"line {exc.lineno} of {os.path.basename(exc.filename or '?')}"}
    found = (python2_construct(exc.filename, exc.lineno, _str(exc.msg)) if exc.filename and os.path.isfile(exc.filename)
             else None)
    if found is not None:
        info["python2"] = {"line": found[0], "text": found[1], "what": found[2],
                           "file": os.path.basename(exc.filename)}
    return info


def main(in_fd, out_fd):
    """Entry point of a fresh child interpreter."""
    sys.dont_write_bytecode = True  # nothing written beside the learner's files
    faulthandler.enable()  # a crash in C prints where it happened (the kit shows the end of the output)
    sys.stdin = io.StringIO()
    try:
        serve(in_fd, out_fd)
    except (EOFError, BrokenPipeError):
        pass
    finally:
        sys.stdout.flush()
    os._exit(0)


BOOT = ("import importlib.util as u, sys; s = u.spec_from_file_location('rnn_scratch_sandbox_child', sys.argv[1]); "
        "m = u.module_from_spec(s); s.loader.exec_module(m); m.main(int(sys.argv[2]), int(sys.argv[3]))")
