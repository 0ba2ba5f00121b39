#!/usr/bin/env python3
"""Collects the peer benchmark's per-run JSON objects, writes them as one JSON array
and prints the table (with the machine it ran on and the command)."""

import argparse
import json
import os
import platform
import sys


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            kb = int(f.readline().split()[1])
            mem = f", {kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    distro = ""
    try:
        with open("/etc/os-release", encoding="utf-8") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    distro = ", " + line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return f"{os.cpu_count()} CPU ({model}, {platform.machine()}){mem}{distro}, Linux {platform.release()}"


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--command", default="")
    ap.add_argument("--pinning", default="")
    ap.add_argument("--switchyard-version", default="")
    ap.add_argument("parts", nargs="+", help="JSON files, one object each")
    args = ap.parse_args()

    rows = []
    for path in args.parts:
        with open(path, encoding="utf-8") as f:
            rows.append(json.load(f))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)) or ".", exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=2)
        f.write("\n")
    os.replace(tmp, args.out)

    lines = []
    lines.append(f"Peer benchmark: {machine()}")
    if args.pinning:
        lines.append(args.pinning)
    versions = [args.switchyard_version] if args.switchyard_version else []
    versions += [f"LiteLLM {r['version']}" for r in rows if r["system"] == "litellm" and r.get("version")][:1]
    if versions:
        lines.append("Versions: " + ", ".join(versions))
    if args.command:
        lines.append(f"Command: {args.command}")
    lines.append("")
    header = f"{'system':<11} {'mode':<9} {'requests':>8} {'CPU-s/1k':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'success':>8}  mock HTTP calls (model id: calls)"
    lines.append(header)
    lines.append("-" * len(header))
    for r in rows:
        calls = ", ".join(f"{k}: {v}" for k, v in sorted(r.get("mock_http_calls", {}).items()))
        lines.append(
            f"{r['system']:<11} {r['mode']:<9} {r['requests']:>8} {fmt(r['cpu_s_per_1k'], '.3f'):>9} "
            f"{fmt(r['throughput_per_s'], '.0f'):>8} {fmt(r['p50_ms'], '.1f'):>8} {fmt(r['p99_ms'], '.1f'):>8} "
            f"{fmt(None if r['success'] is None else 100 * r['success'], '.2f'):>7}%  {calls}"
        )
    lines.append("")
    by = {(r["system"], r["mode"]): r for r in rows}
    for mode in ("healthy", "failover"):
        s, l = by.get(("switchyard", mode)), by.get(("litellm", mode))
        if s and l and s["cpu_s_per_1k"] and l["cpu_s_per_1k"] is not None:
            lines.append(f"{mode}: LiteLLM spends {l['cpu_s_per_1k'] / s['cpu_s_per_1k']:.1f}x Switchyard's CPU per request")
    for system in ("switchyard", "litellm"):
        h, f_ = by.get((system, "healthy")), by.get((system, "failover"))
        if h and f_ and h["cpu_s_per_1k"]:
            lines.append(
                f"{system}: CPU per request with one deployment failing is "
                f"{100 * (f_['cpu_s_per_1k'] / h['cpu_s_per_1k'] - 1):+.1f}% of the healthy run"
            )
    notes = {
        "switchyard": "Switchyard: CPU of the worker process alone (/proc/PID/stat utime+stime) from just before the jobs are produced to the last result read; latency = each result's latency_ms (worker intake to result, whole ms); {}.",
        "litellm": "LiteLLM: CPU of its Python process (getrusage) over the measured calls; latency = wall time of each Router.acompletion; {}.",
    }
    for system in ("switchyard", "litellm"):
        mine = [r for r in rows if r["system"] == system]
        if mine:
            lines.append(notes[system].format(mine[0].get("concurrency", "")))
    s_req = {r["requests"] for r in rows if r["system"] == "switchyard"}
    l_req = {r["requests"] for r in rows if r["system"] == "litellm"}
    if s_req and l_req and s_req != l_req:
        lines.append(
            "LiteLLM runs fewer requests than Switchyard (it is far slower per request); both are per 1,000."
        )
    small = [f"{r['system']} {r['mode']}" for r in rows if r.get("cpu_s") is not None and r["cpu_s"] < 1.0]
    if small:
        lines.append(
            "Too small to compare: " + ", ".join(small) + " used under 1 CPU-second, and CPU time is "
            "counted in clock ticks (10 ms); use the default --requests for figures."
        )
    lines.append(f"JSON: {args.out}")
    text = "\n".join(lines)
    print(text)
    with open(os.path.splitext(args.out)[0] + ".txt", "w", encoding="utf-8") as f:
        f.write(text + "\n")
    bad = [r for r in rows if not r["success"]]
    if bad:
        print(f"bench-peer: {len(bad)} run(s) had no successful request", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
