//! The monitor's answer in one pass over etcd's text: every line is lexed and checked as
//! [`super::parse()`] checks it, the lines are copied out as etcd wrote them (in runs, one copy
//! per run of adjacent families), and `etcd_grpc_requests_total` is derived from
//! `grpc_server_handled_total` on the way (`rewrite::RequestsTotal`, the same code as the model's
//! rule). No model is built: this runs on every scrape, and the model's allocations were most
//! of a scrape's cost.
//!
//! etcd's lines keep their names and labels from one scrape to the next; only values change.
//! So a pass also leaves a [`Template`]: each line's text up to its value, and what the line
//! meant. The next pass first replays it: when every line starts as the template says, only
//! values and timestamps are read (a few word compares per line instead of lexing it); at the
//! first difference it lexes the whole text as above and makes a new template.
//!
//! What one pass cannot do alone it leaves to the model ([`PassError::UseModel`]): a family
//! whose lines are split apart (the model gathers them), CRLF line ends, etcd 3.0's families
//! (their rules must know the whole exposition), and names the caller reserves. Those inputs
//! are valid but never come from etcd 3.1+; the caller then runs [`super::parse()`] and
//! [`super::rewrite::apply`], which give the same families.

use std::borrow::Cow;

use super::lex::{self, Lexer, Line};
use super::parse::{ParseError, Shape};
use super::rewrite::{
    requests_family, RequestsTotal, Written, HANDLED_TOTAL, LEGACY_REQUESTS_TOTAL,
    LEGACY_UNARY_DURATION, SERVER_VERSION,
};
use super::{write_family, Family, Label, Value};

/// What the pass noticed on the way.
#[derive(Debug, Default)]
pub struct Passed<'a> {
    /// The `server_version` label of `etcd_server_version` (the sample whose value is 1, else
    /// the first), unescaped.
    pub server_version: Option<Cow<'a, str>>,
    /// A template for the next pass, when the text did not fit the one given.
    pub template: Option<Template>,
}

#[derive(Debug, PartialEq)]
pub enum PassError {
    /// The text is malformed; the same error [`super::parse()`] reports.
    Parse(ParseError),
    /// A valid case this pass leaves to the model; why, for the debug log.
    UseModel(&'static str),
}

/// Appends etcd's families and the derived one to `out`. On an error, `out` is as it was.
/// `reserved`: family names that make the pass stop with [`PassError::UseModel`] (the monitor's
/// own, which it must not answer twice). `template`: the last exposition's (made with the same
/// `reserved`); when `text` does not fit it, [`Passed::template`] is this one's.
pub fn answer<'a>(
    text: &'a str,
    reserved: &[&str],
    out: &mut String,
    template: &Template,
) -> Result<Passed<'a>, PassError> {
    let before = out.len();
    if let Some(passed) = template.replay(text, out) {
        return Ok(passed);
    }
    out.truncate(before);
    let result = Pass::new(text, reserved, out).run();
    if result.is_err() {
        out.truncate(before);
    }
    result
}

/// The shape of the last exposition answered, line by line (see the module's doc).
#[derive(Debug, Default, Clone)]
pub struct Template {
    /// Each line's text up to its value (all of it for lines without a value), concatenated.
    keys: String,
    lines: Vec<TemplateLine>,
    /// How the answer is made of the lines.
    ops: Vec<Op>,
    /// The label sets of `etcd_grpc_requests_total`, as written.
    requests: Vec<Vec<(String, String)>>,
    /// The `server_version` label of each `etcd_server_version` sample, as written.
    versions: Vec<Option<String>>,
}

#[derive(Debug, Clone, Copy)]
struct TemplateLine {
    key_len: usize,
    role: Role,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    /// No value: the whole line is the key.
    Whole,
    Sample,
    /// A unary series of `grpc_server_handled_total`: adds to this sum.
    Handled(usize),
    /// A sample of `etcd_server_version`: its label is `versions[i]`.
    Version(usize),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    /// Lines `from..to`, as written.
    Copy { from: usize, to: usize },
    /// `etcd_grpc_requests_total`.
    Requests,
}

