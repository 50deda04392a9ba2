"""The device run's measurements, after its tests (benchmarks/gpu_check.sh runs both).

With a GPU: the benchmark grid and the hidden-size sweep on NumPy, CuPy, torch-CPU and torch-CUDA (cuDNN),
TF32 off, forward and forward+backward with spreads; a TF32-on cuDNN column for the large rows; the
crossover study (batch and hidden size); the fused / graph / unfused modes next to cuDNN per step and the
launch floor. Writes bench_gpu.json, bench_gpu.txt and the plots under --out.

Without a GPU it checks its own logic on a small CPU run and says why the GPU parts were skipped.

    python benchmarks/gpu_check.py --out OUT [--fused] [--quick]
"""

import argparse
import json
import os
import sys
import time

from rnn_scratch import backend as be
from rnn_scratch import benchmark, gpu_study


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or os.path.join("out", "gpu_check"))
    ap.add_argument("--fused", action="store_true", help="time CuPy with the fused kernels and CUDA graphs on "
                                                         "(after the device tests passed)")
    ap.add_argument("--quick", action="store_true", help="small sizes (the CPU self-check)")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    reason = gpu_study.gpu_reason()
    result = {"gpu_skipped": reason, "fused": bool(args.fused) and reason is None}
    print("device:", be.device_name(), "|", json.dumps(benchmark.gpu_settings()), flush=True)
    if reason is not None:
        print(f"GPU parts skipped: {reason}; checking the harness on the CPU", flush=True)
        result.update(benchmark.run(sizes=["tiny", "seed"], quick=True, sweep_max=64, show_progress=False))
    else:
        be.set_fused(args.fused)
        be.set_cuda_graphs(args.fused)
        benchmark.set_tf32(False)
        grid = benchmark.run(sizes=["tiny", "mid", "large"] if args.quick else None, repeat=5, quick=args.quick,
                             sweep_max=256 if args.quick else 2048, show_progress=False)
        result.update(grid)
        print(benchmark.table(grid), flush=True)
        print(f"[{time.perf_counter() - start:.0f} s] grid done", flush=True)
        benchmark.set_tf32(True)
        result["tf32_cudnn"] = benchmark.run(sizes=["large", "xl"], backends=["torch_cuda"], repeat=5, sweep_max=0,
                                             show_progress=False, tf32=True)["rows"]
        benchmark.set_tf32(False)
        print(f"[{time.perf_counter() - start:.0f} s] TF32 column done", flush=True)
        result["crossover"] = gpu_study.crossover(repeat=3)
        print(json.dumps(result["crossover"]["crossover"], indent=1), flush=True)
        gpu_study.plot_crossover(result["crossover"], os.path.join(args.out, "bench_gpu_crossover.png"))
        print(f"[{time.perf_counter() - start:.0f} s] crossover done", flush=True)
        result["fused_modes"] = gpu_study.fused_modes()
        for cell, modes in result["fused_modes"]["cells"].items():
            print(cell, {m: round(v["forward_per_step_us"], 1) for m, v in modes.items() if isinstance(v, dict)},
                  "graph:", modes["fused_graph"]["graph"], flush=True)
        be.set_fused(None)
        be.set_cuda_graphs(None)
    result["seconds"] = time.perf_counter() - start
    path = benchmark.save(result, args.out, "gpu" if reason is None else "gpu_check_cpu")
    with open(path.replace(".json", ".txt"), "w") as f:
        f.write(benchmark.table(result) + "\n")
    print("wrote", path, *benchmark.plot(result, args.out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
