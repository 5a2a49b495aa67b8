//! migrate's pre-flight checks that read the data dir or the flags and refuse before any step
//! runs: the data dir is no `member/` dir, no etcd runs on it, `version.txt` agrees with the
//! files, peer TLS credentials exist for https peer URLs, and a downgrade keeps the member's
//! identity. Each decision is a pure function over what was read; the readers are apart.

use std::path::Path;

use super::config::Config;
use super::plan::Step;
use crate::datadir::leftovers::View;
use crate::datadir::DataDir;
use crate::version::{EtcdVersion, Storage, VersionPair};

// ---------------------------------------------------------------------------------------
// `member/` given as the data dir
// ---------------------------------------------------------------------------------------

/// A data dir named `member` that holds `wal` or `snap` (and no `member` of its own) is the
/// member dir inside a data dir: "did you mean <parent>?".
pub fn check_not_member_dir(dir: &Path) -> Result<(), String> {
    let named_member = dir
        .components()
        .next_back()
        .is_some_and(|c| c.as_os_str() == "member");
    let looks_inside = dir.join("wal").is_dir() || dir.join("snap").is_dir();
    if !named_member || !looks_inside || dir.join("member").exists() {
        return Ok(());
    }
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Err(format!(
        "{} is the member/ directory inside an etcd data dir (it holds wal/ or snap/), not a \
         data dir: did you mean {}?",
        dir.display(),
        parent.display()
    ))
}

// ---------------------------------------------------------------------------------------
// A running etcd
// ---------------------------------------------------------------------------------------

