"""Renders docs/bench.json (from `python -m matgrad bench --json`) as README's Markdown table."""

import json
import sys
from pathlib import Path

data = json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/bench.json").read_text())
by_case: dict = {}
for rec in data["results"]:
    by_case.setdefault(rec["name"], {})[rec["impl"]] = rec
print("| case | matgrad | GFLOP/s matgrad / NumPy / torch | share of FMA peak | × NumPy | × torch |")
print("|---|---:|---:|---:|---:|---:|")
for name, impls in by_case.items():
    mg = impls["matgrad"]
    t = mg["median_s"]
    when = f"{t * 1e6:.1f} µs" if t < 1e-3 else f"{t * 1e3:.2f} ms"
    gf = " / ".join(f"{impls[k]['gflops']:.0f}" if k in impls else "–" for k in ("matgrad", "numpy", "torch"))
    ratio = {k: f"{v:.2f}" for k, v in mg["ratio_vs"].items()}
    share = mg.get("peak_share")
    share = f"{100 * share:.0f} %" if share is not None else "–"
    print(f"| {name} | {when} | {gf} | {share} | {ratio.get('numpy', '–')} | {ratio.get('torch', '–')} |")
