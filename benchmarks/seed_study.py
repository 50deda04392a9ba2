"""The seed preset against the tutorial's own PyTorch code over 10 seeds each (torch on the CPU).

For each run: the epoch-0 loss, the lowest loss and its epoch, the last loss, and the 50-step forecast MSE
(carried hidden state, against y[:50]). Prints the table and writes benchmarks/results/seed_study.{json,txt}.

    python benchmarks/seed_study.py [--seeds 10]
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tutorial_torch  # noqa: E402

from rnn_scratch.training import SINE_PRESETS, sine_experiment  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TUTORIAL_PRINTED = {"epoch0_loss": 0.5575, "lowest_loss": 0.0005, "lowest_epoch": 25, "last_loss": 0.0521}


def figures(losses, predictions, truth):
    losses = np.asarray(losses)
    k = int(np.argmin(losses))
    return {"epoch0_loss": float(losses[0]), "lowest_loss": float(losses[k]), "lowest_epoch": k,
            "last_loss": float(losses[-1]), "forecast_mse": float(np.mean((np.asarray(predictions) - truth) ** 2))}


def summary(runs):
    out = {}
    for key in ("epoch0_loss", "lowest_loss", "lowest_epoch", "last_loss", "forecast_mse"):
        v = np.array([r[key] for r in runs], dtype=float)
        out[key] = {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max())}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    ours, theirs = [], []
    for seed in range(args.seeds):
        r = sine_experiment(**SINE_PRESETS["seed"], seed=seed, backend="numpy")
        ours.append(figures(r["losses"], r["forecast"], r["truth"]))
        t = tutorial_torch.run(seed, verbose=False)
        theirs.append(figures(t["losses"], t["predictions"], t["truth"]))
        print(f"seed {seed}: ours {ours[-1]}\n        torch {theirs[-1]}", flush=True)
    result = {"ours": {"runs": ours, "summary": summary(ours)}, "tutorial_torch": {"runs": theirs,
                                                                                  "summary": summary(theirs)},
              "tutorial_printed": TUTORIAL_PRINTED, "command": "python benchmarks/seed_study.py --seeds "
                                                               f"{args.seeds}"}

    def cell(s, key, fmt):
        return f"{s[key]['median']:{fmt}} ({s[key]['min']:{fmt}} .. {s[key]['max']:{fmt}})"

    rows = [("epoch-0 loss", "epoch0_loss", ".4f"), ("lowest loss", "lowest_loss", ".4f"),
            ("epoch of the lowest loss", "lowest_epoch", ".0f"), ("last loss (epoch 29)", "last_loss", ".4f"),
            ("forecast MSE, 50 steps", "forecast_mse", ".2e")]
    lines = [f"| figure | tutorial's printed run | ours, --preset seed, {args.seeds} seeds: median (range) | "
             f"tutorial's torch code, {args.seeds} torch seeds: median (range) |", "| --- | --- | --- | --- |"]
    for label, key, fmt in rows:
        printed = TUTORIAL_PRINTED.get(key)
        printed = "-" if printed is None else f"{printed:{fmt}}"
        lines.append(f"| {label} | {printed} | {cell(result['ours']['summary'], key, fmt)} | "
                     f"{cell(result['tutorial_torch']['summary'], key, fmt)} |")
    text = "\n".join(lines)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "seed_study.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(args.out, "seed_study.txt"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
