//! `fhirsync check`: what a FHIR server can do for a sync, found by asking it. Reads the
//! CapabilityStatement and the SMART configuration, gets a token, tries the export parameters
//! a sync uses (each accepted trial is cancelled at once), runs one small export, downloads a
//! file of it, and says which settings fit the server.
mod files;
mod report;

use std::time::Duration;

use chrono::Utc;
use fhir_bulk::{BulkClient, BulkError, ExportJob, ExportLevel, ExportRequest, UntilParameter};
use serde_json::Value;
use smart_auth::TokenProvider;
use url::Url;

pub use report::{CheckReport, Finding, known_server};

/// What to check.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    pub fhir_endpoint: Url,
    /// Check Group-level export of this Group (else system level, then Patient level).
    pub group_id: Option<String>,
    /// The type the trial export asks for.
    pub resource_type: String,
    /// How long to wait for the trial export.
    pub timeout: Duration,
}

/// Runs every probe against the server and returns what was found.
pub async fn check(
    opts: &CheckOptions,
    client: &BulkClient,
    tokens: Option<&TokenProvider>,
) -> CheckReport {
    let mut r = CheckReport {
        fhir_endpoint: opts.fhir_endpoint.to_string(),
        ..CheckReport::default()
    };
    capability_statement(client, &mut r).await;
    smart_configuration(client, tokens, &mut r).await;
    if let Some(tokens) = tokens {
        match tokens.token().await {
            Ok(_) => r.found("access token", Some(true), "issued"),
            Err(e) => {
                r.found("access token", Some(false), e.to_string());
                r.block(format!("no access token: {e}"));
                return r;
            }
        }
    }
    let Some(level) = export_level(client, opts, &mut r).await else {
        return r;
    };
    let base = request(&level, &opts.resource_type);
    let since = trial(client, &mut r, "_since", &base, |q| {
        q.since = Some((Utc::now() - chrono::Duration::hours(1)).fixed_offset())
    })
    .await;
    let until = trial(client, &mut r, "_until", &base, |q| {
        q.until = Some(Utc::now().fixed_offset())
    })
    .await;
    if until == Some(false) {
        // Azure Health Data Services' name for it.
        trial(client, &mut r, "_till", &base, |q| {
            q.until = Some(Utc::now().fixed_offset());
            q.until_parameter = UntilParameter::Till;
        })
        .await;
    }
    trial(client, &mut r, "_typeFilter", &base, |q| {
        q.type_filters = vec![format!("{}?_id=check", q.types[0])]
    })
    .await;
    trial(client, &mut r, "_elements", &base, |q| {
        q.elements = vec!["id".into()]
    })
    .await;
    let mut main = base.clone();
    if since == Some(true) {
        main.since = Some((Utc::now() - chrono::Duration::days(30)).fixed_offset());
    }
    files::trial_export(client, opts, &main, &mut r).await;
    recommend(&mut r);
    r
}

async fn capability_statement(client: &BulkClient, r: &mut CheckReport) {
    match client.read_json(&["metadata"]).await {
        Ok(cs) => {
            let text = |p: &str| cs.pointer(p).and_then(Value::as_str).unwrap_or("");
            let software = [
                text("/software/name"),
                text("/software/version"),
                text("/publisher"),
                text("/implementation/description"),
            ]
            .iter()
            .fold(Vec::<&str>::new(), |mut parts, s| {
                if !s.is_empty() && !parts.contains(s) {
                    parts.push(s);
                }
                parts
            })
            .join(" ");
            r.known_server = known_server(&software).map(str::to_string);
            r.software = Some(software).filter(|s| !s.is_empty());
            let declared = declared_export_levels(&cs);
            r.found(
                "CapabilityStatement",
                Some(true),
                format!(
                    "FHIR {}; $export declared at: {}",
                    text("/fhirVersion"),
                    if declared.is_empty() {
                        "no level".to_string()
                    } else {
                        declared.join(", ")
                    }
                ),
            );
        }
        Err(e) => r.found("CapabilityStatement", Some(false), e.to_string()),
    }
}

fn declared_export_levels(cs: &Value) -> Vec<String> {
    let is_export = |ops: Option<&Value>| {
        ops.and_then(Value::as_array)
            .is_some_and(|ops| ops.iter().any(|o| o["name"] == "export"))
    };
    let mut levels = Vec::new();
    for rest in cs["rest"].as_array().into_iter().flatten() {
        if is_export(rest.get("operation")) {
            levels.push("system".to_string());
        }
        for res in rest["resource"].as_array().into_iter().flatten() {
            if is_export(res.get("operation"))
                && let Some(t) = res["type"].as_str()
            {
                levels.push(t.to_string());
            }
        }
    }
    levels
}

