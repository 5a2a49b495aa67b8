//! The monitor's one pass (with and without the last scrape's template) against the model:
//! the same answer or the same error for any text. The input is two texts split at the first
//! 0xff byte: the last scrape's (for the template) and this one's.
#![no_main]

use etcdtools::prom::{self, pass, rewrite};
use libfuzzer_sys::fuzz_target;

fn model(text: &str) -> Result<String, prom::ParseError> {
    let mut out = String::new();
    prom::write_exposition(&rewrite::apply(prom::parse(text)?), &mut out);
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    let (before, now) = match data.iter().position(|b| *b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let (Ok(before), Ok(now)) = (std::str::from_utf8(before), std::str::from_utf8(now)) else {
        return;
    };
    let reserved = ["etcd_version_info"];
    let template = pass::answer(before, &reserved, &mut String::new(), &Default::default())
        .ok()
        .and_then(|p| p.template)
        .unwrap_or_default();
    let mut full = String::new();
    let full = pass::answer(now, &reserved, &mut full, &Default::default()).map(|_| full);
    let mut replayed = String::new();
    let replayed = pass::answer(now, &reserved, &mut replayed, &template).map(|_| replayed);
    assert_eq!(full, replayed, "template changed the answer");
    match (full, model(now)) {
        (Ok(out), Ok(expected)) => assert_eq!(model(&out).ok(), Some(expected)),
        (Err(pass::PassError::Parse(e)), Err(m)) => assert_eq!(e, m),
        (Err(pass::PassError::UseModel(_)), _) => {}
        (pass, model) => panic!("one pass {pass:?}, model {model:?}"),
    }
});
