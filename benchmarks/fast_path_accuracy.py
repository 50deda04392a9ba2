"""How far apart are the fast sequence kernels and the readable step loop, in units of the rounding bound?

Draws random configurations like ``tests/test_fast_path.py`` (every cell, T <= 8, B <= 5, I <= 6, H <= 7,
weights of standard deviation up to 3, bias or not, reverse or not, padding or not, 1-3 threads, LSTM
backward runs of 1, 40 or all steps) and reports, over every returned tensor, the largest

    C = |fast - reference| / (u * T (I + H + 8) * m * max(m * signal, |value|))

(see ``rounding_bound`` in the test): the test asserts C <= 32.

    python benchmarks/fast_path_accuracy.py [--draws 6000] [--seeds 0 1 2 3 4 5 6 7]
"""

import argparse
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
from rnn_scratch.testing.cases import random_sequence_case

U = np.finfo(np.float64).eps / 2


def worst_multiple(seed, draws):
    """(largest C, its description, largest plain relative error) over ``draws`` random configurations."""
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
            params, x, state, mask, dout, dstate = random_sequence_case(seed_k, cell, T, B, I, H, bias=bias,
                                                                       padded=padded, scale=scale)
            with np.errstate(over="ignore"):
                out_f, st_f, cf = sequence_forward(cell, x, state, params, reverse=reverse, mask=mask)
                dx_f, d0_f, dp_f = sequence_backward(cell, dout, dstate, cf)
                out_r, st_r, cr = reference_forward(cell, x, state, params, reverse=reverse, mask=mask)
                dx_r, d0_r, dp_r = reference_backward(cell, dout, dstate, cr)
            m = max([1.0, np.abs(x).max()] + [np.abs(v).max() for v in params.values() if v is not None]
                    + [np.abs(s).max() for s in state])
            signal = max([np.abs(dout).max()] + [np.abs(d).max() for d in dstate])
            pairs = [((out_f, out_r), 1.0), *(((a, b), 1.0) for a, b in zip(st_f, st_r)),
                     ((dx_f, dx_r), signal), *(((a, b), signal) for a, b in zip(d0_f, d0_r)),
                     *(((dp_f[k], dp_r[k]), signal) for k in dp_r)]
            for (fast, ref), sig in pairs:
                diff = float(np.abs(fast - ref).max(initial=0.0))
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
    args = ap.parse_args(argv)
    overall = 0.0
    for seed in args.seeds:
        c, where, rel = worst_multiple(seed, args.draws)
        overall = max(overall, c)
        print(f"seed {seed}: largest C {c:.3g} ({where}); largest plain relative difference {rel:.3g}", flush=True)
    print(f"largest C over {len(args.seeds) * args.draws} configurations: {overall:.3g} (the test allows 32)")


if __name__ == "__main__":
    sys.exit(main())
