#!/usr/bin/env python3
"""Start-to-ready time of sessiond: from starting the process to its first
200 response on the session endpoint, polled every millisecond on loopback.

Usage:
  bench/startup.py [--keys N] [--runs N] [--bin PATH]

Each run writes N HS256 key files (JWK, mode 0600; one of them signs) into
a new temporary folder, starts sessiond on a free 127.0.0.1 port, polls
until it returns 200, then stops it with SIGTERM. Prints every run and the
median and maximum in milliseconds. Standard library only; the binary is
target/release/sessiond unless --bin says otherwise (build it first).
"""

import argparse
import base64
import http.client
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time

PATH = "/ccstore/v1/metering/session"


def write_keys(folder: str, count: int) -> None:
    for i in range(count):
        kid = f"startup-{i:05d}"
        jwk = {
            "kty": "oct",
            "kid": kid,
            "alg": "HS256",
            "k": base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode(),
            "created_at": "2020-01-01T00:00:00Z",
        }
        if i == 0:
            jwk["sign_from"] = "2020-01-01T00:00:00Z"
        fd = os.open(os.path.join(folder, kid + ".json"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "w") as f:
            json.dump(jwk, f)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers_200(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", PATH)
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def one_run(binary: str, keys: int, timeout_s: float) -> float:
    with tempfile.TemporaryDirectory(prefix="sessiond-startup.") as folder:
        keys_dir = os.path.join(folder, "keys")
        os.mkdir(keys_dir, 0o700)
        write_keys(keys_dir, keys)
        port = free_port()
        env = dict(
            os.environ,
            SESSIOND_BIND=f"127.0.0.1:{port}",
            SESSIOND_ADMIN_BIND="127.0.0.1:0",
            SESSIOND_KEYS_DIR=keys_dir,
            SESSIOND_WORKERS="1",
            RUST_LOG="warn",
        )
        started = time.perf_counter()
        server = subprocess.Popen([binary], env=env, cwd=folder, stderr=subprocess.PIPE)
        try:
            while time.perf_counter() - started < timeout_s:
                if answers_200(port):
                    return (time.perf_counter() - started) * 1000
                if server.poll() is not None:
                    raise RuntimeError(f"sessiond exited with {server.returncode}: "
                                       f"{server.stderr.read().decode(errors='replace')}")
                time.sleep(0.001)
            raise RuntimeError(f"sessiond did not respond within {timeout_s} s")
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def main() -> int:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=3, help="key files per run (default 3)")
    parser.add_argument("--runs", type=int, default=10, help="runs (default 10)")
    parser.add_argument("--bin", default=os.path.join(repo, "target", "release", "sessiond"),
                        help="sessiond binary (default target/release/sessiond)")
    parser.add_argument("--timeout", type=float, default=30, help="seconds per run (default 30)")
    args = parser.parse_args()
    if not os.access(args.bin, os.X_OK):
        print(f"error: {args.bin} is not an executable; run cargo build --release", file=sys.stderr)
        return 2

    times = []
    for run in range(args.runs):
        ms = one_run(args.bin, args.keys, args.timeout)
        times.append(ms)
        print(f"run {run + 1}: {ms:.1f} ms")
    print(f"start to ready with {args.keys} keys: median {statistics.median(times):.1f} ms, "
          f"max {max(times):.1f} ms over {args.runs} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
