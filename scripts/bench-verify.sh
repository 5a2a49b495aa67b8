#!/usr/bin/env bash
# What migrate's per-step verification (src/migrate/verify.rs) costs on a large member; prints
# figures from migrate's own log, asserts nothing. Seeds KEYS keys (default 200000, 64-byte
# values) with etcd 3.3.25, then runs, with fast elections:
#   1. migrate 3.3.25 -> 3.5.30 (step 1 starts 3.4.23): backup, the extra start of 3.3.25 that
#      reads the data before the step, the read while 3.4.23 runs;
#   2. migrate 3.5.30 -> 3.4.23 (snapshot downgrade): the read before the snapshot, the extra
#      start of 3.4.23 on the restored data before the swap.
# Usage: scripts/bench-verify.sh [KEYS]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
export BENCH_KEYS=${1:-200000}
export ETCD_BIN_DIR=${ETCD_BIN_DIR:-$repo/.cache/etcd-bin}
cargo build --release --quiet --manifest-path "$repo/Cargo.toml" --bin migrate
export MIGRATE=$repo/target/release/migrate
exec python3 - <<'EOF'
import base64, json, os, re, shutil, signal, socket, subprocess, tempfile, time, urllib.request
from datetime import datetime

BIN, MIGRATE, KEYS = os.environ["ETCD_BIN_DIR"], os.environ["MIGRATE"], int(os.environ["BENCH_KEYS"])
FAST = ["--heartbeat-interval=10", "--election-timeout=100"]
work = tempfile.mkdtemp(prefix="bench-verify.")

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

cport, pport, name = free_port(), free_port(), "bench"
url, peer = f"http://127.0.0.1:{cport}", f"http://127.0.0.1:{pport}"
b64 = lambda b: base64.b64encode(b).decode()

def post(path, body, timeout=30):
    req = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())

def migrate(data, target):
    t0 = time.monotonic()
    r = subprocess.run([MIGRATE, "--data-dir", data, "--name", name, "--port", str(cport),
        "--peer-port", str(pport), "--initial-cluster", f"{name}={peer}", "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer, "--bin-dir", BIN, "--target-version", target,
        "--target-storage", "etcd3", "--etcd-server-extra-args", " ".join(FAST)],
        env={"PATH": os.environ["PATH"], "DO_NOT_MOVE_BINARIES": "true"}, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        raise SystemExit("migrate failed:\n" + r.stderr)
    return wall, r.stderr

def figures(log):
    out = []
    for line in log.splitlines():
        m = re.search(r"(step \d+: (before|after).*serves .*\(read in [^)]*\))", line) or \
            re.search(r"(step \d+: (backed up|extra start).*)", line)
        if m:
            out.append("    " + m.group(1))
    return out

try:
    data = os.path.join(work, "data")
    p = subprocess.Popen([f"{BIN}/etcd-3.3.25", "--name", name, "--data-dir", data,
        "--listen-client-urls", url, "--advertise-client-urls", url, "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer, "--initial-cluster", f"{name}={peer}", *FAST],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(400):
        try:
            post("/v3beta/kv/range", {"key": "AA=="}, 1); break
        except Exception:
            time.sleep(0.05)
    t0 = time.monotonic()
    for i in range(0, KEYS, 100):
        ops = [{"request_put": {"key": b64(b"/registry/key%07d" % j), "value": b64(b"v" * 64)}}
               for j in range(i, min(i + 100, KEYS))]
        post("/v3beta/kv/txn", {"success": ops})
    p.send_signal(signal.SIGTERM); p.wait()
    open(os.path.join(data, "version.txt"), "w").write("3.3.25/etcd3")
    db = os.path.getsize(os.path.join(data, "member/snap/db")) // (1 << 20)
    print(f"seeded {KEYS} keys with etcd 3.3.25 in {time.monotonic() - t0:.0f} s; db {db} MiB")
    for target in ("3.5.30", "3.4.23"):
        wall, log = migrate(data, target)
        print(f"migrate -> {target}: {wall * 1000:.0f} ms in all; verification figures from its log:")
        print("\n".join(figures(log)))
finally:
    shutil.rmtree(work, ignore_errors=True)
EOF
