"""The verdicts and tables of ``benchmarks/gpu_suite.py``, computed from its part records only.

Each target of issue 25 is judged per configuration (model x precision) from ratios between rows of
one ``step_time.py`` run, or from ``hessian_time.py``'s speed-ups: ``met`` / ``missed`` / ``not
measured`` (with the reason: the part was skipped or failed, the row is absent or failed).
"""

from __future__ import annotations

import re

MSAM8 = "msam-8-vectorized"
EXT_SAM = "ext-sam (pytorch-optimizer)"


def _rows(record) -> dict[str, dict]:
    result = record.get("result") or {}
    return {r["method"]: r for r in result.get("results", [])}


def _why_absent(record, names) -> str:
    if record is None:
        return "part not in this run"
    if record.get("status") in ("skipped", "failed", "timed_out") and not _rows(record):
        return f"part {record['status']}: {record.get('reason', '')}".rstrip(": ")
    result = record.get("result") or {}
    notes = {r["method"]: f"failed ({r['stage']})" for r in result.get("failed", [])}
    notes.update({r["method"]: r["reason"] for r in result.get("skipped", [])})
    requested = set(result.get("rows_requested", []))
    rows = _rows(record)
    missing = [n for n in names if n not in rows]
    return "; ".join(f"{n}: {notes.get(n, 'absent' if n in requested else 'not requested')}"
                     for n in missing) or "not computable"


def _ratio(record, num, den, key="median_ms"):
    rows = _rows(record) if record else {}
    if num in rows and den in rows and rows[den].get(key):
        return rows[num][key] / rows[den][key], f"{num} {rows[num][key]:.4g} / {den} {rows[den][key]:.4g}"
    return None, _why_absent(record, [num, den])


def _compiled_vs_ext(record):
    rows = _rows(record) if record else {}
    best = [(rows[n]["median_ms"], n) for n in ("sam [compiled]", "sam [graphed]") if n in rows]
    if best and EXT_SAM in rows:
        ms, name = min(best)
        return ms / rows[EXT_SAM]["median_ms"], f"{name} {ms:.4g} ms / {EXT_SAM} eager " \
                                                f"{rows[EXT_SAM]['median_ms']:.4g} ms"
    return None, _why_absent(record, ["sam [compiled]", "sam [graphed]", EXT_SAM])


def _cadence(record):
    rows = _rows(record) if record else {}
    plain = {n: r["x_sgd_non_ascent"] for n, r in rows.items()
             if re.fullmatch(r"every-\d+", n) and r.get("x_sgd_non_ascent") is not None}
    if not plain:
        return None, _why_absent(record, ["every-2", "every-4"])
    other = {n: r["x_sgd_non_ascent"] for n, r in rows.items()
             if n not in plain and r.get("x_sgd_non_ascent") is not None}
    detail = ", ".join(f"{n} {v:.3f}x" for n, v in plain.items())
    if other:
        detail += " (not counted, they do more than SGD by design: " + \
                  ", ".join(f"{n} {v:.3f}x" for n, v in other.items()) + ")"
    return max(plain.values()), "worst of " + detail


# id, text, threshold, "le" | "ge", part mode ("eager" / "compiled" / "hessian"), value(record)
TARGETS = [
    ("sam-vs-sgd", "SAM eager <= 2.1x SGD eager", 2.1, "le", "eager", lambda r: _ratio(r, "sam", "sgd")),
    ("sam-vs-ext", "SAM eager <= 0.9x pytorch-optimizer SAM eager", 0.9, "le", "eager",
     lambda r: _ratio(r, "sam", EXT_SAM)),
    ("compiled-vs-ext", "SAM compiled/graphed <= 0.5x pytorch-optimizer SAM eager", 0.5, "le", "compiled",
     _compiled_vs_ext),
    ("msam8-time", "mSAM-8 vectorized <= 1.5x SAM (eager)", 1.5, "le", "eager",
     lambda r: _ratio(r, MSAM8, "sam")),
    ("msam8-time-compiled", "mSAM-8 vectorized <= 1.5x SAM (compiled)", 1.5, "le", "compiled",
     lambda r: _ratio(r, f"{MSAM8} [compiled]", "sam [compiled]")),
    ("msam8-memory", "mSAM-8 vectorized peak memory <= 1.5x SAM", 1.5, "le", "eager",
     lambda r: _ratio(r, MSAM8, "sam", key="peak_mib")),
    ("fsam", "F-SAM <= 1.05x SAM", 1.05, "le", "eager", lambda r: _ratio(r, "fsam", "sam")),
    ("asam", "ASAM <= 1.05x SAM", 1.05, "le", "eager", lambda r: _ratio(r, "asam", "sam")),
    ("momentum-sam", "Momentum-SAM <= 1.1x SGD", 1.1, "le", "eager",
     lambda r: _ratio(r, "momentum_sam", "sgd")),
    ("cadence", "a cadence's non-ascent step <= 1.03x SGD", 1.03, "le", "eager", _cadence),
]


