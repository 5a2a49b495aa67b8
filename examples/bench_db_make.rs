//! Makes a large etcd db for scripts/bench-db.sh: starts real etcd, puts KEYS keys of
//! VALUE_BYTES bytes through the JSON gateway in txns of 128 puts (4 clients), stops etcd
//! and copies `member/snap/db` to OUT.
//! `bench_db_make <etcd-binary> <out-db> <keys> <value-bytes>`
use std::path::PathBuf;
use std::time::{Duration, Instant};

use etcdtools::base64::encode as b64;
use etcdtools::etcd::client::HttpClient;
use etcdtools::etcd::process::{free_ports, EtcdProcess, EtcdSpec};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        return Err("usage: bench_db_make <etcd-binary> <out-db> <keys> <value-bytes>".into());
    }
    let (etcd, out) = (PathBuf::from(&args[1]), PathBuf::from(&args[2]));
    let keys: usize = args[3].parse()?;
    let value_bytes: usize = args[4].parse()?;
    let work = out.with_extension("work");
    let _ = std::fs::remove_dir_all(&work);
    let ports = free_ports(2)?;
    let mut spec = EtcdSpec::single(&etcd, "bench", &work, ports[0], ports[1]);
    spec.extra_args = vec![
        "--quota-backend-bytes=8589934592".into(),
        "--snapshot-count=1000000".into(),
    ];
    let mut process = EtcdProcess::start(&spec)?;
    let client = HttpClient::plain();
    process.wait_ready(&client, Duration::from_secs(30))?;
    let url = format!("{}/v3/kv/txn", spec.client_url());
    let started = Instant::now();
    let batches = keys.div_ceil(128);
    let clients = 4;
    std::thread::scope(|s| -> Result<(), String> {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let (client, url) = (client.clone(), url.clone());
                s.spawn(move || -> Result<(), String> {
                    for batch in (c..batches).step_by(clients) {
                        let ops: Vec<_> = (batch * 128..((batch + 1) * 128).min(keys))
                            .map(|n| {
                                let key = format!("/registry/pods/ns-{}/pod-{n:08}", n % 100);
                                let mut value = format!("value-{n}-").into_bytes();
                                value.resize(value_bytes, b'v' + (n % 7) as u8);
                                json!({"request_put": {"key": b64(key.as_bytes()), "value": b64(&value)}})
                            })
                            .collect();
                        client
                            .post_json(&url, &json!({"success": ops}), Duration::from_secs(60))
                            .map_err(|e| e.to_string())?;
                        if c == 0 && batch % (clients * 200) == 0 {
                            eprintln!("bench_db_make: {}/{keys} keys", batch * 128);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| "loader thread panicked".to_string())??;
        }
        Ok(())
    })?;
    eprintln!("bench_db_make: {keys} keys in {:?}", started.elapsed());
    process.stop(Duration::from_secs(60))?;
    std::fs::copy(work.join("member/snap/db"), &out)?;
    std::fs::remove_dir_all(&work)?;
    Ok(())
}
