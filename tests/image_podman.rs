//! The image for real: Dockerfile.busybox built with podman by scripts/image.sh (local busybox
//! base, our static binaries and real etcd through build contexts, no registry), inspected,
//! compared with scripts/rootfs.sh's tree, booted with `podman run` on data dirs written by
//! real etcd (upgrade, etcd2 -> etcd3, downgrade, bad input), and run as pods from the repo's
//! manifests with `podman kube play`. Containers use the host network to meet etcd on
//! 127.0.0.1 with free ports. Needs root podman (scripts/setup.sh installs it); a missing
//! podman fails these tests. The image is built once per run (tests/image_support).
mod common;
mod image_support;
mod monitor_support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use etcdtools::base64 as b64;
use etcdtools::etcd::client::HttpClient;
use etcdtools::etcd::process::{free_ports, run_tool, EtcdSpec};
use image_support::*;

/// docs/image.md states this bound for the image with 3.4.23 and 3.5.1.
const MAX_IMAGE_BYTES: u64 = 200_000_000;
/// Fast elections for a single member (as tests/migrate.rs), passed as a manifest would.
const FAST: &[&str] = &["--heartbeat-interval=10", "--election-timeout=100"];

fn http() -> HttpClient {
    HttpClient::plain()
}

/// `n` keys (and one with binary bytes) written through etcd's gateway at `url`.
fn put_keys(url: &str, n: usize, tag: &str) -> Kv {
    let mut kv: Kv = (0..n)
        .map(|i| {
            let k = format!("/registry/k{i:04}").into_bytes();
            (k, format!("value-{i}-{tag}").into_bytes())
        })
        .collect();
    kv.insert(b"/registry/bin\x00\xff".to_vec(), vec![0, 1, 2, 255]);
    for (k, v) in &kv {
        gateway_put(url, "/v3", k, v);
    }
    kv
}

fn all_keys(url: &str) -> Kv {
    gateway_all_keys(url)
}

fn get(url: &str) -> Option<String> {
    http().get_text(url, Duration::from_secs(5), 1 << 24).ok()
}

