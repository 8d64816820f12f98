"""Summaries of the runs: medians, the printed tables, ratios to the anchors, and the JSON file."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from bench.measure import Measurement


def aggregate(m: Measurement, runs: list[dict]) -> dict:
    """Median wall time of the good runs (every run must be good), max peak RSS, medians of the rest."""
    base = {"name": m.name, "pair": m.pair, "kind": m.kind, "title": m.title, "note": m.note, "runs": runs}
    bad = [r for r in runs if r.get("status") != "ok"]
    if bad or not runs:
        first = bad[0] if bad else {"status": "skipped", "reason": "no run"}
        return {**base, "status": first["status"], "reason": first.get("reason", "")}
    out = {**base, "status": "ok", "repeat": len(runs)}
    for key in runs[0]:
        values = [r.get(key) for r in runs]
        if len(set(map(str, values))) == 1:
            out[key] = values[0]
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = max(values) if any(w in key for w in ("rss", "peak", "other_cpu")) else statistics.median(values)
        else:
            out[key] = values[0]
    out["wall_s"] = statistics.median(r["wall_s"] for r in runs)
    out["wall_min_s"], out["wall_max_s"] = min(r["wall_s"] for r in runs), max(r["wall_s"] for r in runs)
    out["rows_per_s"] = out["rows"] / out["wall_s"] if out["wall_s"] else 0.0
    return out


def _why(r: dict) -> str:
    """'skipped: reason' for a measurement that did not produce a number (first line of the reason)."""
    reason = (r.get("reason") or "").strip().splitlines()
    head = reason[0][:300] if reason else "no reason given"
    return f"skipped: {head}" if r["status"] == "skipped" else f"skipped: it failed: {head}"


def _paired_median(a: dict, b: dict, value) -> float:
    """Median over rounds of value(a's run, b's run): runs of one round are taken minutes apart
    at most, so a slow spell of the machine cancels out of each round's value."""
    return statistics.median(value(x, y) for x, y in zip(a["runs"], b["runs"]))


def _rows_per_s(run: dict) -> float:
    return run["rows"] / run["wall_s"]


def ratios(results: dict[str, dict]) -> list[dict]:
    """Ours vs each anchor of the same pair: anchor rows/s over ours rows/s (>1: ours is slower),
    the median of each round's ratio."""
    out = []
    for ours in (r for r in results.values() if r["kind"] == "ours" and r["status"] == "ok"):
        for anchor in (r for r in results.values() if r["kind"] == "anchor" and r["pair"] == ours["pair"]):
            entry = {"pair": ours["pair"], "ours": ours["name"], "anchor": anchor["name"],
                     "anchor_title": anchor["title"], "status": anchor["status"]}
            if anchor["status"] == "ok":
                entry["ratio"] = _paired_median(ours, anchor, lambda o, a: _rows_per_s(a) / _rows_per_s(o))
            else:
                entry["reason"] = anchor.get("reason", "")
            out.append(entry)
    return out


