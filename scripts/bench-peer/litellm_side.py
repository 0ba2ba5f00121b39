#!/usr/bin/env python3
"""The LiteLLM side of the peer benchmark: one mode, this process.

Run by scripts/bench-peer.sh with the virtual environment's Python (LiteLLM
installed there at a pinned version), pinned to the CPU under test, with the mock
already running. In-process Router with the settings of issue 19:

  * two deployments of one model group ("bench") on the mock, OpenAI-compatible
    (healthy: mock-a, mock-b; failover: mock-a and mock-down, which answers 500);
  * routing_strategy="simple-shuffle", num_retries=1, timeout=30;
  * one fallback group: "bench" -> "bench-fallback" (one deployment, mock-fallback);
  * every callback, logging and telemetry off; the bundled model cost map (no
    network); LiteLLM's other settings at their defaults (cooldowns included).

It drives the same prompts as the Switchyard side (common.load_corpus) through
`Router.acompletion` from `--concurrency` coroutines on one asyncio event loop:
W warm-up calls, then N measured ones. CPU is this process's user + system time
(resource.getrusage, all threads) over the measured calls; latency is the wall time
of each `acompletion` call, queueing for the event loop included.
"""

import os

# Before LiteLLM is imported: no network fetch of the model cost map, no logging.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["LITELLM_OFFLINE_MODE"] = "true"
os.environ["LITELLM_LOG"] = "ERROR"
os.environ["LITELLM_TELEMETRY"] = "False"

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def fail(msg):
    print(f"bench-peer (litellm): {msg}", file=sys.stderr)
    sys.exit(1)


def quiet_litellm(litellm):
    """Turns off every callback, logging and telemetry switch LiteLLM has (those a
    version lacks are set anyway; they are plain module attributes)."""
    for name in (
        "callbacks",
        "input_callback",
        "success_callback",
        "failure_callback",
        "service_callback",
        "_async_input_callback",
        "_async_success_callback",
        "_async_failure_callback",
    ):
        setattr(litellm, name, [])
    litellm.telemetry = False
    litellm.set_verbose = False
    litellm.suppress_debug_info = True
    litellm.cache = None
    # Not turn_off_message_logging: it does not turn logging off, it makes LiteLLM
    # redact (deep-copy) every request's logging payload, which costs CPU.
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm", "httpx", "openai"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def run(args, router, prompts):
    async def drive(n, latencies, outcome):
        next_index = 0

        async def one_worker():
            nonlocal next_index
            while next_index < n:
                i = next_index
                next_index += 1
                p = prompts[i % len(prompts)]
                kwargs = {"max_tokens": p["max_tokens"]}
                if p["json"]:
                    kwargs["response_format"] = {"type": "json_object"}
                t = time.perf_counter()
                try:
                    response = await router.acompletion(
                        model="bench", messages=common.openai_messages(p), **kwargs
                    )
                    ok = bool(response.choices) and response.choices[0].message is not None
                except Exception as e:  # noqa: BLE001 - a failed request is counted, not fatal
                    ok = False
                    outcome["errors"][type(e).__name__] = outcome["errors"].get(type(e).__name__, 0) + 1
                latencies.append((time.perf_counter() - t) * 1000.0)
                if ok:
                    outcome["succeeded"] += 1

        await asyncio.gather(*(one_worker() for _ in range(min(args.concurrency, n))))

    warm = {"succeeded": 0, "errors": {}}
    await drive(args.warmup, [], warm)
    if warm["succeeded"] == 0:
        fail(f"no warm-up call succeeded; errors: {warm['errors']} (is the mock at {args.mock_url}?)")
    calls0 = common.mock_stats(args.mock_url)
    latencies, outcome = [], {"succeeded": 0, "errors": {}}
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    await drive(args.requests, latencies, outcome)
    t1, cpu1 = time.perf_counter(), cpu_seconds()
    calls = common.mock_calls_between(calls0, common.mock_stats(args.mock_url))
    return cpu1 - cpu0, t1 - t0, latencies, outcome, calls


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mock-url", required=True, help="http://127.0.0.1:PORT of the mock")
    ap.add_argument("--mode", choices=common.MODES, required=True)
    ap.add_argument("--requests", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--input-cost-per-token", type=float, default=0.30e-6)
    ap.add_argument("--output-cost-per-token", type=float, default=1.20e-6)
    ap.add_argument("--out", required=True, help="file for the JSON object")
    args = ap.parse_args()
    if args.requests <= 0 or args.concurrency <= 0:
        fail("--requests and --concurrency must be positive")
    args.warmup = max(1, min(args.warmup, args.requests))

    import litellm
    from litellm import Router

    quiet_litellm(litellm)
    version = getattr(litellm, "__version__", None)
    if not version:
        from importlib.metadata import version as dist_version

        version = dist_version("litellm")

    base = args.mock_url.rstrip("/") + "/openai/v1"
    second = common.HEALTHY_B if args.mode == "healthy" else common.FAILING

    def deployment(group, model_id):
        # Priced like the catalog model of Switchyard's deployments, as a custom
        # deployment is configured: LiteLLM prices every call (Switchyard too), and
        # an unpriced model would send it down its zero-cost diagnostics instead.
        return {
            "model_name": group,
            "litellm_params": {
                "model": f"openai/{model_id}",
                "api_base": base,
                "api_key": "bench-peer-key",
                "input_cost_per_token": args.input_cost_per_token,
                "output_cost_per_token": args.output_cost_per_token,
            },
        }

    router = Router(
        model_list=[
            deployment("bench", common.HEALTHY_A),
            deployment("bench", second),
            deployment("bench-fallback", common.FALLBACK),
        ],
        routing_strategy="simple-shuffle",
        num_retries=1,
        fallbacks=[{"bench": ["bench-fallback"]}],
        timeout=30,
    )
    quiet_litellm(litellm)  # again: constructing the Router may register its own

    prompts = common.load_corpus(args.corpus)
    cpu_s, wall_s, latencies, outcome, calls = asyncio.run(run(args, router, prompts))
    obj = common.result_object(
        "litellm",
        args.mode,
        args.requests,
        outcome["succeeded"],
        cpu_s,
        wall_s,
        latencies,
        concurrency=f"{args.concurrency} coroutines, one asyncio loop",
        latency="wall time of each Router.acompletion call",
        cpu="this Python process's utime+stime (getrusage)",
        version=version,
        deployments=[common.HEALTHY_A, second],
        errors=outcome["errors"],
        mock_http_calls=calls,
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        warmup=args.warmup,
    )
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(obj, f)
        f.write("\n")


if __name__ == "__main__":
    main()
