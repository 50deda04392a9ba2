"""Running the time loop on blocks of batch rows in parallel (NumPy only).

Batch rows never interact in a recurrence: row b of h_t depends only on row b of h_{t-1} and
x_t. So the time loop can run on contiguous row blocks in separate threads with no
synchronisation until the loop ends; only the weight gradients (single GEMMs after the loop)
mix rows. NumPy releases the GIL inside ufunc loops and BLAS calls, so the threads really run
in parallel, and every per-step slice of a row block stays C-contiguous.

When the recurrence is split, the whole kernel call runs with BLAS held to one thread (via
``threadpoolctl``) and splits its big GEMMs over the same threads (:func:`split`). This matters:
after a multi-threaded call OpenBLAS's workers spin for a long while (``OPENBLAS_THREAD_TIMEOUT``,
2^28 cycles by default) and take the core that our second thread needs. Measured on the 2-core
machine, a loop of GEMM + sigmoid shaped like the LSTM forward (20 steps, 1000 rows, H=50): 42 ms
on one thread, 26 ms on two with OpenBLAS idle, 51 ms on two right after a multi-threaded GEMM.
When the recurrence is one block, nothing is threaded here and BLAS keeps its own threads.

On CuPy there is one block: the GPU parallelises over rows itself.

Thread count: :func:`set_num_threads`, else the environment variable ``RNN_SCRATCH_NUM_THREADS``,
else the CPUs this process may use. Blocks smaller than :data:`MIN_BLOCK_ELEMENTS` gate
activations per step are not worth a thread: on the benchmark's mid row (32 rows x 1024 gate
columns) two 16-row blocks were slower than one, their many small ufunc calls contending for
the GIL, so that row runs as one block with multi-threaded BLAS.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

MIN_BLOCK_ELEMENTS = 1 << 16  # elements per block below which a split costs more than it gains (measured)

_lock = threading.Lock()
_num_threads: int | None = None
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_blas = None  # threadpoolctl controller, made on first use


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def get_num_threads() -> int:
    """Threads the NumPy time loop may use."""
    if _num_threads is not None:
        return _num_threads
    env = os.environ.get("RNN_SCRATCH_NUM_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"RNN_SCRATCH_NUM_THREADS must be a positive integer, got {env!r}") from None
        if n < 1:
            raise ValueError(f"RNN_SCRATCH_NUM_THREADS must be a positive integer, got {env!r}")
        return n
    return _usable_cpus()


def set_num_threads(n: int | None) -> None:
    """Set the threads of the NumPy time loop (1: no threads); None goes back to the default."""
    global _num_threads
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"num_threads must be a positive integer or None, got {n!r}")
    _num_threads = n


def blocks(xp, count: int, width: int) -> list[slice]:
    """Contiguous blocks covering ``range(count)`` batch rows; ``width`` = elements per row.

    One block unless NumPy, several threads allowed, and each block keeps at least
    ``MIN_BLOCK_ELEMENTS`` elements.
    """
    if xp is not np:
        return [slice(0, count)]
    return split(count, min(get_num_threads(), count * width // MIN_BLOCK_ELEMENTS))


def split(count: int, parts: int) -> list[slice]:
    """``range(count)`` cut into ``parts`` contiguous slices (fewer if count is smaller)."""
    parts = max(1, min(parts, count))
    edges = [count * k // parts for k in range(parts + 1)]
    return [slice(edges[k], edges[k + 1]) for k in range(parts)]


class RowBlocks:
    """The batch-row blocks of one kernel call, and how its big GEMMs are shared out.

    ``rows``: contiguous slices of the batch, one per thread; ``parts``: their count. :meth:`map`
    runs a function on every block, in threads; :meth:`split` cuts another axis (the
    T*B rows of an all-steps GEMM) into as many parts.
    """

    def __init__(self, rows: list[slice]):
        self.rows = rows

    @property
    def parts(self) -> int:
        return len(self.rows)

    def map(self, fn) -> list:
        """``[fn(rows) for rows in self.rows]``: the first block on this thread, the others on the worker pool
        (called directly, so a time loop runs one frame below its kernel call). Returns when all have finished;
        an exception in any block is raised here."""
        if len(self.rows) == 1:
            return [fn(self.rows[0])]
        futures = [_worker_pool(len(self.rows) - 1).submit(fn, rows) for rows in self.rows[1:]]
        try:
            first = fn(self.rows[0])
        finally:
            for future in futures:
                future.exception()  # wait for every block, even when one failed
        return [first, *(future.result() for future in futures)]

    def split(self, count: int) -> list[slice]:
        """``range(count)`` in ``parts`` contiguous slices, for a GEMM shared over the same threads."""
        return split(count, self.parts)

    def map_split(self, fn, count: int) -> list:
        """``fn`` on each of :meth:`split` (count)'s slices, in parallel."""
        return RowBlocks(self.split(count)).map(fn)