def verify_overheads(results: dict[str, dict]) -> list[dict]:
    """Per pair: the median over rounds of (copy+verify - copy) / copy, each round's two runs taken
    one after the other (see run_all), beside the two median times."""
    out = []
    for r in results.values():
        if r["kind"] == "ours" and r["name"].endswith("_copy"):
            v = results.get(r["name"][: -len("_copy")] + "_verify")
            if r["status"] == "ok" and v and v["status"] == "ok":
                per_round = [(b["wall_s"] - a["wall_s"]) / a["wall_s"] for a, b in zip(r["runs"], v["runs"])]
                cpu_added = [b["run_cpu_s"] - a["run_cpu_s"] for a, b in zip(r["runs"], v["runs"])
                             if "run_cpu_s" in a and "run_cpu_s" in b]
                out.append({"pair": r["pair"], "copy_s": r["wall_s"], "copy_verify_s": v["wall_s"],
                            "overhead": statistics.median(per_round), "overhead_per_round": per_round,
                            "cpu_added_s": statistics.median(cpu_added) if cpu_added else None,
                            "cpu_added_per_round": cpu_added})
    return out


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(vals):
        return "  ".join(v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(vals, widths))).rstrip()
    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def render(results: dict[str, dict], meta: dict) -> str:
    lines = [f"Benchmark: {meta['rows']:,} rows, {meta['repeat']} round(s), medians; "
             f"wall = the timed call only (Prefect server start-up and imports excluded)", ""]
    code, after = meta.get("code") or {}, meta.get("code_after") or {}
    if code:
        lines[-1:-1] = [f"Code measured: commit {code['commit']}"
                        f"{' plus uncommitted changes' if code['uncommitted_changes'] else ''} (digest {code['digest']})"]
    if after and code and after["digest"] != code["digest"]:
        lines[-1:-1] = ["WARNING: connectors/, tasks/, flows/ or blocks/ changed while the benchmark ran "
                        f"(digest {code['digest']} -> {after['digest']}): runs measured different code"]
    if meta.get("profiled"):
        lines[-1:-1] = ["PROFILED under py-spy (--profile): these timings are not comparable with normal runs"]
    rows, skipped = [], []
    for r in results.values():
        if r["kind"] == "overhead":
            continue
        if r["status"] != "ok":
            skipped.append(f"  {r['name']} ({r['pair']}, {r['title']}): {_why(r)}")
            continue
        note = r.get("note") or ""
        if r.get("chdb_tracked_peak_mb") is not None:
            note = (note + "; " if note else "") + f"chDB engine tracked peak {r['chdb_tracked_peak_mb']:.0f} MB (in-process)"
        if r.get("server_rss_mb"):
            note = (note + "; " if note else "") + f"+ Prefect server {r['server_rss_mb']:.0f} MB"
        if r.get("rss_basis") == "tools":
            note = (note + "; " if note else "") + "RSS = client tool processes"
        spread = f"{r['wall_min_s']:.2f}-{r['wall_max_s']:.2f}" if r.get("repeat", 1) > 1 else ""
        other = f"{100 * r['other_cpu_share']:.0f}%" if "other_cpu_share" in r else "?"
        rows.append([r["name"], r["pair"], f"{r['rows']:,}", f"{r['wall_s']:.2f}", spread, f"{r['rows_per_s']:,.0f}",
                     f"{r['peak_rss_mb']:.0f}", other, note])
    lines += _table(["name", "pair", "rows", "wall s", "min-max s", "rows/s", "peak RSS MB", "other load", "notes"],
                    rows, {2, 3, 4, 5, 6, 7})
    if skipped:
        lines += ["", "Not measured:"] + skipped

    rat = ratios(results)
    if rat:
        lines += ["", "Ours vs anchors (anchor rows/s / ours rows/s, median over rounds; >1 means ours is slower):"]
        table = []
        for e in rat:
            value = f"{e['ratio']:.2f}x" if e["status"] == "ok" else "n/a (anchor not measured, see above)"
            table.append([e["pair"], e["ours"], e["anchor_title"], value])
        lines += _table(["pair", "ours", "anchor", "ratio"], table, set())

    vo = verify_overheads(results)
    if vo:
        lines += ["", "Verification overhead (median over rounds of (copy+verify - copy) / copy, each round's two runs back to back):"]
        lines += _table(["pair", "copy s", "copy+verify s", "overhead", "per round"],
                        [[v["pair"], f"{v['copy_s']:.2f}", f"{v['copy_verify_s']:.2f}", f"{100 * v['overhead']:+.0f}%",
                          " ".join(f"{100 * x:+.0f}%" for x in v["overhead_per_round"])] for v in vo], {1, 2, 3})
        cpu = [v for v in vo if v["cpu_added_s"] is not None]
        if cpu:
            lines += ["", "CPU-seconds verification adds (run with verify - run without, each round: the CPU time of "
                          "the whole run's processes and of the database servers, whose background work, such as "
                          "checkpoints, lands in it too):"]
            lines += _table(["pair", "added CPU-s", "per round"],
                            [[v["pair"], f"{v['cpu_added_s']:+.2f}", " ".join(f"{x:+.2f}" for x in v["cpu_added_per_round"])]
                             for v in cpu], {1})

    ov = results.get("prefect_overhead")
    if ov:
        lines += ["", "Prefect overhead per chunk task:"]
        if ov["status"] != "ok":
            lines.append(f"  {_why(ov)}")
        else:
            n = ov["chunks"]
            lines += [
                f"  trivial @task, submit().result() {n} times in a flow, minus an empty flow: "
                f"{ov['noop_task_ms']:.1f} ms per task",
                f"  our flow PG->PG, bench_tiny as {n} chunks of 10 rows vs 1 chunk (parallel=1): marginal time in the flow "
                f"per chunk {ov['copy_marginal_ms_per_chunk']:.1f} ms, of which data work (task body called "
                f"directly) {ov['copy_data_ms_per_chunk']:.1f} ms -> Prefect {ov['copy_prefect_ms_per_chunk']:.1f} ms per chunk",
                f"  the same with verify=True (2 tasks per chunk): marginal "
                f"{ov['copy_verify_marginal_ms_per_chunk']:.1f} ms, data {ov['copy_verify_data_ms_per_chunk']:.1f} ms "
                f"-> Prefect {ov['copy_verify_prefect_ms_per_chunk']:.1f} ms per chunk",
            ]
    prefect = meta.get("prefect") or {}
    if prefect.get("server_peak_rss_mb"):
        lines += ["", f"Prefect API server (a process of its own, as in production; not in our flow's RSS): "
                      f"peak {prefect['server_peak_rss_mb']:.0f} MB over the whole benchmark"]
    elif prefect:
        lines += ["", "Prefect: each run started the ephemeral API server (--ephemeral-prefect); its server code "
                      "is imported into the flow's process too, so our RSS includes it"]
    lines += ["", "Peak RSS: max over runs; 'self' = the measuring process (for our flow it includes imports, "
              "the warm-up and, for PG->CH, the embedded chDB engine); database servers not counted.",
              "Other load: the largest share of the machine's CPU used by unrelated processes (other tests, "
              "other databases' backends) during a run of the measurement ('?' = not recorded); "
              "when it is high, the timings are too."]
    return "\n".join(lines)


def write_json(path: Path, results: dict[str, dict], meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "measurements": results, "ratios": ratios(results),
               "verify_overhead": verify_overheads(results), "prefect_overhead": results.get("prefect_overhead")}
    path.write_text(json.dumps(payload, indent=2, default=str))


if __name__ == "__main__":  # re-print a saved run: python -m bench.report [bench/results/latest.json]
    import sys

    from bench import config as C
    saved = json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else C.RESULTS / "latest.json").read_text())
    for r in saved["measurements"].values():  # files written before the spread was recorded
        walls = [x["wall_s"] for x in r.get("runs", []) if x.get("status") == "ok"]
        if walls and "wall_min_s" not in r:
            r["wall_min_s"], r["wall_max_s"] = min(walls), max(walls)
    print(render(saved["measurements"], saved["meta"]))
