#!/usr/bin/env bash
# What migrate's per-step verification (src/migrate/verify.rs) costs on a large member; prints
# figures from migrate's own log, asserts nothing. Seeds KEYS keys (default 200000, 64-byte
# values) with etcd 3.3.25, then runs, with fast elections:
#   1. migrate 3.3.25 -> 3.5.30 (step 1 starts 3.4.23): backup, the extra start of 3.3.25 that
#      reads the data before the step, the read while 3.4.23 runs;
#   2. migrate 3.5.30 -> 3.4.23 (snapshot downgrade): the read before the snapshot, the extra
#      start of 3.4.23 on the restored data before the swap.
#   3. with V2_KEYS > 0: migrate 3.4.23/etcd2 -> 3.4.23/etcd3 of V2_KEYS v2 files (64-byte
#      values, a quarter TTL keys under /registry/events; seeded through 3.4.23's v2 API, slow:
#      ~1 s per 1,000 keys): migrate's OWN peak RSS (VmHWM of its pid, polled; /usr/bin/time
#      would report the max over its etcd/etcdctl children) and the proof's figures.
# Usage: scripts/bench-verify.sh [KEYS] [V2_KEYS]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
export BENCH_KEYS=${1:-200000}
export BENCH_V2_KEYS=${2:-0}
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

def bench_v2v3(n):
    import concurrent.futures, urllib.parse
    data = os.path.join(work, "v2data")
    p = subprocess.Popen([f"{BIN}/etcd-3.4.23", "--name", name, "--data-dir", data, "--enable-v2",
        "--listen-client-urls", url, "--advertise-client-urls", url, "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer, "--initial-cluster", f"{name}={peer}", *FAST],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(400):
        try:
            urllib.request.urlopen(url + "/version", timeout=1).read(); break
        except Exception:
            time.sleep(0.05)
    def put(i):
        key = f"/registry/events/e{i:07d}" if i % 4 == 0 else f"/registry/pods/ns{i % 100}/p{i:07d}"
        body = {"value": "v" * 64, **({"ttl": "36000"} if i % 4 == 0 else {})}
        req = urllib.request.Request(url + "/v2/keys" + key, urllib.parse.urlencode(body).encode(), method="PUT")
        urllib.request.urlopen(req, timeout=30).read()
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        list(ex.map(put, range(n)))
    p.send_signal(signal.SIGTERM); p.wait()
    open(os.path.join(data, "version.txt"), "w").write("3.4.23/etcd2")
    print(f"seeded {n} v2 files with etcd 3.4.23 in {time.monotonic() - t0:.0f} s")
    t0 = time.monotonic()
    m = subprocess.Popen([MIGRATE, "--data-dir", data, "--name", name, "--port", str(cport),
        "--peer-port", str(pport), "--initial-cluster", f"{name}={peer}", "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer, "--bin-dir", BIN, "--target-version", "3.4.23",
        "--target-storage", "etcd3", "--bundled-versions", "3.4.23",
        "--etcd-server-extra-args", " ".join(FAST)],
        env={"PATH": os.environ["PATH"], "DO_NOT_MOVE_BINARIES": "true"},
        stderr=subprocess.PIPE, text=True)
    hwm, lines = [0], []
    def poll():
        while m.poll() is None:
            try:
                for l in open(f"/proc/{m.pid}/status"):
                    if l.startswith("VmHWM:"):
                        hwm[0] = int(l.split()[1])
            except OSError:
                pass
            time.sleep(0.05)
    import threading
    t = threading.Thread(target=poll); t.start()
    lines = m.stderr.read(); m.wait(); t.join()
    if m.returncode != 0:
        raise SystemExit("migrate failed:\n" + lines)
    print(f"migrate -> 3.4.23/etcd3: {time.monotonic() - t0:.1f} s in all; migrate's own peak RSS "
          f"(VmHWM) {hwm[0] // 1024} MiB; the proof from its log:")
    for l in lines.splitlines():
        if re.search(r"step 1: (before|after) the step", l):
            print("    " + l.split("] ", 1)[-1])

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
    if int(os.environ["BENCH_V2_KEYS"]):
        bench_v2v3(int(os.environ["BENCH_V2_KEYS"]))
finally:
    shutil.rmtree(work, ignore_errors=True)
EOF
