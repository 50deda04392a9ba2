"""Running a learner's code in a child process the kit drives: arguments in, results out, a time limit on each.

:class:`Sandbox` starts a child (a fresh interpreter for a file or a module name, or a fork of this process for
an object that exists only here), has it import the target, then runs *programs*: a few steps (call the target's
``f`` with these arrays; call what an earlier step returned; read an attribute), answered one by one. Each step
has a wall-clock limit (``call_limit``) and the sandbox a deadline for all of them (``time_limit``); a child that
overruns is killed with its whole process group, one that exits or crashes is reported as what it did, and
either way the next program starts a new child. Nothing in the child reaches this process: the kit reads only
numbers, strings and numeric arrays back (:mod:`.sandbox_child` describes the wire format), never a pickle.

POSIX only (process groups, ``select`` on pipes, ``fork``). The sandbox contains mistakes, not malice: code that
sets out to signal its parent or to leave its process group is not stopped by it.
"""

from __future__ import annotations

import json
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from . import sandbox_child as wire

DEFAULT_CALL_LIMIT_S = 10.0
DEFAULT_TIME_LIMIT_S = 120.0
TAIL_BYTES = 16384
_CHILD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # tiny matrices


class SandboxError(Exception):
    """The child could not load the target (``info``: what it raised, as data) or broke the protocol."""

    def __init__(self, message, info=None):
        super().__init__(message)
        self.info = info or {}


@dataclass
class Step:
    """What one step of a program did: ``ok`` and its ``value`` (decoded), or the ``error`` it raised (a dict:
    type, message, where, exit_code for SystemExit, python2 for a Python 2 name); ``arrays``: the program's named
    arrays as they were after the step (when asked for)."""

    ok: bool
    value: object = None
    error: dict | None = None
    arrays: dict | None = None


@dataclass
class Stopped:
    """Step ``step`` never answered: ``kind`` is "timeout" (its own limit), "deadline" (the check's), "died" (the
    process ended: exit or crash) or "protocol" (it sent what is not a message); ``text`` says it for a report."""

    kind: str
    step: int
    text: str


@dataclass
class Run:
    steps: list = field(default_factory=list)
    stopped: Stopped | None = None


