//! TLS as kubeadm runs etcd: a real etcd with a self-signed CA and --client-cert-auth on its
//! https:// client URL, scraped by the monitor with --cacert/--cert/--key. Certificates are
//! made here with the openssl CLI (SAN IP:127.0.0.1, as rustls and Go both require).
mod common;
mod monitor_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use etcdtools::etcd::client::{HttpClient, TlsFiles};
use etcdtools::etcd::process::{free_ports, EtcdProcess, EtcdSpec};
use monitor_support::*;

/// ca.crt, server.{crt,key} (SAN IP:127.0.0.1), client.{crt,key}; and other-ca.crt, a CA
/// that signed nothing here.
fn make_certs(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        let (key, crt, subj) = (
            format!("{ca}.key"),
            format!("{ca}.crt"),
            format!("/CN={ca}"),
        );
        args.extend([
            "-keyout",
            &key,
            "-out",
            &crt,
            "-days",
            "2",
            "-subj",
            &subj,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &args);
    }
    for (name, usage) in [
        ("server", "serverAuth,clientAuth"),
        ("client", "clientAuth"),
    ] {
        let (key, csr, crt, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        std::fs::write(
            dir.join(&ext),
            format!(
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n\
                 basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            ),
        )
        .unwrap();
        let mut args = vec!["req"];
        args.extend(ec);
        let subj = format!("/CN={name}");
        args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &args);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
}

#[test]
fn scrapes_etcd_that_requires_client_certificates() {
    let temp = TempDir::new("monitor-tls");
    let dir = temp.path();
    make_certs(dir);
    let p = |f: &str| dir.join(f).display().to_string();

    for version in [V3_4, V3_5_1] {
        let ports = free_ports(2).unwrap();
        let mut spec = EtcdSpec::single(
            &etcd_bin(version),
            "tls",
            &dir.join(format!("data-{version}")),
            ports[0],
            ports[1],
        );
        let url = format!("https://127.0.0.1:{}", ports[0]);
        spec.client_urls = vec![url.clone()];
        spec.extra_args = vec![
            format!("--cert-file={}", p("server.crt")),
            format!("--key-file={}", p("server.key")),
            format!("--trusted-ca-file={}", p("ca.crt")),
            "--client-cert-auth".into(),
        ];
        let tls = TlsFiles {
            ca: Some(dir.join("ca.crt")),
            cert: Some(dir.join("client.crt")),
            key: Some(dir.join("client.key")),
        };
        let client = HttpClient::new(&tls).unwrap();
        let mut etcd = EtcdProcess::start(&spec).unwrap();
        etcd.wait_ready(&client, Duration::from_secs(30)).unwrap();

        let once = |extra: &[String]| {
            let mut args = vec![
                "--once".to_string(),
                format!("--etcd-metrics-scrape-uri={url}/metrics"),
                format!("--etcd-version-scrape-uri={url}/version"),
                "--scrape-timeout=5s".to_string(),
            ];
            args.extend(extra.iter().cloned());
            Command::new(MONITOR_BIN).args(&args).output().unwrap()
        };
        let all = [
            format!("--cacert={}", p("ca.crt")),
            format!("--cert={}", p("client.crt")),
            format!("--key={}", p("client.key")),
        ];
        let out = once(&all);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let parsed = plain(&text);
        // The version came over https from /version (the gauge would say the same, so also
        // check the log has no fallback warning).
        assert_eq!(
            parsed.series[&format!("etcd_version_info{{binary_version=\"{version}\"}}")],
            1.0
        );
        assert!(!String::from_utf8_lossy(&out.stderr).contains("cannot read etcd's version"));
        assert_eq!(parsed.series["etcd_version_monitor_up"], 1.0);
        assert!(parsed.types.contains_key("etcd_grpc_requests_total"));
        let direct = client
            .get_text(&format!("{url}/metrics"), Duration::from_secs(5), 1 << 26)
            .unwrap();
        promtool_clean(&text, &direct);

        // Without the client certificate etcd refuses us; with the wrong CA we refuse etcd.
        let out = once(&all[..1]);
        assert_eq!(out.status.code(), Some(1), "no client cert accepted?");
        eprintln!(
            "without --cert: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let out = once(&[
            format!("--cacert={}", p("other-ca.crt")),
            all[1].clone(),
            all[2].clone(),
        ]);
        assert_eq!(out.status.code(), Some(1), "wrong CA accepted?");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("cannot scrape etcd"), "{err}");
        eprintln!("with another CA: {}", err.trim());

        etcd.stop(Duration::from_secs(10)).unwrap();
    }
}