/// Polls `url` until it answers with a body containing `needle`; fails early when `alive`
/// says the process serving it is gone (with what `alive` returns as the reason).
fn wait_for(url: &str, needle: &str, timeout: Duration, alive: &dyn Fn() -> Result<(), String>) {
    let deadline = Instant::now() + timeout;
    loop {
        if get(url).is_some_and(|b| b.contains(needle)) {
            return;
        }
        if let Err(why) = alive() {
            panic!("{url} never answered {needle:?}: {why}");
        }
        assert!(
            Instant::now() < deadline,
            "{url} did not answer {needle:?} within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every path under `root` with its mode and content (files) or link target; `*.lock` left
/// out (taking the lock is the one thing a refused run may leave beside the data dir).
fn tree(root: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        if rel.to_string_lossy().ends_with(".lock") {
            continue;
        }
        let content = if m.file_type().is_symlink() {
            fs::read_link(&p)
                .unwrap()
                .into_os_string()
                .into_encoded_bytes()
        } else if m.is_dir() {
            stack.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            vec![]
        } else {
            fs::read(&p).unwrap()
        };
        out.insert(rel, (m.mode(), content));
    }
    out
}

// ---------------------------------------------------------------------------------------
// The image itself

#[test]
fn image_builds_without_a_registry_shows_what_the_docs_promise_and_is_reused() {
    let img = image();
    let docs = fs::read_to_string(Path::new(REPO).join("docs/image.md")).unwrap();
    for promise in [
        "`EXPOSE 2379 2380 9101`",
        "no `ENTRYPOINT`",
        "`CMD [\"/usr/local/bin/etcd\"]`",
        "under 200 MB",
        "io.k8s.etcd.bundled-versions",
    ] {
        assert!(
            docs.contains(promise),
            "docs/image.md no longer says {promise}"
        );
    }
    let out = ok(podman(&["image", "inspect", &img.tag]));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let cfg = &json[0]["Config"];
    let mut ports: Vec<&str> = cfg["ExposedPorts"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    ports.sort();
    assert_eq!(ports, ["2379/tcp", "2380/tcp", "9101/tcp"]);
    assert!(
        cfg["Entrypoint"].is_null() || cfg["Entrypoint"] == serde_json::json!([]),
        "{cfg}"
    );
    assert_eq!(cfg["Cmd"], serde_json::json!(["/usr/local/bin/etcd"]));
    assert!(cfg["Env"].as_array().unwrap().iter().any(|e| e
        .as_str()
        .unwrap()
        .starts_with("PATH=/usr/local/sbin:/usr/local/bin:")));
    assert!(cfg["User"].as_str().unwrap_or("").is_empty(), "{cfg}");
    let labels = &json[0]["Labels"];
    assert_eq!(labels["io.k8s.etcd.bundled-versions"], BUNDLED);
    assert_eq!(labels["org.opencontainers.image.title"], "etcd");
    assert!(labels["org.opencontainers.image.licenses"]
        .as_str()
        .unwrap()
        .contains("GPL-2.0 (busybox)"));
    assert_eq!(json[0]["Architecture"], "amd64");
    assert_eq!(json[0]["Id"], img.id.as_str());
    assert!(
        img.size < MAX_IMAGE_BYTES,
        "image is {} bytes, over {MAX_IMAGE_BYTES}",
        img.size
    );
    eprintln!("image size: {} bytes", img.size);

    // Same inputs, same image: the build-<hash> tag is reused, nothing is built.
    let again = image_sh();
    assert!(again.status.success(), "{}", text(&again));
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(
        stdout.contains(&format!("image {}\n", img.tag)),
        "{}",
        text(&again)
    );
    assert!(
        stdout.contains(&format!("id {}\n", img.id)),
        "{}",
        text(&again)
    );
    assert!(text(&again).contains("up to date"), "{}", text(&again));
}

/// One entry of a file tree: kind, mode, size and a content fingerprint (or link target).
#[derive(Debug, PartialEq)]
struct Entry {
    kind: char,
    mode: u32,
    size: u64,
    content: String,
}

/// The tree under `root`, without what a container runtime provides instead of the image
/// (/dev's nodes, /etc/hosts, /proc, /sys) and rootfs.sh's marker; the root dir itself (its
/// mode is the mount's) is left out too.
fn image_tree(root: &Path) -> BTreeMap<String, Entry> {
    let skip = ["/etc/hosts", "/.etcd-image-rootfs"];
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = format!("/{}", p.strip_prefix(root).unwrap().display());
        let runtime = ["/dev/", "/proc/", "/sys/"]
            .iter()
            .any(|d| rel.starts_with(d));
        if rel == "/" || runtime || skip.contains(&rel.as_str()) {
            if m.is_dir() && !runtime {
                stack.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            }
            continue;
        }
        let (kind, size, content) = if m.file_type().is_symlink() {
            ('l', 0, fs::read_link(&p).unwrap().display().to_string())
        } else if m.is_dir() {
            stack.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            ('d', 0, String::new())
        } else if m.is_file() {
            let bytes = fs::read(&p).unwrap();
            (
                'f',
                m.len(),
                format!("crc32c {:08x}", crc32c::crc32c(&bytes)),
            )
        } else {
            ('?', 0, String::new())
        };
        let mode = m.permissions().mode() & 0o7777;
        out.insert(
            rel,
            Entry {
                kind,
                mode,
                size,
                content,
            },
        );
    }
    out
}

/// The image's filesystem is exactly what scripts/rootfs.sh builds (the tree the chroot tests
/// run in): same paths, kinds, modes, sizes, contents and link targets, owned by root.
#[test]
fn image_rootfs_equals_what_rootfs_sh_makes() {
    let img = image();
    let temp = TempDir::new("image-rootfs");
    let rootfs = temp.path().join("rootfs");
    let mut cmd = Command::new(Path::new(REPO).join("scripts/rootfs.sh"));
    cmd.arg(&rootfs)
        .env("BUNDLED_ETCD_VERSIONS", BUNDLED)
        .env("ETCD_BIN_DIR", etcd_bin_dir())
        .env("STATIC_BIN_DIR", static_bin_dir())
        .env("ROOTFS_STRICT", "1");
    ok(cmd);
    let mount = MountedImage::mount(&img.tag);
    let mounted = &mount.path;
    let in_image = image_tree(mounted);
    let owners: Vec<String> = in_image
        .keys()
        .filter(|p| {
            let m = fs::symlink_metadata(mounted.join(p.trim_start_matches('/'))).unwrap();
            m.uid() != 0 || m.gid() != 0
        })
        .cloned()
        .collect();
    drop(mount);
    let from_script = image_tree(&rootfs);
    let only = |a: &BTreeMap<String, Entry>, b: &BTreeMap<String, Entry>| {
        a.keys()
            .filter(|k| !b.contains_key(*k))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(
        only(&in_image, &from_script).is_empty() && only(&from_script, &in_image).is_empty(),
        "only in the image: {:?}\nonly in rootfs.sh's tree: {:?}",
        only(&in_image, &from_script),
        only(&from_script, &in_image)
    );
    for (path, entry) in &in_image {
        assert_eq!(Some(entry), from_script.get(path), "{path} differs");
    }
    assert!(owners.is_empty(), "not owned by root: {owners:?}");
    assert!(in_image.len() > 250, "{} entries?", in_image.len());
    for must in [
        "/usr/local/bin/migrate",
        "/lib64/ld-linux-x86-64.so.2",
        "/bin/sh",
    ] {
        assert!(in_image.contains_key(must), "{must} missing");
    }
}

// ---------------------------------------------------------------------------------------
// Booting it on real data

/// A host dir mounted at /var/etcd (the data dir is /var/etcd/data, as in the manifests)
/// and the member's ports: client, peer, and the client port of migrate's own etcd.
struct Site {
    tmp: TempDir,
    client: u16,
    peer: u16,
    migrate_client: u16,
}

impl Site {
    fn new(label: &str) -> Site {
        let tmp = TempDir::new(&format!("image-{label}"));
        fs::create_dir_all(tmp.path().join("var-etcd")).unwrap();
        let ports = free_ports(3).unwrap();
        Site {
            tmp,
            client: ports[0],
            peer: ports[1],
            migrate_client: ports[2],
        }
    }

    fn var_etcd(&self) -> PathBuf {
        self.tmp.path().join("var-etcd")
    }

    fn data(&self) -> PathBuf {
        self.var_etcd().join("data")
    }

    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }

    fn version_txt(&self) -> String {
        fs::read_to_string(self.data().join("version.txt")).unwrap_or_default()
    }

    /// Member `etcd-h` on this site's ports, with fast elections.
    fn spec(&self, binary: &Path, data_dir: &Path) -> EtcdSpec {
        let mut spec = EtcdSpec::single(binary, "etcd-h", data_dir, self.client, self.peer);
        spec.extra_args = FAST.iter().map(|s| s.to_string()).collect();
        spec
    }

    /// Real etcd `version` on the host, on this site's data dir (to seed it).
    fn host_etcd(&self, version: &str, extra: &[&str]) -> TestEtcd {
        let mut spec = self.spec(&etcd_bin(version), &self.data());
        spec.extra_args.extend(extra.iter().map(|s| s.to_string()));
        TestEtcd::start_spec(version, spec)
    }

    /// `podman run` of the image as the manifest runs it: migrate-if-needed.sh with a static
    /// pod's env for `target` (`<version>/<storage>`), and when it succeeds, exec
    /// etcd-<version> on /var/etcd/data.
    fn boot(&self, target: &str) -> Container {
        let (version, storage) = target.split_once('/').unwrap();
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let env = [
            ("TARGET_STORAGE", storage.to_string()),
            ("TARGET_VERSION", version.to_string()),
            ("DATA_DIRECTORY", "/var/etcd/data".into()),
            ("ETCD_HOSTNAME", "h".into()),
            ("INITIAL_CLUSTER", format!("etcd-h={peer}")),
            ("LISTEN_PEER_URLS", peer.clone()),
            ("INITIAL_ADVERTISE_PEER_URLS", peer),
            (
                "LISTEN_CLIENT_URLS",
                format!("http://127.0.0.1:{}", self.migrate_client),
            ),
            ("ETCD_CREDS", FAST.join(" ")),
            ("DO_NOT_MOVE_BINARIES", "true".into()),
        ];
        let binary = format!("/usr/local/bin/etcd-{version}");
        let spec = self.spec(Path::new(&binary), Path::new("/var/etcd/data"));
        let mut args: Vec<String> = vec![
            "--network".into(),
            "host".into(),
            "-v".into(),
            format!("{}:/var/etcd", self.var_etcd().display()),
        ];
        for (k, v) in env {
            args.extend(["-e".to_string(), format!("{k}={v}")]);
        }
        args.extend([
            image().tag.clone(),
            "/bin/sh".into(),
            "-c".into(),
            "set -e; /usr/local/bin/migrate-if-needed.sh; exec \"$@\"".into(),
            "sh".into(),
            binary,
        ]);
        args.extend(spec.args());
        Container::run(&format!("boot-{version}"), &args)
    }

    /// Waits until etcd in `c` serves on the client port.
    fn wait_serving(&self, c: &Container) {
        let alive = || match c.exit_code() {
            Some(code) => Err(format!("the container exited {code}:\n{}", c.logs())),
            None => Ok(()),
        };
        wait_for(
            &format!("{}/health", self.client_url()),
            "\"health\":\"true\"",
            Duration::from_secs(90),
            &alive,
        );
    }

    fn server_version(&self) -> String {
        get(&format!("{}/version", self.client_url())).unwrap()
    }
}

/// First boot on an empty dir runs etcd 3.4.23 inside the image (Debian's, dynamically
/// linked: the image's glibc); the data it writes is then migrated to 3.5.1 by the next
/// container, whose etcd 3.5.1 serves every key.
#[test]
fn boot_upgrades_data_written_by_etcd_3_4_23_to_3_5_1() {
    let site = Site::new("up");
    let first = site.boot("3.4.23/etcd3");
    site.wait_serving(&first);
    assert!(site.server_version().contains("\"etcdserver\":\"3.4.23\""));
    let kv = put_keys(&site.client_url(), 50, "3.4.23");
    first.stop();
    assert_eq!(site.version_txt(), "3.4.23/etcd3");

    let second = site.boot("3.5.1/etcd3");
    site.wait_serving(&second);
    assert!(site.server_version().contains("\"etcdserver\":\"3.5.1\""));
    assert_eq!(all_keys(&site.client_url()), kv);
    assert_eq!(site.version_txt(), "3.5.1/etcd3");
    let logs = second.logs();
    assert!(logs.contains("Migration finished"), "{logs}");
}

/// etcd2 data (written by etcd 3.4.23 --enable-v2 through the v2 API) with TARGET_STORAGE
/// etcd3: converted, the TTL keys leased, upgraded to 3.5.1, and every key served over v3.
#[test]
fn boot_converts_etcd2_data_to_etcd3_and_serves_every_key() {
    let site = Site::new("v2");
    let etcd = site.host_etcd(V3_4, &["--enable-v2"]);
    let mut expect = Kv::new();
    for (k, v, ttl) in [
        ("/registry/pods/p1", "pod-1", None),
        ("/registry/pods/p2", "pod-2", None),
        ("/registry/events/e1", "event-1", Some("3600")),
    ] {
        let mut args = vec!["--endpoints", &etcd.client_url, "set", k, v];
        if let Some(t) = ttl {
            args.extend(["--ttl", t]);
        }
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        run_tool(
            &etcdctl_bin(V3_4),
            &args,
            &[("ETCDCTL_API", "2")],
            Duration::from_secs(10),
        )
        .unwrap();
        expect.insert(k.as_bytes().to_vec(), v.as_bytes().to_vec());
    }
    drop(etcd);
    fs::write(site.data().join("version.txt"), "3.4.23/etcd2").unwrap();

    let c = site.boot("3.5.1/etcd3");
    site.wait_serving(&c);
    assert!(site.server_version().contains("\"etcdserver\":\"3.5.1\""));
    assert_eq!(all_keys(&site.client_url()), expect);
    assert_eq!(site.version_txt(), "3.5.1/etcd3");
    // The conversion proved itself (src/migrate/verify.rs).
    let logs = c.logs();
    assert!(
        logs.contains("every v2 file is served through v3 with its value and revisions"),
        "{logs}"
    );
    let r = http()
        .post_json(
            &format!("{}/v3/kv/range", site.client_url()),
            &serde_json::json!({"key": b64::encode(b"/registry/events/e1")}),
            Duration::from_secs(5),
        )
        .unwrap();
    let lease = r["kvs"][0]["lease"].as_str().unwrap_or("0");
    assert_ne!(lease, "0", "the TTL key has no lease: {r}");
}

/// 3.5.1 data, TARGET_VERSION=3.4.23: downgraded inside the container by snapshot, and etcd
/// 3.4.23 (dynamically linked, in the image) serves every key.
#[test]
fn boot_downgrades_3_5_1_data_to_3_4_23() {
    let site = Site::new("down");
    let etcd = site.host_etcd(V3_5_1, &[]);
    let kv = put_keys(&etcd.client_url, 40, "3.5.1");
    drop(etcd);
    fs::write(site.data().join("version.txt"), "3.5.1/etcd3").unwrap();

    let c = site.boot("3.4.23/etcd3");
    site.wait_serving(&c);
    assert!(site.server_version().contains("\"etcdserver\":\"3.4.23\""));
    assert_eq!(all_keys(&site.client_url()), kv);
    assert_eq!(site.version_txt(), "3.4.23/etcd3");
}

/// Bad input inside the container: the container exits non-zero, its log says `Migration
/// failed:` and why, etcd never starts, and the data dir is unchanged byte for byte.
#[test]
fn bad_input_stops_the_container_and_changes_nothing() {
    let site = Site::new("bad");
    let etcd = site.host_etcd(V3_5_1, &[]);
    put_keys(&etcd.client_url, 100, "3.5.1");
    drop(etcd);
    fs::write(site.data().join("version.txt"), "3.5.1/etcd3").unwrap();

    let refuse = |target: &str, needle: &str| {
        let before = tree(&site.var_etcd());
        let c = site.boot(target);
        let code = c.wait(Duration::from_secs(60));
        let logs = c.logs();
        assert_ne!(code, 0, "{logs}");
        assert!(logs.contains("Migration failed: "), "{logs}");
        assert!(logs.contains(needle), "expected {needle:?} in: {logs}");
        let line = logs
            .lines()
            .find(|l| l.contains("Migration failed: "))
            .unwrap();
        eprintln!("{target}: exit {code}: {line}");
        assert!(!logs.contains("starting "), "an etcd was started: {logs}");
        assert_eq!(tree(&site.var_etcd()), before, "{target} changed the data");
    };
    // A version the image does not bundle.
    refuse("3.5.0/etcd3", "not one of the bundled versions");
    // A damaged db: half of it is gone.
    let db = site.data().join("member/snap/db");
    let len = fs::metadata(&db).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    refuse("3.4.23/etcd3", "member/snap/db");
}

// ---------------------------------------------------------------------------------------
// The manifests as pods

/// manifests/etcd.yaml and manifests/etcd-version-monitor.yaml, with this test's image,
/// names, ports and hostPath.
struct Manifests {
    etcd: PathBuf,
    /// The etcd container's name: `<pod>-<container>` under podman kube play.
    etcd_container: String,
    monitor: PathBuf,
    client: u16,
    metrics: u16,
    monitor_port: u16,
}

impl Manifests {
    /// `etcd_extra`: further replacements in manifests/etcd.yaml.
    fn write(dir: &Path, host_path: &Path, etcd_extra: &[(&str, String)]) -> Manifests {
        let p = free_ports(4).unwrap();
        let (client, peer, metrics, monitor_port) = (p[0], p[1], p[2], p[3]);
        let read = |f: &str| fs::read_to_string(Path::new(REPO).join("manifests").join(f)).unwrap();
        let image = format!("image: {}", image().tag);
        let etcd_pod = unique_name("etcd");
        let etcd = fill(
            &read("etcd.yaml"),
            &[
                etcd_extra,
                &[
                    ("image: localhost/etcdtools/etcd:3.5.1-0", image.clone()),
                    ("name: etcd-server", format!("name: {etcd_pod}")),
                    ("/mnt/master-pd/var/etcd", host_path.display().to_string()),
                    ("127.0.0.1:2379", format!("127.0.0.1:{client}")),
                    ("127.0.0.1:2380", format!("127.0.0.1:{peer}")),
                    ("127.0.0.1:2381", format!("127.0.0.1:{metrics}")),
                    ("port: 2381", format!("port: {metrics}")),
                ],
            ]
            .concat(),
        );
        let monitor = fill(
            &read("etcd-version-monitor.yaml"),
            &[
                ("image: localhost/etcdtools/etcd:3.5.1-0", image),
                (
                    "name: etcd-version-monitor\n  namespace",
                    format!("name: {}\n  namespace", unique_name("monitor")),
                ),
                ("127.0.0.1:2379", format!("127.0.0.1:{client}")),
                ("127.0.0.1:9101", format!("127.0.0.1:{monitor_port}")),
                ("port: 9101", format!("port: {monitor_port}")),
            ],
        );
        let m = Manifests {
            etcd: dir.join("etcd.yaml"),
            etcd_container: format!("{etcd_pod}-etcd-container"),
            monitor: dir.join("etcd-version-monitor.yaml"),
            client,
            metrics,
            monitor_port,
        };
        fs::write(&m.etcd, etcd).unwrap();
        fs::write(&m.monitor, monitor).unwrap();
        m
    }

    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }

    fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    /// The liveness probe's URL (host, port, path as the manifest says) answers healthy;
    /// fails at once, with the log, when the etcd container exits or is restarted.
    fn wait_healthy(&self) {
        let alive = || {
            let state = ok(podman(&[
                "inspect",
                "--format",
                "{{.State.Status}} {{.RestartCount}}",
                &self.etcd_container,
            ]));
            match state.trim() {
                "running 0" => Ok(()),
                other => {
                    let logs = output(podman(&["logs", &self.etcd_container]));
                    Err(format!("etcd container {other}:\n{}", text(&logs)))
                }
            }
        };
        wait_for(
            &format!("http://127.0.0.1:{}/health", self.metrics),
            "\"health\":\"true\"",
            Duration::from_secs(90),
            &alive,
        );
    }
}

/// The metric names the alert rules' expressions use.
fn alert_rule_metrics() -> Vec<String> {
    let rules =
        fs::read_to_string(Path::new(REPO).join("monitoring/etcd-version-alerts.yml")).unwrap();
    let mut names: Vec<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .flat_map(|e| e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|t| t.starts_with("etcd_"))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 2, "{names:?}");
    names
}

