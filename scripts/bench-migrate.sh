#!/usr/bin/env bash
# Benchmark of migrate on real etcd; prints figures and ratios, asserts nothing.
#   1. rewrite-only step (3.4.23 -> 3.5.1, one minor behind): migrate's wall time;
#   2. time to healthy of etcd 3.5.1 on the data: alone (polled every 5 ms by this script) vs
#      inside migrate (its "ready after", polled every 50 ms), and migrate's detection delay
#      (its "is up" log line minus the moment etcd printed "ready to serve client requests");
#   3. a real downgrade 3.5.1 -> 3.4.23: migrate's wall time vs the sum of the same parts run
#      by hand (etcd start until healthy, etcdctl snapshot save, stop, etcdctl restore), and
#      the part of migrate's time spent in the pre-flight checks (integrity check of the data).
# Twice: with etcd's default election timeout (1 s, randomised, so single figures scatter by
# several hundred ms) and with --heartbeat-interval=10 --election-timeout=100 (steady figures
# for the overhead). Usage: scripts/bench-migrate.sh [KEYS] [RUNS] (defaults 2000, 5; medians).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
export BENCH_KEYS=${1:-2000} BENCH_RUNS=${2:-5}
export ETCD_BIN_DIR=${ETCD_BIN_DIR:-$repo/.cache/etcd-bin}
cargo build --release --quiet --manifest-path "$repo/Cargo.toml" --bin migrate
export MIGRATE=$repo/target/release/migrate
exec python3 - <<'EOF'
import base64, json, os, re, shutil, signal, socket, statistics, subprocess, tempfile, time, urllib.request
from datetime import datetime

BIN, MIGRATE = os.environ["ETCD_BIN_DIR"], os.environ["MIGRATE"]
KEYS, RUNS = int(os.environ["BENCH_KEYS"]), int(os.environ["BENCH_RUNS"])
work = tempfile.mkdtemp(prefix="bench-migrate.")
procs = []

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

cport, pport, name = free_port(), free_port(), "bench"
url, peer = f"http://127.0.0.1:{cport}", f"http://127.0.0.1:{pport}"
b64 = lambda b: base64.b64encode(b).decode()

def post(path, body, timeout=2):
    req = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())

def healthy():
    try:
        with urllib.request.urlopen(url + "/health", timeout=1) as r:
            if json.loads(r.read()).get("health") != "true":
                return False
        post("/v3/kv/range", {"key": "AA=="}, 1)
        return True
    except Exception:
        return False

