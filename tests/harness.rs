//! The harness itself on real etcd: every version starts, serves, and stops cleanly.
mod common;

use common::*;
use etcdtools::etcd::client::HttpClient;
use etcdtools::etcd::process::run_tool;
use std::time::Duration;

#[test]
fn every_version_starts_serves_and_stops() {
    for version in [V3_4, V3_5_0, V3_5_1] {
        let mut etcd = TestEtcd::start(version, &[]);
        let text = HttpClient::plain()
            .get_text(
                &format!("{}/version", etcd.client_url),
                Duration::from_secs(5),
                1 << 16,
            )
            .unwrap();
        assert!(
            text.contains(&format!("\"etcdserver\":\"{version}\"")),
            "{text}"
        );
        let pid = etcd.process.as_ref().unwrap().pid().unwrap();
        etcd.stop();
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "etcd {version} still running"
        );
        assert!(etcd.data_dir.join("member/snap/db").exists());
    }
}

#[test]
fn three_member_cluster_serves_through_etcdctl() {
    let cluster = TestCluster::start(V3_5_1, 3, &[]);
    let out = run_tool(
        &etcdctl_bin(V3_5_1),
        &[
            "--endpoints".into(),
            cluster.endpoints(),
            "member".into(),
            "list".into(),
        ],
        &[("ETCDCTL_API", "3")],
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(out.stdout.lines().count(), 3, "{}", out.stdout);
}

#[test]
fn etcd_with_a_bad_flag_fails_with_its_output() {
    let dir = TempDir::new("badflag");
    let ports = etcdtools::etcd::process::free_ports(2).unwrap();
    let mut spec = etcdtools::etcd::process::EtcdSpec::single(
        &etcd_bin(V3_4),
        "x",
        &dir.path().join("d"),
        ports[0],
        ports[1],
    );
    spec.extra_args = vec!["--no-such-flag".into()];
    let mut p = etcdtools::etcd::process::EtcdProcess::start(&spec).unwrap();
    let err = p
        .wait_ready(&HttpClient::plain(), Duration::from_secs(10))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("exited before it was ready") && err.contains("no-such-flag"),
        "{err}"
    );
}

#[test]
fn a_port_taken_meanwhile_is_reported_as_in_use_before_any_data() {
    // What TestEtcd::start_on retries on: etcd exits early naming the taken port, and has
    // written nothing to its data dir.
    use etcdtools::etcd::process::{free_ports, EtcdProcess, EtcdSpec, ProcessError};
    let dir = TempDir::new("taken-port");
    let ports = free_ports(2).unwrap();
    let _taken = std::net::TcpListener::bind(("127.0.0.1", ports[0])).unwrap();
    for version in [V3_4, V3_5_1] {
        let data = dir.path().join(version);
        let spec = EtcdSpec::single(&etcd_bin(version), "x", &data, ports[0], ports[1]);
        let mut p = EtcdProcess::start(&spec).unwrap();
        match p.wait_ready(&HttpClient::plain(), Duration::from_secs(20)) {
            Err(ProcessError::ExitedEarly { output, .. }) => assert!(
                output.iter().any(|l| l.contains("address already in use")),
                "{version}: {output:?}"
            ),
            other => panic!("{version}: {other:?}"),
        }
        assert!(!data.join("member").exists(), "{version} wrote data");
    }
}
