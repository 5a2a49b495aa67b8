//! Times the monitor's text pipeline on an exposition file (default: the 3.5.1 extensive
//! fixture): the one pass the monitor runs per scrape, and the full model it falls back to.
use std::time::{Duration, Instant};

use etcdtools::prom::{self, pass, rewrite};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tests/fixtures/metrics/3.5.1-extensive.txt".into());
    let text = std::fs::read_to_string(&path).expect("read");
    let iterations: usize = std::env::args()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let only_pass = std::env::var_os("ONLY_PASS").is_some();
    let (mut one, mut full) = (Vec::new(), Vec::new());
    let mut out = String::with_capacity(text.len() * 2);
    // The monitor keeps a template between scrapes; NO_TEMPLATE=1 times the full pass.
    let keep_template = std::env::var_os("NO_TEMPLATE").is_none();
    let mut template = pass::Template::default();
    for _ in 0..iterations {
        let t = Instant::now();
        out.clear();
        let passed = pass::answer(&text, &[], &mut out, &template).expect("pass");
        if let (Some(made), true) = (passed.template, keep_template) {
            template = made;
        }
        one.push(t.elapsed());
        if only_pass {
            continue;
        }
        let t = Instant::now();
        let expo = rewrite::apply(prom::parse(&text).expect("parse"));
        out.clear();
        prom::write_exposition(&expo, &mut out);
        full.push(t.elapsed());
    }
    full.push(Duration::ZERO);
    println!(
        "{path}: {} bytes; median per exposition: one pass {:?}, full model {:?}",
        text.len(),
        median(one),
        median(full)
    );
}