/// etcd holds an exclusive flock on `member/snap/db` and a lock on its newest WAL segment
/// while it runs ([`crate::storage::member::Member::locked_by_etcd`]).
pub fn check_no_running_etcd(data_dir: &Path) -> Result<(), String> {
    let member = crate::storage::member::Member::at(data_dir, None);
    if member.locked_by_etcd().is_some() {
        return Err(format!(
            "etcd is running on this data dir: stop it first ({} is locked)",
            data_dir.display()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// version.txt against the files
// ---------------------------------------------------------------------------------------

/// What the files say about the version, independently of `version.txt`.
#[derive(Debug, Clone, Default)]
pub struct FilesSay {
    /// Every version recorded in the files (cluster versions, 3.6's storage version), with
    /// where it was found.
    pub versions: Vec<(EtcdVersion, String)>,
    /// The db holds v3 keys (etcd3 data).
    pub v3_keys: bool,
}

impl FilesSay {
    /// The newest recorded minor and where it was read.
    fn newest(&self) -> Option<&(EtcdVersion, String)> {
        // Ties go to the first source (max_by_key keeps the last maximum).
        self.versions
            .iter()
            .rev()
            .max_by_key(|(v, _)| (v.major(), v.minor()))
    }
}

/// What `version.txt` plus the files lead to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The files are not newer than `version.txt`: go on from it.
    Agrees,
    /// An earlier upgrade towards the target ran etcd of a newer minor on the data and was
    /// interrupted before it recorded that: go on from this pair.
    UpgradeInterrupted(VersionPair),
}

/// Reads the cluster versions and storage kind from the files (etcd-inspect `version`).
/// `None` when the files cannot be read: the integrity check reports that.
pub fn files_say(data_dir: &Path) -> Option<FilesSay> {
    let member = crate::storage::member::Member::at(data_dir, None);
    let found = member.version().ok()?;
    let mut say = FilesSay::default();
    // The db's versions are what the snapshot held: a restore (our downgrade) keeps the newer
    // ones until the older etcd first runs and publishes. Only once the raft log (the v2
    // store's /0/version, which a restore leaves empty) records a version are they current.
    let published = found.cluster_version_v2.is_some();
    for (v, source) in [
        (&found.cluster_version_v2, "the v2 store's /0/version"),
        (&found.cluster_version_db, "the db's cluster/clusterVersion"),
        (&found.storage_version, "the db's meta/storageVersion"),
    ] {
        if !published {
            break;
        }
        if let Some(parsed) = v.as_ref().and_then(|v| v.parse::<EtcdVersion>().ok()) {
            say.versions.push((parsed, source.to_string()));
        }
    }
    say.v3_keys = member.paths().db.is_file() && member.db_facts().is_ok_and(|f| f.has_v3_keys);
    Some(say)
}

/// `version.txt`'s pair (in `view.version_dir`) checked against the files (in `view.files_dir`,
/// [`judge_claim`]): the pair to go on from.
/// `v2v3_journal`: an interrupted etcd2 -> etcd3 conversion is on record.
pub fn check_claim(
    view: &View,
    claim: VersionPair,
    cfg: &Config,
    v2v3_journal: bool,
) -> Result<VersionPair, String> {
    let Some(files) = files_say(&view.files_dir) else {
        return Ok(claim);
    };
    let file = view.version_dir.join(crate::version::VERSION_FILE);
    match judge_claim(
        &file,
        &claim,
        &files,
        &cfg.target,
        v2v3_journal,
        &cfg.bundled,
    )? {
        Claim::Agrees => Ok(claim),
        Claim::UpgradeInterrupted(newer) => {
            log::warn!(
                "{} says {claim} but etcd {} already ran on the data (an upgrade towards {} was \
                 interrupted before it recorded that): going on from {newer}",
                file.display(),
                newer.version.minor_string(),
                cfg.target
            );
            Ok(newer)
        }
    }
}

/// Pure: does `version.txt` (`claim`) agree with the files? Files newer than the claim are
/// refused (naming both and the command that fixes it), except where an interrupted upgrade
/// step towards `target` explains them (files one minor ahead), and etcd2 claimed over v3 keys unless an interrupted
/// etcd2 -> etcd3 conversion (`v2v3_journal`) explains it. `bundled` picks the patch to name.
pub fn judge_claim(
    file: &Path,
    claim: &VersionPair,
    files: &FilesSay,
    target: &VersionPair,
    v2v3_journal: bool,
    bundled: &[EtcdVersion],
) -> Result<Claim, String> {
    let files_storage = if files.v3_keys {
        Storage::Etcd3
    } else {
        claim.storage
    };
    let fix = |v: &EtcdVersion| {
        let patch = bundled
            .iter()
            .filter(|b| b.major_minor_equals(v) && !b.is_prerelease())
            .max()
            .cloned()
            .unwrap_or_else(|| EtcdVersion::new(v.major(), v.minor(), 0));
        VersionPair::new(patch, files_storage)
    };
    if claim.storage == Storage::Etcd2 && files.v3_keys && !v2v3_journal {
        let fixed = fix(&claim.version);
        return Err(format!(
            "{} says {claim} (etcd2 storage) but the db holds v3 keys (etcd3 data): converting \
             it as etcd2 data would overwrite them. If the data is etcd3, record that: `printf \
             {fixed} > {}` and rerun",
            file.display(),
            file.display()
        ));
    }
    let Some((newest, source)) = files.newest() else {
        return Ok(Claim::Agrees);
    };
    let key = |v: &EtcdVersion| (v.major(), v.minor());
    if key(newest) <= key(&claim.version) {
        return Ok(Claim::Agrees);
    }
    let fixed = fix(newest);
    // An upgrade step starts etcd of the next minor and records it afterwards: a kill in
    // between leaves files exactly one minor ahead (never more, never past the target).
    let next_minor = (claim.version.major(), claim.version.minor() + 1);
    if claim.storage == Storage::Etcd3
        && target.storage == Storage::Etcd3
        && key(newest) == next_minor
        && key(newest) <= key(&target.version)
    {
        return Ok(Claim::UpgradeInterrupted(fixed));
    }
    Err(format!(
        "{} says {claim} but the files were written by etcd {} ({source} is {newest}): \
         version.txt is stale (did etcd {} run on this data without migrate?), and etcd {} \
         cannot read this data. If the files are right, record their version: `printf {fixed} \
         > {}` and rerun (migrate then takes the data from there to {target}); otherwise put \
         back the data version.txt describes",
        file.display(),
        newest.minor_string(),
        newest.minor_string(),
        claim.version,
        file.display()
    ))
}

// ---------------------------------------------------------------------------------------
// Peer TLS from ETCD_CREDS
// ---------------------------------------------------------------------------------------

/// The peer TLS flags among the extra etcd args (`--etcd-server-extra-args` / `ETCD_CREDS`,
/// split by [`super::config::split_args`]): `--flag=value` or `--flag value`, one or two
/// dashes, as etcd itself accepts them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerTls {
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub trusted_ca_file: Option<String>,
    pub auto_tls: bool,
}

impl PeerTls {
    pub fn from_args(args: &[String]) -> PeerTls {
        let mut tls = PeerTls::default();
        let mut it = args.iter().peekable();
        while let Some(arg) = it.next() {
            let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                continue;
            };
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag, None),
            };
            let mut value = || {
                inline.clone().or_else(|| {
                    it.next_if(|next| !next.starts_with('-'))
                        .map(ToString::to_string)
                })
            };
            match name {
                "peer-cert-file" => tls.cert_file = value(),
                "peer-key-file" => tls.key_file = value(),
                "peer-trusted-ca-file" => tls.trusted_ca_file = value(),
                "peer-auto-tls" => tls.auto_tls = inline.as_deref() != Some("false"),
                _ => {}
            }
        }
        tls
    }
}

/// The peer URLs this member's etcd will use: listen, advertise, and its own entry of
/// `--initial-cluster`.
fn own_peer_urls(cfg: &Config) -> Vec<String> {
    let mut urls: Vec<String> = split_urls(&cfg.listen_peer_urls);
    urls.extend(split_urls(&cfg.initial_advertise_peer_urls));
    urls.extend(initial_cluster_urls(&cfg.initial_cluster, &cfg.name));
    urls
}