def _hessian(record, key, text):
    result = (record or {}).get("result") or {}
    if key not in result:
        return None, _why_absent(record, []) if record else "part not in this run"
    value = result[key]
    if key == "speedup_eigenvalue":
        equal = result.get("samkit_residual", float("inf")) <= result.get("baseline_residual", 0)
        detail = (f"residual norm(Hv - lambda v): samkit {result.get('samkit_residual', float('nan')):.3g}, "
                  f"baseline {result.get('baseline_residual', float('nan')):.3g}"
                  f"{'' if equal else ' (samkit less accurate: not equal accuracy)'}")
        return (value if equal else None), detail
    return value, (f"same estimator (Hutchinson), same {result.get('trace_samples')} products; stderr "
                   f"samkit {result.get('samkit_trace_stderr', float('nan')):.3g}, baseline "
                   f"{result.get('baseline_trace_stderr', float('nan')):.3g}")


def targets(parts: list[dict]) -> list[dict]:
    """Every target x configuration measured by a step_time part, plus the two Hessian targets."""
    step = [p for p in parts if p["kind"] == "step_time"]
    configs = list(dict.fromkeys((p["info"]["model"], p["info"]["precision"]) for p in step))
    by = {(p["info"]["model"], p["info"]["precision"], p["info"]["mode"]): p for p in step}
    out = []
    for tid, text, threshold, sense, mode, value in TARGETS:
        for model, precision in configs:
            record = by.get((model, precision, mode))
            v, detail = value(record)
            out.append(_verdict(tid, text, f"{model} {precision}", threshold, sense, v, detail))
    hessian = next((p for p in parts if p["kind"] == "hessian"), None)
    config = (hessian or {}).get("info", {}).get("model", "-")
    for tid, key, text in (("hessian-eigenvalue", "speedup_eigenvalue",
                            "Hessian top eigenvalue >= 3x faster than the baseline at equal accuracy"),
                           ("hessian-trace", "speedup_trace",
                            "Hessian trace >= 3x faster than the baseline at equal accuracy")):
        v, detail = _hessian(hessian, key, text)
        out.append(_verdict(tid, text, config, 3.0, "ge", v, detail))
    return out


def _verdict(tid, text, config, threshold, sense, value, detail) -> dict:
    if value is None:
        verdict = "not measured"
    else:
        verdict = "met" if (value <= threshold if sense == "le" else value >= threshold) else "missed"
    return {"id": tid, "target": text, "config": config, "threshold": threshold, "sense": sense,
            "value": value, "verdict": verdict, "detail": detail}


# ---------------------------------------------------------------------------------- rendering
def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


STEP_COLUMNS = ("method", "median ms", "x SGD", "x SAM", "x ext SAM", "non-ascent x SGD", "peak MiB",
                "rounds")


def step_table(record) -> list[str]:
    """The markdown rows of one step_time part (header first); tests/test_gpu_suite.py reads them back."""
    lines = ["| " + " | ".join(STEP_COLUMNS) + " |", "|" + "---|" * len(STEP_COLUMNS)]
    for r in (record.get("result") or {}).get("results", []):
        lines.append(f"| {r['method']} | {r['median_ms']:.3f} | {_fmt(r.get('x_sgd'), '.3f')} | "
                     f"{_fmt(r.get('x_sam'), '.3f')} | {_fmt(r.get('x_ext_sam'), '.3f')} | "
                     f"{_fmt(r.get('x_sgd_non_ascent'), '.3f')} | {_fmt(r.get('peak_mib'), '.0f')} | "
                     f"{len(r.get('times_ms', [])) or (record['result'].get('rounds') or '-')} |")
    return lines


def _machine_line(suite) -> str:
    m = suite.get("machine", {})
    return (f"{m.get('gpu', 'no GPU')} · torch {m.get('torch', '?')} (CUDA {m.get('cuda') or '-'}) · Python "
            f"{m.get('python', '?')} · samkit {m.get('samkit', '?')} · pytorch-optimizer "
            f"{m.get('pytorch_optimizer', 'absent')} · {suite['host']['cpu_count']} CPUs · "
            f"{suite['started']}")


def targets_table(suite) -> list[str]:
    lines = ["| target | config | measured | verdict | detail |", "|---|---|---|---|---|"]
    for t in suite.get("targets", []):
        lines.append(f"| {t['target']} | {t['config']} | {_fmt(t['value'], '.3f')} | **{t['verdict']}** | "
                     f"{_cell(t['detail'])} |")
    return lines


