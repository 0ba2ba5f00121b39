#!/usr/bin/env python3
"""The Switchyard side of the peer benchmark: one mode, one worker process.

Run by scripts/bench-peer.sh (system Python, standard library only) with a fresh
`switchyard broker` and the mock already running. It

  1. writes a pipeline config: the shipped catalog and org file, two deployments of
     one catalog model on the mock (healthy: mock-a, mock-b; failover: mock-down
     first, so that routing must find out it fails, then mock-a), everything else
     at Switchyard's defaults (max_in_flight 512, retries, circuit breaker, metrics);
  2. starts `switchyard run` on the worker CPU, and kcat (consumer of the results
     topic, producers of the jobs) on the other one;
  3. warms up: produces W jobs and waits for their W results (group joined,
     connections open, circuit state settled);
  4. measures: samples the worker's utime+stime from /proc/PID/stat, produces N
     jobs with kcat (at most --backlog of them unanswered at a time: the embedded
     broker keeps 5 MB per partition), and samples again the moment the N-th
     distinct result of those jobs is read from the results topic;
  5. stops the worker (SIGTERM, drain) and writes one JSON object.

Latency per job is the result's own `latency_ms` (the worker's intake of the job
to its result, integer milliseconds), not produce-to-result: the N jobs are
produced as one burst, so produce-to-result would mostly measure the queue.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

API_KEY_ENV = "BENCH_PEER_MOCK_KEY"


def fail(msg):
    print(f"bench-peer (switchyard): {msg}", file=sys.stderr)
    sys.exit(1)


def pinned(cpu, argv):
    return (["taskset", "-c", cpu] if cpu else []) + argv


def write_config(path, args):
    if args.mode == "healthy":
        deployments = [common.HEALTHY_A, common.HEALTHY_B]
    else:
        # The failing deployment first: with equal health, routing tries
        # deployments in config order, so it has to discover the failure.
        deployments = [common.FAILING, common.HEALTHY_A]
    base = args.mock_url.rstrip("/") + "/openai/v1"
    lines = [
        "# Written by scripts/bench-peer/switchyard_side.py: the peer benchmark's worker config.",
        "# Defaults everywhere except the deployments (and their total timeout, 30 s like",
        "# LiteLLM's timeout=30): two deployments of one model on the zero-latency mock.",
        f"catalog = {json.dumps(args.catalog)}",
        f"org = {json.dumps(args.org)}",
        "",
        "[kafka]",
        f"brokers = {json.dumps(args.brokers)}",
        "",
    ]
    for name in deployments:
        lines += [
            "[[deployments]]",
            f'name = "{name}"',
            f"model = {json.dumps(args.model)}",
            f"base_url = {json.dumps(base)}",
            f'api_key_env = "{API_KEY_ENV}"',
            f'api_model = "{name}"',
            'timeouts = { connect = "5s", first_byte = "30s", total = "30s" }',
            "",
        ]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return deployments


def write_jobs(path, prefix, n, prompts, project):
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            job_id = f"{prefix}{i:07d}"
            job = common.switchyard_job(job_id, project, prompts[i % len(prompts)])
            f.write(job_id)
            f.write("\t")
            f.write(json.dumps(job, separators=(",", ":")))
            f.write("\n")


class Results:
    """Reads kcat's `key<TAB>value` lines of the results topic in a thread; keeps the
    first copy of each job's result and samples the worker's CPU the moment the
    last awaited result arrives."""

    def __init__(self, proc, worker_pid):
        self.proc = proc
        self.worker_pid = worker_pid
        self.lock = threading.Lock()
        self.seen = {}
        self.prefix = None
        self.target = None
        self.count = 0
        self.done = threading.Event()
        self.end = None  # (monotonic, cpu seconds)
        self.last_arrival = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def expect(self, prefix, n):
        with self.lock:
            self.prefix, self.target, self.done = prefix, n, threading.Event()
            self.count = sum(1 for k in self.seen if k.startswith(prefix))
            self.end = None
            if self.count >= n:
                self.done.set()
            return self.done

    def _run(self):
        for raw in self.proc.stdout:
            key, sep, value = raw.rstrip(b"\n").partition(b"\t")
            if not sep:
                continue
            key = key.decode("utf-8", "replace")
            with self.lock:
                self.last_arrival = time.monotonic()
                if key in self.seen:
                    continue
                self.seen[key] = value
                if self.prefix and key.startswith(self.prefix):
                    self.count += 1
                    if self.count == self.target:
                        t = time.monotonic()
                        try:
                            cpu = common.proc_cpu_seconds(self.worker_pid)
                        except OSError:
                            cpu = None
                        self.end = (t, cpu)
                        self.done.set()


def wait_for(results, done, worker, what, stall_s, log_path):
    while not done.wait(1.0):
        if worker.poll() is not None:
            fail(
                f"the worker exited (code {worker.returncode}) while waiting for {what}; "
                f"{results.count} of {results.target} arrived. Its log: {log_path}\n"
                + tail(log_path)
            )
        if time.monotonic() - results.last_arrival > stall_s:
            fail(
                f"no result for {stall_s:.0f} s while waiting for {what}: {results.count} of "
                f"{results.target} arrived. Worker log: {log_path}\n" + tail(log_path)
            )


def max_in_flight(log_path):
    """The worker's max_in_flight, from its "Worker started." log line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", tail(log_path, 100000))  # no colours
    m = re.search(r"Worker started\..*?max_in_flight\D*?(\d+)", text)
    return m.group(1) if m else "?"


