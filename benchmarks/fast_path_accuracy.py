"""How far apart are the fast sequence kernels and the readable step loop, in units of the rounding bound?

Draws random configurations like ``tests/test_fast_path.py`` (every cell, T <= 8, B <= 5, I <= 6, H <= 7,
weights of standard deviation up to 3, bias or not, reverse or not, padding or not, 1-3 threads, LSTM
backward runs of 1, 40 or all steps) and reports, over every returned tensor, the largest

    C = |fast - reference| / (u * T (I + H + 8) * m * max(m * signal, |value|))

(see ``rounding_bound`` in the test): the test asserts C <= 32.

``--dtype float32``: the fast path in float32 on float32 numbers, against the reference in float64 on the same
numbers, u = 2^-24. ``--fused-on-cpu``: the fused CUDA loops instead, their kernels' own source compiled with the
host C++ compiler and run on the emulated device of ``tests/cuda_on_cpu.py`` (threads shuffled; what
``tests/test_kernels_on_cpu.py`` holds to the same bound).

    python benchmarks/fast_path_accuracy.py [--draws 6000] [--seeds 0 1 2 3 4 5 6 7] [--dtype float32]
                                            [--fused-on-cpu]
"""

import argparse
import contextlib
import os
import sys

import numpy as np

from rnn_scratch.functional import (
    CELLS,
    _common,
    _parallel,
    reference_backward,
    reference_forward,
    sequence_backward,
    sequence_forward,
)
from rnn_scratch.testing.cases import float32_numbers, random_sequence_case


def _emulated_device(seed):
    """The fused loops on the CPU (test code: the repository root goes on sys.path)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    from tests.cuda_on_cpu import EmulatedDevice, compiler_unavailable_reason

    if compiler_unavailable_reason() is not None:
        raise SystemExit(f"--fused-on-cpu needs a C++ compiler: {compiler_unavailable_reason()}")
    return EmulatedDevice(order="shuffle", seed=seed)


def worst_multiple(seed, draws, dtype="float64", fused_on_cpu=False):
    """(largest C, its description, largest plain relative error) over ``draws`` random configurations."""
    U = np.finfo(dtype).eps / 2
    rng0 = np.random.default_rng(seed)
    worst, where, worst_rel = 0.0, None, 0.0
    saved = _parallel.MIN_BLOCK_ELEMENTS, _common.CHUNK_ELEMENTS
    try:
        for _ in range(draws):
            cell = list(CELLS)[rng0.integers(len(CELLS))]
            T, B, I, H = (int(rng0.integers(1, k)) for k in (9, 6, 7, 8))
            bias, reverse, padded = (bool(rng0.integers(2)) for _ in range(3))
            scale, seed_k = rng0.uniform(0.1, 3.0), int(rng0.integers(2**31))
            _parallel.set_num_threads(int(rng0.integers(1, 4)))
            _parallel.MIN_BLOCK_ELEMENTS, _common.CHUNK_ELEMENTS = 1, (1, 40, 1 << 18)[rng0.integers(3)]
            case = random_sequence_case(seed_k, cell, T, B, I, H, bias=bias, padded=padded, scale=scale)
            params, x, state, mask, dout, dstate = case if dtype == "float64" else float32_numbers(case)

            def cast(a):
                return None if a is None else a.astype(dtype)

            device = _emulated_device(seed_k) if fused_on_cpu else contextlib.nullcontext()
            with np.errstate(over="ignore"), device:
                out_f, st_f, cf = sequence_forward(cell, cast(x), tuple(map(cast, state)),
                                                   {k: cast(v) for k, v in params.items()}, reverse=reverse,
                                                   mask=mask)
                dx_f, d0_f, dp_f = sequence_backward(cell, cast(dout), tuple(map(cast, dstate)), cf)
            with np.errstate(over="ignore"):
                out_r, st_r, cr = reference_forward(cell, x, state, params, reverse=reverse, mask=mask)
                dx_r, d0_r, dp_r = reference_backward(cell, dout, dstate, cr)
            m = max([1.0, np.abs(x).max()] + [np.abs(v).max() for v in params.values() if v is not None]
                    + [np.abs(s).max() for s in state])
            signal = max([np.abs(dout).max()] + [np.abs(d).max() for d in dstate])
            pairs = [((out_f, out_r), 1.0), *(((a, b), 1.0) for a, b in zip(st_f, st_r)),
                     ((dx_f, dx_r), signal), *(((a, b), signal) for a, b in zip(d0_f, d0_r)),
                     *(((dp_f[k], dp_r[k]), signal) for k in dp_r)]
            for (fast, ref), sig in pairs:
                diff = float(np.abs(fast.astype(np.float64) - ref).max(initial=0.0))
                own = float(np.abs(ref).max(initial=0.0))
                c = diff / (U * T * (I + H + 8) * m * max(m * sig, own))
                if c > worst:
                    worst, where = c, f"{cell} T={T} B={B} I={I} H={H} scale={scale:.2f} seed={seed_k}"
                if own > 0:
                    worst_rel = max(worst_rel, diff / own)
    finally:
        _parallel.set_num_threads(None)
        _parallel.MIN_BLOCK_ELEMENTS, _common.CHUNK_ELEMENTS = saved
    return worst, where, worst_rel


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=6000)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--fused-on-cpu", action="store_true",
                    help="measure the fused CUDA loops, their kernels run on the CPU (needs a C++ compiler)")
    args = ap.parse_args(argv)
    overall = 0.0
    for seed in args.seeds:
        c, where, rel = worst_multiple(seed, args.draws, args.dtype, args.fused_on_cpu)
        overall = max(overall, c)
        print(f"seed {seed}: largest C {c:.3g} ({where}); largest plain relative difference {rel:.3g}", flush=True)
    print(f"largest C over {len(args.seeds) * args.draws} configurations: {overall:.3g} (the test allows 32)")


if __name__ == "__main__":
    sys.exit(main())