fn split_urls(list: &str) -> Vec<String> {
    list.split(',')
        .map(|u| u.trim().trim_end_matches('/').to_string())
        .filter(|u| !u.is_empty())
        .collect()
}

/// The URLs `--initial-cluster` gives member `name`.
fn initial_cluster_urls(initial_cluster: &str, name: &str) -> Vec<String> {
    initial_cluster
        .split(',')
        .filter_map(|e| e.trim().split_once('='))
        .filter(|(n, _)| *n == name)
        .map(|(_, u)| u.trim().trim_end_matches('/').to_string())
        .collect()
}

/// Pure: https peer URLs need `--peer-cert-file` and `--peer-key-file` (or `--peer-auto-tls`)
/// in the extra args, else every etcd migrate starts dies ("KeyFile and CertFile are not
/// presented"). Returns the files to check for existence.
pub fn judge_peer_tls(cfg: &Config) -> Result<Vec<(&'static str, String)>, String> {
    let https: Vec<String> = own_peer_urls(cfg)
        .into_iter()
        .filter(|u| u.starts_with("https://"))
        .collect();
    let tls = PeerTls::from_args(&cfg.etcd_server_extra_args);
    if https.is_empty() || tls.auto_tls {
        return Ok(Vec::new());
    }
    let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) else {
        return Err(format!(
            "the peer URLs are https ({}) but no peer certificate was given: the etcd migrate \
             starts would fail with \"KeyFile and CertFile are not presented\". Pass the \
             member's peer TLS flags in ETCD_CREDS (or --etcd-server-extra-args), as the etcd \
             manifest does: ETCD_CREDS=\"--peer-trusted-ca-file=CA --peer-cert-file=CERT \
             --peer-key-file=KEY --peer-client-cert-auth\"",
            https.join(", ")
        ));
    };
    let mut files = vec![
        ("--peer-cert-file", cert.clone()),
        ("--peer-key-file", key.clone()),
    ];
    if let Some(ca) = &tls.trusted_ca_file {
        files.push(("--peer-trusted-ca-file", ca.clone()));
    }
    Ok(files)
}