def tail(path, n=15):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


class Children:
    """The processes this driver starts. Each is listed as `PID PATH` (its executable)
    in `pidfile`, so that scripts/bench-peer.sh can stop what is left if this
    driver itself is killed; stop_all() stops them, the worker first."""

    def __init__(self, pidfile):
        self.pidfile = pidfile
        self.procs = []  # (Popen, grace seconds)

    def start(self, argv, exe, grace, **kw):
        proc = subprocess.Popen(argv, **kw)
        self.procs.append((proc, grace))
        with open(self.pidfile, "a", encoding="utf-8") as f:
            f.write(f"{proc.pid} {os.path.realpath(exe)}\n")
        return proc

    def stop_all(self):
        for proc, grace in sorted(self.procs, key=lambda pg: -pg[1]):
            stop(proc, grace)
        self.procs = []
        try:
            os.remove(self.pidfile)
        except OSError:
            pass


def stop(proc, grace):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", required=True)
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--mock-url", required=True, help="http://127.0.0.1:PORT of the mock")
    ap.add_argument("--mode", choices=common.MODES, required=True)
    ap.add_argument("--requests", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--catalog", required=True)
    ap.add_argument("--org", required=True)
    ap.add_argument("--project", default="acme/engineering/platform/code-assist")
    ap.add_argument("--model", default="deepseek-flash", help="catalog model of both deployments")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--worker-cpu", default="", help="CPU list for taskset (empty: no pinning)")
    ap.add_argument("--aux-cpu", default="", help="CPU list for kcat (empty: no pinning)")
    ap.add_argument("--backlog", type=int, default=10000, help="most jobs produced and not yet answered")
    ap.add_argument("--stall", type=float, default=60.0, help="seconds without a result before giving up")
    ap.add_argument("--out", required=True, help="file for the JSON object")
    args = ap.parse_args()
    if args.requests <= 0:
        fail("--requests must be positive")

    os.makedirs(args.workdir, exist_ok=True)
    config = os.path.join(args.workdir, f"switchyard-{args.mode}.toml")
    deployments = write_config(config, args)
    # RUST_LOG at the binary's default level, whatever the caller's environment says.
    env = dict(os.environ, **{API_KEY_ENV: "bench-peer-key", "RUST_LOG": "info"})
    check = subprocess.run(
        [args.binary, "validate", config], env=env, capture_output=True, text=True
    )
    if check.returncode != 0:
        fail(f"`switchyard validate {config}` refused the config:\n{check.stdout}{check.stderr}")

    prompts = common.load_corpus(args.corpus)
    warmup = max(1, min(args.warmup, args.requests))
    warm_file = os.path.join(args.workdir, f"jobs-{args.mode}-warmup.tsv")
    jobs_file = os.path.join(args.workdir, f"jobs-{args.mode}.tsv")
    # Job ids are unique per mode, so results of an earlier run on the same broker
    # are never counted.
    warm_prefix, measured_prefix = f"bench-{args.mode}-w", f"bench-{args.mode}-m"
    write_jobs(warm_file, warm_prefix, warmup, prompts, args.project)
    write_jobs(jobs_file, measured_prefix, args.requests, prompts, args.project)

    kcat_log = open(os.path.join(args.workdir, f"kcat-{args.mode}.log"), "wb")
    log_path = os.path.join(args.workdir, f"worker-{args.mode}.log")
    worker_log = open(log_path, "wb")
    kcat = shutil.which("kcat") or fail("kcat not found")
    kcat_p = pinned(
        args.aux_cpu,
        [kcat, "-P", "-q", "-b", args.brokers, "-t", "switchyard.jobs", "-K", "\t", "-z", "lz4"],
    )
    children = Children(os.path.join(args.workdir, "switchyard-side.pids"))

    def produce(path):
        with open(path, "rb") as src:
            return children.start(kcat_p, kcat, 5, stdin=src, stdout=kcat_log, stderr=kcat_log)

    def produce_paced(path):
        """kcat fed from a thread that keeps at most --backlog jobs produced and not
        yet answered: the embedded broker keeps only 5 MB per partition, so jobs
        produced far ahead of the worker would be deleted before it reads them. The
        backlog stays far above max_in_flight, so the worker never waits for jobs."""
        with open(path, "rb") as f:
            lines = f.readlines()
        proc = children.start(kcat_p, kcat, 5, stdin=subprocess.PIPE, stdout=kcat_log, stderr=kcat_log)

        def feed():
            sent, step = 0, 500
            try:
                while sent < len(lines):
                    if sent - results.count >= args.backlog:
                        time.sleep(0.002)
                        continue
                    proc.stdin.writelines(lines[sent : sent + step])
                    proc.stdin.flush()
                    sent += step
            except (BrokenPipeError, ValueError):
                pass
            finally:
                try:
                    proc.stdin.close()
                except OSError:
                    pass

        threading.Thread(target=feed, daemon=True).start()
        return proc

    try:
        consumer = children.start(
            pinned(
                args.aux_cpu,
                [kcat, "-C", "-q", "-u", "-b", args.brokers, "-t", "switchyard.results",
                 "-o", "beginning", "-f", "%k\t%s\n", "-X", "fetch.wait.max.ms=10"],
            ),
            kcat,
            5,
            stdout=subprocess.PIPE,
            stderr=kcat_log,
        )
        worker = children.start(
            pinned(args.worker_cpu, [args.binary, "run", "--config", config, "--brokers", args.brokers]),
            args.binary,
            40,
            env=env,
            stdout=worker_log,
            stderr=worker_log,
        )
        results = Results(consumer, worker.pid)

        # Warm-up: the group join, the first connections, the circuit state.
        done = results.expect(warm_prefix, warmup)
        warm0 = common.mock_stats(args.mock_url)
        if produce(warm_file).wait() != 0:
            fail(f"kcat could not produce the warm-up jobs (see {kcat_log.name})")
        wait_for(results, done, worker, f"{warmup} warm-up results", args.stall, log_path)
        time.sleep(1.0)

        # The measured window.
        calls0 = common.mock_stats(args.mock_url)
        warm_calls = common.mock_calls_between(warm0, calls0)
        done = results.expect(measured_prefix, args.requests)
        if done.is_set():
            fail("the results topic already holds results of these job ids: use a fresh broker")
        cpu0, t0 = common.proc_cpu_seconds(worker.pid), time.monotonic()
        producer = produce_paced(jobs_file)
        wait_for(results, done, worker, f"{args.requests} results", args.stall, log_path)
        t1, cpu1 = results.end
        if producer.wait() != 0:
            fail(f"kcat could not produce the jobs (see {kcat_log.name})")
        calls = common.mock_calls_between(calls0, common.mock_stats(args.mock_url))
        peak_rss = common.proc_peak_rss_mb(worker.pid)
        if cpu1 is None:
            fail("could not read the worker's /proc/PID/stat at the end of the window")
    finally:
        children.stop_all()

    latencies, succeeded, attempts, failed_attempts = [], 0, 0, 0
    statuses = {}
    with results.lock:
        measured = [v for k, v in results.seen.items() if k.startswith(measured_prefix)]
    for value in measured:
        r = json.loads(value)
        status = r.get("status")
        statuses[status] = statuses.get(status, 0) + 1
        if status == "succeeded":
            succeeded += 1
        latencies.append(float(r.get("latency_ms", 0)))
        for a in r.get("attempts") or []:
            attempts += 1
            if a.get("outcome") != "succeeded":
                failed_attempts += 1
    obj = common.result_object(
        "switchyard",
        args.mode,
        args.requests,
        succeeded,
        cpu1 - cpu0,
        t1 - t0,
        latencies,
        concurrency=f"max_in_flight {max_in_flight(log_path)} (the default)",
        latency="result latency_ms: worker intake to result, whole ms",
        cpu="worker process utime+stime (/proc/PID/stat)",
        deployments=deployments,
        statuses=statuses,
        attempts=attempts,
        failed_attempts=failed_attempts,
        mock_http_calls=calls,
        peak_rss_mb=None if peak_rss is None else round(peak_rss, 1),
        warmup=warmup,
        warmup_mock_http_calls=warm_calls,
    )
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(obj, f)
        f.write("\n")


if __name__ == "__main__":
    try:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        main()
    except KeyboardInterrupt:
        sys.exit(130)
