#!/usr/bin/env python3
"""Summarises one bench/run.sh run: RUN_DIR/{runs,memory,flood}.jsonl + meta.json -> PREFIX.md,
PREFIX.json and PREFIX.png (gnuplot). Standard library only.

Usage: bench/report.py RUN_DIR PREFIX
"""

import json
import statistics
import subprocess
import sys
from pathlib import Path

# Display order and names.
ORDER = ["bare", "offshelf", "layers", "palisade", "palisade-w2", "aiohttp", "fastapi"]
LIMITED = {"offshelf-429": "offshelf", "palisade-429": "palisade"}
NAMES = {
    "bare": "bare axum",
    "offshelf": "off-the-shelf",
    "layers": "palisade layers on axum::serve",
    "palisade": "palisade (1 process)",
    "palisade-w2": "palisade --workers 2",
    "aiohttp": "aiohttp+gunicorn (2 w)",
    "fastapi": "FastAPI+uvicorn (2 w)",
    "offshelf-429": "off-the-shelf, 429",
    "palisade-429": "palisade (1 process), 429",
}
PALISADE = ["palisade", "palisade-w2"]
# (target, ratio over bare that must be reached) per DESIGN.md.
SEED_TARGETS = {"aiohttp": 3.0, "fastapi": 6.0}


def load_jsonl(path):
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def rps(run):
    w = run["wrk"]
    return w["requests"] / (w["duration_us"] / 1e6)


def errors(run):
    w = run["wrk"]
    return w["err_connect"] + w["err_read"] + w["err_write"] + w["err_timeout"]


def med(xs):
    return statistics.median(xs) if xs else None


def fmt(x, spec=".0f", none="–"):
    return none if x is None else format(x, spec)


def summarise(runs):
    """(target, path) -> summary over the rounds."""
    groups = {}
    for r in runs:
        if r["round"] == 0:  # the HTTP key flood, reported separately
            continue
        groups.setdefault((r["target"], r["path"]), []).append(r)
    by_round = {(r["target"], r["path"], r["round"]): r for r in runs}
    out = {}
    for (t, p), rs in groups.items():
        base_path = p
        ratios_rps, ratios_p99 = [], []
        for r in rs:
            b = by_round.get(("bare", base_path, r["round"]))
            if b:
                ratios_rps.append(rps(r) / rps(b))
                ratios_p99.append(r["wrk"]["p99_us"] / max(b["wrk"]["p99_us"], 1))
        seed = {}
        for s in SEED_TARGETS:
            xs = []
            for r in rs:
                o = by_round.get((s, p, r["round"]))
                if o:
                    xs.append(rps(r) / rps(o))
            seed[s] = med(xs)
        reqs = sum(r["wrk"]["requests"] for r in rs)
        cpu = sum(r["cpu_s"] for r in rs)
        out[(t, p)] = {
            "target": t,
            "path": p,
            "rounds": len(rs),
            "rps_median": med([rps(r) for r in rs]),
            "rps_min": min(rps(r) for r in rs),
            "rps_max": max(rps(r) for r in rs),
            "p50_ms": med([r["wrk"]["p50_us"] / 1000 for r in rs]),
            "p99_ms": med([r["wrk"]["p99_us"] / 1000 for r in rs]),
            "p99_ms_max": max(r["wrk"]["p99_us"] / 1000 for r in rs),
            "errors": sum(errors(r) for r in rs),
            "non2xx": sum(r["wrk"]["non2xx"] for r in rs),
            "requests": reqs,
            "server_cpu_us_per_req": cpu * 1e6 / reqs if reqs else None,
            "peak_rss_mb": max(r["peak_rss_kb"] for r in rs) / 1024,
            "peak_pss_mb": max(r["peak_pss_kb"] for r in rs) / 1024,
            "rps_vs_bare": med(ratios_rps),
            "p99_vs_bare": med(ratios_p99),
            "rps_vs_aiohttp": seed["aiohttp"],
            "rps_vs_fastapi": seed["fastapi"],
            "loadavg": [r["loadavg"] for r in rs],
        }
    return out


def targets_present(summary):
    ts = {t for t, _ in summary}
    return [t for t in ORDER if t in ts] + [t for t in LIMITED if t in ts]


