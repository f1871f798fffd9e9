//! Fault injection: rules that make chosen requests misbehave a given number of times.
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
    /// Kick-off: accepted (202), but the job then fails: its status URL answers 500 with a
    /// fatal OperationOutcome from then on.
    FailJob,
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

/// Faults that shape a job rather than replace a response.
fn is_job_fault(f: &Fault) -> bool {
    matches!(
        f,
        Fault::DuplicateIds { .. } | Fault::BadLines | Fault::FailJob
    )
}

/// Shared handle to the server's fault rules.
#[derive(Clone, Default)]
pub struct FaultHandle {
    rules: Arc<Mutex<Vec<FaultRule>>>,
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

    /// Removes all rules.
    pub fn clear(&self) {
        if let Ok(mut r) = self.rules.lock() {
            r.clear();
        }
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
    }
}
