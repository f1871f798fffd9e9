//! The trial export of `fhirsync check`: its manifest, where its files live and whether they
//! need a token, how they come compressed, and whether resources carry `meta.lastUpdated`.
use fhir_bulk::{BulkClient, ExportRequest, FileEncoding, Manifest};
use serde_json::Value;
use url::Url;

use super::{CheckOptions, CheckReport, cancel};

/// The small export: its manifest, where its files live, one file downloaded.
pub(super) async fn trial_export(
    client: &BulkClient,
    opts: &CheckOptions,
    request: &ExportRequest,
    r: &mut CheckReport,
) {
    let job = match client.kick_off(request).await {
        Ok(job) => job,
        Err(e) => {
            r.found("trial export", Some(false), e.to_string());
            r.block(format!("the trial export was refused: {e}"));
            return;
        }
    };
    let waited = tokio::time::timeout(opts.timeout, client.wait_for_manifest(&job)).await;
    let manifest = match waited {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            r.found("trial export", Some(false), e.to_string());
            r.block(format!("the trial export failed: {e}"));
            cancel(client, &job).await;
            return;
        }
        Err(_) => {
            r.found(
                "trial export",
                None,
                format!(
                    "not finished within {}; the server may be slow or busy (a sync waits up \
                     to 7 days, see --timeout)",
                    humantime::format_duration(opts.timeout)
                ),
            );
            cancel(client, &job).await;
            return;
        }
    };
    r.found(
        "trial export",
        Some(true),
        format!(
            "{} {} file(s), {} deleted file(s), {} error file(s)",
            manifest.output.len(),
            request.types.join(","),
            manifest.deleted.len(),
            manifest.error.len()
        ),
    );
    file_locations(client, &manifest, &opts.fhir_endpoint, r);
    compression(client, &manifest, r).await;
    sample_file(client, &manifest, r).await;
    cancel(client, &job).await;
}

fn file_locations(client: &BulkClient, manifest: &Manifest, base: &Url, r: &mut CheckReport) {
    let Some(first) = manifest.output.first() else {
        r.found("files", None, "the trial export has no files to look at");
        return;
    };
    let url = &first.url;
    if let Some(storage) = client.storage_of(url) {
        r.found(
            "files",
            Some(true),
            format!(
                "in {storage} ({}://{}), read with that cloud's credentials, never the FHIR token",
                url.scheme(),
                url.host_str().unwrap_or_default()
            ),
        );
        r.recommend(format!(
            "the export's files are in {storage}: give fhirsync its credentials (environment, \
             or `--export-storage-option KEY=VALUE`; see docs/operations.md)"
        ));
        return;
    }
    let place = if url.origin() == base.origin() {
        "on the FHIR server".to_string()
    } else {
        format!("on another origin ({})", url.origin().ascii_serialization())
    };
    let token = if manifest.requires_access_token {
        "with the FHIR token (requiresAccessToken: true)"
    } else {
        "without a token (requiresAccessToken: false)"
    };
    r.found("files", Some(true), format!("{place}, fetched {token}"));
}

/// How the first file comes when asked for gzip (a sync asks unless `gzip = false`).
async fn compression(client: &BulkClient, manifest: &Manifest, r: &mut CheckReport) {
    let Some(first) = manifest.output.first() else {
        return;
    };
    if client.storage_of(&first.url).is_some() {
        r.found("gzip", None, "files in a bucket come as stored");
        return;
    }
    match client
        .file_encoding(&first.url, manifest.requires_access_token)
        .await
    {
        Ok(FileEncoding::Transfer(coding)) => r.found(
            "gzip",
            Some(true),
            format!("files come compressed (Content-Encoding: {coding})"),
        ),
        Ok(FileEncoding::GzipBytes) => r.found(
            "gzip",
            Some(true),
            "files are gzip bytes without Content-Encoding (inflated as they stream)",
        ),
        Ok(FileEncoding::Plain) => r.found(
            "gzip",
            Some(false),
            "files come uncompressed even when gzip is asked for",
        ),
        Err(e) => r.found("gzip", None, format!("not determined: {e}")),
    }
}

async fn sample_file(client: &BulkClient, manifest: &Manifest, r: &mut CheckReport) {
    let Some(first) = manifest.output.first() else {
        r.found("meta.lastUpdated", None, "no resources in the trial export");
        return;
    };
    let Ok(dir) = tempfile::tempdir() else {
        r.found(
            "file download",
            None,
            "no temporary directory to download into",
        );
        return;
    };
    let one = Manifest {
        output: vec![first.clone()],
        deleted: Vec::new(),
        error: Vec::new(),
        link: Vec::new(),
        ..manifest.clone()
    };
    use futures::StreamExt;
    let mut downloads = client.download(&one, dir.path(), Default::default());
    match downloads.next().await {
        Some(Ok(file)) => {
            r.found(
                "file download",
                Some(true),
                format!("{} lines, {} bytes", file.lines, file.bytes),
            );
            last_updated(&file.path, r);
        }
        Some(Err(e)) => {
            let why = format!("{}: {}", e.url, e.message);
            r.found("file download", Some(false), why.clone());
            r.block(format!("export files cannot be downloaded: {why}"));
        }
        None => r.found("file download", None, "nothing was downloaded"),
    }
}

/// Whether the sample's resources carry `meta.lastUpdated`.
fn last_updated(path: &std::path::Path, r: &mut CheckReport) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let lines: Vec<Value> = text
        .lines()
        .take(100)
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    if lines.is_empty() {
        r.found("meta.lastUpdated", None, "no resources in the sample");
        return;
    }
    let with = lines
        .iter()
        .filter(|v| v.pointer("/meta/lastUpdated").is_some())
        .count();
    r.found(
        "meta.lastUpdated",
        Some(with == lines.len()),
        format!("on {with} of {} sampled resources", lines.len()),
    );
}