/// `podman kube play` of both manifests on an empty hostPath: etcd becomes healthy, the
/// monitor's /metrics passes promtool (and serves what the alert rules use), `podman kube down` leaves the data dir intact
/// (etcd-inspect check passes), and a second play serves the same data.
#[test]
fn pods_from_the_manifests_serve_and_keep_the_data() {
    let temp = TempDir::new("image-pods");
    let host_path = temp.path().join("var-etcd");
    let m = Manifests::write(temp.path(), &host_path, &[]);
    let mut etcd_pod = KubePod::play(&m.etcd);
    let _monitor_pod = KubePod::play(&m.monitor);
    m.wait_healthy();
    let kv = put_keys(&m.client_url(), 30, "pod");

    let metrics = format!("{}/metrics", m.monitor_url());
    wait_for(
        &metrics,
        "etcd_version_monitor_up 1",
        Duration::from_secs(30),
        &|| Ok(()),
    );
    let ours = get(&metrics).unwrap();
    assert!(
        ours.contains("etcd_version_info{binary_version=\"3.5.1\"}"),
        "{ours}"
    );
    let etcds = get(&format!("{}/metrics", m.client_url())).unwrap();
    monitor_support::promtool_clean(&ours, &etcds);
    for name in alert_rule_metrics() {
        assert!(
            ours.lines()
                .any(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{"))),
            "monitoring/etcd-version-alerts.yml uses {name}, which the monitor does not serve"
        );
    }

    etcd_pod.down();
    let data = host_path.join("data");
    assert_eq!(
        fs::read_to_string(data.join("version.txt")).unwrap(),
        "3.5.1/etcd3"
    );
    let check = Command::new(env!("CARGO_BIN_EXE_etcd-inspect"))
        .arg("check")
        .arg(&data)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));
    // etcd gone: the monitor still answers, and says so.
    wait_for(
        &metrics,
        "etcd_version_monitor_up 0",
        Duration::from_secs(30),
        &|| Ok(()),
    );

    let _again = KubePod::play(&m.etcd);
    m.wait_healthy();
    assert_eq!(all_keys(&m.client_url()), kv);
}