class Sandbox:
    """One child process at a time for one target.

    ``target``: a dict for :func:`.sandbox_child.load` (``{"how": "path", "path": ...}``, ``{"how": "name",
    "name": ...}``, either with an optional ``"attr"``), or any picklable object, or (on POSIX) any object at all,
    which a forked child inherits. ``names``: attributes whose kind the load reports (``loaded["names"]``).
    """

    def __init__(self, target, *, call_limit=DEFAULT_CALL_LIMIT_S, time_limit=DEFAULT_TIME_LIMIT_S, names=()):
        self.call_limit, self.time_limit = float(call_limit), float(time_limit)
        self.deadline = time.monotonic() + self.time_limit
        self.names = list(names)
        self._spec, self._object, self._pickled = None, None, None
        if isinstance(target, dict):
            self._spec = target
        else:
            self._object = target
            try:
                self._pickled = pickle.dumps(target)
                if b"__main__" in self._pickled:  # a fresh interpreter has another __main__
                    self._pickled = None
            except Exception:  # closures, lambdas, objects holding locks: only a fork can hand them over
                self._pickled = None
            if self._pickled is None and not hasattr(os, "fork"):
                raise SandboxError("this object cannot be sent to a child process here (no fork on this platform): "
                                   "pass the path of the file that defines it")
        self._pid = self._popen = None
        self._to = self._from = self._out = None
        self._tail = bytearray()  # the end of what the child printed (faulthandler writes in many small pieces)
        self._drain = None
        self.loaded = None
        self.starts = 0

    # -- life of a child ------------------------------------------------------------------------------
    def time_left(self):
        return self.deadline - time.monotonic()

    @property
    def alive(self):
        return self._pid is not None

    def start(self):
        """Start a child and load the target; ``loaded`` holds its answer. Raises :class:`SandboxError` when the
        target cannot be loaded (the error, as data, in ``info``) or the load overruns."""
        self.close()
        self.starts += 1
        child_in, to_child = os.pipe()
        from_child, child_out = os.pipe()
        out_read, out_write = os.pipe()
        spec = self._spec or ({"how": "pickle"} if self._pickled is not None else {"how": "object"})
        try:
            if spec["how"] == "object":
                self._pid = self._fork(child_in, child_out, out_write, (to_child, from_child, out_read))
            else:
                env = dict(os.environ)
                for k, v in _CHILD_ENV.items():
                    env.setdefault(k, v)
                self._popen = subprocess.Popen(
                    [sys.executable, "-c", wire.BOOT, wire.__file__, str(child_in), str(child_out)],
                    pass_fds=(child_in, child_out), stdin=subprocess.DEVNULL, stdout=out_write,
                    stderr=subprocess.STDOUT, start_new_session=True, env=env)
                self._pid = self._popen.pid
        finally:
            for fd in (child_in, child_out, out_write):
                os.close(fd)
        self._to, self._from, self._out = to_child, from_child, out_read
        self._tail.clear()
        self._drain = threading.Thread(target=self._drain_output, args=(out_read,), daemon=True)
        self._drain.start()
        if spec["how"] == "pickle":
            spec = {"how": "pickle", "sys_path": [p for p in sys.path if p]}
        buffers = [self._pickled] if spec["how"] == "pickle" else []
        limit = min(self.call_limit, max(self.time_left(), 0.0))
        try:
            self._send({"op": "load", "target": spec, "names": self.names}, buffers, limit)
            reply, _ = self._receive(time.monotonic() + limit)
        except TimeoutError:
            self.close()
            raise SandboxError(f"did not finish loading within {limit:g} s",
                               {"type": "timeout", "limit": limit}) from None
        except (EOFError, BrokenPipeError):
            text = self._ended_text()
            self.close()
            raise SandboxError(f"ended the process while loading: {text}", {"type": "died", "text": text}) from None
        except wire.ProtocolError as exc:
            self.close()
            raise SandboxError(f"broke the kit's protocol while loading ({exc})", {"type": "protocol"}) from None
        if not reply.get("ok"):
            self.close()
            error = reply.get("error") or {}
            raise SandboxError(f"{error.get('type', 'error')}: {error.get('message', '')}", error)
        self.loaded = reply
        return reply

    def _fork(self, child_in, child_out, out_write, parent_ends):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed or replaced stream
                pass
        pid = os.fork()
        if pid:
            return pid
        try:  # the child: never return into the kit's code
            os.setsid()
            for fd in parent_ends:
                os.close(fd)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(out_write, 1)
            os.dup2(out_write, 2)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            wire.serve(child_in, child_out, target=self._object)
            code = 0
        except BaseException:  # noqa: BLE001
            code = 70
        os._exit(code)

    def _drain_output(self, fd):
        """Keep the end of what the child prints (shown when it crashes); the rest is dropped."""
        try:
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                self._tail += chunk
                del self._tail[:-TAIL_BYTES]
        except OSError:
            pass
        finally:
            try:
                os.close(fd)
            except OSError:
                pass

    def output_tail(self, chars=600):
        """The last ``chars`` characters the child printed."""
        text = bytes(self._tail[-4 * chars:]).decode("utf-8", "replace")
        return text[-chars:]

    def _ended_text(self):
        """How the child ended: its exit status or signal, and the last line it printed, if useful."""
        status = self._wait(1.0)
        if status is None:
            what = "stopped answering"
        elif status < 0:
            try:
                name = signal.Signals(-status).name
            except ValueError:
                name = f"signal {-status}"
            what = f"crashed ({name})"
        else:
            what = f"ended the process with exit status {status} (os._exit or exit from another thread?)"
        if self._drain is not None:
            self._drain.join(0.5)
        lines = [ln.strip() for ln in self.output_tail(4000).splitlines() if ln.strip()]
        libraries = tuple({os.path.abspath(p) for p in (sys.prefix, sys.base_prefix, os.path.dirname(os.__file__))})
        frames = [ln for ln in lines if ln.startswith("File ") and wire.__file__ not in ln and "<string>" not in ln]
        own = [ln for ln in frames if not ln[6:].startswith(libraries)] or frames
        if own:  # faulthandler lists the most recent frame first, a traceback last
            fatal = any(ln.startswith("Fatal Python error") for ln in lines)
            what += f"; at {(own[0] if fatal else own[-1])[5:][:160]}"
        return what

    def _wait(self, timeout):
        """The child's exit status (negative: killed by that signal), or None if it is still running."""
        end = time.monotonic() + timeout
        while True:
            if self._popen is not None:
                code = self._popen.poll()
            elif self._pid is not None:
                try:
                    pid, status = os.waitpid(self._pid, os.WNOHANG)
                except ChildProcessError:
                    return None
                code = os.waitstatus_to_exitcode(status) if pid else None
            else:
                return None
            if code is not None or time.monotonic() > end:
                return code
            time.sleep(0.01)

    def kill(self):
        """End the child and everything it started (its own process group)."""
        if self._pid is None:
            return
        try:
            os.killpg(self._pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(self._pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._wait(5.0)

    def close(self):
        """End the child with everything it started (a subprocess, a fork, a thread): its whole process group. Its
        state is disposable, so it is killed rather than asked to quit."""
        if self._pid is not None:
            self.kill()
        for fd in (self._to, self._from):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        if self._drain is not None:
            self._drain.join(1.0)
        self._pid = self._popen = self._to = self._from = self._drain = None
        self.loaded = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- messages ------------------------------------------------------------------------------------
    def _send(self, header, buffers, limit):
        data = memoryview(wire.pack(header, buffers))
        end = time.monotonic() + limit
        while data:
            wait = end - time.monotonic()
            if wait <= 0 or not select.select([], [self._to], [], wait)[1]:
                raise TimeoutError
            data = data[os.write(self._to, data[:65536]):]

    def _read(self, n, end):
        chunks, got = [], 0
        while got < n:
            wait = end - time.monotonic()
            if wait <= 0 or not select.select([self._from], [], [], wait)[0]:
                raise TimeoutError
            chunk = os.read(self._from, min(n - got, 1 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _receive(self, end):
        n_head, n_buffers = wire.unpack_header(self._read(8, end))
        try:
            header = json.loads(self._read(n_head, end))
        except ValueError as exc:
            raise wire.ProtocolError("a header that is not JSON") from exc
        if not isinstance(header, dict):
            raise wire.ProtocolError("a header that is not an object")
        buffers, total = [], n_head
        for _ in range(n_buffers):
            (n,) = struct.unpack("<Q", self._read(8, end))
            total += n
            if total > wire.MAX_MESSAGE:
                raise wire.ProtocolError("a message too large")
            buffers.append(self._read(n, end))
        return header, buffers

    # -- programs ------------------------------------------------------------------------------------
    def run(self, arrays, steps):
        """Run ``steps`` (see :func:`.sandbox_child.run`) on fresh copies of ``arrays`` in the child.

        Returns a :class:`Run`: one :class:`Step` per step that answered (the program stops at the first that
        raised), and ``stopped`` when a step never answered (the child is then gone; the next run starts another).
        """
        result = Run()
        if self.time_left() <= 0:
            result.stopped = Stopped("deadline", 0, f"not run: the check's time limit ({self.time_limit:g} s) ran out")
            return result
        if self._pid is None:
            try:
                self.start()
            except SandboxError as exc:
                result.stopped = Stopped("died", 0, f"could not be loaded again: {exc}")
                return result
        buffers = []
        header = {"op": "run", "arrays": {k: wire.encode(v, buffers) for k, v in arrays.items()}, "steps": steps}
        k, by_deadline = 0, False
        try:
            by_deadline = self.time_left() < self.call_limit
            self._send(header, buffers, min(self.call_limit, max(self.time_left(), 0.0)))
            while True:
                left = self.time_left()
                by_deadline = left < self.call_limit
                reply, data = self._receive(time.monotonic() + min(self.call_limit, max(left, 0.0)))
                if reply.get("done"):
                    return result
                if reply.get("k") != k:
                    raise wire.ProtocolError("answers out of order")
                error = reply.get("error")
                if error is not None and not isinstance(error, dict):
                    raise wire.ProtocolError("an error that is not an object")
                step = Step(ok=bool(reply.get("ok")), error=error)
                if step.ok:
                    step.value = wire.decode(reply.get("value"), data)
                if "arrays" in reply:
                    if not isinstance(reply["arrays"], dict):
                        raise wire.ProtocolError("arrays that are not an object")
                    step.arrays = {n: wire.decode(t, data) for n, t in reply["arrays"].items()}
                result.steps.append(step)
                k += 1
        except TimeoutError:
            self.kill()
            self.close()
            if by_deadline:
                result.stopped = Stopped("deadline", k, f"stopped: the check's time limit ({self.time_limit:g} s) "
                                                        f"ran out")
            else:
                result.stopped = Stopped("timeout", k, f"took longer than {self.call_limit:g} s (stopped)")
        except (EOFError, BrokenPipeError, ConnectionError):
            text = self._ended_text()
            self.close()
            result.stopped = Stopped("died", k, text)
        except (wire.ProtocolError, struct.error, KeyError, TypeError) as exc:
            self.kill()
            self.close()
            result.stopped = Stopped("protocol", k, f"broke the kit's protocol ({exc}); did it replace print, "
                                                    f"builtins or the standard library?")
        return result
