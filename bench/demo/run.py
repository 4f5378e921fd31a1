#!/usr/bin/env python3
"""End-to-end throughput of `weft demo` with every request traced.

For each rate: a fresh `weft demo --rate 0` (weft, the mesh, the gateway, the
four CRM services), and `weft demo load` as a separate process sending that
rate open-loop through the gateway. After the warm-up it measures for
--duration: the achieved rate and latency (from the load generator), the CPU
each part used (from /proc), and whether every request's telemetry arrived
(the gateway's and crm-mobile's spans counted in weft against the requests
sent, and the proxies' dropped-telemetry counters).

    cargo build --release -p weft
    python3 bench/demo/run.py --rates 250,500,1000,1500,2000

Prints one Markdown table row per rate; the highest rate with p99 < 100 ms,
no errors and complete telemetry is the result.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

PORTS = {
    "--http-addr": 36686,
    "--otlp-grpc-addr": 34317,
    "--otlp-http-addr": 34318,
    "--gateway-addr": 38000,
    "--gateway-admin-addr": 38001,
    "--control-plane-addr": 35681,
}
API = f"http://127.0.0.1:{PORTS['--http-addr']}"
GATEWAY = f"http://127.0.0.1:{PORTS['--gateway-addr']}"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def get(url, body=None):
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read().decode()


def ready(url):
    request = urllib.request.Request(url, headers={"apikey": "demo-key"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status == 200
    except urllib.error.HTTPError:
        return False


def sql(query):
    answer = json.loads(get(f"{API}/api/v1/sql", json.dumps({"sql": query}).encode()))
    return answer["rows"]


def wait_until(what, check, limit=120):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"timed out waiting for {what}")


def part_of(cmdline):
    """Which part of the demo a process is, from its command line."""
    if "mesh sidecar" in cmdline:
        return "sidecars"
    if "mesh control-plane" in cmdline:
        return "control plane"
    if " gateway " in f" {cmdline} ":
        return "gateway"
    if "demo service" in cmdline:
        return "services"
    if "demo load" in cmdline:
        return "load generator"
    return "weft (collector + query)"


def processes(root_pids):
    """{pid: part} for the given processes and their children."""
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline") as f:
                cmdline = f.read().replace("\0", " ")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if int(pid) in root_pids or ppid in root_pids:
            found[int(pid)] = part_of(cmdline)
    return found


def cpu_seconds(pids):
    """{part: CPU seconds} (user + system) of the processes."""
    used = {}
    for pid, part in pids.items():
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks = int(fields[11]) + int(fields[12])
        used[part] = used.get(part, 0.0) + ticks / CLOCK_TICKS
    return used


def dropped_telemetry():
    """The proxies' dropped-telemetry counters, summed."""
    state = json.loads(get(f"{API}/api/v1/demo"))
    admins = [f"http://127.0.0.1:{PORTS['--gateway-admin-addr']}", f"http://{state['gateway_sidecar_admin']}"]
    admins += [f"http://{s['sidecar_admin']}" for s in state["services"]]
    dropped = 0.0
    for admin in admins:
        for line in get(f"{admin}/metrics").splitlines():
            if re.match(r"^\w+_telemetry_dropped_total", line):
                dropped += float(line.split()[-1])
    return dropped


def measure(weft, rate, warmup, duration, work):
    data = os.path.join(work, "demo")
    ports = [arg for flag, port in PORTS.items() for arg in (flag, f"127.0.0.1:{port}")]
    demo_log = open(os.path.join(work, f"demo-{rate}.log"), "w")
    demo = subprocess.Popen(
        [weft, "demo", "--fresh", "--dir", data, "--rate", "0", *ports],
        stdout=demo_log, stderr=subprocess.STDOUT,
    )
    try:
        # The API answers as soon as weft is up; the gateway, once everything behind it is.
        wait_until("the demo", lambda: ready(f"{GATEWAY}/api/accounts/1"))
        load = subprocess.Popen(
            [weft, "demo", "load", "--gateway", GATEWAY, "--rate", str(rate),
             "--warmup", f"{warmup}s", "--duration", f"{duration}s"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        time.sleep(warmup)
        pids = processes({demo.pid, load.pid})
        cpu_before, dropped_before, started = cpu_seconds(pids), dropped_telemetry(), time.time()
        # Read the CPU just before the load generator ends its measurement and exits.
        time.sleep(max(duration - 0.5, 0))
        cpu_after, elapsed = cpu_seconds(pids), time.time() - started
        output, _ = load.communicate(timeout=120)
        report = json.loads(output.strip().splitlines()[-1])
        # Every request's spans reach weft within a second or two; then count them.
        time.sleep(3)
        dropped = dropped_telemetry() - dropped_before
        sent = report["sent"] + 1  # and the readiness probe (skipped requests were never sent)
        gateway_spans = sql("SELECT count(*) FROM spans WHERE service_name = 'weft-gateway' AND kind = 'SERVER'")[0][0]
        mobile_spans = sql(
            "SELECT count(*) FROM spans WHERE service_name = 'crm-mobile' AND kind = 'SERVER' AND name LIKE '% /api/%'"
        )[0][0]
        cores = {part: (cpu_after.get(part, 0) - cpu_before.get(part, 0)) / elapsed for part in cpu_after}
        return report, sent, gateway_spans, mobile_spans, dropped, cores
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            demo.kill()
        demo_log.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="250,500,1000,1500,2000")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--weft", default="target/release/weft")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="weft-demo-bench-")
    parts = ["weft (collector + query)", "gateway", "sidecars", "services", "control plane", "load generator"]
    print("| target req/s | achieved | p50 ms | p99 ms | errors | requests → gateway spans → crm-mobile spans | dropped telemetry | "
          + " | ".join(f"{p} (cores)" for p in parts) + " | total cores |")
    print("|" + "---|" * (8 + len(parts)))
    try:
        for rate in [float(r) for r in args.rates.split(",")]:
            report, sent, gateway, mobile, dropped, cores = measure(args.weft, rate, args.warmup, args.duration, work)
            complete = "complete" if sent == gateway == mobile and dropped == 0 else "INCOMPLETE"
            print(f"| {rate:.0f} | {report['achieved_rate']:.0f} | {report['p50_ms']:.1f} | {report['p99_ms']:.1f} | "
                  f"{report['error_rate'] * 100:.2f} % | {sent} → {gateway} → {mobile} ({complete}) | {dropped:.0f} | "
                  + " | ".join(f"{cores.get(p, 0):.2f}" for p in parts)
                  + f" | {sum(cores.values()):.2f} |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
