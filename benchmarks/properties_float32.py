"""How close do correct layers come to the property suite's tolerance rules? (the margins behind its constants)

Draws cases the way ``rnn_scratch.testing.properties`` does (every property, its own sizes and regimes) for
torch.nn.RNN (tanh, relu), LSTM and GRU and for every cell of rnn_scratch's registry, each as one layer and as two
bidirectional batch-first layers, and reports over every tensor of every relation:

- float64: the largest error in units of the tensor's scale (the rule allows F64_TOL = 1e-9); the directional
  derivative's error / its allowed (finite differences' own tolerance);
- float32 relations: the largest error / allowed, allowed = 4 x the plain side's own float32 error + 32 ulps of
  the scale (the rule holds below 1);
- dtype: the largest |float32 - float64| in ulps of the scale (the rule allows F32_DTYPE_ULPS).

    python benchmarks/properties_float32.py [--examples 200] [--seed 0]

Writes benchmarks/results/properties_float32.{json,txt}.
"""

import argparse
import json
import os
import time
from functools import partial

import numpy as np
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from rnn_scratch.functional import CELLS
from rnn_scratch.layers import make_layer
from rnn_scratch.testing.properties import PROPERTIES, check_properties  # noqa: F401 (the public entry point)
from rnn_scratch.testing.properties.core import EPS32, F32_DTYPE_ULPS, F64_TOL
from rnn_scratch.testing.properties.suite import DTYPES, Subject, evaluate, property_cases

STRUCTURES = {"1 layer": {}, "2 layers, bidirectional, batch_first": dict(num_layers=2, bidirectional=True,
                                                                           batch_first=True)}


def _torch(cls, I, H, **kw):
    return cls(I, H, **kw)


def factories():
    import torch

    torch_cells = {"torch RNN tanh": partial(_torch, torch.nn.RNN),
                   "torch RNN relu": partial(_torch, torch.nn.RNN, nonlinearity="relu"),
                   "torch LSTM": partial(_torch, torch.nn.LSTM), "torch GRU": partial(_torch, torch.nn.GRU)}
    for name, make in torch_cells.items():
        for s, kw in STRUCTURES.items():
            yield f"{name}, {s}", partial(make, **kw), "torch"
    for cell in CELLS:
        for s, kw in STRUCTURES.items():
            yield f"rnn_scratch {cell}, {s}", partial(make_layer, cell, **kw), "rnn_scratch"


def measure(label, factory, adapter, examples, seed_value):
    subject = Subject(factory, adapter, label)
    first = subject.adapter(2, 3)
    worst = {"float64": (0.0, ""), "directional": (0.0, ""), "float32": (0.0, ""), "dtype": (0.0, "")}
    cases = {"wide": 0, "moderate": 0}
    for prop in PROPERTIES:
        if prop.applies(first, DTYPES) is None:
            _study(subject, prop, examples, seed_value, worst, cases)
    return {"factory": label, "cases": cases, **{k: {"worst": v[0], "where": v[1]} for k, v in worst.items()}}


def _study(subject, prop, examples, seed_value, worst, cases):
    """Draw ``examples`` cases of ``prop`` (no shrinking) and keep the worst margin of each kind in ``worst``."""
    @seed(seed_value)
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def study(data):
        case = data.draw(property_cases(subject, prop, DTYPES))
        cases[case.regime.name] += 1
        outcome = evaluate(subject, prop, case, DTYPES)
        assert not outcome.problems, outcome.problems
        for c in outcome.comparisons:
            where = f"{prop.name}: {c.tensor} ({c.variant}) {case.sizes}"
            if prop.name == "dtype":
                key, value = "dtype", c.error / (EPS32 * c.scale) if c.scale else (np.inf if c.error else 0.0)
            elif c.dtype == "float32":
                key, value = "float32", c.error / c.allowed if c.allowed else (np.inf if c.error else 0.0)
            elif prop.name == "directional":
                key, value = "directional", c.error / c.allowed if c.allowed else 0.0
            else:
                key, value = "float64", c.error / c.scale if c.scale else (np.inf if c.error else 0.0)
            if value > worst[key][0]:
                worst[key] = (float(value), where)

    study()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=200, help="cases per property and factory (default 200)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    start = time.time()
    rows = []
    for label, factory, adapter in factories():
        rows.append(measure(label, factory, adapter, args.examples, args.seed))
        r = rows[-1]
        print(f"{label:55s} float64 {r['float64']['worst']:.2e} of scale, directional {r['directional']['worst']:.3f}, "
              f"float32 {r['float32']['worst']:.3f} of allowed, dtype {r['dtype']['worst']:.1f} ulps", flush=True)
    lines = [f"python benchmarks/properties_float32.py --examples {args.examples} --seed {args.seed} "
             f"({time.time() - start:.0f} s)",
             f"{'factory':55s} {'float64 err/scale':>18s} {'directional':>12s} {'float32 err/allowed':>20s} "
             f"{'dtype ulps':>11s}"]
    for r in rows:
        lines.append(f"{r['factory']:55s} {r['float64']['worst']:18.2e} {r['directional']['worst']:12.3f} "
                     f"{r['float32']['worst']:20.3f} {r['dtype']['worst']:11.1f}")
    for key, rule in (("float64", f"allowed {F64_TOL:g}"), ("directional", "allowed 1"), ("float32", "allowed 1"),
                      ("dtype", f"allowed {F32_DTYPE_ULPS}")):
        top = max(rows, key=lambda r: r[key]["worst"])
        lines.append(f"worst {key}: {top[key]['worst']:.3g} ({rule}) in {top['factory']}, {top[key]['where']}")
    text = "\n".join(lines)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "properties_float32.json"), "w") as f:
        json.dump({"examples": args.examples, "seed": args.seed, "rows": rows}, f, indent=1)
    with open(os.path.join(args.out, "properties_float32.txt"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