async fn smart_configuration(
    client: &BulkClient,
    tokens: Option<&TokenProvider>,
    r: &mut CheckReport,
) {
    match client
        .read_json(&[".well-known", "smart-configuration"])
        .await
    {
        Ok(c) => {
            let methods = c["token_endpoint_auth_methods_supported"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            r.found(
                "SMART configuration",
                Some(true),
                format!(
                    "token endpoint {}; client authentication: {}",
                    c["token_endpoint"].as_str().unwrap_or("not given"),
                    if methods.is_empty() {
                        "not listed"
                    } else {
                        &methods
                    }
                ),
            );
        }
        Err(e) => {
            let detail = if tokens.is_some() {
                format!("{e} (the token endpoint is found another way or configured)")
            } else {
                format!("{e}; no authentication configured")
            };
            r.found("SMART configuration", None, detail);
        }
    }
}

fn request(level: &ExportLevel, resource_type: &str) -> ExportRequest {
    ExportRequest {
        level: level.clone(),
        types: vec![resource_type.to_string()],
        ..ExportRequest::default()
    }
}

/// The export level to use: the Group's when one is given, else system level, else Patient
/// level; `None` (and a blocker) when the server accepts none.
async fn export_level(
    client: &BulkClient,
    opts: &CheckOptions,
    r: &mut CheckReport,
) -> Option<ExportLevel> {
    let candidates = match &opts.group_id {
        Some(g) => vec![ExportLevel::Group(g.clone())],
        None => vec![ExportLevel::System, ExportLevel::Patient],
    };
    let mut refused = Vec::new();
    for level in candidates {
        let name = level_name(&level);
        match kick_off_and_cancel(client, &request(&level, &opts.resource_type)).await {
            Ok(()) => {
                r.found(
                    "export level",
                    Some(true),
                    format!("{name} export accepted"),
                );
                for (other, why) in &refused {
                    r.found("export level", Some(false), format!("{other}: {why}"));
                }
                if level == ExportLevel::Patient {
                    r.recommend(
                        "the server refuses system-level export: sync with `--patient ID ...` \
                         or, better, `--group-id G` (a Group of the patients wanted)",
                    );
                }
                return Some(level);
            }
            Err(e) => refused.push((name, e.to_string())),
        }
    }
    for (name, why) in refused {
        r.found("export level", Some(false), format!("{name}: {why}"));
    }
    r.block(match &opts.group_id {
        Some(g) => format!("the server refuses an export of Group {g}"),
        None => "the server refuses system- and Patient-level exports; try `--group-id G` (Epic \
                 and Oracle Health export Groups only)"
            .to_string(),
    });
    None
}

fn level_name(level: &ExportLevel) -> String {
    match level {
        ExportLevel::System => "system".into(),
        ExportLevel::Patient => "Patient".into(),
        ExportLevel::Group(g) => format!("Group/{g}"),
    }
}

async fn kick_off_and_cancel(
    client: &BulkClient,
    request: &ExportRequest,
) -> Result<(), BulkError> {
    let job = client.kick_off(request).await?;
    cancel(client, &job).await;
    Ok(())
}

pub(super) async fn cancel(client: &BulkClient, job: &ExportJob) {
    if let Err(e) = client.cancel(job).await {
        tracing::debug!(error = %e, status_url = %job.status_url, "could not cancel a trial export");
    }
}

/// Tries `base` changed by `with` (one parameter added): accepted, refused naming the
/// parameter, or refused for another reason.
async fn trial(
    client: &BulkClient,
    r: &mut CheckReport,
    name: &str,
    base: &ExportRequest,
    with: impl FnOnce(&mut ExportRequest),
) -> Option<bool> {
    let mut q = base.clone();
    with(&mut q);
    match kick_off_and_cancel(client, &q).await {
        Ok(()) => {
            r.found(name, Some(true), "accepted");
            Some(true)
        }
        Err(e) if e.kick_off_refuses(name) => {
            r.found(name, Some(false), format!("refused: {e}"));
            Some(false)
        }
        Err(e) => {
            r.found(name, None, format!("not determined: {e}"));
            None
        }
    }
}

/// Settings that follow from the findings.
fn recommend(r: &mut CheckReport) {
    if r.works("_since") == Some(false) {
        r.recommend(
            "no `_since`: every sync exports everything and reconciles (fhirsync does this by \
             itself after the first refusal); set `full_refresh = true` and `reconcile = true` \
             to say so, and schedule syncs no more often than a full export takes",
        );
    }
    if r.works("meta.lastUpdated") == Some(false) {
        r.recommend(
            "resources lack `meta.lastUpdated`: rows are ordered by export time only; schedule \
             a weekly full refresh with reconciliation (`full_refresh_schedule`)",
        );
    }
    if r.works("_until") == Some(false) && r.works("_till") == Some(true) {
        r.recommend(
            "the server takes `_till` in place of `_until`: set `until_parameter = \"_till\"` \
             (`--until-parameter _till`) if you use `until`",
        );
    }
    if r.works("_typeFilter") == Some(false) {
        r.recommend("`_typeFilter` is refused: do not set `type_filters`");
    }
    if r.works("_elements") == Some(false) {
        r.recommend("`_elements` is refused: do not set `elements`");
    }
    // None of the servers in docs/servers.md lists deletions.
    if r.known_server.is_some() {
        r.recommend(
            "this server never lists deleted resources: schedule a full refresh with \
             reconciliation (`full_refresh_schedule`, e.g. weekly) so deleted resources leave \
             the tables",
        );
    } else if r.works("_since") == Some(true) {
        r.recommend(
            "deletions: few servers list them (none of those in docs/servers.md does); unless \
             yours does, schedule a full refresh with reconciliation now and then \
             (`full_refresh_schedule`, e.g. weekly) so deleted resources leave the tables",
        );
    }
    match r.known_server.as_deref() {
        Some("medplum") => r.recommend(
            "Medplum does not answer an export without `_type`: keep `resource_types` set (a \
             sync always sends it; `fhirsync export` needs `--resource-types`)",
        ),
        Some("epic") => r.recommend(
            "Epic runs one export per client and Group at a time: give each Group its own \
             schedule, and do not run `fhirsync export` of a Group while its sync runs",
        ),
        Some("aidbox") => r.recommend(
            "Aidbox runs one export at a time on the whole server: schedule syncs of several \
             Groups or types one after another",
        ),
        _ => {}
    }
}
