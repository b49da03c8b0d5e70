#!/usr/bin/env python3
"""Paired load runs of sessiond and the bare actix-web ceiling: the servers
run side by side, and short measured windows alternate between them, so
that a change in the VM's speed hits both sides of each pair alike.

Usage:
  bench/paired.py [--rounds N] [--secs S] [--warmup S] [--starts N]
                  [--connections N] [--scenarios cookie,header,none]
                  [--pace-ms MS] [--bin PATH] [--extra NAME=PATH ...]
                  [--out DIR]

Every server runs pinned to CPU 0 with one worker, and wrk runs pinned to
CPU 1 (`-t1 -c64`), the settings bench/load.sh uses. Only one server is
under load at a time. Round r measures the servers in list order when r is
even and in reverse order when it is odd, so a steady drift cancels out.
Each window gives req/s, p99 latency and the server's user and system CPU
time per request (from /proc). The ratios are taken window by window
against the ceiling's window of the same round; the summary gives their
median and quartiles. The table also gives each server's p99 over all
its windows of a scenario, from wrk's latency histograms added up, and
its ratio to the ceiling's. That p99 weights each window by the requests
it served, and it exists only in table.md, so an interrupted run has
none. Every server is started again `--starts` times per
scenario (each start followed by a warm-up), so that where one start lands
in memory does not decide the result.

At full load wrk needs most of CPU 1 as well, so the latency it reports
depends on how the queue splits between wrk and the server. With
`--pace-ms MS`, each connection waits MS milliseconds before each request
(wrk's `delay` hook), so the connections offer at most 1000 / MS requests
per second each. When that total is well below what the servers can
serve, wrk has CPU to spare and p99 measures the server's response time.
wrk's timers tick in whole milliseconds, so connections whose wait ends
together send in a burst, and the p99 includes the queue of such bursts.
The `wrk CPU` column gives wrk's CPU time over the window's wall time,
which is its share of CPU 1. Each window is written to results.tsv as
soon as it is measured.

The ceiling is built from $SHARED_BENCH/ceiling (default: ../shared/bench
next to the repository) into BENCH_BUILD_DIR (~/.cache/ccstore-bench)
when its binary is missing. sessiond is target/release/sessiond unless
--bin names another (build it first). The key is a fresh random HS256 key,
written as a JWK file of mode 0600 into a private temporary folder that is
removed at the end. The token is minted here and reaches wrk in a script
file in that folder, never on a command line. Traffic goes to 127.0.0.1
only. Needs python3, wrk, taskset, cargo.
"""

import argparse
import base64
import collections
import datetime
import hashlib
import hmac
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from benchkey import write_key

PATH = "/ccstore/v1/metering/session"
KID = "bench-key-1"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(secret: bytes) -> str:
    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT", "kid": KID}
    claims = {"jti": b64url(secrets.token_bytes(16)), "iat": now, "exp": now + 86400, "iss": "ccstore"}
    signing_input = ".".join(b64url(json.dumps(p, separators=(",", ":")).encode()) for p in (header, claims))
    tag = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(tag)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ceiling_binary() -> str:
    build = os.environ.get("BENCH_BUILD_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ccstore-bench"
    )
    target = os.path.join(build, "ceiling-target")
    binary = os.path.join(target, "release", "ccstore-bench-ceiling")
    if not os.access(binary, os.X_OK):
        shared = os.environ.get("SHARED_BENCH") or os.path.join(REPO, "..", "shared", "bench")
        manifest = os.path.join(shared, "ceiling", "Cargo.toml")
        if not os.path.isfile(manifest):
            sys.exit(f"error: {manifest} not found; set SHARED_BENCH to the folder that holds ceiling/")
        build_ceiling = ["cargo", "build", "--release", "--locked", "--manifest-path", manifest]
        subprocess.run([*build_ceiling, "--target-dir", target], check=True)
    return binary


def get(port: int, headers: dict) -> tuple:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{PATH}", headers=headers)
    with urllib.request.urlopen(request, timeout=2) as response:
        return response.status, response.read()


def start(name: str, argv: list, env: dict, port: int, out: str, processes: list) -> int:
    """Starts a server and returns its pid once it responds 200. The process
    goes on `processes` first, so that it is stopped on every exit."""
    with open(os.path.join(out, f"{name}.log"), "w") as log:
        process = subprocess.Popen(
            ["taskset", "-c", "0", *argv], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    processes.append(process)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"error: {name} exited with {process.returncode}; see {out}/{name}.log")
        try:
            if get(port, {})[0] == 200:
                return process.pid
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"error: {name} did not answer on 127.0.0.1:{port} within 60 s")