/// Peer TLS pre-flight: the decision, then each named file must be a readable file.
pub fn check_peer_tls(cfg: &Config) -> Result<(), String> {
    for (flag, file) in judge_peer_tls(cfg)? {
        if let Err(e) = std::fs::File::open(&file) {
            return Err(format!(
                "{flag} {file} (from ETCD_CREDS / --etcd-server-extra-args) cannot be read: {e}"
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Member identity across a downgrade
// ---------------------------------------------------------------------------------------

pub use crate::storage::member::{Identity, StoredMember};

/// The member ID from the WAL's metadata record, its name and peer URLs from the db's
/// `members` bucket ([`crate::storage::member::Member::identity`]). `None` when the data holds
/// no such record or cannot be read (nothing to compare; the integrity check that follows
/// names any damage with its offset).
pub fn stored_member(data_dir: &Path) -> Option<Identity> {
    crate::storage::member::Member::at(data_dir, None)
        .identity()
        .unwrap_or_else(|e| {
            log::debug!("member identity not checked: {e}");
            None
        })
}

/// Pure: a restore with another name or peer URL gives the member a new member ID and the
/// cluster a new cluster ID; refuse unless `allowed`, naming what to set.
pub fn judge_identity(stored: &StoredMember, cfg: &Config, allowed: bool) -> Result<(), String> {
    let mut stored_urls = stored.peer_urls.clone();
    stored_urls.sort();
    let mut advertise = split_urls(&cfg.initial_advertise_peer_urls);
    advertise.sort();
    let mut in_cluster = initial_cluster_urls(&cfg.initial_cluster, &cfg.name);
    in_cluster.sort();
    let mut differs = Vec::new();
    if stored.name != cfg.name {
        differs.push(format!("name {:?} (stored {:?})", cfg.name, stored.name));
    }
    if advertise != stored_urls {
        differs.push(format!(
            "peer URL {} (stored {})",
            advertise.join(","),
            stored_urls.join(",")
        ));
    }
    if in_cluster != stored_urls {
        differs.push(format!(
            "--initial-cluster {} (stored {}={})",
            cfg.initial_cluster,
            stored.name,
            stored_urls.join(",")
        ));
    }
    if differs.is_empty() {
        return Ok(());
    }
    if allowed {
        log::warn!(
            "the downgrade gives member {:x} (cluster {:x}) new IDs: {} ({} is set)",
            stored.id,
            stored.cluster_id,
            differs.join("; "),
            ALLOW_MEMBER_ID_CHANGE_ENV
        );
        return Ok(());
    }
    let urls = stored_urls.join(",");
    Err(format!(
        "the downgrade would restore this member as {}: it would get a new member ID and a new \
         cluster ID (now {:x} and {:x}) and its peers would no longer know it. Run migrate \
         with the member's stored identity: ETCD_NAME={} (--name), \
         INITIAL_ADVERTISE_PEER_URLS={urls}, LISTEN_PEER_URLS=<a URL etcd can bind for \
         {urls}>, INITIAL_CLUSTER={}={urls}; or accept new IDs with --allow-member-id-change \
         ({ALLOW_MEMBER_ID_CHANGE_ENV}=true)",
        differs.join(", "),
        stored.id,
        stored.cluster_id,
        stored.name,
        stored.name
    ))
}

/// Pure: the WAL's member is not in the db's members: a downgrade would restore the db as
/// a member with another ID than the WAL's and the cluster's, so refuse unless `allowed`,
/// naming both sides and what to do.
pub fn judge_unlisted(found: &Identity, allowed: bool) -> Result<(), String> {
    let Identity::NotListed {
        id,
        cluster_id,
        listed,
        removed,
    } = found
    else {
        return Ok(());
    };
    let listed: Vec<String> = listed.iter().map(|m| format!("{m:x}")).collect();
    let what = format!(
        "the WAL belongs to member {id:x} (cluster {cluster_id:x}), but the db's members \
         bucket lists {}",
        if listed.is_empty() {
            "no member".to_string()
        } else {
            format!("only {}", listed.join(", "))
        }
    );
    if allowed {
        log::warn!("{what} ({ALLOW_MEMBER_ID_CHANGE_ENV} is set)");
        return Ok(());
    }
    let cause = if *removed {
        format!(
            "member {id:x} was removed from the cluster (the db lists it as removed): this data \
             dir is no longer a member's; remove it and add the member again (etcdctl member \
             add), then let it sync from the cluster"
        )
    } else {
        "the db and the WAL come from different members (a copied or mixed-up member/snap/db \
         or member/wal), or the member was removed: put back member/ from one member's backup \
         (the .bak of an earlier migrate, or your own), or remove the data dir and add the \
         member again (etcdctl member add)"
            .to_string()
    };
    Err(format!(
        "{what}: {cause}; a downgrade would restore that db as a member with a new ID. To go \
         on anyway, --allow-member-id-change ({ALLOW_MEMBER_ID_CHANGE_ENV}=true)"
    ))
}

/// etcd's default `--initial-cluster-token`.
pub const DEFAULT_CLUSTER_TOKEN: &str = "etcd-cluster";

fn sha1_prefix(bytes: &[u8]) -> u64 {
    let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&d.as_ref()[..8]);
    u64::from_be_bytes(first)
}

/// The member ID etcd derives for a member of a new cluster (what a snapshot restore makes):
/// SHA-1 of its sorted peer URLs concatenated, then the cluster token; the first 8 bytes,
/// big-endian. (A member added to a running cluster also hashes the time: it can never be
/// restored with its ID.)
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut b = urls.concat().into_bytes();
    b.extend_from_slice(token.as_bytes());
    sha1_prefix(&b)
}

/// The cluster ID etcd derives from the member IDs: SHA-1 of the sorted IDs, 8 bytes
/// big-endian each; the first 8 bytes of the hash.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let b: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
    sha1_prefix(&b)
}

/// Pure: the IDs the restore will give (from `--initial-cluster` and the cluster token) must
/// be the stored ones; they differ when the cluster was made with another token, or the
/// member joined a running cluster. Run after [`judge_identity`] passed.
pub fn judge_restored_ids(
    stored: &StoredMember,
    cfg: &Config,
    allowed: bool,
) -> Result<(), String> {
    let token = super::run::cluster_token(&cfg.etcd_server_extra_args);
    let token = token.as_deref().unwrap_or(DEFAULT_CLUSTER_TOKEN);
    let mut by_name: Vec<(String, Vec<String>)> = Vec::new();
    for (name, url) in cfg
        .initial_cluster
        .split(',')
        .filter_map(|e| e.trim().split_once('='))
    {
        let url = url.trim().trim_end_matches('/').to_string();
        match by_name.iter_mut().find(|(n, _)| n == name) {
            Some((_, urls)) => urls.push(url),
            None => by_name.push((name.to_string(), vec![url])),
        }
    }
    let ids: Vec<u64> = by_name.iter().map(|(_, u)| member_id(u, token)).collect();
    let own = by_name
        .iter()
        .position(|(n, _)| *n == cfg.name)
        .map(|i| ids[i]);
    let cid = cluster_id(&ids);
    if own == Some(stored.id) && cid == stored.cluster_id {
        return Ok(());
    }
    let what = format!(
        "the restore with cluster token {token:?} would give member ID {:x} and cluster ID {cid:x}, \
         but the data has {:x} and {:x}",
        own.unwrap_or(0),
        stored.id,
        stored.cluster_id
    );
    if allowed {
        log::warn!("{what} ({ALLOW_MEMBER_ID_CHANGE_ENV} is set)");
        return Ok(());
    }
    Err(format!(
        "{what}: the cluster was created with another --initial-cluster-token, another \
         --initial-cluster, or this member joined a running cluster (then its ID cannot be \
         restored). Put the cluster's token into ETCD_CREDS (--initial-cluster-token=TOKEN) \
         and its members into INITIAL_CLUSTER, or accept new IDs with \
         --allow-member-id-change ({ALLOW_MEMBER_ID_CHANGE_ENV}=true)"
    ))
}

/// Env var for `--allow-member-id-change` (migrate-if-needed.sh passes the environment on).
pub const ALLOW_MEMBER_ID_CHANGE_ENV: &str = "ALLOW_MEMBER_ID_CHANGE";

// ---------------------------------------------------------------------------------------
// Free space
// ---------------------------------------------------------------------------------------

/// What a started etcd preallocates in `member/wal` for its next segment (64 MB, etcd's
/// `SegmentSizeBytes`). etcd 3.4/3.5 log a failure and serve, but 3.3.25 exits with "read
/// wal error (no space left on device)" (seen on a tmpfs): counted for every etcd start.
pub const ETCD_WAL_PREALLOC: u64 = 64_000_000;
/// Slack for what etcd and the tools write besides (WAL records, a `.snap` file).
pub const SPACE_MARGIN: u64 = 16 << 20;

/// What the free-space pre-flight needs to know about the data dir (all in bytes).
#[derive(Debug, Clone, Default)]
pub struct SpaceFacts {
    /// `member/` as the run will find it (a copy of it is what a backup takes).
    pub data: u64,
    /// `member/snap/db`.
    pub db: u64,
    /// The existing `.bak` (0 when none).
    pub backup: u64,
    /// The first step puts that `.bak` back (a rerun of a step interrupted after its backup).
    pub puts_back: bool,
}

/// The free space the run needs at its worst moment and, for the message, that step's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceNeed {
    pub bytes: u64,
    pub why: String,
}

/// Pure: the free space each step needs from what it writes and what it removes first (the
/// old `.bak` it replaces, or an interrupted step's `member/` it drops before putting the
/// backup back); the worst step counts, as each frees its temporary copies before the next.
pub fn space_needed(steps: &[Step], f: &SpaceFacts) -> SpaceNeed {
    let mut worst = SpaceNeed {
        bytes: 0,
        why: String::new(),
    };
    let mut bak = f.backup;
    for (i, step) in steps.iter().enumerate() {
        let mut adds: Vec<(&str, u64)> = Vec::new();
        let mut frees: Option<(&str, u64)> = None;
        let backed_up = !matches!(step, Step::WriteVersion { .. } | Step::Downgrade { .. });
        if backed_up && i == 0 && f.puts_back {
            adds.push((
                "copy of the interrupted step's backup .bak put back",
                f.backup,
            ));
            frees = Some(("its changed member/, dropped first", f.data));
        } else if backed_up {
            adds.push(("backup copy of member/", f.data));
            frees = Some(("the old .bak it replaces, removed first", bak));
        }
        match step {
            Step::WriteVersion { .. } => continue,
            Step::Downgrade { .. } => {
                adds.push(("snapshot of the db", f.db));
                adds.push(("restored member/", f.data));
            }
            Step::MigrateV2ToV3 { .. } => adds.push(("converted db", f.data)),
            Step::RollbackV3ToV2 { .. } => adds.push(("converted member/", f.data)),
            Step::Upgrade { .. } | Step::SchemaDowngrade { .. } => {}
        }
        if !matches!(
            step,
            Step::RollbackV3ToV2 { .. } | Step::SchemaDowngrade { .. }
        ) {
            adds.push(("etcd's preallocated next WAL segment", ETCD_WAL_PREALLOC));
        }
        adds.push(("margin", SPACE_MARGIN));
        let total: u64 = adds.iter().map(|(_, n)| n).sum();
        let bytes = total.saturating_sub(frees.map_or(0, |(_, n)| n));
        if bytes > worst.bytes || worst.why.is_empty() {
            let why: Vec<String> = adds.iter().map(|(w, n)| format!("{w} {n}")).collect();
            let freed = match frees {
                Some((w, n)) if n > 0 => format!(" - {w} {n}"),
                _ => String::new(),
            };
            worst = SpaceNeed {
                bytes,
                why: format!("step {} ({step}): {}{freed}", i + 1, why.join(" + ")),
            };
        }
        if backed_up || matches!(step, Step::Downgrade { .. }) {
            bak = f.data;
        }
    }
    worst
}

// ---------------------------------------------------------------------------------------
// A torn last WAL record
// ---------------------------------------------------------------------------------------

/// The remedy for findings that are only a torn last WAL record: etcd truncates such a record
/// itself when it starts (it was never acknowledged), so one start of the current etcd fixes
/// it. `None` when other problems are found too.
pub fn torn_wal_remedy(findings: &[String]) -> Option<String> {
    let torn = |f: &String| f.contains("torn");
    if findings.is_empty() || !findings.iter().all(torn) {
        return None;
    }
    Some(
        "the last WAL record is torn: a crash or power loss cut it while etcd wrote it, so it \
         was never acknowledged to any client, and etcd truncates it itself when it starts. \
         Start the etcd that wrote this data (the version in version.txt) on the data dir \
         once, let it become ready, stop it, and rerun migrate"
            .to_string(),
    )
}

// ---------------------------------------------------------------------------------------
// The checks migrate runs before its first step
// ---------------------------------------------------------------------------------------

/// What migrate's pre-flight adds to the binaries, space and integrity checks.
pub fn check_steps(
    cfg: &Config,
    data: &DataDir,
    view: &View,
    steps: &[Step],
) -> Result<(), String> {
    let starts_etcd = steps.iter().any(|s| {
        matches!(
            s,
            Step::Upgrade { .. } | Step::Downgrade { .. } | Step::MigrateV2ToV3 { .. }
        )
    });
    let works_on_data = starts_etcd
        || steps
            .iter()
            .any(|s| matches!(s, Step::RollbackV3ToV2 { .. }));
    if works_on_data {
        check_no_running_etcd(data.path())?;
    }
    if starts_etcd {
        check_peer_tls(cfg)?;
    }
    if steps.iter().any(|s| matches!(s, Step::Downgrade { .. })) {
        match stored_member(&view.files_dir) {
            Some(Identity::Listed(stored)) => {
                judge_identity(&stored, cfg, cfg.allow_member_id_change)?;
                judge_restored_ids(&stored, cfg, cfg.allow_member_id_change)?;
            }
            Some(unlisted) => judge_unlisted(&unlisted, cfg.allow_member_id_change)?,
            None => {}
        }
    }
    if let Some(Step::RollbackV3ToV2 { to, .. }) = steps
        .iter()
        .find(|s| matches!(s, Step::RollbackV3ToV2 { .. }))
    {
        // rollback2's own refusals (etcd2 data, values a v2 store cannot hold) before the
        // backup is made, on the files the run will have once its leftovers are dealt with
        // (a dry run before an interrupted step's backup is put back: that backup).
        let files = if view.files_dir == data.path() {
            data.clone()
        } else {
            DataDir::new(&view.files_dir).map_err(|e| e.to_string())?
        };
        crate::rollback::rollback_dry_run_for_migrate(&files, to)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::config::{resolve, Flags};

    fn v(s: &str) -> EtcdVersion {
        s.parse().unwrap()
    }

    fn pair(s: &str) -> VersionPair {
        s.parse().unwrap()
    }

    #[test]
    fn a_wal_member_the_db_does_not_list_is_refused_naming_both_unless_allowed() {
        let found = Identity::NotListed {
            id: 0xabc,
            cluster_id: 0xdef,
            listed: vec![0x123, 0x456],
            removed: false,
        };
        let e = judge_unlisted(&found, false).unwrap_err();
        for want in [
            "member abc (cluster def)",
            "lists only 123, 456",
            "different members",
            "etcdctl member add",
            "--allow-member-id-change (ALLOW_MEMBER_ID_CHANGE=true)",
        ] {
            assert!(e.contains(want), "{want:?} not in {e}");
        }
        assert!(judge_unlisted(&found, true).is_ok());
        let removed = Identity::NotListed {
            id: 0xabc,
            cluster_id: 0xdef,
            listed: vec![],
            removed: true,
        };
        let e = judge_unlisted(&removed, false).unwrap_err();
        assert!(
            e.contains("lists no member") && e.contains("was removed"),
            "{e}"
        );
    }

    #[test]
    fn space_is_what_each_step_writes_less_what_it_removes_first() {
        let v = |s: &str| s.parse::<EtcdVersion>().unwrap();
        let up = |to: &str| Step::Upgrade {
            to: v(to),
            storage: Storage::Etcd3,
        };
        let m = SPACE_MARGIN;
        let w = ETCD_WAL_PREALLOC;
        let f = SpaceFacts {
            data: 100,
            db: 30,
            backup: 0,
            puts_back: false,
        };
        // An upgrade: one backup copy.
        let need = space_needed(&[up("3.5.1")], &f);
        assert_eq!(need.bytes, 100 + w + m);
        assert!(
            need.why.starts_with("step 1 (") && need.why.contains("backup copy of member/ 100"),
            "{}",
            need.why
        );
        // An old .bak is removed first; the second upgrade replaces the first one's.
        let old = SpaceFacts {
            backup: 60,
            ..f.clone()
        };
        assert_eq!(space_needed(&[up("3.5.1")], &old).bytes, 40 + w + m);
        assert_eq!(
            space_needed(&[up("3.4.23"), up("3.5.1")], &old).bytes,
            40 + w + m
        );
        // A rerun that puts the interrupted step's backup back drops member/ first.
        let rerun = SpaceFacts {
            backup: 100,
            puts_back: true,
            ..f.clone()
        };
        let need = space_needed(&[up("3.5.1")], &rerun);
        assert_eq!(need.bytes, w + m, "{}", need.why);
        assert!(need.why.contains("dropped first 100"), "{}", need.why);
        // A downgrade: snapshot + restored copy; the old .bak goes only at the swap.
        let down = Step::Downgrade {
            current: v("3.5.1"),
            run: v("3.5.1"),
            to: v("3.4.23"),
        };
        assert_eq!(space_needed(&[down], &old).bytes, 30 + 100 + w + m);
        let v3v2 = Step::RollbackV3ToV2 {
            from: v("3.4.23"),
            to: v("2.2.1"),
        };
        assert_eq!(space_needed(&[v3v2], &f).bytes, 200 + m);
        let wv = Step::WriteVersion {
            to: VersionPair::new(v("3.4.23"), Storage::Etcd3),
        };
        assert_eq!(space_needed(&[wv], &f).bytes, 0);
    }

    fn cfg(env: &[(&str, &str)]) -> Config {
        let flags = Flags {
            bundled_versions: Some("3.4.23,3.5.1".into()),
            target_version: Some("3.4.23".into()),
            target_storage: Some("etcd3".into()),
            data_dir: Some("/var/etcd/data".into()),
            name: Some("etcd-a".into()),
            ..Flags::default()
        };
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        resolve(flags, &move |k: &str| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
        .unwrap()
    }

    #[test]
    fn member_dir_is_answered_with_its_parent() {
        let t = std::env::temp_dir().join(format!("pf-member-{}", std::process::id()));
        let m = t.join("data/member");
        std::fs::create_dir_all(m.join("wal")).unwrap();
        let e = check_not_member_dir(&m).unwrap_err();
        assert!(
            e.contains(&format!("did you mean {}?", t.join("data").display())),
            "{e}"
        );
        assert!(check_not_member_dir(&t.join("data")).is_ok());
        // A data dir that happens to be called member (it holds member/) is fine.
        std::fs::create_dir_all(m.join("member")).unwrap();
        assert!(check_not_member_dir(&m).is_ok());
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn newer_files_than_version_txt_are_refused_naming_both_and_the_fix() {
        let f = Path::new("/d/version.txt");
        let files = FilesSay {
            versions: vec![(v("3.5.0"), "the db's cluster/clusterVersion".into())],
            v3_keys: true,
        };
        let bundled = [v("3.4.23"), v("3.5.1")];
        let e = judge_claim(
            f,
            &pair("3.4.23/etcd3"),
            &files,
            &pair("3.4.23/etcd3"),
            false,
            &bundled,
        )
        .unwrap_err();
        for want in [
            "says 3.4.23/etcd3",
            "etcd 3.5",
            "clusterVersion is 3.5.0",
            "printf 3.5.1/etcd3 > /d/version.txt",
        ] {
            assert!(e.contains(want), "{want:?} not in {e}");
        }
        // Same or older files agree.
        assert_eq!(
            judge_claim(
                f,
                &pair("3.5.1/etcd3"),
                &files,
                &pair("3.4.23/etcd3"),
                false,
                &bundled
            ),
            Ok(Claim::Agrees)
        );
        // Two minors ahead is no interrupted step: refused even towards a later target.
        let e = judge_claim(
            f,
            &pair("3.3.0/etcd3"),
            &files,
            &pair("3.5.1/etcd3"),
            false,
            &bundled,
        );
        assert!(e.is_err(), "{e:?}");
        // An upgrade towards 3.5 that ran etcd 3.5 and was cut before it wrote version.txt.
        assert_eq!(
            judge_claim(
                f,
                &pair("3.4.23/etcd3"),
                &files,
                &pair("3.5.1/etcd3"),
                false,
                &bundled
            ),
            Ok(Claim::UpgradeInterrupted(pair("3.5.1/etcd3")))
        );
        // 3.6's storage version counts too; no bundled 3.6 -> x.y.0.
        let files36 = FilesSay {
            versions: vec![
                (v("3.5.0"), "a".into()),
                (v("3.6.0"), "the db's meta/storageVersion".into()),
            ],
            v3_keys: true,
        };
        let e = judge_claim(
            f,
            &pair("3.5.1/etcd3"),
            &files36,
            &pair("3.5.1/etcd3"),
            false,
            &bundled,
        )
        .unwrap_err();
        assert!(e.contains("printf 3.6.0/etcd3"), "{e}");
    }

    #[test]
    fn etcd2_claimed_over_v3_keys_is_refused_unless_a_conversion_was_cut() {
        let f = Path::new("/d/version.txt");
        let files = FilesSay {
            versions: vec![(v("3.4.0"), "x".into())],
            v3_keys: true,
        };
        let e = judge_claim(
            f,
            &pair("3.4.23/etcd2"),
            &files,
            &pair("3.4.23/etcd3"),
            false,
            &[],
        )
        .unwrap_err();
        assert!(e.contains("printf 3.4.0/etcd3"), "{e}");
        assert_eq!(
            judge_claim(
                f,
                &pair("3.4.23/etcd2"),
                &files,
                &pair("3.4.23/etcd3"),
                true,
                &[]
            ),
            Ok(Claim::Agrees)
        );
    }

    #[test]
    fn peer_tls_flags_in_both_spellings() {
        let a = |s: &str| crate::migrate::config::split_args(s).unwrap();
        assert_eq!(
            PeerTls::from_args(&a(
                "--peer-trusted-ca-file /ca.crt --peer-cert-file=/p.crt -peer-key-file /p.key --peer-client-cert-auth"
            )),
            PeerTls {
                cert_file: Some("/p.crt".into()),
                key_file: Some("/p.key".into()),
                trusted_ca_file: Some("/ca.crt".into()),
                auto_tls: false
            }
        );
        assert!(PeerTls::from_args(&a("--peer-auto-tls")).auto_tls);
    }

    #[test]
    fn https_peers_need_credentials() {
        let https = [
            ("INITIAL_CLUSTER", "etcd-a=https://10.0.0.1:2380"),
            ("LISTEN_PEER_URLS", "https://10.0.0.1:2380"),
            ("INITIAL_ADVERTISE_PEER_URLS", "https://10.0.0.1:2380"),
        ];
        let e = judge_peer_tls(&cfg(&https)).unwrap_err();
        assert!(
            e.contains("https://10.0.0.1:2380") && e.contains("ETCD_CREDS"),
            "{e}"
        );
        let mut with = https.to_vec();
        with.push(("ETCD_CREDS", "--peer-cert-file=/c --peer-key-file=/k"));
        assert_eq!(judge_peer_tls(&cfg(&with)).unwrap().len(), 2);
        assert!(judge_peer_tls(&cfg(&[])).unwrap().is_empty());
    }

    #[test]
    fn identity_changes_are_refused_naming_the_stored_member() {
        let stored = StoredMember {
            id: 0xabc,
            cluster_id: 0xdef,
            name: "etcd-a".into(),
            peer_urls: vec!["http://10.0.0.1:2380".into()],
        };
        // The default peer URL http://localhost:2380 differs.
        let e = judge_identity(&stored, &cfg(&[]), false).unwrap_err();
        for want in [
            "http://localhost:2380",
            "INITIAL_ADVERTISE_PEER_URLS=http://10.0.0.1:2380",
            "INITIAL_CLUSTER=etcd-a=http://10.0.0.1:2380",
            "ETCD_NAME=etcd-a",
            "--allow-member-id-change",
            "ALLOW_MEMBER_ID_CHANGE=true",
            "abc",
        ] {
            assert!(e.contains(want), "{want:?} not in {e}");
        }
        assert!(judge_identity(&stored, &cfg(&[]), true).is_ok());
        let same = cfg(&[
            ("INITIAL_CLUSTER", "etcd-a=http://10.0.0.1:2380"),
            ("INITIAL_ADVERTISE_PEER_URLS", "http://10.0.0.1:2380/"),
        ]);
        assert!(judge_identity(&stored, &same, false).is_ok());
        let renamed = StoredMember {
            name: "etcd-b".into(),
            ..stored
        };
        let e = judge_identity(&renamed, &same, false).unwrap_err();
        assert!(e.contains("ETCD_NAME=etcd-b"), "{e}");
    }

    #[test]
    fn restored_ids_follow_etcds_derivation() {
        // Member and cluster IDs of a real etcd 3.5.1 started as
        // `--initial-cluster default=http://localhost:2380` (etcd's defaults).
        let urls = vec!["http://localhost:2380".to_string()];
        let id = member_id(&urls, DEFAULT_CLUSTER_TOKEN);
        assert_eq!(id, 0x8e9e05c52164694d);
        assert_eq!(cluster_id(&[id]), 0xcdf818194e3a8c32);
        let c = cfg(&[
            ("INITIAL_CLUSTER", "etcd-a=http://localhost:2380"),
            ("INITIAL_ADVERTISE_PEER_URLS", "http://localhost:2380"),
        ]);
        let stored = StoredMember {
            id,
            cluster_id: cluster_id(&[id]),
            name: "etcd-a".into(),
            peer_urls: urls,
        };
        assert!(judge_restored_ids(&stored, &c, false).is_ok());
        let other_token = StoredMember {
            id: member_id(&stored.peer_urls, "t"),
            cluster_id: cluster_id(&[member_id(&stored.peer_urls, "t")]),
            ..stored.clone()
        };
        let e = judge_restored_ids(&other_token, &c, false).unwrap_err();
        assert!(e.contains("--initial-cluster-token=TOKEN"), "{e}");
        assert!(judge_restored_ids(&other_token, &c, true).is_ok());
    }

    #[test]
    fn torn_tail_alone_gets_a_remedy() {
        let torn = vec!["/d/member/wal/0.wal: offset 9: torn last record (etcd truncates the WAL here on start): x".to_string()];
        assert!(torn_wal_remedy(&torn)
            .unwrap()
            .contains("Start the etcd that wrote"));
        let mixed = vec![torn[0].clone(), "db: offset 4096: bad page".into()];
        assert_eq!(torn_wal_remedy(&mixed), None);
    }
}
