#!/usr/bin/env python3
"""Summarises a `perf record` (cpu-clock) of one server process: CPU time per request by crate
(kernel, libc and each Rust crate, from the symbol's leading path) and the top symbols.

Usage: bench/perf_summary.py PERF_DATA REQUESTS
"""

import collections
import re
import subprocess
import sys

LINE = re.compile(r"\s+([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)")


def crate(dso, kind, sym):
    if kind == "k":
        return "kernel (TCP/loopback, scheduler)"
    if dso.startswith("libc"):
        return "libc (malloc/free, memmove)"
    if dso == "[vdso]":
        return "vdso (clock reads)"
    s = sym.lstrip("<&").removeprefix("mut ")
    s = s.removeprefix("core::ptr::drop_in_place<").lstrip("<&")
    m = re.match(r"([A-Za-z_0-9]+)", s)
    name = m.group(1) if m else s[:30]
    return "core/alloc/std" if name in ("core", "alloc", "std") else name


def main():
    data, requests = sys.argv[1], float(sys.argv[2])
    out = subprocess.run(
        ["perf", "report", "-i", data, "--no-children", "--stdio", "-g", "none",
         "--sort", "dso,symbol", "--percent-limit", "0"],
        capture_output=True, text=True, check=True,
    ).stdout
    m = re.search(r"Event count \(approx.\): (\d+)", out)
    if not m:
        sys.exit("no samples")
    total_ns = int(m.group(1))  # cpu-clock counts nanoseconds
    per_req = lambda pct: pct / 100 * total_ns / requests / 1000  # noqa: E731
    groups, symbols = collections.Counter(), []
    for line in out.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        pct, dso, kind, sym = float(m.group(1)), m.group(2), m.group(3), m.group(4).strip()
        groups[crate(dso, kind, sym)] += pct
        symbols.append((pct, sym))
    print(f"{int(requests)} requests; {total_ns / requests / 1000:.2f} µs of CPU per request")
    print()
    print(f"{'where':42} {'share':>7} {'µs/req':>7}")
    for name, pct in groups.most_common(20):
        print(f"{name:42} {pct:6.2f}% {per_req(pct):7.2f}")
    print()
    print("top symbols (self time)")
    for pct, sym in sorted(symbols, reverse=True)[:25]:
        print(f"{pct:6.2f}% {per_req(pct):6.2f} µs  {sym[:110]}")


if __name__ == "__main__":
    main()
