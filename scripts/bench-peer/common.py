"""Shared pieces of the peer benchmark (scripts/bench-peer.sh).

Standard library only: imported by the Switchyard side (system Python) and by the
LiteLLM side (the virtual environment's Python).

Both systems send the same requests: prompt i of the run is line i mod 336 of
pipelines/corpus/prompts.jsonl, with its system prompt, its max_tokens (256 when
the line has none) and JSON mode when the line asks for it.
"""

import json
import math
import os

DEFAULT_MAX_TOKENS = 256

# Model ids the mock (switchyard sim-provider with scripts/bench-peer/mock.toml)
# is asked for. Every id answers at once; `mock-down` answers HTTP 500 always.
HEALTHY_A = "mock-a"
HEALTHY_B = "mock-b"
FAILING = "mock-down"
FALLBACK = "mock-fallback"

MODES = ("healthy", "failover")


def load_corpus(path):
    prompts = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            p = json.loads(line)
            if "prompt" not in p:
                raise SystemExit(f"{path}:{n}: no `prompt` field")
            prompts.append(
                {
                    "system": p.get("system"),
                    "prompt": p["prompt"],
                    "max_tokens": int(p.get("max_tokens") or DEFAULT_MAX_TOKENS),
                    "json": p.get("response_format") == "json_object",
                }
            )
    if not prompts:
        raise SystemExit(f"{path}: no prompts")
    return prompts


def openai_messages(p):
    """The chat messages of one corpus prompt, as an OpenAI-format client sends them."""
    messages = []
    if p["system"]:
        messages.append({"role": "system", "content": p["system"]})
    messages.append({"role": "user", "content": p["prompt"]})
    return messages


def switchyard_job(job_id, project, p):
    """The Switchyard job (JSON, jobs topic) carrying the same request."""
    request = {
        "messages": [{"role": "user", "content": p["prompt"]}],
        "max_tokens": p["max_tokens"],
    }
    if p["system"]:
        request["system"] = p["system"]
    if p["json"]:
        request["response_format"] = "json_object"
    return {"job_id": job_id, "project": project, "request": request}


def percentile(sorted_values, q):
    """Nearest-rank percentile (q in 0..100) of an ascending list; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def proc_cpu_seconds(pid):
    """User + system CPU seconds of process `pid` (all its threads, live and exited),
    from /proc/PID/stat fields 14 and 15 (clock ticks)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        stat = f.read()
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def proc_peak_rss_mb(pid):
    """Peak resident set size (VmHWM) of process `pid`, in MB; None if unreadable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def mock_stats(base_url):
    """GET /sim/stats of the mock: per model id, the HTTP requests it answered."""
    import urllib.request

    with urllib.request.urlopen(base_url.rstrip("/") + "/sim/stats", timeout=10) as r:
        stats = json.load(r)
    return {model: m.get("requests", 0) for model, m in stats.get("models", {}).items()}


def mock_calls_between(before, after):
    """HTTP requests per mock model id between two mock_stats() snapshots."""
    out = {}
    for model, n in after.items():
        d = n - before.get(model, 0)
        if d:
            out[model] = d
    return out


def result_object(
    system,
    mode,
    requests,
    succeeded,
    cpu_s,
    wall_s,
    latencies_ms,
    **extra,
):
    """One JSON object of the report (the fields the issue asks for, then details)."""
    lat = sorted(latencies_ms)
    obj = {
        "system": system,
        "mode": mode,
        "requests": requests,
        "cpu_s_per_1k": round(cpu_s * 1000.0 / requests, 4) if requests else None,
        "throughput_per_s": round(requests / wall_s, 1) if wall_s > 0 else None,
        "p50_ms": _round(percentile(lat, 50)),
        "p99_ms": _round(percentile(lat, 99)),
        "success": round(succeeded / requests, 6) if requests else None,
        "succeeded": succeeded,
        "cpu_s": round(cpu_s, 3),
        "wall_s": round(wall_s, 3),
        # Busy fraction of the CPU under test: near 1, the system itself was the
        # limit; well below, it waited (for the mock, the broker or the producer).
        "cpu_utilization": round(cpu_s / wall_s, 3) if wall_s > 0 else None,
    }
    obj.update(extra)
    return obj


def _round(v):
    return None if v is None else round(float(v), 2)
