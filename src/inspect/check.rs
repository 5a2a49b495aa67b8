//! `etcd-inspect check`: prints [`Member::check`]'s findings, one per line.

use std::io::Write;

use super::output::JsonLine;
use super::InspectError;
use crate::storage::member::Member;

/// Prints the findings; returns how many there were.
pub fn print_check(
    member: &Member,
    json: bool,
    out: &mut dyn Write,
) -> Result<usize, InspectError> {
    let findings = member.check()?;
    for f in &findings {
        if json {
            out.write_all(
                JsonLine::new()
                    .str("file", &f.file.display().to_string())
                    .opt_num("offset", f.offset)
                    .str("problem", &f.problem)
                    .finish()
                    .as_bytes(),
            )?;
        } else {
            writeln!(out, "{f}")?;
        }
    }
    if !json {
        if findings.is_empty() {
            writeln!(
                out,
                "{}: no problems found",
                member.paths().data_dir.display()
            )?;
        } else {
            writeln!(out, "{} problem(s) found", findings.len())?;
        }
    }
    Ok(findings.len())
}