def paths_present(summary):
    seen = []
    for _, p in summary:
        if p not in seen:
            seen.append(p)
    return seen


def markdown(meta, summary, memory, floods):
    paths = paths_present(summary)
    targets = targets_present(summary)
    lines = []
    w = lines.append
    w(f"# Load benchmark {meta['stamp']}")
    w("")
    w(
        f"Machine: {meta['nproc']} CPUs ({meta['cpu']}), {meta['mem_gib']} GiB, kernel "
        f"{meta['kernel']}; {meta['rustc']}; {meta['wrk']}; {meta['python']}; git {meta['git']}."
    )
    w(
        f"Load: wrk -t{meta['threads']} -c{meta['connections']}, {meta['duration_s']} s per "
        f"measurement, {meta['rounds']} rounds (targets interleaved), {meta['warmup_s']} s warm-up "
        f"per pair. Load average at the end: {' '.join(meta['loadavg_end'])}."
    )
    w("")
    w("Medians over the rounds. Ratios are per-round paired (same round, same path) medians.")
    w("")
    w(
        "| target | path | rps | (min–max) | p50 ms | p99 ms | errors | non-2xx | "
        "rps vs bare | p99 vs bare | server CPU µs/req |"
    )
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p in paths:
        for t in targets:
            s = summary.get((t, p))
            if not s:
                continue
            label = p if t not in LIMITED else f"{p} → 429"
            w(
                f"| {NAMES.get(t, t)} | `{label}` | {fmt(s['rps_median'])} | "
                f"{fmt(s['rps_min'])}–{fmt(s['rps_max'])} | {fmt(s['p50_ms'], '.2f')} | "
                f"{fmt(s['p99_ms'], '.2f')} | {s['errors']} | {s['non2xx']} | "
                f"{fmt(s['rps_vs_bare'], '.2f')}× | {fmt(s['p99_vs_bare'], '.2f')}× | "
                f"{fmt(s['server_cpu_us_per_req'], '.1f')} |"
            )
    w("")
    w("## Targets")
    w("")
    w("| check | path | measured | target | met |")
    w("|---|---|---:|---:|---|")
    for t in PALISADE:
        for p in paths:
            s = summary.get((t, p))
            if not s or s["rps_vs_bare"] is None:
                continue
            ok = s["rps_vs_bare"] >= 0.90
            w(f"| {NAMES[t]} rps / bare | `{p}` | {s['rps_vs_bare']:.2f}× | ≥ 0.90× | {'yes' if ok else '**no**'} |")
            ok = s["p99_vs_bare"] <= 1.25
            w(f"| {NAMES[t]} p99 / bare | `{p}` | {s['p99_vs_bare']:.2f}× | ≤ 1.25× | {'yes' if ok else '**no**'} |")
            for seed, want in SEED_TARGETS.items():
                v = s[f"rps_vs_{seed}"]
                if v is None:
                    continue
                ok = v >= want
                w(f"| {NAMES[t]} rps / {NAMES[seed]} | `{p}` | {v:.2f}× | ≥ {want:.0f}× | {'yes' if ok else '**no**'} |")
    if "offshelf" in targets:
        w("")
        w("Off-the-shelf for reference: " + ", ".join(
            f"`{p}` {summary[('offshelf', p)]['rps_vs_bare']:.2f}× bare rps"
            for p in paths if ("offshelf", p) in summary and summary[("offshelf", p)]["rps_vs_bare"]
        ) + ".")
    w("")
    w("## Memory (sum over the process tree: supervisor/master and workers)")
    w("")
    w("| target | processes | RSS idle MB | largest process idle MB | RSS after warm-up MB | peak RSS under load MB | peak PSS under load MB |")
    w("|---|---:|---:|---:|---:|---:|---:|")
    mem = {}
    for m in memory:
        mem.setdefault(m["target"], {})[m["phase"]] = m
    for t in targets:
        if t in LIMITED or t not in mem:
            continue
        idle = mem[t].get("idle")
        warm = mem[t].get("warm")
        peak_rss = max((s["peak_rss_mb"] for (tt, _), s in summary.items() if tt == t), default=None)
        peak_pss = max((s["peak_pss_mb"] for (tt, _), s in summary.items() if tt == t), default=None)
        w(
            f"| {NAMES[t]} | {idle['processes'] if idle else '–'} | "
            f"{fmt(idle and idle['rss_kb'] / 1024, '.1f')} | "
            f"{fmt(idle and idle.get('max_process_rss_kb', 0) / 1024, '.1f')} | "
            f"{fmt(warm and warm['rss_kb'] / 1024, '.1f')} | "
            f"{fmt(peak_rss, '.1f')} | {fmt(peak_pss, '.1f')} |"
        )
    if floods:
        w("")
        w("## Rate-limit state under a key flood")
        w("")
        w("| limiter | new keys sent | keys tracked | bound | RSS before MB | RSS after MB |")
        w("|---|---:|---:|---:|---:|---:|")
        for f in floods:
            impl = f["impl"]
            before = f.get("rss_before_kb")
            after = f.get("rss_after_kb")
            if impl == "palisade-server-http":
                mb = mem.get("palisade-flood", {})
                before = mb.get("before-flood", {}).get("rss_kb")
                after = mb.get("after-flood", {}).get("rss_kb")
                name = "palisade server over HTTP (`x-api-key` policy, local store)"
            elif impl == "palisade":
                name = "palisade `RateLimitLayer` in process (client IP, local store)"
            else:
                name = "tower_governor `GovernorLayer` in process (client IP)"
            cap = f.get("capacity")
            w(
                f"| {name} | {f.get('keys_sent')} | {f.get('keys_tracked')} | "
                f"{cap if cap else 'unbounded'} | {fmt(before and before / 1024, '.1f')} | "
                f"{fmt(after and after / 1024, '.1f')} |"
            )
    w("")
    return "\n".join(lines)


