"""How noisy are central finite differences of our layers, in units of u * M / eps?

``rnn_scratch.gradcheck`` lets a tensor whose gradient is as small as the differences' own noise be
measured against ``NOISE_UNITS * u * M / eps`` (M: the loss's magnitude, sum |terms|) instead of its
own size. This study draws layers and inputs the way ``tests/test_parity.py``'s finite-difference test
does (every cell, 1-3 layers, both directions, lengths, hypothesis's edge values), runs
``check_layer`` on each, and reports over every tensor the largest

    noise units = max |analytic - numeric| / (u * M / eps)

and how many tensors fail with and without the noise allowance.

    python benchmarks/fd_noise.py [--examples 400] [--seed 0]
"""

import argparse
import itertools

import numpy as np
from hypothesis import HealthCheck, Phase, assume, given, seed, settings
from hypothesis import strategies as st

from rnn_scratch import gradcheck as gc
from rnn_scratch.functional import CELLS, get_cell
from rnn_scratch.testing import layer_configs, layer_inputs, values


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=400, help="configurations drawn (default 400)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    combos = list(itertools.product(CELLS, (1, 2, 3), (False, True)))
    rows = []

    @seed(args.seed)
    @settings(max_examples=args.examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def study(data):
        cell, layers, bi = data.draw(st.sampled_from(combos))
        cfg = data.draw(layer_configs(cells=cell, num_layers=layers, bidirectional=bi,
                                      input_size=st.integers(1, 3), hidden_size=st.integers(1, 3)))
        elements = values("float64", 2.0, away_from_zero=0.05) if get_cell(cell).nonsmooth_at else None
        inp = data.draw(layer_inputs(cfg, seq_len=st.integers(1, 4), batch=st.integers(1, 3), elements=elements))
        layer = cfg.build(dtype="float64", seed=1, check_finite=False)
        states = None if inp.states is None else layer.from_states(inp.states)
        if get_cell(cell).nonsmooth_at:  # as the test: away from a kink (relu's)
            layer.forward_states(inp.x, inp.states, inp.lengths)
            assume(gc.min_abs_preactivation(layer) > 1e-4)
        report = gc.check_layer(layer, inp.x, states, inp.lengths)
        for r in report.rows:
            units = r.max_abs_error / report.noise if report.noise else (np.inf if r.max_abs_error else 0.0)
            rows.append({"units": units, "passed": r.passed,
                         "old_passed": r.max_abs_error < 1e-6 * max(r.scale, 1e-3), "where": f"{r.name} of {cfg}",
                         "detail": (r.max_abs_error, r.scale, report.noise)})

    study()
    # noise matters only where the error is not already negligible against the tensor's own size
    rows_m = [r for r in rows if r["detail"][0] > 1e-9 * r["detail"][1]]
    units = np.array([r["units"] for r in rows_m])
    worst = max(rows_m, key=lambda r: r["units"])
    print(f"{len(rows)} tensors from {args.examples} configurations; {len(rows_m)} with |a - n| > 1e-9 x their "
          "own gradient scale, over which:")
    print(f"noise units |a - n| / (u M / eps): median {np.median(units):.3g}, 99th percentile "
          f"{np.percentile(units, 99):.3g}, largest {units.max():.3g} (NOISE_UNITS = {gc.NOISE_UNITS})")
    print(f"  largest at {worst['where']}")
    for r in rows:
        if not r["passed"]:
            print("  failing:", r["where"], "|a-n|, scale, noise =", r["detail"])
    for r in sorted(rows_m, key=lambda r: -r["units"])[:5]:
        print(f"  {r['units']:.3g} units: |a-n|, scale, noise = {r['detail']}")
    print(f"tensors failing: {sum(not r['passed'] for r in rows)} with the noise allowance, "
          f"{sum(not r['old_passed'] for r in rows)} against the floor alone")


if __name__ == "__main__":
    main()