def parts_table(suite) -> list[str]:
    lines = ["| part | status | s used / granted (cap) | note |", "|---|---|---|---|"]
    for r in suite["parts"]:
        lines.append(f"| {r['name']} | {r['status']} | {_fmt(r.get('wall_s'), '.0f')} / "
                     f"{_fmt(r.get('granted_s'), '.0f')} ({r['cap_s']:.0f}) | {_cell(r.get('reason', ''))} |")
    return lines


TINY_NOTE = "CPU mode at tiny sizes: a check that the suite works, its numbers are no measurement."


def markdown(suite) -> str:
    out = [f"# samkit GPU suite ({suite['mode']})", "", _machine_line(suite), "",
           *([TINY_NOTE, ""] if suite["mode"] == "cpu-tiny" else []),
           f"Budget {suite['budget_s']:.0f} s, used {suite.get('wall_s', 0):.0f} s. Every ratio is between "
           "rows of one run of one part.", "", "## Targets", "", *targets_table(suite), "", "## Parts", "",
           *parts_table(suite)]
    for r in suite["parts"]:
        result = r.get("result") or {}
        if r["kind"] == "setup" and result:
            out += ["", "## setup", "", "| package | needs | found | action | why |", "|---|---|---|---|---|"]
            out += [f"| {e['name']} | {e['spec'] or 'any'} | {e['found'] or '-'} | {e['action']} | "
                    f"{_cell(e['why'])} |" for e in result.get("packages", [])]
        elif r["kind"] == "pytest" and result:
            out += ["", f"## {r['name']} (pytest -m \"{r['info']['selection']}\")", "",
                    f"{result['passed']} passed, {result['failures']} failed, {result['errors']} errors, "
                    f"{result['skipped']} skipped."]
            out += [f"- FAILED `{p['test']}`: {_cell(p['message'])}" for p in result["problems"]]
        elif r["kind"] == "step_time" and result:
            i = r["info"]
            out += ["", f"## {r['name']}", "", f"step time: {i['model']}, {i['precision']}, {i['mode']}; "
                    f"{result.get('rounds')} rounds; cut short: {result.get('cut_short') or 'no'}", "",
                    *step_table(r)]
            out += [f"- not timed: {s['method']} ({s['reason']})" for s in result.get("skipped", [])]
            out += [f"- FAILED {f['method']} ({f['stage']}): {_cell(f['error'])}"
                    for f in result.get("failed", [])]
        elif r["kind"] == "hessian" and result:
            out += ["", f"## {r['name']}: {result.get('model')}, batch {result.get('batch')}", "",
                    "| quantity | method | time s | value | notes |", "|---|---|---|---|---|"]
            out += [f"| {x['quantity']} | {x['method']} | {x['time_s']:.3f} | {x['value']:.5g} | "
                    f"{_cell(x['notes'])} |" for x in result.get("rows", [])]
    return "\n".join(out) + "\n"


def summary(suite) -> str:
    """Plain text for stdout: parts, then every target's verdict (what the device tool's tail shows)."""
    out = ["", "=" * 100, f"samkit GPU suite ({suite['mode']}): {_machine_line(suite)}",
           f"budget {suite['budget_s']:.0f} s, used {suite.get('wall_s', 0):.0f} s", "", "parts:"]
    for r in suite["parts"]:
        out.append(f"  {r['name']:34s} {r['status']:10s} {_fmt(r.get('wall_s'), '5.0f')} s  "
                   f"{r.get('reason', '')}")
    cuda = next((r for r in suite["parts"] if r["name"] == "cuda-tests"), None)
    if cuda and cuda.get("result"):
        res = cuda["result"]
        out.append(f"CUDA tests: {res['passed']} passed, {res['failures'] + res['errors']} failed, "
                   f"{res['skipped']} skipped" + (" (NONE RAN on CUDA)" if res["passed"] == 0 else ""))
    out += ["", "targets:"]
    for t in suite.get("targets", []):
        out.append(f"  {t['verdict']:12s} {_fmt(t['value'], '7.3f')}  {t['target']} [{t['config']}]"
                   + ("" if t["verdict"] != "not measured" else f"  ({t['detail']})"))
    verdicts = [t["verdict"] for t in suite.get("targets", [])]
    out.append(f"targets: {verdicts.count('met')} met, {verdicts.count('missed')} missed, "
               f"{verdicts.count('not measured')} not measured")
    if suite["mode"] == "cpu-tiny":
        out.append(TINY_NOTE)
    return "\n".join(out)
