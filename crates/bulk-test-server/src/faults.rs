//! Fault injection: rules that make chosen requests misbehave a given number of times, and a
//! source that draws a fault (or none) for every request the rules leave alone.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Which requests a rule applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultTarget {
    /// `$export` kick-off requests (any level).
    KickOff,
    /// Status (polling) requests, including manifest pages.
    Status,
    /// Any output, deleted or error file download.
    AnyFile,
    /// The file at this 0-based position in the job's `output` array.
    FileIndex(usize),
    /// Output files of this resource type.
    FileType(String),
    /// The token endpoint.
    Token,
    /// Resource reads (`GET [base]/[type]/[id]`).
    Read,
}

/// How `Retry-After` is written on a 429.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryAfter {
    /// Delay in seconds (`Retry-After: 2`).
    Seconds(u64),
    /// An HTTP-date this many seconds from now.
    HttpDate(u64),
    /// A Unix epoch timestamp this many seconds from now (a quirk of some real servers).
    EpochTimestamp(u64),
    /// A Unix epoch timestamp in milliseconds, this many seconds from now.
    EpochMillis(u64),
    /// Fractional seconds (`Retry-After: 0.25`), outside the RFC but sent by some servers.
    FractionalMillis(u64),
    /// No `Retry-After` header at all.
    Absent,
    /// A value no parser understands (`Retry-After: soon`).
    Invalid,
}

/// What goes wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 429 Too Many Requests with `Retry-After` and an OperationOutcome (`throttled`).
    TooManyRequests(RetryAfter),
    /// A 5xx (e.g. 503) whose OperationOutcome issue code is `transient`.
    Transient { status: u16 },
    /// A 5xx (e.g. 500) with a fatal OperationOutcome (issue code `exception`).
    Fatal { status: u16 },
    /// File body: send this many bytes, then abort the stream so the connection drops.
    ResetAfter { bytes: u64 },
    /// File body: announce the full `Content-Length` but end cleanly after this many bytes
    /// (`chunked: true`: chunked encoding that stops without the final chunk).
    Truncate { bytes: u64, chunked: bool },
    /// File body throttled to this many bytes per second.
    Slow { bytes_per_sec: u64 },
    /// File answers 404 or 410 (e.g. the file expired).
    Gone { status: u16 },
    /// Status: answer 202 (still in progress) instead of the manifest.
    DelayManifest,
    /// Kick-off: the job's output repeats its first `count` resources of each type in an extra
    /// file, with an older `meta.lastUpdated` and `versionId`, as servers that export while
    /// data changes do.
    DuplicateIds { count: usize },
    /// Kick-off: the job's output gets an extra file per type of lines no client should
    /// load: cut-off JSON, malformed JSON, a resource without `id`, one of an unknown type.
    BadLines,
    /// Kick-off: the job serves the first `count` resources of each type as lines no reader
    /// can decode (an unpaired UTF-16 surrogate in a string) in place of their valid lines,
    /// as a server with corrupt data does; their ids stay readable.
    UnreadableResources { count: usize },
    /// Kick-off: accepted (202), but the job then fails: its status URL answers 500 with a
    /// fatal OperationOutcome from then on.
    FailJob,
    /// A 5xx whose body is a proxy's HTML error page, not an OperationOutcome.
    PlainStatus { status: u16 },
    /// Every access token issued so far expires now; the request itself is then refused with
    /// 401 (`invalid_token`, expired), as when a token runs out in the middle of an export.
    /// Only where SMART auth is on (for files: with `requires_access_token`).
    ExpireTokens,
    /// The server forgets every access token (a restart, a key rotation): 401, unknown token.
    RevokeTokens,
    /// Status or file: the server drops the job (its files expired); this and every later
    /// request for its status or files answers 404.
    ExpireJob,
}

/// A fault, where it applies, and how many times it fires (`None` = every time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRule {
    pub target: FaultTarget,
    pub fault: Fault,
    pub times: Option<u32>,
}

impl FaultRule {
    /// A rule that fires once.
    pub fn once(target: FaultTarget, fault: Fault) -> Self {
        Self {
            target,
            fault,
            times: Some(1),
        }
    }
    /// A rule that fires `n` times.
    pub fn times(target: FaultTarget, fault: Fault, n: u32) -> Self {
        Self {
            target,
            fault,
            times: Some(n),
        }
    }
    /// A rule that fires on every matching request until cleared.
    pub fn always(target: FaultTarget, fault: Fault) -> Self {
        Self {
            target,
            fault,
            times: None,
        }
    }
}

/// A request as a [`FaultSource`] sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRequest {
    /// What is requested: [`FaultTarget::KickOff`], [`FaultTarget::Status`],
    /// [`FaultTarget::FileIndex`] for an output file, [`FaultTarget::AnyFile`] for a deleted or
    /// error file, [`FaultTarget::Token`] or [`FaultTarget::Read`].
    pub target: FaultTarget,
    /// The resource type of a file.
    pub resource_type: Option<String>,
    /// How many requests for the same target (and file type) the source saw before this one,
    /// over the server's life: with one download per file at a time, the n-th attempt at a
    /// file is the same n however the downloads of other files interleave, so a source that
    /// decides by `(target, attempt)` makes the same faults on every replay.
    pub attempt: u32,
}