def start_etcd(version, data, extra):
    p = subprocess.Popen([f"{BIN}/etcd-{version}", "--name", name, "--data-dir", data,
        "--listen-client-urls", url, "--advertise-client-urls", url, "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer, "--initial-cluster", f"{name}={peer}", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={"PATH": os.environ["PATH"]})
    procs.append(p)
    return p

def wait_healthy(p):
    while not healthy():
        if p.poll() is not None:
            raise SystemExit("etcd exited")
        time.sleep(0.005)

def stop(p):
    p.send_signal(signal.SIGTERM); p.wait()

def tool(args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={"ETCDCTL_API": "3", "PATH": os.environ["PATH"]}, timeout=120)

def run_migrate(data, target, extra):
    t0 = time.monotonic()
    r = subprocess.run([MIGRATE, "--data-dir", data, "--name", name, "--port", str(cport),
        "--peer-port", str(pport), "--initial-cluster", f"{name}={peer}", "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer, "--bin-dir", BIN, "--bundled-versions", "3.4.23,3.5.0,3.5.1",
        "--target-version", target.split("/")[0], "--target-storage", target.split("/")[1],
        "--etcd-server-extra-args", " ".join(extra), "--log-level", "debug"],
        env={"PATH": os.environ["PATH"], "DO_NOT_MOVE_BINARIES": "true"}, capture_output=True, text=True)
    wall = (time.monotonic() - t0) * 1000
    if r.returncode != 0:
        raise SystemExit("migrate failed:\n" + r.stderr)
    return wall, r.stderr

def log_ts(line):
    return datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f").timestamp() * 1000

def fresh(dst, version_txt=None):
    for d in (dst, dst + ".bak", dst + ".snapshot.db", dst + ".restore"):
        shutil.rmtree(d, ignore_errors=True)
    # --sparse=always keeps the WAL's preallocated tail a hole, as etcd leaves it (a plain copy
    # writes 64 MB of zeros, which the integrity check then has to read).
    subprocess.run(["cp", "-a", "--sparse=always", seed, dst], check=True)
    if version_txt:
        open(os.path.join(dst, "version.txt"), "w").write(version_txt)

try:
    seed = os.path.join(work, "seed")
    p = start_etcd("3.5.1", seed, [])
    wait_healthy(p)
    for i in range(0, KEYS, 100):
        ops = [{"request_put": {"key": b64(b"/registry/key%06d" % j), "value": b64(b"v" * 64)}}
               for j in range(i, min(i + 100, KEYS))]
        post("/v3/kv/txn", {"success": ops}, 10)
    stop(p)
    open(os.path.join(seed, "version.txt"), "w").write("3.5.1/etcd3")
    print(f"seeded {KEYS} keys; db {os.path.getsize(os.path.join(seed, 'member/snap/db')) // 1024} KiB; {RUNS} runs, medians in ms")
    d = os.path.join(work, "data")
    for label, extra in (("default election timeout", []),
                         ("fast election (--heartbeat-interval=10 --election-timeout=100)",
                          ["--heartbeat-interval=10", "--election-timeout=100"])):
        f = {k: [] for k in ("rewrite", "alone", "inside", "detect", "start", "snap", "stop", "restore", "parts", "migrate", "preflight")}
        for _ in range(RUNS):
            fresh(d, "3.4.23/etcd3")
            f["rewrite"].append(run_migrate(d, "3.5.1/etcd3", extra)[0])
            fresh(d)
            t0 = time.monotonic(); p = start_etcd("3.5.1", d, extra); wait_healthy(p); t1 = time.monotonic()
            tool([f"{BIN}/etcdctl-3.5.1", "--endpoints", url, "snapshot", "save", d + ".snapshot.db"]); t2 = time.monotonic()
            stop(p); t3 = time.monotonic()
            tool([f"{BIN}/etcdctl-3.4.23", "snapshot", "restore", d + ".snapshot.db", "--data-dir", d + ".restore",
                  "--name", name, "--initial-advertise-peer-urls", peer, "--initial-cluster", f"{name}={peer}"]); t4 = time.monotonic()
            for k, a, b in (("start", t0, t1), ("snap", t1, t2), ("stop", t2, t3), ("restore", t3, t4), ("parts", t0, t4)):
                f[k].append((b - a) * 1000)
            f["alone"].append((t1 - t0) * 1000)
            fresh(d)
            wall, log = run_migrate(d, "3.4.23/etcd3", extra)
            assert open(os.path.join(d, "version.txt")).read() == "3.4.23/etcd3"
            f["migrate"].append(wall)
            m = re.search(r"ready after ([0-9.]+)(ms|s|µs)\)", log)
            f["inside"].append(float(m.group(1)) * {"ms": 1, "s": 1000, "µs": 0.001}[m.group(2)])
            lines = log.splitlines()
            ready = next(l for l in lines if "ready to serve client requests" in l)
            up = next(l for l in lines if "is up (etcd" in l)
            f["detect"].append(log_ts(up) - log_ts(ready))
            plan_line = next(l for l in lines if "  step 1:" in l)
            performing = next(l for l in lines if "Performing etcd" in l)
            f["preflight"].append(log_ts(performing) - log_ts(plan_line))
        md = {k: statistics.median(v) for k, v in f.items()}
        print(f"== {label}")
        print(f"rewrite-only step (3.4.23 -> 3.5.1): migrate process wall {md['rewrite']:.0f}")
        print(f"etcd 3.5.1 time to healthy: alone {md['alone']:.0f}, inside migrate {md['inside']:.0f} "
              f"(difference {md['inside'] - md['alone']:+.0f}); migrate noticed {md['detect']:.0f} after etcd printed 'ready to serve'")
        print(f"downgrade by hand: start {md['start']:.0f} + snapshot {md['snap']:.0f} + stop {md['stop']:.0f} + restore {md['restore']:.0f} = {md['parts']:.0f}")
        print(f"downgrade inside migrate (whole process): {md['migrate']:.0f}; overhead {md['migrate'] - md['parts']:+.0f} "
              f"(target < 100 per step); ratio {md['migrate'] / md['parts']:.2f}")
        print(f"  of which pre-flight (disk space + integrity check of WAL/snap/db): {md['preflight']:.0f}; "
              f"overhead without it {md['migrate'] - md['parts'] - md['preflight']:+.0f}")
    print("(the original polls every 500 ms: up to +500 per etcd start from polling alone)")
finally:
    for p in procs:
        if p.poll() is None:
            p.kill()
    shutil.rmtree(work, ignore_errors=True)
EOF
