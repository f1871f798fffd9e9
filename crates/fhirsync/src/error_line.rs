//! An error and its causes as one line, for people and for log scrapers.

/// `e` and its causes on one line: each cause once (libraries often repeat their source's text
/// in their own message, and anyhow's `{:#}` then prints it again), line breaks folded.
pub fn error_line(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let message = fold(&cause.to_string());
        if message.is_empty() || text.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}

/// The non-empty lines of `message`, trimmed and joined by spaces.
fn fold(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;

    #[test]
    fn a_cause_repeated_by_its_wrapper_is_printed_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("delta table t: {0}")]
        struct Wrapper(#[source] std::io::Error);
        let io = std::io::Error::other("No space left on device (os error 28)");
        let e = anyhow::Error::new(Wrapper(io)).context("committing Patient");
        assert_eq!(
            error_line(&e),
            "committing Patient: delta table t: No space left on device (os error 28)"
        );
    }

    #[test]
    fn line_breaks_are_folded() {
        let e: anyhow::Result<()> = Err(anyhow::anyhow!("conflict\n\n  help: retry\n"));
        let e = e.context("commit").unwrap_err();
        assert_eq!(error_line(&e), "commit: conflict help: retry");
    }
}