/// Draws the fault of a request no rule matched (`None`: serve it normally). Job faults
/// ([`Fault::DuplicateIds`], [`Fault::BadLines`], [`Fault::UnreadableResources`],
/// [`Fault::FailJob`]) are rules only.
pub type FaultSource = Arc<dyn Fn(&FaultRequest) -> Option<Fault> + Send + Sync>;

/// Faults that shape a job rather than replace a response.
fn is_job_fault(f: &Fault) -> bool {
    matches!(
        f,
        Fault::DuplicateIds { .. }
            | Fault::BadLines
            | Fault::FailJob
            | Fault::UnreadableResources { .. }
    )
}

/// Shared handle to the server's fault rules.
#[derive(Clone, Default)]
pub struct FaultHandle {
    rules: Arc<Mutex<Vec<FaultRule>>>,
    source: Arc<Mutex<Option<FaultSource>>>,
    /// Requests the source saw, by target and file type.
    attempts: Arc<Mutex<HashMap<(String, String), u32>>>,
}

/// Which file a download request is for, to match file rules.
pub(crate) struct FileInfo<'a> {
    pub index: Option<usize>,
    pub resource_type: &'a str,
}

impl FaultHandle {
    /// Adds a rule; rules are tried in insertion order and the first match fires.
    pub fn add(&self, rule: FaultRule) {
        if let Ok(mut r) = self.rules.lock() {
            r.push(rule);
        }
    }

    /// Removes all rules (the source stays; see [`FaultHandle::set_source`]).
    pub fn clear(&self) {
        if let Ok(mut r) = self.rules.lock() {
            r.clear();
        }
    }

    /// Sets (or with `None` removes) the source asked for the fault of every request that no
    /// rule matches.
    pub fn set_source(&self, source: Option<FaultSource>) {
        if let Ok(mut s) = self.source.lock() {
            *s = source;
        }
    }

    /// Asks the source, if there is one, for the fault of a request no rule matched.
    fn draw(&self, target: &FaultTarget, resource_type: Option<&str>) -> Option<Fault> {
        let source = self.source.lock().ok()?.clone()?;
        let attempt = {
            let mut attempts = self.attempts.lock().ok()?;
            let key = (
                format!("{target:?}"),
                resource_type.unwrap_or("").to_string(),
            );
            let n = attempts.entry(key).or_insert(0);
            *n += 1;
            *n - 1
        };
        let request = FaultRequest {
            target: target.clone(),
            resource_type: resource_type.map(str::to_string),
            attempt,
        };
        source(&request).filter(|f| !is_job_fault(f))
    }

    /// Rules not yet used up.
    pub fn pending(&self) -> Vec<FaultRule> {
        self.rules.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Takes one firing of the first rule matching `pred`.
    fn take(&self, pred: impl Fn(&FaultRule) -> bool) -> Option<Fault> {
        let mut rules = self.rules.lock().ok()?;
        let pos = rules.iter().position(&pred)?;
        let fault = rules[pos].fault.clone();
        if let Some(n) = rules[pos].times.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                rules.remove(pos);
            }
        }
        Some(fault)
    }

    pub(crate) fn take_for(&self, target: &FaultTarget) -> Option<Fault> {
        self.take(|r| &r.target == target && !is_job_fault(&r.fault))
            .or_else(|| self.draw(target, None))
    }

    /// The duplicate-ids fault is consumed when a job is planned, not as a response.
    pub(crate) fn take_duplicate_ids(&self) -> Option<usize> {
        match self.take(|r| {
            r.target == FaultTarget::KickOff && matches!(r.fault, Fault::DuplicateIds { .. })
        }) {
            Some(Fault::DuplicateIds { count }) => Some(count),
            _ => None,
        }
    }

    /// The unreadable-resources fault is consumed when a job is planned.
    pub(crate) fn take_unreadable(&self) -> Option<usize> {
        match self.take(|r| {
            r.target == FaultTarget::KickOff && matches!(r.fault, Fault::UnreadableResources { .. })
        }) {
            Some(Fault::UnreadableResources { count }) => Some(count),
            _ => None,
        }
    }

    /// The bad-lines fault is consumed when a job is planned.
    pub(crate) fn take_bad_lines(&self) -> bool {
        self.take(|r| r.target == FaultTarget::KickOff && r.fault == Fault::BadLines)
            .is_some()
    }

    /// `FailJob` is consumed when a job is planned.
    pub(crate) fn take_fail_job(&self) -> bool {
        self.take(|r| r.target == FaultTarget::KickOff && r.fault == Fault::FailJob)
            .is_some()
    }

    pub(crate) fn take_for_file(&self, file: &FileInfo<'_>) -> Option<Fault> {
        self.take(|r| match &r.target {
            FaultTarget::AnyFile => true,
            FaultTarget::FileIndex(i) => file.index == Some(*i),
            FaultTarget::FileType(t) => t == file.resource_type,
            _ => false,
        })
        .or_else(|| {
            let target = file
                .index
                .map_or(FaultTarget::AnyFile, FaultTarget::FileIndex);
            self.draw(&target, Some(file.resource_type))
        })
    }
}