impl Template {
    /// Appends the answer for `text` if its lines are the template's but for values and
    /// timestamps; `None` at the first difference (or a value that does not read: the full
    /// pass then reports it), with part of the answer appended.
    fn replay<'a>(&self, text: &'a str, out: &mut String) -> Option<Passed<'a>> {
        if self.lines.is_empty() {
            return None;
        }
        let b = text.as_bytes();
        let keys = self.keys.as_bytes();
        // Per sum: the total, how many series, and the value text of the last one (kept as
        // etcd wrote it when it is the only one).
        let mut sums: Vec<(f64, usize, &'a str)> = vec![(0.0, 0, ""); self.requests.len()];
        let mut version = VersionPick::default();
        let mut emit = Emitter::default();
        let (mut at, mut k) = (0, 0);
        for (i, line) in self.lines.iter().enumerate() {
            emit.at_line(self, i, text, at, &sums, out);
            let key = keys.get(k..k + line.key_len)?;
            k += line.key_len;
            if !lex::same_bytes(b.get(at..at + key.len())?, key) {
                return None;
            }
            let rest = at + key.len();
            if line.role == Role::Whole {
                at = line_end(b, rest)?;
                continue;
            }
            let (value, next) = value_and_timestamp(text, rest)?;
            at = next;
            match line.role {
                Role::Handled(i) => {
                    let number = lex::parse_float(value)?;
                    let (total, count, last) = sums.get_mut(i)?;
                    *total += number;
                    *count += 1;
                    *last = value;
                }
                Role::Version(i) => version.note(value, i),
                _ => {}
            }
        }
        if at != b.len() || k != keys.len() {
            return None;
        }
        emit.at_line(self, self.lines.len(), text, at, &sums, out);
        if emit.op != self.ops.len() {
            return None;
        }
        let version = version
            .picked()
            .and_then(|i| self.versions.get(i)?.as_deref());
        Some(Passed {
            server_version: version.map(|v| Cow::Owned(lex::unescape(v).into_owned())),
            template: None,
        })
    }

    /// `etcd_grpc_requests_total` with this scrape's sums.
    fn requests<'t>(&'t self, sums: &[(f64, usize, &'t str)]) -> Family<'t> {
        requests_family(
            self.requests
                .iter()
                .zip(sums)
                .map(|(labels, &(total, count, last))| {
                    let labels = labels.iter().map(|(n, v)| Label {
                        name: Cow::Borrowed(n.as_str()),
                        value: lex::unescape(v),
                    });
                    let value = match count {
                        1 => Value {
                            number: total,
                            text: Some(Cow::Borrowed(last)),
                        },
                        _ => Value::new(total),
                    };
                    (labels.collect(), value)
                }),
        )
    }
}

/// Which `etcd_server_version` sample names the version: the first whose value is 1, else
/// the first.
struct VersionPick<T> {
    first: Option<T>,
    one: Option<T>,
}

impl<T> Default for VersionPick<T> {
    fn default() -> Self {
        VersionPick {
            first: None,
            one: None,
        }
    }
}

impl<T: Copy> VersionPick<T> {
    fn note(&mut self, value: &str, version: T) {
        self.first.get_or_insert(version);
        if self.one.is_none() && lex::parse_float(value) == Some(1.0) {
            self.one = Some(version);
        }
    }

    fn picked(&self) -> Option<T> {
        self.one.or(self.first)
    }
}

/// Carries out a template's ops while its lines are walked.
#[derive(Default)]
struct Emitter {
    /// The next op, and where its run of lines started if it is under way.
    op: usize,
    run_start: Option<usize>,
}

impl Emitter {
    /// Line `i` starts at `text[at..]` (or the text ended, `i` = the line count): copies the
    /// runs that end here, and the derived family once its sums are complete.
    fn at_line(
        &mut self,
        template: &Template,
        i: usize,
        text: &str,
        at: usize,
        sums: &[(f64, usize, &str)],
        out: &mut String,
    ) {
        while let Some(op) = template.ops.get(self.op) {
            match *op {
                Op::Copy { from, to } => {
                    if self.run_start.is_none() {
                        if from != i {
                            return;
                        }
                        self.run_start = Some(at);
                    }
                    if to != i {
                        return;
                    }
                    if let Some(start) = self.run_start.take() {
                        push_run(out, &text[start..at]);
                    }
                }
                Op::Requests => write_family(&template.requests(sums), out),
            }
            self.op += 1;
        }
    }
}

/// Where the line whose content ends at `at` ends: past its `\n`, or at the end of the text.
fn line_end(b: &[u8], at: usize) -> Option<usize> {
    match b.get(at) {
        Some(b'\n') => Some(at + 1),
        None => Some(at),
        Some(_) => None,
    }
}

/// A sample's value at `b[at..]` and where its line ends, if the value reads and the rest of
/// the line is an optional timestamp (as the lexer would accept them).
fn value_and_timestamp(text: &str, at: usize) -> Option<(&str, usize)> {
    let b = text.as_bytes();
    let token_end = |from: usize| {
        b[from..]
            .iter()
            .position(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
            .map_or(b.len(), |n| from + n)
    };
    let value_end = token_end(at);
    let value = &text[at..value_end];
    if value.is_empty() || !lex::is_float(value) {
        return None;
    }
    let mut i = lex::skip_blanks_at(b, value_end);
    if !matches!(b.get(i), None | Some(b'\n')) {
        let ts_end = token_end(i);
        text[i..ts_end].parse::<i64>().ok()?;
        i = lex::skip_blanks_at(b, ts_end);
    }
    Some((value, line_end(b, i)?))
}

/// Copies a run of lines, ending it with a newline if the text did not.
fn push_run(out: &mut String, run: &str) {
    out.push_str(run);
    if !run.ends_with('\n') {
        out.push('\n');
    }
}

struct Pass<'a, 'o> {
    text: &'a str,
    reserved: &'o [&'o str],
    out: &'o mut String,
    shape: Shape<'a>,
    lexer: Lexer<'a>,
    /// Per family: whether its lines have begun (they must then be adjacent).
    begun: Vec<bool>,
    current: Option<usize>,
    /// The byte range of `text` waiting to be copied, and its lines.
    run: (usize, usize),
    run_lines: (usize, usize),
    /// What this pass leaves for the next.
    template: Template,
    handled: Option<(usize, RequestsTotal<'a, Written<'a>>)>,
    /// The labels of the current `grpc_server_handled_total` line; reused.
    labels: Vec<(Written<'a>, Written<'a>)>,
    version_family: Option<usize>,
    version: VersionPick<Option<&'a str>>,
}

impl<'a, 'o> Pass<'a, 'o> {
    fn new(text: &'a str, reserved: &'o [&'o str], out: &'o mut String) -> Self {
        Pass {
            text,
            reserved,
            out,
            shape: Shape::default(),
            lexer: Lexer::default(),
            begun: Vec::new(),
            current: None,
            run: (0, 0),
            run_lines: (0, 0),
            template: Template::default(),
            handled: None,
            labels: Vec::new(),
            version_family: None,
            version: VersionPick::default(),
        }
    }

    fn run(mut self) -> Result<Passed<'a>, PassError> {
        let text = self.text;
        let mut start = 0;
        for (i, line) in text.split('\n').enumerate() {
            let end = (start + line.len() + 1).min(text.len());
            if line.ends_with('\r') {
                return Err(PassError::UseModel("CRLF line ends"));
            }
            let (key_len, role) = self
                .line(line, i, start, end)
                .map_err(|m| PassError::Parse(ParseError::at(i + 1, line, m)))??;
            self.template.keys.push_str(&line[..key_len]);
            self.template.lines.push(TemplateLine { key_len, role });
            start = end;
        }
        self.end_family();
        self.flush();
        let version = self.version.picked().flatten();
        Ok(Passed {
            server_version: version.map(lex::unescape),
            template: Some(self.template),
        })
    }

    /// Line `i` at `text[start..end]`: returns the length of its key and its role for the
    /// template; the outer error is a bad line, the inner one a case for the model.
    fn line(
        &mut self,
        line: &'a str,
        i: usize,
        start: usize,
        end: usize,
    ) -> Result<Result<(usize, Role), PassError>, String> {
        let lexed = self.lexer.line(line)?;
        let (idx, suffix) = match lexed {
            Line::Skip => return Ok(Ok((line.len(), Role::Whole))),
            Line::Help { name, .. } => (self.shape.help(name)?, None),
            Line::Type { name, kind } => (self.shape.kind(name, kind)?, None),
            Line::Sample(ref s) => {
                let (idx, suffix) = self.shape.sample(s, self.lexer.labels())?;
                (idx, Some(suffix))
            }
        };
        if idx == self.begun.len() {
            if let Err(e) = self.new_family(idx) {
                return Ok(Err(e));
            }
        }
        if self.current != Some(idx) {
            if self.begun[idx] {
                return Ok(Err(PassError::UseModel("a family split apart")));
            }
            self.begun[idx] = true;
            self.end_family();
            if self.run.1 != start {
                self.flush();
                self.run = (start, start);
                self.run_lines = (i, i);
            }
            self.current = Some(idx);
        }
        self.run.1 = end;
        self.run_lines.1 = i + 1;
        let Line::Sample(s) = lexed else {
            return Ok(Ok((line.len(), Role::Whole)));
        };
        let mut role = Role::Sample;
        if let Some(suffix) = suffix {
            if let Some((family, requests)) = &mut self.handled {
                if *family == idx {
                    self.labels.clear();
                    let raw = self.lexer.labels().iter();
                    self.labels
                        .extend(raw.map(|(n, v)| (Written(n), Written(v))));
                    let value = Value {
                        // `lex` checked the value.
                        number: lex::parse_float(s.value).unwrap_or(f64::NAN),
                        text: Some(Cow::Borrowed(s.value)),
                    };
                    if let Some(sum) = requests.add(suffix, &self.labels, &value) {
                        role = Role::Handled(sum);
                    }
                }
            }
            if self.version_family == Some(idx) {
                let version = lex::label(self.lexer.labels(), "server_version");
                self.version.note(s.value, version);
                role = Role::Version(self.template.versions.len());
                self.template.versions.push(version.map(str::to_string));
            }
        }
        Ok(Ok((s.value_at, role)))
    }

    fn new_family(&mut self, idx: usize) -> Result<(), PassError> {
        let name = self.shape.name(idx);
        match name {
            LEGACY_REQUESTS_TOTAL | LEGACY_UNARY_DURATION => {
                return Err(PassError::UseModel("an etcd 3.0 family"))
            }
            HANDLED_TOTAL => self.handled = Some((idx, RequestsTotal::default())),
            SERVER_VERSION => self.version_family = Some(idx),
            _ if self.reserved.contains(&name) => {
                return Err(PassError::UseModel("a reserved family name"))
            }
            _ => {}
        }
        self.begun.push(false);
        Ok(())
    }

    /// The current family's lines are all in: after `grpc_server_handled_total`, the
    /// derived family follows.
    fn end_family(&mut self) {
        let ends_handled = matches!(
            (&self.handled, self.current),
            (Some((family, _)), Some(current)) if *family == current
        );
        if ends_handled {
            if let Some((_, requests)) = self.handled.take() {
                self.flush();
                self.template.requests = requests
                    .label_sets()
                    .map(|set| {
                        let owned = set.iter().map(|(n, v)| (n.0.to_string(), v.0.to_string()));
                        owned.collect()
                    })
                    .collect();
                self.template.ops.push(Op::Requests);
                write_family(&requests.finish(), self.out);
            }
        }
    }

    fn flush(&mut self) {
        let (s, e) = self.run;
        if s < e {
            push_run(self.out, &self.text[s..e]);
            let (from, to) = self.run_lines;
            self.template.ops.push(Op::Copy { from, to });
        }
        self.run = (e, e);
        self.run_lines = (self.run_lines.1, self.run_lines.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETCD: &str = include_str!("../../tests/fixtures/metrics/3.5.1-basic.txt");

    /// `text` with every sample's value replaced by `f(line number, value)`.
    fn revalued(text: &str, f: impl Fn(usize, &str) -> String) -> String {
        let mut lexer = Lexer::default();
        let mut out = String::new();
        for (i, line) in text.split_inclusive('\n').enumerate() {
            match lexer.line(line.trim_end_matches('\n')) {
                Ok(Line::Sample(s)) => {
                    let after = &line[s.value_at + s.value.len()..];
                    out.push_str(&line[..s.value_at]);
                    out.push_str(&f(i, s.value));
                    out.push_str(after);
                }
                _ => out.push_str(line),
            }
        }
        out
    }

    fn full_pass(text: &str) -> Result<String, PassError> {
        let mut out = String::new();
        answer(text, &[], &mut out, &Template::default())?;
        Ok(out)
    }

    fn template_of(text: &str) -> Template {
        let passed = answer(text, &[], &mut String::new(), &Template::default()).unwrap();
        passed.template.unwrap()
    }

    #[test]
    fn the_next_scrape_reads_only_values_and_answers_as_a_full_pass() {
        let template = template_of(ETCD);
        assert_eq!(template.lines.len(), ETCD.split('\n').count());
        // New values (some summed into etcd_grpc_requests_total, the version gauge's among
        // them), a timestamp, a value spelled differently.
        type Change<'c> = &'c dyn Fn(usize, &str) -> String;
        let changes: [Change; 4] = [
            &|i, _| format!("{}", i * 7),
            &|i, v| {
                if i % 5 == 0 {
                    format!("{v} 1700000000000")
                } else {
                    v.to_string()
                }
            },
            &|i, v| {
                if i % 3 == 0 {
                    "1e+03".to_string()
                } else {
                    v.to_string()
                }
            },
            &|_, _| "0".to_string(),
        ];
        for change in changes {
            let next = revalued(ETCD, change);
            assert_ne!(next, ETCD);
            let mut replayed = String::from("kept ");
            let passed = template.replay(&next, &mut replayed).expect("replayed");
            assert!(passed.template.is_none());
            assert_eq!(replayed, format!("kept {}", full_pass(&next).unwrap()));
            let mut again = String::new();
            let direct = answer(&next, &[], &mut again, &Template::default()).unwrap();
            assert_eq!(passed.server_version, direct.server_version);
        }
        assert_eq!(
            template
                .replay(ETCD, &mut String::new())
                .unwrap()
                .server_version
                .as_deref(),
            Some("3.5.1")
        );
    }

    #[test]
    fn a_different_line_or_a_bad_value_is_not_replayed() {
        let template = template_of(ETCD);
        let line = ETCD
            .lines()
            .position(|l| l.starts_with("grpc_server_handled"))
            .unwrap();
        let bad_value = revalued(ETCD, |i, v| if i == line { "x1".into() } else { v.into() });
        let renamed = ETCD.replacen("grpc_code=\"OK\"", "grpc_code=\"Ok\"", 1);
        let extra = format!("{ETCD}extra_metric 1\n");
        let cut = &ETCD[..ETCD.len() - 20];
        let crlf = ETCD.replacen('\n', "\r\n", 1);
        for text in [&bad_value, &renamed, &extra, cut, &crlf, ""] {
            assert!(template.replay(text, &mut String::new()).is_none());
        }
        // Through `answer`, each falls back to the full pass and its answer or error.
        for text in [&bad_value, &renamed, &extra, cut, &crlf] {
            let mut out = String::from("kept ");
            let got = answer(text, &[], &mut out, &template).map(|_| out);
            let want = full_pass(text).map(|answer| format!("kept {answer}"));
            assert_eq!(got, want, "{:.80}", text);
        }
    }

    #[test]
    fn indented_and_timestamped_lines_replay_too() {
        let first = "# TYPE a counter\n  a{x=\"1\"}  5 1700000000000\n\ta 2\n";
        let next = "# TYPE a counter\n  a{x=\"1\"}  6 1700000000001\n\ta 3\n";
        let template = template_of(first);
        let mut out = String::new();
        assert!(template.replay(next, &mut out).is_some());
        assert_eq!(out, full_pass(next).unwrap());
        assert!(out.contains("  6 1700000000001\n\ta 3\n"), "{out}");
    }
}
