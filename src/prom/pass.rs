//! The monitor's answer in one pass over etcd's text: every line is lexed and checked as
//! [`super::parse`] checks it, the lines are copied out as etcd wrote them (in runs, one copy
//! per run of adjacent families), and `etcd_grpc_requests_total` is derived from
//! `grpc_server_handled_total` on the way ([`RequestsTotal`], the same code as the model's
//! rule). No model is built: this runs on every scrape, and the model's allocations were most
//! of a scrape's cost.
//!
//! What one pass cannot do alone it leaves to the model ([`PassError::UseModel`]): a family
//! whose lines are split apart (the model gathers them), CRLF line ends, etcd 3.0's families
//! (their rules must know the whole exposition), and names the caller reserves. Those inputs
//! are valid but never come from etcd 3.1+; the caller then runs [`super::parse`] and
//! [`super::rewrite::apply`], which give the same families.

use std::borrow::Cow;

use super::lex::{self, Lexer, Line};
use super::parse::{ParseError, Shape};
use super::rewrite::{
    RequestsTotal, Written, HANDLED_TOTAL, LEGACY_REQUESTS_TOTAL, LEGACY_UNARY_DURATION,
    SERVER_VERSION,
};
use super::{write_family, Value};

/// What the pass noticed on the way.
#[derive(Debug, Default, PartialEq)]
pub struct Passed<'a> {
    /// The `server_version` label of `etcd_server_version` (the sample whose value is 1, else
    /// the first), unescaped.
    pub server_version: Option<Cow<'a, str>>,
}

#[derive(Debug, PartialEq)]
pub enum PassError {
    /// The text is malformed; the same error [`super::parse`] reports.
    Parse(ParseError),
    /// A valid case this pass leaves to the model; why, for the debug log.
    UseModel(&'static str),
}

/// Appends etcd's families and the derived one to `out`. On an error, `out` is as it was.
/// `reserved`: family names that make the pass stop with [`PassError::UseModel`] (the monitor's
/// own, which it must not answer twice).
pub fn answer<'a>(
    text: &'a str,
    reserved: &[&str],
    out: &mut String,
) -> Result<Passed<'a>, PassError> {
    let before = out.len();
    let result = Pass::new(text, reserved, out).run();
    if result.is_err() {
        out.truncate(before);
    }
    result
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
    /// The byte range of `text` waiting to be copied.
    run: (usize, usize),
    handled: Option<(usize, RequestsTotal<'a, Written<'a>>)>,
    /// The labels of the current `grpc_server_handled_total` line; reused.
    labels: Vec<(Written<'a>, Written<'a>)>,
    version_family: Option<usize>,
    /// `server_version` of the first sample, and of the first whose value is 1.
    first_version: Option<Option<&'a str>>,
    one_version: Option<Option<&'a str>>,
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
            handled: None,
            labels: Vec::new(),
            version_family: None,
            first_version: None,
            one_version: None,
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
            self.line(line, start, end)
                .map_err(|m| PassError::Parse(ParseError::at(i + 1, line, m)))??;
            start = end;
        }
        self.end_family();
        self.flush();
        let version = self.one_version.or(self.first_version).flatten();
        Ok(Passed {
            server_version: version.map(lex::unescape),
        })
    }

    /// One line at `text[start..end]`; the outer error is a bad line, the inner one a case
    /// for the model.
    fn line(
        &mut self,
        line: &'a str,
        start: usize,
        end: usize,
    ) -> Result<Result<(), PassError>, String> {
        let lexed = self.lexer.line(line)?;
        let (idx, suffix) = match lexed {
            Line::Skip => return Ok(Ok(())),
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
            }
            self.current = Some(idx);
        }
        self.run.1 = end;
        if let (Line::Sample(s), Some(suffix)) = (lexed, suffix) {
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
                    requests.add(suffix, &self.labels, &value);
                }
            }
            if self.version_family == Some(idx) {
                let version = lex::label(self.lexer.labels(), "server_version");
                self.first_version.get_or_insert(version);
                if self.one_version.is_none() && lex::parse_float(s.value) == Some(1.0) {
                    self.one_version = Some(version);
                }
            }
        }
        Ok(Ok(()))
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
                write_family(&requests.finish(), self.out);
            }
        }
    }

    fn flush(&mut self) {
        let (s, e) = self.run;
        if s < e {
            let run = &self.text[s..e];
            self.out.push_str(run);
            if !run.ends_with('\n') {
                self.out.push('\n');
            }
        }
        self.run = (e, e);
    }
}
