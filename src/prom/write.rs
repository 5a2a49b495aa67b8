//! Writes the model back as text format 0.0.4: `# HELP`, `# TYPE`, then the samples, each
//! line ending in `\n`. Unchanged values and timestamps are written as they were read.

use super::{format_value, Exposition, Family};

/// Appends every family of `expo` to `out`.
pub fn write_exposition(expo: &Exposition<'_>, out: &mut String) {
    for family in &expo.families {
        write_family(family, out);
    }
}

/// Appends one family to `out`.
pub fn write_family(family: &Family<'_>, out: &mut String) {
    if let Some(help) = &family.help {
        out.push_str("# HELP ");
        out.push_str(&family.name);
        out.push(' ');
        escape_into(help, false, out);
        out.push('\n');
    }
    if let Some(kind) = family.kind {
        out.push_str("# TYPE ");
        out.push_str(&family.name);
        out.push(' ');
        out.push_str(kind.as_str());
        out.push('\n');
    }
    for sample in &family.samples {
        out.push_str(&family.name);
        out.push_str(sample.suffix.as_str());
        if !sample.labels.is_empty() {
            out.push('{');
            for (i, label) in sample.labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&label.name);
                out.push_str("=\"");
                escape_into(&label.value, true, out);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        match &sample.value.text {
            Some(text) => out.push_str(text),
            None => format_value(sample.value.number, out),
        }
        if let Some(ts) = &sample.timestamp {
            out.push(' ');
            out.push_str(ts);
        }
        out.push('\n');
    }
}

/// Escapes `\` and newline (and `"` in label values).
fn escape_into(s: &str, label_value: bool, out: &mut String) {
    if !s.bytes().any(|b| matches!(b, b'\\' | b'\n' | b'"')) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if label_value => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}
