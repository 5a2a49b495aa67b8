//! `etcd-inspect version`: prints [`Member::version`] (what the data is, from `version.txt`
//! and from the files).

use std::io::Write;

use super::output::JsonLine;
use super::InspectError;
use crate::storage::member::Member;

pub fn print_version(member: &Member, json: bool, out: &mut dyn Write) -> Result<(), InspectError> {
    let v = member.version()?;
    let storage = v.storage.map(|s| s.to_string());
    let notes: Vec<String> = v.notes.iter().map(ToString::to_string).collect();
    let hex = |o: Option<u64>| o.map(|x| format!("{x:x}"));
    let members: Vec<String> = v.members.iter().map(|m| format!("{m:x}")).collect();
    if json {
        let line = JsonLine::new()
            .opt_str("version_txt", v.version_txt.as_deref())
            .opt_str("storage", storage.as_deref())
            .opt_str("cluster_version_v2", v.cluster_version_v2.as_deref())
            .opt_str("cluster_version_db", v.cluster_version_db.as_deref())
            .opt_str("storage_version", v.storage_version.as_deref())
            .opt_num("last_index", v.last_index)
            .opt_num("last_term", v.last_term)
            .opt_num("commit", v.commit)
            .opt_num("consistent_index", v.consistent_index)
            .opt_str("member_id", hex(v.member_id).as_deref())
            .opt_str("cluster_id", hex(v.cluster_id).as_deref())
            .strs("members", &members)
            .num("v2_keys", v.v2_keys as u64)
            .strs("notes", &notes)
            .finish();
        out.write_all(line.as_bytes())?;
        return Ok(());
    }
    let o = |s: Option<String>| s.unwrap_or_else(|| "(unknown)".into());
    writeln!(out, "version.txt:        {}", o(v.version_txt.clone()))?;
    writeln!(out, "storage:            {}", o(storage))?;
    writeln!(
        out,
        "cluster version:    {} (v2 store), {} (db)",
        o(v.cluster_version_v2.clone()),
        o(v.cluster_version_db.clone())
    )?;
    writeln!(out, "storage version:    {}", o(v.storage_version.clone()))?;
    writeln!(
        out,
        "last index/term:    {} / {} (commit {})",
        o(v.last_index.map(|x| x.to_string())),
        o(v.last_term.map(|x| x.to_string())),
        o(v.commit.map(|x| x.to_string()))
    )?;
    writeln!(
        out,
        "consistent index:   {}",
        o(v.consistent_index.map(|x| x.to_string()))
    )?;
    writeln!(
        out,
        "member / cluster:   {} / {}",
        o(hex(v.member_id)),
        o(hex(v.cluster_id))
    )?;
    writeln!(out, "members:            {}", members.join(" "))?;
    writeln!(out, "v2 user keys:       {}", v.v2_keys)?;
    for n in &v.notes {
        writeln!(out, "note: {n}")?;
    }
    Ok(())
}