def stop_all(processes: list) -> None:
    """Stops every server's process group: TERM, then KILL after 5 s. A
    process leaves the list only once it has exited."""
    while processes:
        process = processes[-1]
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass
        processes.pop()


def cpu_ticks(pid: int) -> tuple:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def to_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def children_cpu_secs() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def window(pid: int, port: int, script: str, secs: int, connections: int, latency_file: str) -> dict:
    user0, system0 = cpu_ticks(pid)
    wrk_cpu_before = children_cpu_secs()
    started = time.monotonic()
    command = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{secs}s", "--latency"]
    command += ["-s", script, f"http://127.0.0.1:{port}{PATH}"]
    env = dict(os.environ, PAIRED_LATENCY_FILE=latency_file)
    run = subprocess.run(command, capture_output=True, text=True, timeout=secs + 30, env=env)
    if run.returncode != 0:
        sys.exit(f"error: wrk exited with {run.returncode}: {(run.stderr or run.stdout).strip()}")
    out = run.stdout
    user1, system1 = cpu_ticks(pid)
    wrk_cpu = (children_cpu_secs() - wrk_cpu_before) / (time.monotonic() - started)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    if requests == 0:
        sys.exit(f"error: no request completed in a {secs} s window on port {port}")
    errors = 0
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        errors += int(bad.group(1))
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket_errors:
        errors += sum(int(count) for count in socket_errors.groups())
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p99_ms": to_ms(re.search(r"\s99%\s+(\S+)", out).group(1)),
        "user_us": (user1 - user0) * tick_us / requests,
        "system_us": (system1 - system0) * tick_us / requests,
        "errors": errors,
        "wrk_cpu": wrk_cpu,
        "latency": read_latencies(latency_file),
    }


def read_latencies(path: str) -> collections.Counter:
    """Reads the histogram the wrk script wrote: one line per latency in
    microseconds, with the number of requests that took it."""
    counts = collections.Counter()
    with open(path) as f:
        for line in f:
            value, count = line.split()
            counts[int(value)] += int(count)
    os.remove(path)
    return counts


def percentile(counts: collections.Counter, share: float):
    """Returns the smallest latency that at least `share` of the requests
    in `counts` did not exceed, or None when `counts` is empty. wrk's own
    p99 comes from the same histogram, so the two can differ only in how
    the rank is rounded (an estimate: wrk's rounding was not checked)."""
    target = share * sum(counts.values())
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= target:
            return value
    return None


# wrk calls `done` once at the end of a run. `latency(i)` is the i-th
# distinct latency recorded, in microseconds, and how many requests took it.
LATENCY_HISTOGRAM_LUA = """
function done(summary, latency, requests)
  local f = assert(io.open(os.getenv("PAIRED_LATENCY_FILE"), "w"))
  for i = 1, #latency do
    local value, count = latency(i)
    f:write(string.format("%d %d\\n", value, count))
  end
  f:close()
end
"""


def write_script(folder: str, name: str, header: str, value: str, pace_ms: int) -> str:
    """Writes a wrk script, mode 0600, that adds one request header unless
    `header` is empty, waits `pace_ms` before each request when it is not
    0, and writes the latency histogram to $PAIRED_LATENCY_FILE."""
    path = os.path.join(folder, f"{name}.lua")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        if header:
            f.write(f"wrk.headers[{json.dumps(header)}] = {json.dumps(value)}\n")
        if pace_ms:
            f.write(f"function delay() return {pace_ms} end\n")
        f.write(LATENCY_HISTOGRAM_LUA)
    return path


def file_digest(path: str) -> str:
    """Returns the first 16 hex digits of the SHA-256 of the file at `path`."""
    with open(path, "rb") as f:
        digest = hashlib.sha256()
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def quartiles(values: list) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}"
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return f"{median:.3f} ({q1:.3f}-{q3:.3f})"


