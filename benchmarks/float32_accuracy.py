"""How accurate is our float32 path, next to torch's float32, against a float64 truth?

For configurations over the whole parity grid (cell x layers x directions x layout x bias x initial
state x lengths, sizes drawn at random), our float32 layer and torch's float32 module run on the same
float32 weights and inputs; torch in float64 on those same (float32-rounded) numbers is the truth.
For every returned tensor (output, final states, dx, initial-state gradients, every parameter gradient):

    e = max |value - truth| / max |truth|          (the tensor's error relative to its own scale)

and the ratio e_ours / e_torch. Prints the median and worst ratio (overall and per cell), and the
multiple K that the test's rule  e_ours <= K * e_torch + floor  needs at a few floors.

    python benchmarks/float32_accuracy.py [--draws 3] [--seed 0] [--out benchmarks/results]
"""

import argparse
import itertools
import json
import os

import numpy as np

from rnn_scratch.functional import CELLS
from rnn_scratch.testing import LayerConfig, LayerInputs
from rnn_scratch.testing.torch_reference import absolute_reference, torch_reference

HERE = os.path.dirname(os.path.abspath(__file__))
GRID = list(itertools.product(CELLS, (1, 2, 3), (False, True), (False, True), (False, True), (False, True),
                              (False, True)))
FLOORS = (0.0, 1e-6, 32 * 2.0**-23, 1e-5)  # 32 * 2^-23: 32 units in the last place of float32
FORWARD = ("out", "final0", "final1")
MULTIPLE, FLOOR_ULPS = 4, 32  # tests/test_parity.py's rule


def breaks_the_rule(r):
    """tests/test_parity.py's float32 rule, on one row: our error > 4 x torch's + 32 ulps of the tensor's scale (for
    outputs the same tensor from absolute values, for gradients the call's largest gradient)."""
    fwd = r["tensor"] in FORWARD
    scale = max(r["scale"], r["magnitude"]) if fwd else max(r["scale"], r["grad_scale"])
    return r["e_ours"] * r["scale"] > MULTIPLE * r["e_torch"] * r["scale"] + FLOOR_ULPS * 2.0**-23 * scale


def draw(combo, rng):
    cell, layers, bi, bf, bias, with_state, with_lengths = combo
    cfg = LayerConfig(cell, int(rng.integers(1, 6)), int(rng.integers(1, 7)), layers, bi, bf, bias)
    T, B = int(rng.integers(1, 8)), int(rng.integers(1, 4))
    amp = rng.uniform(0.1, 2.0)
    shape = (B, T, cfg.input_size) if bf else (T, B, cfg.input_size)
    x = (amp * rng.standard_normal(shape)).astype("float32")
    states = tuple((0.5 * rng.standard_normal(cfg.state_shape(B))).astype("float32")
                   for _ in range(cfg.num_states)) if with_state else None
    lengths = rng.integers(1, T + 1, size=B) if with_lengths else None
    return cfg, LayerInputs(x=x, states=states, lengths=lengths, seq_len=T, batch=B)


def tensors(result):
    named = {"out": result["out"], "dx": result["dx"]}
    named.update({f"final{k}": v for k, v in enumerate(result["finals"])})
    named.update({f"dstate0_{k}": v for k, v in enumerate(result["dstate0"])})
    named.update(result["grads"])
    return named


def errors_of(cfg, inp, rng):
    """{tensor: (e_ours, e_torch)} for one configuration."""
    layer = cfg.build(dtype="float32", seed=int(rng.integers(1000)))
    out, finals = layer.forward_states(inp.x, inp.states, inp.lengths)
    dout = rng.standard_normal(out.shape).astype("float32")
    dfinals = tuple(rng.standard_normal(f.shape).astype("float32") for f in finals)
    dx, d0 = layer.backward_states(dout, dfinals)
    ours = {"out": out, "dx": dx, **{f"final{k}": v for k, v in enumerate(finals)},
            **{f"dstate0_{k}": v for k, v in enumerate(d0)}, **layer.grads}
    sd = layer.state_dict()
    truth = tensors(torch_reference(cfg, sd, inp, dout, dfinals, "float64"))
    torch32 = tensors(torch_reference(cfg, sd, inp, dout, dfinals, "float32"))
    magnitude = tensors(absolute_reference(cfg, sd, inp, dout, dfinals))  # the same tensors, no cancellation
    result = {}
    for name, t in truth.items():
        scale = float(np.abs(t).max(initial=0.0)) or 1.0
        e_ours = float(np.abs(ours[name].astype(np.float64) - t).max(initial=0.0)) / scale
        e_torch = float(np.abs(torch32[name].astype(np.float64) - t).max(initial=0.0)) / scale
        result[name] = (e_ours, e_torch, scale, float(np.abs(magnitude[name]).max(initial=0.0)))
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=3, help="configurations per grid combination (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--name", default="float32_accuracy")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    rows = []
    for combo in GRID:
        for _ in range(args.draws):
            cfg, inp = draw(combo, rng)
            errors = errors_of(cfg, inp, rng)
            grad_scale = max(s for name, (_, _, s, _) in errors.items() if name not in FORWARD)
            for name, (e_ours, e_torch, scale, magnitude) in errors.items():
                rows.append({"cell": cfg.cell, "config": repr(cfg), "tensor": name, "e_ours": e_ours,
                             "e_torch": e_torch, "scale": scale, "grad_scale": grad_scale, "magnitude": magnitude})
    ratios = np.array([r["e_ours"] / r["e_torch"] for r in rows if r["e_torch"] > 0])
    lines = [f"{len(rows)} tensors from {len(GRID) * args.draws} configurations (float32 vs a float64 truth)",
             f"ratio e_ours / e_torch (tensors where torch's error > 0): median {np.median(ratios):.3g}, "
             f"90th percentile {np.percentile(ratios, 90):.3g}, worst {ratios.max():.3g}"]
    for cell in CELLS:
        r = np.array([x["e_ours"] / x["e_torch"] for x in rows if x["cell"] == cell and x["e_torch"] > 0])
        lines.append(f"  {cell:<15} median {np.median(r):.3g}, worst {r.max():.3g}")
    zero = [r for r in rows if r["e_torch"] == 0 and r["e_ours"] > 0]
    lines.append(f"tensors where torch is exact and we are not: {len(zero)}, our worst relative error there "
                 f"{max((r['e_ours'] for r in zero), default=0):.3g}")
    for floor in FLOORS:
        need = max(((r["e_ours"] - floor) / r["e_torch"] if r["e_torch"] > 0 else (np.inf if r["e_ours"] > floor
                                                                                   else 0.0)) for r in rows)
        lines.append(f"K needed for  e_ours <= K * e_torch + {floor:g}:  {need:.3g}")
    def ratio(r):
        if r["e_torch"] > 0:
            return r["e_ours"] / r["e_torch"]
        return np.inf if r["e_ours"] > 0 else 0.0

    lines.append(f"tensors breaking the test's rule (ours <= {MULTIPLE} x torch's + {FLOOR_ULPS} ulps of scale): "
                 f"{sum(map(breaks_the_rule, rows))}")
    worst = sorted(rows, key=ratio, reverse=True)[:5]
    lines.append("worst five:")
    lines += [f"  {r['tensor']:<16} e_ours {r['e_ours']:.2e} e_torch {r['e_torch']:.2e}  {r['config']}" for r in worst]
    text = "\n".join(lines)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{args.name}.json"), "w") as f:
        json.dump({"draws": args.draws, "seed": args.seed, "rows": rows}, f)
    with open(os.path.join(args.out, f"{args.name}.txt"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
