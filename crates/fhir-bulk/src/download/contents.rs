//! What deleted and error files say: the deletions of `deleted/` bundles and the issues of
//! `error/` OperationOutcomes, read back from the downloaded file.
use serde_json::Value;
use tokio::fs::File;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::files::DownloadedFile;
use crate::client::BulkClient;
use crate::error::BulkError;
use crate::events::BulkEvent;
use crate::outcome::{Deletion, OutcomeIssue};

/// Calls `each` with every line of the file, parsed (a line that is not JSON was set aside on
/// download, so none should be left to pass over).
async fn each_json_line(
    file: &DownloadedFile,
    mut each: impl FnMut(Value),
) -> Result<(), BulkError> {
    let path = &file.path;
    let f = File::open(path).await.map_err(|e| BulkError::io(path, e))?;
    let mut lines = BufReader::new(f).lines();
    while let Some(line) = lines
        .next_line()
        .await
        .map_err(|e| BulkError::io(path, e))?
    {
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            each(v);
        }
    }
    Ok(())
}

pub(super) async fn read_deletions(
    client: &BulkClient,
    file: &DownloadedFile,
) -> Result<Vec<Deletion>, BulkError> {
    let mut all = Vec::new();
    each_json_line(file, |bundle| {
        let (found, problems) = crate::outcome::deletions(&bundle);
        all.extend(found);
        for p in problems {
            client.emit(BulkEvent::Warning {
                url: Some(file.url.clone()),
                message: format!("{}: {p}", file.name),
            });
        }
    })
    .await?;
    Ok(all)
}

pub(super) async fn read_issues(
    client: &BulkClient,
    file: &DownloadedFile,
) -> Result<Vec<OutcomeIssue>, BulkError> {
    let mut all = Vec::new();
    each_json_line(file, |v| all.extend(crate::outcome::issues(&v))).await?;
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