def chart(summary, prefix):
    """PREFIX.png: rps (top) and p99 (bottom) per path, one bar per target."""
    paths = paths_present(summary)
    targets = [t for t in ORDER if any((t, p) in summary for p in paths)]
    rows = []
    for p in paths:
        if all((t, p) not in summary for t in targets):
            continue  # a limited-only path is drawn as its own group below
        rows.append((p, {t: summary.get((t, p)) for t in targets}))
    limited = {LIMITED[t]: summary.get((t, "/plaintext")) for t in LIMITED}
    if any(limited.values()):
        rows.append(("429 /plaintext", limited))
    data = Path(f"{prefix}.dat")
    with data.open("w") as f:
        for key in ("rps_median", "p99_ms"):
            f.write("path " + " ".join(f'"{NAMES[t]}"' for t in targets) + "\n")
            for label, row in rows:
                vals = [row.get(t)[key] if row.get(t) else None for t in targets]
                f.write(f'"{label}" ' + " ".join("-" if v is None else f"{v:.3f}" for v in vals) + "\n")
            f.write("\n\n")
    n = len(targets)
    script = f"""
set terminal pngcairo size 1300,900 font ",10"
set output "{prefix}.png"
set datafile missing "-"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key outside right top vertical
set grid ytics
set multiplot layout 2,1 title "Palisade load benchmark (wrk, loopback; medians over rounds)"
set ylabel "requests/s"
set format y "%.0s%c"
plot for [i=2:{n + 1}] "{data}" index 0 using i:xtic(1) title columnheader(i)
set ylabel "p99 latency (ms, log scale)"
set logscale y
set format y "%g"
plot for [i=2:{n + 1}] "{data}" index 1 using i:xtic(1) title columnheader(i)
unset multiplot
"""
    Path(f"{prefix}.gp").write_text(script)
    try:
        subprocess.run(["gnuplot", f"{prefix}.gp"], check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"chart not drawn: {e}", file=sys.stderr)


def main():
    run_dir, prefix = Path(sys.argv[1]), sys.argv[2]
    meta = json.loads((run_dir / "meta.json").read_text())
    runs = load_jsonl(run_dir / "runs.jsonl")
    memory = load_jsonl(run_dir / "memory.jsonl")
    floods = load_jsonl(run_dir / "flood.jsonl")
    summary = summarise(runs)
    Path(f"{prefix}.md").write_text(markdown(meta, summary, memory, floods))
    Path(f"{prefix}.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "summary": list(summary.values()),
                "memory": memory,
                "flood": floods,
                "runs": runs,
            },
            indent=1,
        )
    )
    chart(summary, prefix)


if __name__ == "__main__":
    main()
