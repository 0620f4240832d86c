#!/usr/bin/env python3
"""API cost at scale: creates N connections through the REST API (no proxy, so
nothing registers), then times the read endpoints with N rows in the store.
Prints creation rate and p50/p99 latency per endpoint, measured at the client
over one keep-alive HTTP connection (so it includes HTTP and loopback).

Usage: bench/api-10k.py [N=10000] [UACD_BINARY=target/release/uacd]
Binds 127.0.0.92 only; stops uacd by PID. Standard library only.
"""

import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
BIN = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("UACD_BINARY", "target/release/uacd")
IP, PORT, TOKEN = "127.0.0.92", 18092, "bench-token-0123456"

wd = tempfile.mkdtemp(prefix="uacd-api-bench.")
with open(os.path.join(wd, "uacd.toml"), "w") as f:
    f.write(f'[sip]\nlisten = ["udp:{IP}:5060"]\n[api]\nlisten = "{IP}:{PORT}"\n'
            f'[[api.tokens]]\ntoken = "{TOKEN}"\nuser_id = "323"\n[store]\npath = "uacd.db"\n')
log = open(os.path.join(wd, "uacd.log"), "w")
proc = subprocess.Popen([BIN, "run", "--config", os.path.join(wd, "uacd.toml")], stderr=log, env={**os.environ, "RUST_LOG": "warn"})
try:
    deadline = time.time() + 20
    while True:
        try:
            c = http.client.HTTPConnection(IP, PORT, timeout=10)
            c.request("GET", "/healthz")
            c.getresponse().read()
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)
    H = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    def call(method, path, body=None):
        c.request(method, path, body=None if body is None else json.dumps(body), headers=H)
        r = c.getresponse()
        data = r.read()
        if r.status >= 300:
            raise SystemExit(f"{method} {path}: {r.status} {data[:200]!r}")
        return json.loads(data)

    t0 = time.perf_counter()
    first = None
    for i in range(N):
        obj = call("POST", "/v2/uac_connections", {"connection_name": f"bench {i:05d}",
                   "internal_uac_settings": {"destination_uri": f"{i}@assistant-x.sip.telnyx.com"}})
        first = first or obj["data"]["id"]
    dt = time.perf_counter() - t0
    print(f"created {N} connections in {dt:.1f} s ({N / dt:.0f}/s, {dt / N * 1000:.2f} ms each, durable)")

    def timed(name, path, reps=300):
        lat = []
        for _ in range(reps):
            t = time.perf_counter()
            call("GET", path)
            lat.append((time.perf_counter() - t) * 1000)
        lat.sort()
        print(f"{name:<42} p50 {lat[len(lat) // 2]:.3f} ms   p99 {lat[int(len(lat) * 0.99)]:.3f} ms")

    timed("list page 1 (20, newest first)", "/v2/uac_connections")
    timed("list page 250 (20, newest first)", "/v2/uac_connections?page[number]=250")
    timed("list sort=connection_name (20)", "/v2/uac_connections?sort=connection_name")
    timed("list filter contains '0999' (20)", "/v2/uac_connections?filter[connection_name][contains]=0999")
    timed("GET one", f"/v2/uac_connections/{first}")
    timed("GET registration_status", f"/v2/uac_connections/{first}/registration_status")
    timed("GET sip_registration_status (seed 002)",
          f"/v2/sip_registration_status?credential_type=uac_third-party_credential&connection_id={first}&user_id=323")
finally:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    print(f"(work dir {wd})")
