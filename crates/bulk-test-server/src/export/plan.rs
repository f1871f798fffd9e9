//! Planning an export: which resources of the base data and the store's snapshot go into
//! which files (time window, compartments, `_typeFilter`, file size, injected faults).
use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use super::files::{FileKind, FileSpec, Plan, Seg};
use super::job::Job;
use super::request::{ExportRequest, Level};
use crate::resource::{group_members, instant, parse_instant, set_meta};
use crate::store::{Mutation, Overlay, StoreInner, push_index};

/// Inputs of planning besides the request.
pub(crate) struct PlanInput<'a> {
    pub store: Arc<StoreInner>,
    pub overlay: Arc<Overlay>,
    pub req: &'a ExportRequest,
    pub transaction_time: DateTime<Utc>,
    pub resources_per_file: usize,
    pub duplicates: Option<usize>,
    /// Add a file of bad lines per type ([`crate::Fault::BadLines`]).
    pub bad_lines: bool,
    /// Serve this many resources of each type as undecodable lines
    /// ([`crate::Fault::UnreadableResources`]).
    pub unreadable: Option<usize>,
    /// Serve resources without `meta.lastUpdated`, as servers that do not keep it.
    pub without_last_updated: bool,
    /// The `duplicates` are served again unchanged (not as older versions).
    pub identical_copies: bool,
}

fn outcome_line(severity: &str, code: &str, text: &str) -> Arc<str> {
    Arc::from(
        json!({
            "resourceType": "OperationOutcome",
            "issue": [{ "severity": severity, "code": code, "diagnostics": text }]
        })
        .to_string(),
    )
}

