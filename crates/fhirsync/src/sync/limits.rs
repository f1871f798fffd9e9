//! What a server cannot do, found out by syncing with it, and what the sync does about it: a
//! server that refuses `_since` gets full refreshes with reconciliation; one that lists no
//! deletions gets a note on how deletes reach the tables; a kick-off refused for another
//! running export, or left unanswered without `_type`, gets an error that names the cause.
//! Each finding is kept in the state file, so each is told once, not at every run.
use anyhow::anyhow;
use chrono::Utc;
use fhir_bulk::BulkError;

use crate::config::SyncOptions;
use crate::run::SyncReport;
use crate::state::{ServerLimits, SyncState};

/// A kick-off that sent `_since` refused because of it: the server's words, and the error.
#[derive(Debug, thiserror::Error)]
#[error("{error:#}")]
pub(super) struct SinceRefused {
    text: String,
    error: anyhow::Error,
}

/// Marks the export's error as a refusal of `_since` when the kick-off sent one (`since_sent`)
/// and the server named it in refusing; other errors pass unchanged.
pub(super) fn mark_since_refusal(error: anyhow::Error, since_sent: bool) -> anyhow::Error {
    let text = error
        .chain()
        .find_map(|e| match e.downcast_ref::<BulkError>() {
            Some(b @ BulkError::Http { outcome, .. }) if b.kick_off_refuses("_since") => {
                Some(outcome.clone().unwrap_or_default())
            }
            _ => None,
        });
    match text {
        Some(text) if since_sent => SinceRefused { text, error }.into(),
        _ => error,
    }
}

/// The server's words when it refused a kick-off because of the `_since` it sent.
pub(super) fn since_refusal(error: &anyhow::Error) -> Option<String> {
    error
        .chain()
        .find_map(|e| e.downcast_ref::<SinceRefused>().map(|r| r.text.clone()))
}

/// Whether only a new export, started at once, brings the data: the server dropped the
/// export's job or files, or an interrupted export taken up again can no longer deliver. A
/// job this run started and the server reports as failed is not retried in the same run (the
/// failure may repeat); the next run starts a new export.
pub(super) fn needs_new_export_now(error: &anyhow::Error) -> bool {
    error.chain().any(|e| {
        e.is::<super::export::ResumedJobDead>()
            || e.downcast_ref::<BulkError>().is_some_and(|b| {
                b.needs_new_export() && !matches!(b, BulkError::ExportFailed { .. })
            })
    })
}

/// Whether the server reported the export's job as failed: the job is of no further use, and
/// the next run starts a new export.
pub(super) fn export_failed(error: &anyhow::Error) -> bool {
    error.chain().any(|e| {
        matches!(
            e.downcast_ref::<BulkError>(),
            Some(BulkError::ExportFailed { .. })
        )
    })
}

/// The options of a sync with a server that refuses `_since`: every sync exports everything
/// and removes what the export no longer has (within the Group for a Group export).
pub(super) fn without_since(opts: &SyncOptions) -> SyncOptions {
    let mut o = opts.clone();
    o.full_refresh = true;
    o.reconcile = true;
    o
}

/// Records a refusal of `_since` and says, once, what follows from it.
pub(super) fn note_since_refused(state: &mut SyncState, server_text: &str) {
    tracing::warn!(
        "the server refuses `_since` ({server_text}): it cannot export only what changed, so \
         this sync and the next ones export everything and remove from the tables what the \
         export no longer has (a full refresh with reconciliation). Setting `full_refresh = \
         true` (`--full-refresh --reconcile`) for this server says so and saves the refused \
         request"
    );
    state.server_limits.since_refused = Some(server_text.to_string());
    state.server_limits.since_refused_at = Some(Utc::now());
}

/// Whether an earlier sync of this server (and Group: `sync_id`) found that it refuses
/// `_since`. Deleting `server_limits` from the state file makes the next sync ask again.
pub(super) fn since_known_refused(state: &SyncState, sync_id: &str) -> bool {
    state.server_limits.since_refused.is_some() && state.sync_id.as_deref() == Some(sync_id)
}

/// After an incremental sync whose export listed no deletions: says, once, how deletes reach
/// the tables from a server that may never list them.
pub(super) fn note_unlisted_deletions(state: &mut SyncState, report: &SyncReport) {
    let limits: &mut ServerLimits = &mut state.server_limits;
    if report.since.is_none() || report.deletions_listed > 0 || limits.deletions_noted {
        return;
    }
    limits.deletions_noted = true;
    tracing::warn!(
        "this incremental export listed no deleted resources. Many servers never list them \
         (HAPI, Epic, Oracle Health, Medplum); with those, a resource deleted on the server \
         stays in the tables until a full refresh with reconciliation removes it: run \
         `fhirsync sync --full-refresh` now and then, or set `full_refresh_schedule` (say \
         weekly) in the daemon's configuration. This note is shown once"
    );
}