/// The manifest's `set -e`: when migrate-if-needed.sh fails (here: a TARGET_VERSION the image
/// does not bundle), etcd never starts; the container exits with the reason in its log and
/// is restarted (crash loop), and the data dir is not created.
#[test]
fn pod_whose_migration_fails_never_starts_etcd() {
    let temp = TempDir::new("image-pod-fails");
    let host_path = temp.path().join("var-etcd");
    let m = Manifests::write(
        temp.path(),
        &host_path,
        &[(
            "{name: TARGET_VERSION, value: 3.5.1}",
            "{name: TARGET_VERSION, value: 3.5.0}".into(),
        )],
    );
    let _pod = KubePod::play(&m.etcd);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let logs = text(&output(podman(&["logs", &m.etcd_container])));
        if logs.contains("Migration failed: ") {
            break;
        }
        assert!(Instant::now() < deadline, "no failure logged: {logs}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // That attempt must have ended (exited, or exited and restarted) before its log can show
    // that nothing ran after the failure.
    let state = loop {
        let state = ok(podman(&[
            "inspect",
            "--format",
            "{{.State.Status}} {{.RestartCount}}",
            &m.etcd_container,
        ]));
        let ended = match state.trim().split_once(' ') {
            Some((status, restarts)) => status == "exited" || restarts != "0",
            None => false,
        };
        if ended {
            break state;
        }
        assert!(Instant::now() < deadline, "still running: {state}");
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("after the failure: {}", state.trim());
    let logs = text(&output(podman(&["logs", &m.etcd_container])));
    assert!(logs.contains("not one of the bundled versions"), "{logs}");
    assert!(
        !logs.contains("etcd-3.5.0: not found"),
        "etcd was tried: {logs}"
    );
    assert!(get(&format!("{}/health", m.client_url())).is_none());
    assert!(!host_path.join("data").exists());
}
