//! What deleted and error files say: the deletions of `deleted/` bundles and the issues of
//! `error/` OperationOutcomes, read back from the downloaded file.
use std::path::Path;

use tokio::fs::File;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::files::DownloadedFile;
use crate::client::BulkClient;
use crate::error::BulkError;
use crate::events::BulkEvent;
use crate::outcome::{Deletion, OutcomeIssue};

async fn read_lines(path: &Path) -> Result<tokio::io::Lines<BufReader<File>>, BulkError> {
    let f = File::open(path).await.map_err(|e| BulkError::io(path, e))?;
    Ok(BufReader::new(f).lines())
}

pub(super) async fn read_deletions(
    client: &BulkClient,
    file: &DownloadedFile,
) -> Result<Vec<Deletion>, BulkError> {
    let mut lines = read_lines(&file.path).await?;
    let mut all = Vec::new();
    while let Some(line) = lines
        .next_line()
        .await
        .map_err(|e| BulkError::io(&file.path, e))?
    {
        let Ok(bundle) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let (found, problems) = crate::outcome::deletions(&bundle);
        all.extend(found);
        for p in problems {
            client.emit(BulkEvent::Warning {
                url: Some(file.url.clone()),
                message: format!("{}: {p}", file.name),
            });
        }
    }
    Ok(all)
}

pub(super) async fn read_issues(
    client: &BulkClient,
    file: &DownloadedFile,
) -> Result<Vec<OutcomeIssue>, BulkError> {
    let mut lines = read_lines(&file.path).await?;
    let mut all = Vec::new();
    while let Some(line) = lines
        .next_line()
        .await
        .map_err(|e| BulkError::io(&file.path, e))?
    {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        all.extend(crate::outcome::issues(&v));
    }
    // The server's own account of what it could not export: shown, capped to stay readable.
    for issue in all.iter().take(20) {
        client.emit(BulkEvent::Warning {
            url: Some(file.url.clone()),
            message: format!("server reported: {issue}"),
        });
    }
    if all.len() > 20 {
        client.emit(BulkEvent::Warning {
            url: Some(file.url.clone()),
            message: format!(
                "... and {} more issues in {}",
                all.len() - 20,
                file.path.display()
            ),
        });
    }
    Ok(all)
}