def integer_at_least(minimum: int, expected: str):
    """Returns an argparse type that accepts integers of `minimum` or more,
    and names `expected` in its error message."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected {expected}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"invalid value {value}: expected {expected}")
        return value

    return parse


positive = integer_at_least(1, "a positive integer")
non_negative = integer_at_least(0, "0 or a positive integer")


def starts_at(round_index: int, rounds: int, starts: int) -> bool:
    """Returns True when the servers start again before `round_index`, so
    that `starts` blocks of rounds are as even in length as possible."""
    return round_index == 0 or (round_index * starts) // rounds != ((round_index - 1) * starts) // rounds


def summarise(rows: list, names: list, scenarios: list) -> list:
    lines = [
        "| server | scenario | req/s median | CPU us/req median (user+sys) | req/s vs ceiling "
        "| CPU/req ceiling/server | p99 ms median | p99 vs ceiling | p99 ms, all windows "
        "| all-window p99 vs ceiling | wrk CPU median | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for scenario in scenarios:
        by_round = {}
        for row in rows:
            if row["scenario"] == scenario:
                by_round.setdefault(row["round"], {})[row["server"]] = row
        for name in names:
            mine = [by_round[r][name] for r in sorted(by_round)]
            base = [by_round[r]["ceiling"] for r in sorted(by_round)]
            cpu = [m["user_us"] + m["system_us"] for m in mine]
            rps_ratio = [m["rps"] / b["rps"] for m, b in zip(mine, base)]
            cpu_ratio = [(b["user_us"] + b["system_us"]) / c for b, c in zip(base, cpu) if c > 0]
            p99_ratio = [m["p99_ms"] / b["p99_ms"] for m, b in zip(mine, base)]
            pooled = percentile(sum((m["latency"] for m in mine), collections.Counter()), 0.99)
            pooled_base = percentile(sum((b["latency"] for b in base), collections.Counter()), 0.99)
            if pooled is None or not pooled_base:
                pooled_text = "n/a | n/a"
            else:
                pooled_text = f"{pooled / 1000:.3f} | {pooled / pooled_base:.3f}"
            lines.append(
                f"| {name} | {scenario} | {statistics.median(m['rps'] for m in mine):,.0f} "
                f"| {statistics.median(cpu):.2f} ({statistics.median(m['user_us'] for m in mine):.2f}"
                f"+{statistics.median(m['system_us'] for m in mine):.2f}) | {quartiles(rps_ratio)} "
                f"| {quartiles(cpu_ratio)} | {statistics.median(m['p99_ms'] for m in mine):.3f} "
                f"| {quartiles(p99_ratio)} | {pooled_text} "
                f"| {statistics.median(m['wrk_cpu'] for m in mine):.0%} "
                f"| {sum(m['errors'] for m in mine)} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=positive, default=20, help="measured rounds per scenario")
    parser.add_argument("--secs", type=positive, default=3, help="seconds per measured window")
    parser.add_argument("--warmup", type=positive, default=5, help="seconds of load after each start")
    parser.add_argument("--starts", type=positive, default=4, help="server starts per scenario")
    parser.add_argument("--connections", type=positive, default=64, help="wrk connections")
    parser.add_argument(
        "--pace-ms",
        type=non_negative,
        default=0,
        help="milliseconds each connection waits before each request (0: full load)",
    )
    parser.add_argument("--scenarios", default="cookie,header,none", help="comma-separated list")
    parser.add_argument(
        "--bin",
        default=os.path.join(REPO, "target", "release", "sessiond"),
        help="the sessiond binary (default: target/release/sessiond, which is not rebuilt)",
    )
    parser.add_argument(
        "--extra", action="append", default=[], metavar="NAME=PATH", help="another server to measure"
    )
    parser.add_argument("--out", help="results folder (default: bench/results/<time>-paired)")
    args = parser.parse_args()

    if args.starts > args.rounds:
        parser.error(f"--starts {args.starts} is more than --rounds {args.rounds}")
    scenarios = args.scenarios.split(",")
    for scenario in scenarios:
        if scenario not in ("cookie", "header", "none"):
            parser.error(f"unknown scenario {scenario!r}: use cookie, header or none")
    if len(set(scenarios)) != len(scenarios):
        parser.error(f"--scenarios {args.scenarios} names a scenario twice")
    if not os.access(args.bin, os.X_OK):
        parser.error(f"{args.bin} is not an executable: build it (cargo build --release) or name another with --bin")
    extras = []
    for extra in args.extra:
        name, _, path = extra.partition("=")
        if not name or not os.access(path, os.X_OK):
            parser.error(f"--extra {extra} is not NAME=PATH of an executable")
        extras.append((name, [path]))
    names = ["ceiling", "sessiond", *(name for name, _ in extras)]
    if len(set(names)) != len(names):
        parser.error(f"server names must differ (ceiling and sessiond are taken): {', '.join(names)}")
    servers = [("ceiling", [ceiling_binary()]), ("sessiond", [args.bin]), *extras]
    # Hashed before the run, so that the table names what was measured even
    # if a build rewrites a binary meanwhile.
    binaries = [f"- {name}: {argv[0]} (sha256 {file_digest(argv[0])})" for name, argv in servers]

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d-%H%M")
    out = os.path.abspath(args.out or os.path.join(REPO, "bench", "results", f"{stamp}-paired"))
    os.makedirs(out, exist_ok=True)
    # Otherwise an earlier run's table in the same folder would sit beside
    # the partial results.tsv of an interrupted run.
    if os.path.exists(os.path.join(out, "table.md")):
        os.remove(os.path.join(out, "table.md"))

    def leave(signum, _frame):
        sys.exit(f"stopped by signal {signum}; the windows measured so far are in {out}/results.tsv")

    # A hangup or TERM ends the run through the `finally` below, which stops
    # the servers and removes the key.
    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGHUP, leave)
    columns = ["scenario", "round", "server", "rps", "p99_ms", "user_us", "system_us", "wrk_cpu", "errors"]
    processes = []
    rows = []
    table = open(os.path.join(out, "results.tsv"), "w")
    table.write("\t".join(columns) + "\n")
    private = tempfile.mkdtemp(prefix="sessiond-paired.")
    try:
        keys = os.path.join(private, "keys")
        os.mkdir(keys, 0o700)
        secret = secrets.token_bytes(32)
        write_key(keys, KID, secret)
        token = mint(secret)
        fields = {
            "cookie": ("Cookie", f"session_token-store={token}"),
            "header": ("X-CC-Session-Token", token),
        }
        latency_file = os.path.join(private, "latency.txt")
        scripts = {"none": write_script(private, "none", "", "", args.pace_ms)}
        for scenario, (header, value) in fields.items():
            scripts[scenario] = write_script(private, scenario, header, value, args.pace_ms)

        def start_all() -> list:
            running = []
            for name, argv in servers:
                port = free_port()
                env = dict(
                    os.environ,
                    BIND=f"127.0.0.1:{port}",
                    WORKERS="1",
                    SESSIOND_BIND=f"127.0.0.1:{port}",
                    SESSIOND_WORKERS="1",
                    SESSIOND_ADMIN_BIND="127.0.0.1:0",
                    SESSIOND_KEYS_DIR=keys,
                    SESSIOND_ISSUER="ccstore",
                    SESSIOND_TOKEN_TTL="3600",
                    SESSIOND_MAX_TOKEN_LIFETIME="86400",
                    RUST_LOG="warn",
                )
                pid = start(name, argv, env, port, out, processes)
                running.append((name, pid, port))
                if name == "ceiling":
                    continue
                for scenario, (header, value) in fields.items():
                    if get(port, {header: value})[1] != b'{"valid":true}':
                        sys.exit(f"error: {name} did not accept the bench token in the {scenario} scenario")
            return running

        for scenario in scenarios:
            for r in range(args.rounds):
                if starts_at(r, args.rounds, args.starts):
                    stop_all(processes)
                    running = start_all()
                    for name, pid, port in running:
                        window(pid, port, scripts[scenario], args.warmup, args.connections, latency_file)
                order = running if r % 2 == 0 else running[::-1]
                for name, pid, port in order:
                    result = window(pid, port, scripts[scenario], args.secs, args.connections, latency_file)
                    row = {"scenario": scenario, "round": r, "server": name, **result}
                    rows.append(row)
                    table.write("\t".join(str(row[c]) for c in columns) + "\n")
                    table.flush()
                    print(
                        f"{scenario:6} round {r:2} {name:10} {result['rps']:9.0f} req/s "
                        f"p99 {result['p99_ms']:5.2f} ms  user {result['user_us']:5.2f} "
                        f"sys {result['system_us']:5.2f} us/req  wrk CPU {result['wrk_cpu']:4.0%}",
                        flush=True,
                    )
    except KeyboardInterrupt:
        sys.exit(f"interrupted; the windows measured so far are in {out}/results.tsv")
    finally:
        # A second signal must not cut the cleanup short, because the
        # servers run in sessions of their own and would outlive this script.
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(number, signal.SIG_IGN)
        stop_all(processes)
        shutil.rmtree(private, ignore_errors=True)
        table.close()

    heading = (
        f"paired run {stamp} UTC: {args.rounds} rounds of {args.secs} s windows per scenario, "
        f"{args.starts} starts of each server per scenario, {args.connections} connections"
        + (f", {args.pace_ms} ms before each request" if args.pace_ms else "")
        + "; "
        "ratios are per round against the ceiling, median (quartiles), "
        "except the all-window p99 ratio, which is a single figure"
    )
    summary = "\n".join([heading, "", *binaries, "", *summarise(rows, names, scenarios)])
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(summary + "\n")
    print()
    print(summary)
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
