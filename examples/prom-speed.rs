//! Times the monitor's text pipeline on an exposition file (default: the 3.5.1 extensive
//! fixture): the keeping parse + rewrite + write the monitor uses, and the full model.
use std::time::{Duration, Instant};

use etcdtools::prom::{self, rewrite};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tests/fixtures/metrics/3.5.1-extensive.txt".into());
    let text = std::fs::read_to_string(&path).expect("read");
    let keep = |name: &str| rewrite::needs_samples(name) || name == "etcd_server_version";
    let (mut lazy, mut full) = (Vec::new(), Vec::new());
    let mut out = String::with_capacity(text.len() * 2);
    let iterations: usize = std::env::args()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    for _ in 0..iterations {
        let t = Instant::now();
        let expo = rewrite::apply(prom::parse_keeping(&text, &keep).expect("parse"));
        out.clear();
        prom::write_exposition(&expo, &mut out);
        lazy.push(t.elapsed());
        if std::env::var_os("ONLY_KEEPING").is_some() {
            continue;
        }
        let t = Instant::now();
        let expo = rewrite::apply(prom::parse(&text).expect("parse"));
        out.clear();
        prom::write_exposition(&expo, &mut out);
        full.push(t.elapsed());
    }
    println!(
        "{path}: {} bytes; parse+rewrite+write median: as the monitor does {:?}, full model {:?}",
        text.len(),
        median(lazy),
        median(if full.is_empty() {
            vec![Duration::ZERO]
        } else {
            full
        })
    );
}
