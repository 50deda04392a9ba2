"""The memory guard's estimate against measured peaks: every registered cell x 1..3 layers x uni/bidirectional x
full/checkpointed BPTT, one forward + backward each, peak measured with tracemalloc (``backend.peak_bytes``).

``estimate / peak`` must lie in [1, 1.25] (``tests/test_memory.py`` holds it at the default size). The
estimate is a model (``rnn_scratch.memory``), not a measurement: run this at other sizes to see where it
drifts (very small calls are dominated by a fixed ~0.2 MiB, lengths make it conservative).

    python benchmarks/memory_estimate.py [--size T B I H] [--dtype float64] [--lengths] [--batch-first]
"""

import argparse

import numpy as np
from threadpoolctl import threadpool_limits

from rnn_scratch.backend import peak_bytes
from rnn_scratch.functional import CELLS
from rnn_scratch.layers import make_layer


def measure(T, B, I, H, dtype="float64", lengths=False, batch_first=False):
    rng = np.random.default_rng(0)
    shape = (B, T, I) if batch_first else (T, B, I)
    x = rng.standard_normal(shape).astype(dtype)
    douts = {D: rng.standard_normal((*shape[:2], D * H)).astype(dtype) for D in (1, 2)}
    kw = {"lengths": rng.integers(1, T + 1, size=B)} if lengths else {}
    rows = []
    with threadpool_limits(1, "blas"):
        for cell in CELLS:
            for num_layers in (1, 2, 3):
                for bidirectional in (False, True):
                    for mode in ("full", "checkpoint"):
                        layer = make_layer(cell, I, H, num_layers=num_layers, bidirectional=bidirectional,
                                           memory=mode, dtype=dtype, batch_first=batch_first, seed=0)

                        def call(layer=layer, dout=douts[2 if bidirectional else 1]):
                            out, _ = layer(x, **kw)  # the caller holds the output through the backward
                            layer.backward(dout)

                        peak = peak_bytes(call)
                        rows.append((cell, num_layers, bidirectional, mode, peak,
                                     layer.bptt_bytes(T, B, masked=lengths)))
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, nargs=4, default=[40, 64, 32, 64], metavar=("T", "B", "I", "H"))
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    p.add_argument("--lengths", action="store_true", help="random lengths (padded batches)")
    p.add_argument("--batch-first", action="store_true")
    args = p.parse_args()
    T, B, I, H = args.size
    rows = measure(T, B, I, H, args.dtype, args.lengths, args.batch_first)
    print(f"T={T} B={B} I={I} H={H} {args.dtype}{' lengths' if args.lengths else ''}"
          f"{' batch_first' if args.batch_first else ''}")
    print(f"{'cell':>9} {'L':>2} {'bi':>3} {'mode':>10} {'peak MiB':>10} {'estimate MiB':>13} {'est/peak':>9}")
    for cell, L, bi, mode, peak, est in rows:
        print(f"{cell:>9} {L:>2} {'yes' if bi else 'no':>3} {mode:>10} {peak / 2**20:>10.2f} {est / 2**20:>13.2f} "
              f"{est / peak:>9.3f}")
    ratios = [est / peak for *_, peak, est in rows]
    print(f"estimate / peak: min {min(ratios):.3f}, max {max(ratios):.3f} over {len(rows)} configurations")


if __name__ == "__main__":
    main()
