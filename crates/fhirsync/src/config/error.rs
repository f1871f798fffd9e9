//! The one error type of configuration: every message names the option and, where there is one,
//! the flag and environment variable that set it.
use std::fmt;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing required option {option} (flag --{flag}{env})", env = env_hint(.env))]
    Missing {
        option: &'static str,
        flag: &'static str,
        env: Option<&'static str>,
    },
    #[error("invalid value for {option}: {message}")]
    Invalid { option: String, message: String },
    #[error("conflicting options: {0}")]
    Conflict(String),
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    ParseFile { path: PathBuf, message: String },
    #[error("config file {path}, {section}: {message}")]
    FileSection {
        path: PathBuf,
        section: String,
        message: String,
    },
    #[error("cannot read {what} from {source_desc}: {message}")]
    Secret {
        what: String,
        source_desc: String,
        message: String,
    },
}

fn env_hint(env: &Option<&'static str>) -> String {
    env.map(|e| format!(", environment variable {e}"))
        .unwrap_or_default()
}

pub(crate) fn invalid(option: impl Into<String>, message: impl fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        option: option.into(),
        message: message.to_string(),
    }
}