/// The error of a failed export, with the cause named when a server limit explains it;
/// `types_sent`: the kick-off named resource types (`_type`).
pub fn explain(error: anyhow::Error, types_sent: bool) -> anyhow::Error {
    let Some(bulk) = error.chain().find_map(|e| e.downcast_ref::<BulkError>()) else {
        return error;
    };
    if bulk.kick_off_throttled() {
        return error.context(anyhow!(
            "the server refused the export with HTTP 429 until the retries ran out: it runs one \
             export at a time (per client, per Group, or for the whole server) and another one \
             is running. An interrupted export of this sync is resumed from its work directory; \
             another client's must finish (or be cancelled) first. Try again later"
        ));
    }
    if bulk.kick_off_refuses("_until") {
        return error.context(anyhow!(
            "the server refused `_until`; some servers (Azure Health Data Services) take \
             `_till` instead: set `--until-parameter _till` (`until_parameter = \"_till\"`)"
        ));
    }
    // A refusal that names no parameter, of a system-level kick-off: the level is refused.
    const PARAMETERS: &[&str] = &["_type", "_since", "_until", "_elements", "_outputFormat"];
    if let BulkError::Http { url, outcome, .. } = bulk
        && bulk.is_refused_kick_off()
        && !url.path().contains("/Group/")
        && !url.path().ends_with("/Patient/$export")
        && !outcome
            .as_deref()
            .is_some_and(|t| PARAMETERS.iter().any(|p| t.contains(p)) || t.contains("patient"))
    {
        return error.context(anyhow!(
            "the server refused a system-level export; some servers (Epic, Oracle Health) \
             export Groups only: name one with `--group-id G` (`fhirsync check` lists what the \
             server allows)"
        ));
    }
    let unanswered = matches!(
        bulk,
        BulkError::RetriesExhausted { what: "kick-off", last, .. } if last.contains("timed out")
    );
    if unanswered && !types_sent {
        return error.context(anyhow!(
            "the server did not answer the kick-off: some servers (Medplum) never answer an \
             export without `_type`; name the resource types with `--resource-types`"
        ));
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;
    use url::Url;

    fn kick_off(path: &str, status: u16) -> anyhow::Error {
        let url = Url::parse(&format!("https://fhir.example/r4/{path}")).unwrap();
        anyhow::Error::from(BulkError::Http {
            what: "kick-off",
            url,
            status,
            outcome: Some("error not-supported: no".into()),
        })
        .context("bulk export")
    }

    #[test]
    fn a_refused_parameter_is_not_taken_for_a_refused_level() {
        let url = Url::parse("https://fhir.example/r4/$export").unwrap();
        let refused = anyhow::Error::from(BulkError::Http {
            what: "kick-off",
            url,
            status: 400,
            outcome: Some("error invalid: _typeFilter Observation?x is not supported".into()),
        });
        let text = format!("{:#}", explain(refused, true));
        assert!(!text.contains("--group-id"), "{text}");
        let since = anyhow::Error::from(BulkError::Http {
            what: "kick-off",
            url: Url::parse("https://fhir.example/r4/$export").unwrap(),
            status: 400,
            outcome: Some("error not-supported: _since".into()),
        });
        assert!(since_refusal(&mark_since_refusal(since, false)).is_none());
    }

    #[test]
    fn failures_a_server_limit_explains_say_so() {
        let system = format!("{:#}", explain(kick_off("$export", 400), true));
        assert!(system.contains("--group-id"), "{system}");
        for path in ["Group/g/$export", "Patient/$export"] {
            let other = format!("{:#}", explain(kick_off(path, 400), true));
            assert!(!other.contains("--group-id"), "{other}");
        }
        let busy = |last: &str| BulkError::RetriesExhausted {
            what: "kick-off",
            url: Url::parse("https://fhir.example/r4/$export").unwrap(),
            attempts: 7,
            last: last.into(),
        };
        let until = anyhow::Error::from(BulkError::Http {
            what: "kick-off",
            url: Url::parse("https://fhir.example/r4/$export").unwrap(),
            status: 400,
            outcome: Some("error not-supported: _until is not supported; use _till".into()),
        });
        let until = format!("{:#}", explain(until, true));
        assert!(until.contains("--until-parameter _till"), "{until}");
        let throttled = format!("{:#}", explain(busy("kick-off x: HTTP 429").into(), true));
        assert!(throttled.contains("one export at a time"), "{throttled}");
        let silent = || busy("error sending request: operation timed out");
        let without_type = format!("{:#}", explain(silent().into(), false));
        assert!(without_type.contains("--resource-types"), "{without_type}");
        let with_type = format!("{:#}", explain(silent().into(), true));
        assert!(!with_type.contains("--resource-types"), "{with_type}");
    }
}
