"""A run's results as a table, JSON records and a plot."""

from __future__ import annotations

import json
import math
import sys

IMPLS = ("matgrad", "numpy", "torch")


def printable(text: str) -> str:
    """``text`` with 'µ' and '×' replaced when stdout cannot encode them."""
    enc = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        text.encode(enc)
        return text
    except (UnicodeEncodeError, LookupError):
        return text.replace("µ", "u").replace("×", "x")


def fmt_time(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 1e-3:
        return printable(f"{seconds * 1e6:.1f} µs")
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.3f} s"


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def fmt_gflops(g: float | None) -> str:
    if g is None:
        return "-"
    return f"{g:.1f}" if g >= 10 else f"{g:.2f}"


def format_table(cases: list[dict]) -> str:
    head = ["case", "matgrad", "GFLOP/s", "peak", "numpy GF/s", "torch GF/s", "vs numpy",
            "vs torch", "check"]
    rows = []
    for c in cases:
        if c.get("status") == "skipped":
            continue
        if c.get("status") == "error":
            rows.append([c["name"], "-", "-", "-", "-", "-", "-", "-", "FAIL"])
            continue
        im = c["impls"]
        rows.append([
            c["name"],
            fmt_time(im["matgrad"]["median_s"]),
            fmt_gflops(im["matgrad"]["gflops"]),
            "-" if c.get("peak_share") is None else f"{100 * c['peak_share']:.0f}%",
            fmt_gflops(im.get("numpy", {}).get("gflops")),
            fmt_gflops(im.get("torch", {}).get("gflops")),
            fmt_ratio(c["ratio"].get("numpy")),
            fmt_ratio(c["ratio"].get("torch")),
            "ok" if c["check_passed"] else "FAIL",
        ])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(head)]

    def line(cells):
        return "  ".join(v.ljust(widths[0]) if i == 0 else v.rjust(widths[i])
                         for i, v in enumerate(cells))

    header = line(head)
    return "\n".join([header, "-" * len(header), *(line(r) for r in rows)])


def flat_records(cases: list[dict]) -> list[dict]:
    """One row per (case, implementation) for the JSON output."""
    rows = []
    for c in cases:
        if c.get("status") != "ok":
            continue
        mt = c["impls"]["matgrad"]["median_s"]
        for impl, t in c["impls"].items():
            if impl == "matgrad":
                ratio = dict(c["ratio"])
            else:  # how much faster matgrad is than this one; same number as above
                ratio = {"matgrad": mt / t["median_s"]} if t["median_s"] > 0 else {}
            rows.append({
                "name": c["name"], "op": c["op"], "dtype": c["dtype"], "shape": c["shape"],
                "impl": impl, "median_s": t["median_s"], "min_s": t["min_s"],
                "max_s": t["max_s"], "repeats": t["repeats"], "loops": t["loops"],
                "flops": c["flops"], "gflops": t["gflops"], "ratio_vs": ratio,
                "check_passed": c["check_passed"], "peak_share": c.get("peak_share") if impl == "matgrad" else None,
            })
    return rows


def write_json(path: str, meta: dict, results: list[dict]) -> None:
    skipped = [c for c in results if c.get("status") == "skipped"]
    failed = [c for c in results if c.get("check_passed") is False]
    payload = {
        "meta": meta,
        "results": flat_records(results),
        "cases": [{k: v for k, v in c.items() if k != "x"} for c in results],
        "skipped": [{"name": c["name"], "reason": c["reason"]} for c in skipped],
        "failed_checks": [{"name": c["name"], "detail": c.get("check_detail")} for c in failed],
    }
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2)


def plot(cases: list[dict], path: str, meta: dict) -> None:
    """GFLOP/s against size, one panel per op and dtype; ops measured at one size share a
    bar chart at the end."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    groups: dict[tuple[str, str], list[dict]] = {}
    for c in cases:
        if c.get("status") == "ok":
            groups.setdefault((c["op"], c["dtype"]), []).append(c)
    if not groups:
        raise RuntimeError("nothing to plot: no case ran")
    colors = {"matgrad": "tab:blue", "numpy": "tab:orange", "torch": "tab:green"}
    styles = {"matgrad": "o-", "numpy": "s--", "torch": "^:"}
    multi = sorted(k for k, v in groups.items() if len(v) > 1)
    single = [groups[k][0] for k in sorted(groups) if len(groups[k]) == 1]
    n_panels = len(multi) + (1 if single else 0)
    ncol = min(2, n_panels)
    nrow = math.ceil(n_panels / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(6.4 * ncol, 4.0 * nrow), squeeze=False)
    flat = list(axes.flat)
    for ax, key in zip(flat, multi):
        _plot_sizes(ax, key, sorted(groups[key], key=lambda c: c["x"]), colors, styles)
    if single:
        _plot_single(flat[len(multi)], single, colors)
    for ax in flat[n_panels:]:
        ax.axis("off")
    fig.suptitle(f"matgrad {meta.get('matgrad_version')} ({meta.get('simd_kernel')}, "
                 f"{meta.get('threads')} threads) vs numpy {meta.get('numpy_version')}"
                 f" / torch {meta.get('torch_version')} on {meta.get('cpu_model')}",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_sizes(ax, key, cs, colors, styles) -> None:
    numeric = key[0].startswith("matmul")
    xs = [c["x"] for c in cs] if numeric else list(range(len(cs)))
    for impl in IMPLS:
        ys = [c["impls"].get(impl, {}).get("gflops") for c in cs]
        if all(y is None for y in ys):
            continue
        ax.plot(xs, [float("nan") if y is None else y for y in ys], styles[impl],
                color=colors[impl], label=impl)
    if numeric:
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs)
        ax.set_xticklabels([str(int(x)) for x in xs])
        ax.set_xlabel("n (n x n @ n x n)")
    else:
        ax.set_xticks(xs)
        ax.set_xticklabels([c["shape"] for c in cs], fontsize=8)
        ax.set_xlabel("batch x in -> out")
    ax.set_title(f"{key[0]}  {key[1]}")
    ax.set_ylabel("GFLOP/s")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _plot_single(ax, single, colors) -> None:
    width = 0.8 / len(IMPLS)
    for j, impl in enumerate(IMPLS):
        ys = [c["impls"].get(impl, {}).get("gflops") or 0.0 for c in single]
        if not any(ys):
            continue
        ax.bar([i + (j - 1) * width for i in range(len(single))], ys, width,
               color=colors[impl], label=impl)
    ax.set_xticks(range(len(single)))
    ax.set_xticklabels([c["name"].replace(" float", "\nfloat").replace(" N=", "\nN=")
                        for c in single], fontsize=7, rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("GFLOP/s (log)")
    ax.set_title("single-size cases")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
