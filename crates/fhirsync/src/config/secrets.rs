//! Secrets: where they come from (flag, environment, file, command) and reading them. Values
//! never reach `Debug` output or messages: [`Secret`] and [`SecretSource`] redact themselves.
use super::environment::Environment;
use super::error::ConfigError;

pub use smart_auth::{Secret, SecretSource, SigningAlgorithm};

/// Reads a secret now, from synchronous code (the sync itself loads secrets with
/// [`SecretSource::load`] when it needs them). Trailing line breaks are removed.
pub fn read_secret(source: &SecretSource, what: &str) -> Result<Secret, ConfigError> {
    let fail = |message: String| ConfigError::Secret {
        what: what.to_owned(),
        source_desc: source.describe(),
        message,
    };
    let value = match source {
        SecretSource::Inline(s) => s.expose().to_owned(),
        SecretSource::File(path) => {
            std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?
        }
        SecretSource::Env(name) => std::env::var(name).map_err(|e| fail(e.to_string()))?,
        SecretSource::Command(cmd) => {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::inherit())
                .output()
                .map_err(|e| fail(format!("cannot start: {e}")))?;
            if !out.status.success() {
                return Err(fail(format!("exited with {}", out.status)));
            }
            String::from_utf8(out.stdout).map_err(|_| fail("output is not valid UTF-8".into()))?
        }
    };
    let trimmed = value.trim_end_matches(['\n', '\r']);
    if trimmed.is_empty() {
        return Err(fail("the value is empty".into()));
    }
    Ok(Secret::new(trimmed))
}

/// A secret given by environment variable: the value itself in `value_var`, or a file named by
/// `file_var` (not both).
pub(crate) fn env_secret(
    env: &dyn Environment,
    value_var: &str,
    file_var: &str,
) -> Result<Option<SecretSource>, ConfigError> {
    match (env.var(value_var), env.var(file_var)) {
        (Some(_), Some(_)) => Err(ConfigError::Conflict(format!(
            "both {value_var} and {file_var} are set"
        ))),
        // Referenced, not copied: the value is read from the environment when used.
        (Some(_), None) => Ok(Some(SecretSource::Env(value_var.to_owned()))),
        (None, Some(path)) => Ok(Some(SecretSource::File(path.into()))),
        (None, None) => Ok(None),
    }
}

/// The one secret the config file's `[auth]` table gives among several keys naming it.
pub(crate) fn file_secret<const N: usize>(
    what: &str,
    candidates: [(&str, Option<SecretSource>); N],
) -> Result<Option<SecretSource>, ConfigError> {
    let given: Vec<(&str, SecretSource)> = candidates
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    match given.len() {
        0 => Ok(None),
        1 => Ok(given.into_iter().next().map(|(_, v)| v)),
        _ => Err(ConfigError::Conflict(format!(
            "[auth] sets the {what} more than once ({})",
            given.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
        ))),
    }
}
