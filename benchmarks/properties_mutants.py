"""The property suite's mutation score: every planted mistake of tests/properties/mutants.py against every property.

Prints the matrix (which properties catch which mistake), the Markdown table the README shows, and any difference
from the table the tests hold (``Mutant.caught_by``); writes benchmarks/results/properties_mutants.{json,md}.

    python benchmarks/properties_mutants.py [--examples 50] [--seed 0]
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # tests.properties is not installed: it lives beside the package

from rnn_scratch.testing.properties import PROPERTY_NAMES, check_properties  # noqa: E402
from tests.properties.mutants import CAUGHT_BY_README_ROW, MUTANTS  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=50, help="cases searched per property (default 50)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    start = time.time()
    rows, differ = [], []
    for m in MUTANTS:
        t = time.time()
        report = check_properties(m.factory, adapter=m.adapter, max_examples=args.examples, seed=args.seed,
                                  shrink_limit=20)
        status = {r.name: r.status for r in report.results}
        caught = [r.name for r in report.results if r.status == "FAIL"]
        rows.append({"mutant": m.name, "mistake": m.mistake, "adapter": m.adapter, "status": status,
                     "caught_by": caught, "declared": list(m.caught_by), "seconds": round(time.time() - t, 1)})
        mark = "" if caught == list(m.caught_by) else f"   <- the table says {', '.join(m.caught_by)}"
        if mark:
            differ.append(m.name)
        print(f"{m.name:38s} {', '.join(caught) or 'NOT CAUGHT':45s} {time.time() - t:5.1f} s{mark}", flush=True)
    short = {"well-formed": "wf", "batch": "bat", "split": "spl", "padding": "pad", "bidirectional": "bi",
             "relabel": "rel", "linearity": "lin", "directional": "dir", "zero-input": "z-in",
             "zero-recurrent": "z-rec", "dtype": "dt"}
    mark = {"FAIL": "X", "ok": ".", "n/a": " ", "not run": "-", "stopped": "?"}
    matrix = [f"{'mutant':38s} " + " ".join(f"{short[p]:>5s}" for p in PROPERTY_NAMES)]
    matrix += [f"{r['mutant']:38s} " + " ".join(f"{mark[r['status'][p]]:>5s}" for p in PROPERTY_NAMES) for r in rows]
    table = ["| mutant | the planted mistake | caught by |", "| --- | --- | --- |"]
    table += [CAUGHT_BY_README_ROW(type("Row", (), {"name": r["mutant"], "mistake": r["mistake"],
                                                    "caught_by": r["caught_by"]})) for r in rows]
    caught_all = sum(bool(r["caught_by"]) for r in rows)
    summary = (f"{caught_all} of {len(rows)} planted mistakes caught; python benchmarks/properties_mutants.py "
               f"--examples {args.examples} --seed {args.seed} ({time.time() - start:.0f} s); X caught, . held, "
               f"blank does not apply, - not run (the layer's calls are not well-formed)")
    print("\n".join(matrix) + "\n" + summary + "\n\n" + "\n".join(table))
    if differ:
        print(f"\ndiffers from tests/properties/mutants.py: {', '.join(differ)}")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "properties_mutants.json"), "w") as f:
        json.dump({"examples": args.examples, "seed": args.seed, "rows": rows}, f, indent=1)
    with open(os.path.join(args.out, "properties_mutants.md"), "w") as f:
        f.write("\n".join(["```", *matrix, "```", "", summary, "", *table]) + "\n")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