def one_block(count: int) -> RowBlocks:
    """All ``count`` rows as one block: no threads."""
    return RowBlocks([slice(0, count)])


@contextlib.contextmanager
def batch_blocks(xp, batch: int, width: int):
    """Context giving the :class:`RowBlocks` (:func:`blocks`) of one kernel call; while there are
    several, BLAS runs on one thread inside it (our threads do the splitting)."""
    row_blocks = RowBlocks(blocks(xp, batch, width))
    with _single_threaded_blas() if row_blocks.parts > 1 else contextlib.nullcontext():
        yield row_blocks


_blas_users = 0  # kernel calls (on any thread) now inside _single_threaded_blas
_blas_restore = None  # the limiter whose restore ends the limit
_blas_thread: ThreadPoolExecutor | None = None  # the one thread that sets and restores the limit


def _on_blas_thread(fn):
    """Run ``fn`` on our one BLAS-controlling thread and return its result.

    threadpoolctl (>= 3.6) lets only one live Python thread change OpenBLAS's process-wide limit and
    silently ignores the others; a limit set by one user thread and restored by another would stay.
    """
    global _blas_thread
    if _blas_thread is None:
        _blas_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rnn_scratch_blas")
    return _blas_thread.submit(fn).result()


@contextlib.contextmanager
def _single_threaded_blas():
    """BLAS on one thread while any kernel call of ours is inside; the last one out restores it.

    BLAS thread limits are process-wide. Limiting and restoring per call would race when two
    Python threads run kernels at once: the second would save the first's limit of 1 as "original"
    and restore 1 after the first restored the real count, leaving BLAS on one thread for good.
    So the calls share one limit, counted under a lock, set and restored on one thread.
    """
    global _blas, _blas_users, _blas_restore
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # without it BLAS keeps its threads: still correct, slower
        yield
        return
    with _lock:
        if _blas is None:
            _blas = ThreadpoolController()
        if _blas_users == 0:
            _blas_restore = _on_blas_thread(lambda: _blas.limit(limits=1, user_api="blas"))
        _blas_users += 1
    try:
        yield
    finally:
        with _lock:
            _blas_users -= 1
            if _blas_users == 0:
                _on_blas_thread(_blas_restore.restore_original_limits)
                _blas_restore = None


def for_each_block(fn, blocks) -> list:
    """``[fn(block) for block in blocks]``: the first on this thread, the others on the worker pool.

    Returns when all have finished; an exception in any block is raised here.
    """
    return RowBlocks(list(blocks)).map(fn)


def _worker_pool(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool_size < workers:
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rnn_scratch")
            _pool_size = workers
        return _pool


def _after_fork_in_child():
    """A forked child has none of its parent's threads: forget the pools (a submit to the inherited pool would
    wait forever: it counts the parent's workers, which do not run here) and the lock, which another thread
    may have held at the fork. BLAS keeps whatever limit it had at the fork (correct, if slower)."""
    global _lock, _pool, _pool_size, _blas_thread, _blas_users, _blas_restore
    _lock = threading.Lock()
    _pool, _pool_size = None, 0
    _blas_thread, _blas_users, _blas_restore = None, 0, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
