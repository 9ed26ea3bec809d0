"""The CPU step-time report across workloads: ``benchmarks/results/step_time_cpu.md`` from the JSON
files ``step_time.py --out`` wrote (one per model), with issue 21's targets judged per row.

    python benchmarks/cpu_report.py benchmarks/results/step_time_cpu_cnn*.json \
        --notes benchmarks/results/step_time_cpu_notes.md --json benchmarks/results/step_time_cpu.json \
        > benchmarks/results/step_time_cpu.md

Every number is a ratio between rows of one run (one file), so the load of the machine moves a row's
time but not much its ratio; each file's machine and load are printed with it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TARGETS = (
    ("SAM ≤ 2.05x SGD", "sam", "x_sgd", 2.05),
    ("mSAM-8, best execution, ≤ 1.25x SAM", "msam-8-best", "x_sam", 1.25),
    ("a step without ascent (every-4) ≤ 1.03x SGD", "every-4", "x_sgd_non_ascent", 1.03),
)


def load(path: Path) -> tuple[dict, dict[str, dict]]:
    data = json.loads(path.read_text())
    rows = {r["method"]: r for r in data["results"]}
    best = min((rows[n] for n in ("msam-8-loop", "msam-8-vectorized") if n in rows),
               key=lambda r: r["median_ms"], default=None)
    if best is not None:
        rows["msam-8-best"] = {**best, "method": f"msam-8-best ({best['method'].rsplit('-', 1)[-1]})"}
    return data, rows


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main(paths: list[str], notes: Path | None = None) -> int:
    files = [(Path(p), *load(Path(p))) for p in paths]
    print("# CPU step time across workloads\n")
    print("Ratios from one run per workload (`benchmarks/step_time.py --steps 25 --warmup 3 "
          "--step-positions`, one thread: `OMP_NUM_THREADS=1`); made by `benchmarks/cpu_report.py`.\n")
    for path, data, _ in files:
        m, c = data["machine"], data["config"]
        print(f"* `{path.name}`: {c['model']}, batch {c['batch']}; {m['platform']}, torch {m['torch']}, "
              f"{m['torch_threads']} thread(s), pytorch-optimizer {m.get('pytorch_optimizer')}")
    print("\n## Targets (issue 21)\n")
    print("| target | " + " | ".join(data["config"]["model"] for _, data, _ in files) + " |")
    print("|---|" + "---|" * len(files))
    for label, row, key, limit in TARGETS:
        cells = []
        for _, _, rows in files:
            value = rows.get(row, {}).get(key)
            mark = "" if value is None else (" ✓" if value <= limit else " ✗")
            name = rows.get(row, {}).get("method", "")
            suffix = f" ({name.split('(')[-1]}" if "(" in name else ""
            cells.append(f"{fmt(value)}{mark}{suffix}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    names = [n for n in files[0][2] if n != "msam-8-best"]
    for _, _, rows in files[1:]:
        names += [n for n in rows if n not in names and n != "msam-8-best"]
    print("\n## Every row: x SGD (x SAM)\n")
    print("| row | " + " | ".join(data["config"]["model"] for _, data, _ in files) + " |")
    print("|---|" + "---|" * len(files))
    for name in names:
        cells = []
        for _, _, rows in files:
            r = rows.get(name)
            cells.append("-" if r is None else f"{fmt(r.get('x_sgd'))} ({fmt(r.get('x_sam'))})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    sgd_ms = [f"{data['config']['model']} {rows['sgd']['median_ms']:.1f}"
              for _, data, rows in files if "sgd" in rows]  # fmt: skip
    print("\nSGD's step in ms, per workload: " + ", ".join(sgd_ms))
    for _, data, _ in files:
        for f in data.get("failed", []):
            print(f"\n{data['config']['model']}: row `{f['method']}` not timed ({f.get('error', '')}).")
    if notes is not None:
        print("\n" + notes.read_text().strip())
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="JSON files written by step_time.py --out")
    parser.add_argument("--notes", type=Path, help="markdown appended as the reading of the tables")
    parser.add_argument("--json", type=Path, help="also write every workload's results into one JSON")
    args = parser.parse_args()
    if args.json is not None:
        merged = {"workloads": [json.loads(Path(f).read_text()) | {"file": Path(f).name}
                                for f in args.files]}  # fmt: skip
        args.json.write_text(json.dumps(merged, indent=1) + "\n")
    raise SystemExit(main(args.files, args.notes))