/// Decides which resources go into which files. Runs on a blocking thread.
pub(crate) fn plan(input: PlanInput<'_>, job: &Job) -> Result<Plan, String> {
    let PlanInput {
        store,
        overlay,
        req,
        transaction_time: tx,
        resources_per_file,
        duplicates,
        bad_lines,
        unreadable,
        without_last_updated,
        identical_copies,
    } = input;
    let base = &store.base;
    let per_file = resources_per_file.max(1) as u64;
    let mut errors: Vec<Arc<str>> = Vec::new();
    for t in &req.unknown_types {
        errors.push(outcome_line(
            "error",
            "not-supported",
            &format!("Resource type {t} cannot be exported by this server"),
        ));
    }
    for w in &req.warnings {
        errors.push(outcome_line("warning", "not-supported", w));
    }

    // Which patients' compartments are exported (None = no restriction).
    let patients: Option<Vec<String>> = match &req.level {
        Level::System => None,
        Level::Patient => req.patients.clone(),
        Level::Group(gid) => {
            let members = match overlay.get(&("Group".to_string(), gid.clone())) {
                Some(Mutation::Upsert { value, .. }) => Some(group_members(value)),
                Some(Mutation::Delete { .. }) => None,
                None => base.group_members(gid),
            }
            .ok_or_else(|| format!("Group/{gid} not found"))?;
            Some(match &req.patients {
                Some(ps) => members.into_iter().filter(|m| ps.contains(m)).collect(),
                None => members,
            })
        }
    };
    if let Some(ps) = &req.patients {
        for p in ps {
            let known = base.is_patient(p)
                || matches!(
                    overlay.get(&("Patient".to_string(), p.clone())),
                    Some(Mutation::Upsert { .. })
                );
            if !known {
                errors.push(outcome_line(
                    "error",
                    "not-found",
                    &format!("Patient/{p} was not found"),
                ));
            }
        }
    }
    let patient_set: Option<BTreeSet<&str>> = patients
        .as_ref()
        .map(|v| v.iter().map(String::as_str).collect());
    let compartment_only = req.level != Level::System;

    let mut types: BTreeSet<String> = base.types().into_iter().collect();
    for (ty, _) in overlay.keys() {
        types.insert(ty.clone());
    }
    if let Some(wanted) = &req.types {
        types.retain(|t| wanted.contains(t));
    }
    let until = req.until.map(|u| u.min(tx)).unwrap_or(tx);
    let in_window = |lu: DateTime<Utc>| req.since.is_none_or(|s| lu > s) && lu <= until;

    let mut outputs: Vec<(String, Vec<Seg>, u64)> = Vec::new();
    let mut deleted_lines: Vec<Arc<str>> = Vec::new();
    let total_types = types.len().max(1) as u64;
    for (n, ty) in types.iter().enumerate() {
        if job.cancelled.load(Ordering::Relaxed) {
            return Err("cancelled".into());
        }
        job.progress
            .store(n as u64 * 1000 / total_types, Ordering::Relaxed);
        let filters = req.type_filters.get(ty);
        // Candidate base indices.
        let mut ranges: Vec<Range<u64>> = match &patient_set {
            None if compartment_only => base.compartment_ranges(ty),
            None => {
                let n = base.len(ty);
                if n == 0 {
                    Vec::new()
                } else {
                    std::iter::once(0..n).collect()
                }
            }
            Some(ps) => {
                let mut rs: Vec<Range<u64>> =
                    ps.iter().flat_map(|p| base.patient_ranges(ty, p)).collect();
                rs.sort_by_key(|r| r.start);
                rs
            }
        };
        // Resources changed through the store are served from the overlay instead.
        let mut overlaid: Vec<u64> = overlay
            .range((ty.clone(), String::new())..)
            .take_while(|((t, _), _)| t == ty)
            .filter_map(|((_, id), _)| base.index_of(ty, id))
            .collect();
        overlaid.sort_unstable();
        if !overlaid.is_empty() {
            ranges = subtract(ranges, &overlaid);
        }
        // Time window.
        match base.uniform_last_updated(ty) {
            Some(lu) => {
                if !in_window(lu) {
                    ranges.clear();
                }
            }
            None => {
                let mut kept = Vec::new();
                for r in ranges {
                    for i in r {
                        if in_window(base.last_updated(ty, i)) {
                            push_index(&mut kept, i);
                        }
                    }
                }
                ranges = kept;
            }
        }
        if let Some(fs) = filters {
            let mut kept = Vec::new();
            for r in ranges {
                for i in r {
                    if i % 4096 == 0 && job.cancelled.load(Ordering::Relaxed) {
                        return Err("cancelled".into());
                    }
                    let v = base.value(ty, i);
                    let lu = base.last_updated(ty, i);
                    if fs.iter().any(|f| f.matches(&v, lu)) {
                        push_index(&mut kept, i);
                    }
                }
            }
            ranges = kept;
        }
        let mut segs: Vec<Seg> = ranges.into_iter().map(Seg::Base).collect();
        let mut count: u64 = segs
            .iter()
            .map(|s| match s {
                Seg::Base(r) => r.end - r.start,
                Seg::Line(_) => 1,
            })
            .sum();
        for ((_, id), m) in overlay
            .range((ty.clone(), String::new())..)
            .take_while(|((t, _), _)| t == ty)
        {
            match m {
                Mutation::Upsert {
                    line,
                    value,
                    last_updated,
                    patient,
                } => {
                    if !in_window(*last_updated) {
                        continue;
                    }
                    let in_scope = match &patient_set {
                        None => !compartment_only || patient.is_some(),
                        Some(ps) => patient.as_deref().is_some_and(|p| ps.contains(p)),
                    };
                    if in_scope
                        && filters
                            .is_none_or(|fs| fs.iter().any(|f| f.matches(value, *last_updated)))
                    {
                        segs.push(Seg::Line(line.clone()));
                        count += 1;
                    }
                }
                Mutation::Delete { at, patient } => {
                    let in_scope = match &patient_set {
                        None => !compartment_only || patient.is_some(),
                        Some(ps) => patient.as_deref().is_some_and(|p| ps.contains(p)),
                    };
                    if req.since.is_some() && in_window(*at) && in_scope {
                        deleted_lines.push(Arc::from(
                            json!({
                                "resourceType": "Bundle",
                                "type": "transaction",
                                "entry": [{ "request": { "method": "DELETE", "url": format!("{ty}/{id}") } }]
                            })
                            .to_string(),
                        ));
                    }
                }
            }
        }
        if let Some(k) = unreadable {
            segs = spoil_first(segs, k, |i| base.line(ty, i));
        }
        if count > 0 {
            outputs.push((ty.clone(), segs, count));
        }
    }

    let mut files = Vec::new();
    let elements = req.elements.clone();
    let push =
        |files: &mut Vec<Arc<FileSpec>>, ty: &str, kind: FileKind, segs: Vec<Seg>, count: u64| {
            let number = files.len();
            let output_index = (kind == FileKind::Output).then(|| {
                files
                    .iter()
                    .filter(|f: &&Arc<FileSpec>| f.kind == FileKind::Output)
                    .count()
            });
            files.push(Arc::new(FileSpec {
                number,
                resource_type: ty.to_string(),
                kind,
                output_index,
                count,
                segs,
                store: store.clone(),
                elements: if kind == FileKind::Output {
                    elements.clone()
                } else {
                    None
                },
                without_last_updated: without_last_updated && kind == FileKind::Output,
                len: OnceLock::new(),
            }));
        };
    for (ty, segs, _) in outputs {
        let mut first: Vec<Arc<str>> = Vec::new();
        let mut chunk: Vec<Seg> = Vec::new();
        let mut in_chunk = 0u64;
        // A full chunk becomes a file.
        let cut = |files: &mut Vec<Arc<FileSpec>>, chunk: &mut Vec<Seg>, in_chunk: &mut u64| {
            if *in_chunk == per_file {
                push(
                    files,
                    &ty,
                    FileKind::Output,
                    std::mem::take(chunk),
                    *in_chunk,
                );
                *in_chunk = 0;
            }
        };
        for seg in segs {
            match seg {
                Seg::Line(l) => {
                    if duplicates.is_some_and(|d| first.len() < d) {
                        first.push(l.clone());
                    }
                    chunk.push(Seg::Line(l));
                    in_chunk += 1;
                    cut(&mut files, &mut chunk, &mut in_chunk);
                }
                Seg::Base(mut r) => {
                    while !r.is_empty() {
                        let take = (per_file - in_chunk).min(r.end - r.start);
                        if let Some(d) = duplicates {
                            for i in r.start
                                ..(r.start + take)
                                    .min(r.start + d.saturating_sub(first.len()) as u64)
                            {
                                first.push(base.line(&ty, i));
                            }
                        }
                        chunk.push(Seg::Base(r.start..r.start + take));
                        in_chunk += take;
                        r.start += take;
                        cut(&mut files, &mut chunk, &mut in_chunk);
                    }
                }
            }
        }
        if in_chunk > 0 {
            push(&mut files, &ty, FileKind::Output, chunk, in_chunk);
        }
        if !first.is_empty() {
            // Older copies, served after the current ones: last-writer-wins clients get it
            // wrong. Or the same resources again, as some servers list them in two files.
            let stale: Vec<Seg> = first
                .iter()
                .map(|l| {
                    Seg::Line(if identical_copies {
                        l.clone()
                    } else {
                        stale_copy(l)
                    })
                })
                .collect();
            let n = stale.len() as u64;
            push(&mut files, &ty, FileKind::Output, stale, n);
        }
        if bad_lines {
            let bad: Vec<Seg> = [
                format!(r#"{{"resourceType":"{ty}","id":"#),
                format!(r#"{{"resourceType":"{ty}","id":"bad-1",}}"#),
                format!(r#"{{"resourceType":"{ty}"}}"#),
                r#"{"resourceType":"NoSuchType","id":"bad-2"}"#.to_string(),
            ]
            .into_iter()
            .map(|l| Seg::Line(Arc::from(l)))
            .collect();
            let n = bad.len() as u64;
            push(&mut files, &ty, FileKind::Output, bad, n);
        }
    }
    if !deleted_lines.is_empty() {
        let n = deleted_lines.len() as u64;
        push(
            &mut files,
            "Bundle",
            FileKind::Deleted,
            deleted_lines.into_iter().map(Seg::Line).collect(),
            n,
        );
    }
    if !errors.is_empty() {
        let n = errors.len() as u64;
        push(
            &mut files,
            "OperationOutcome",
            FileKind::Error,
            errors.into_iter().map(Seg::Line).collect(),
            n,
        );
    }
    job.progress.store(1000, Ordering::Relaxed);
    Ok(Plan { files })
}

/// The segments with their first `k` resources as undecodable lines (base lines from `line`).
fn spoil_first(segs: Vec<Seg>, k: usize, line: impl Fn(u64) -> Arc<str>) -> Vec<Seg> {
    let mut left = k as u64;
    let mut out = Vec::with_capacity(segs.len() + k);
    for seg in segs {
        match seg {
            seg if left == 0 => out.push(seg),
            Seg::Line(l) => {
                out.push(Seg::Line(unreadable(&l)));
                left -= 1;
            }
            Seg::Base(r) => {
                let take = left.min(r.end - r.start);
                out.extend((r.start..r.start + take).map(|i| Seg::Line(unreadable(&line(i)))));
                if r.start + take < r.end {
                    out.push(Seg::Base(r.start + take..r.end));
                }
                left -= take;
            }
        }
    }
    out
}

/// The resource's line with a `language` that is an unpaired UTF-16 surrogate (`\ud800`):
/// valid JSON text that no decoder into UTF-8 strings accepts; the id is still readable.
fn unreadable(line: &str) -> Arc<str> {
    match line.strip_prefix('{') {
        Some(rest) => Arc::from(format!(r#"{{"language":"\ud800",{rest}"#)),
        None => Arc::from(line),
    }
}

/// The same resource, one day older and with an earlier version.
fn stale_copy(line: &str) -> Arc<str> {
    let Ok(mut v) = serde_json::from_str::<Value>(line) else {
        return Arc::from(line);
    };
    let lu = v
        .get("meta")
        .and_then(|m| m.get("lastUpdated"))
        .and_then(Value::as_str)
        .and_then(parse_instant)
        .unwrap_or_else(Utc::now);
    let version = v
        .get("meta")
        .and_then(|m| m.get("versionId"))
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<u64>().ok())
        .map(|n| n.saturating_sub(1).to_string())
        .unwrap_or_else(|| "0".into());
    set_meta(&mut v, &version, &instant(lu - Duration::days(1)), true);
    Arc::from(v.to_string())
}

/// Removes sorted indices from sorted ranges.
fn subtract(ranges: Vec<Range<u64>>, sorted: &[u64]) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    for r in ranges {
        let mut start = r.start;
        let lo = sorted.partition_point(|&x| x < r.start);
        for &x in sorted[lo..].iter().take_while(|&&x| x < r.end) {
            if x > start {
                out.push(start..x);
            }
            start = x + 1;
        }
        if start < r.end {
            out.push(start..r.end);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtract_splits_ranges() {
        assert_eq!(
            subtract(std::iter::once(0..10).collect(), &[0, 3, 4, 9]),
            vec![1..3, 5..9]
        );
        assert_eq!(subtract(vec![0..2, 5..7], &[1, 5, 6]), vec![0..1]);
    }
}
