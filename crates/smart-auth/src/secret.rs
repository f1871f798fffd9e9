//! Secret values and where they come from.
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use tokio::io::AsyncReadExt;
use zeroize::Zeroizing;

use crate::error::AuthError;

/// How long a secret command may run before it is killed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A secret string: redacted in `Debug`/`Display`, zeroed when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Zeroizing::new(value.into()))
    }

    /// The secret itself. Keep the borrow short and never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret::new(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

/// Where a secret (private key, client secret, client id) is read from. It is read again each
/// time it is needed, so rotated files, variables and vault entries take effect without a
/// restart, and nothing is cached on disk.
///
/// In TOML a plain string is an inline value; a table picks a source:
/// `{ file = "/etc/fhirsync/key.jwk" }`, `{ env = "FHIR_PRIVATE_KEY" }`,
/// `{ command = "vault kv get -field=key secret/fhir" }` or `{ value = "..." }`.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    Inline(Secret),
    File(PathBuf),
    Env(String),
    /// A shell command (`sh -c` on Unix, `cmd /C` on Windows) whose standard output is the secret.
    Command(String),
}

impl SecretSource {
    /// Reads the secret. Trailing line breaks are removed (files and command output usually end
    /// with one); an empty result is an error.
    pub async fn load(&self) -> Result<Secret, AuthError> {
        let raw = match self {
            SecretSource::Inline(secret) => secret.clone(),
            SecretSource::File(path) => load_file(path).await?,
            SecretSource::Env(name) => load_env(name)?,
            SecretSource::Command(command) => load_command(command).await?,
        };
        let trimmed = raw.expose().trim_end_matches(['\r', '\n']);
        if trimmed.is_empty() {
            return Err(AuthError::SecretEmpty {
                origin: self.describe(),
            });
        }
        if trimmed.len() == raw.expose().len() {
            Ok(raw)
        } else {
            Ok(Secret::new(trimmed))
        }
    }

    /// A human description of the source that never includes the secret (for a command, only
    /// its program name: arguments may carry credentials).
    pub fn describe(&self) -> String {
        match self {
            SecretSource::Inline(_) => "an inline value".to_string(),
            SecretSource::File(path) => format!("file {}", path.display()),
            SecretSource::Env(name) => format!("environment variable {name}"),
            SecretSource::Command(command) => format!("command `{}`", program_name(command)),
        }
    }
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Inline(secret) => f.debug_tuple("Inline").field(secret).finish(),
            SecretSource::File(path) => f.debug_tuple("File").field(path).finish(),
            SecretSource::Env(name) => f.debug_tuple("Env").field(name).finish(),
            SecretSource::Command(command) => f
                .debug_tuple("Command")
                .field(&format_args!("`{} …`", program_name(command)))
                .finish(),
        }
    }
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Command-line syntax: `env:NAME`, `file:PATH`, `cmd:COMMAND`, `value:LITERAL`; anything
/// without one of these prefixes is an inline value.
impl FromStr for SecretSource {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let nonempty = |kind: &str, rest: &str| {
            if rest.is_empty() {
                Err(AuthError::Config(format!(
                    "`{kind}:` must be followed by a value"
                )))
            } else {
                Ok(rest.to_string())
            }
        };
        if let Some(rest) = s.strip_prefix("env:") {
            Ok(SecretSource::Env(nonempty("env", rest)?))
        } else if let Some(rest) = s.strip_prefix("file:") {
            Ok(SecretSource::File(PathBuf::from(nonempty("file", rest)?)))
        } else if let Some(rest) = s.strip_prefix("cmd:") {
            Ok(SecretSource::Command(nonempty("cmd", rest)?))
        } else if let Some(rest) = s.strip_prefix("value:") {
            Ok(SecretSource::Inline(Secret::new(rest)))
        } else {
            Ok(SecretSource::Inline(Secret::new(s)))
        }
    }
}

impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SourceVisitor;

        impl<'de> Visitor<'de> for SourceVisitor {
            type Value = SecretSource;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a string, or a table with exactly one of `value`, `file`, `env`, `command`",
                )
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretSource, E> {
                Ok(SecretSource::Inline(Secret::new(v)))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<SecretSource, E> {
                Ok(SecretSource::Inline(Secret::new(v)))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretSource, A::Error> {
                let mut found: Option<SecretSource> = None;
                while let Some(key) = map.next_key::<String>()? {
                    let source = match key.as_str() {
                        "value" => SecretSource::Inline(map.next_value::<Secret>()?),
                        "file" => SecretSource::File(map.next_value::<PathBuf>()?),
                        "env" => SecretSource::Env(map.next_value::<String>()?),
                        "command" => SecretSource::Command(map.next_value::<String>()?),
                        other => {
                            return Err(de::Error::unknown_field(
                                other,
                                &["value", "file", "env", "command"],
                            ));
                        }
                    };
                    if found.is_some() {
                        return Err(de::Error::custom(
                            "a secret source takes exactly one of `value`, `file`, `env`, `command`",
                        ));
                    }
                    found = Some(source);
                }
                found.ok_or_else(|| {
                    de::Error::custom(
                        "a secret source needs one of `value`, `file`, `env`, `command`",
                    )
                })
            }
        }

        deserializer.deserialize_any(SourceVisitor)
    }
}

fn program_name(command: &str) -> &str {
    command.split_whitespace().next().unwrap_or("")
}

async fn load_file(path: &Path) -> Result<Secret, AuthError> {
    let bytes =
        Zeroizing::new(
            tokio::fs::read(path)
                .await
                .map_err(|source| AuthError::SecretFile {
                    path: path.to_path_buf(),
                    source,
                })?,
        );
    warn_if_exposed(path).await;
    let text = std::str::from_utf8(&bytes).map_err(|_| AuthError::SecretFile {
        path: path.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is not valid UTF-8",
        ),
    })?;
    Ok(Secret::new(text))
}

/// Warns (once per path and process) when a secret file is readable by group or others.
#[cfg(unix)]
async fn warn_if_exposed(path: &Path) {
    use std::collections::HashSet;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::{Mutex, OnceLock};

    static WARNED: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    let Ok(metadata) = tokio::fs::metadata(path).await else {
        return;
    };
    let mode = metadata.permissions().mode();
    if mode & 0o077 == 0 {
        return;
    }
    let first = WARNED
        .get_or_init(|| Mutex::new(HashSet::new()))
        .lock()
        .map(|mut warned| warned.insert(path.to_path_buf()))
        .unwrap_or(true);
    if first {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{:o}", mode & 0o777),
            "secret file is readable by group or others; restrict it (chmod 600)"
        );
    }
}

#[cfg(not(unix))]
async fn warn_if_exposed(_path: &Path) {}

fn load_env(name: &str) -> Result<Secret, AuthError> {
    match std::env::var(name) {
        Ok(value) => Ok(Secret::new(value)),
        Err(std::env::VarError::NotPresent) => Err(AuthError::SecretEnv {
            name: name.to_string(),
            problem: "is not set",
        }),
        Err(std::env::VarError::NotUnicode(_)) => Err(AuthError::SecretEnv {
            name: name.to_string(),
            problem: "is not valid UTF-8",
        }),
    }
}

async fn load_command(command: &str) -> Result<Secret, AuthError> {
    let program = program_name(command).to_string();
    let fail = |problem: String| AuthError::SecretCommand {
        program: program.clone(),
        problem,
    };
    if program.is_empty() {
        return Err(fail("is empty".to_string()));
    }
    let mut cmd = shell(command);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("could not be started: {e}")))?;

    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let run = async {
        let mut out = Zeroizing::new(Vec::new());
        let mut err_len = 0usize;
        let read_out = async {
            if let Some(s) = stdout.as_mut() {
                s.read_to_end(&mut out).await?;
            }
            Ok::<_, std::io::Error>(())
        };
        // stderr is drained (so the child cannot block on a full pipe) and discarded: it may
        // echo the secret or credentials.
        let read_err = async {
            if let Some(s) = stderr.as_mut() {
                let mut sink = Zeroizing::new(Vec::new());
                s.read_to_end(&mut sink).await?;
                err_len = sink.len();
            }
            Ok::<_, std::io::Error>(())
        };
        let (a, b) = tokio::join!(read_out, read_err);
        a?;
        b?;
        let status = child.wait().await?;
        Ok::<_, std::io::Error>((status, out, err_len))
    };
    let (status, out, err_len) = match tokio::time::timeout(COMMAND_TIMEOUT, run).await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return Err(fail(format!("failed while running: {e}"))),
        Err(_) => {
            return Err(fail(format!(
                "did not finish within {} s and was killed",
                COMMAND_TIMEOUT.as_secs()
            )));
        }
    };
    if !status.success() {
        let code = status
            .code()
            .map_or_else(|| "a signal".to_string(), |c| format!("status {c}"));
        let stderr_note = if err_len > 0 {
            format!("; it wrote {err_len} bytes to stderr (not shown)")
        } else {
            String::new()
        };
        return Err(fail(format!(
            "exited with {code}{stderr_note}; its output is not shown"
        )));
    }
    let text = String::from_utf8(out.to_vec()).map_err(|e| {
        let mut bytes = e.into_bytes();
        zeroize::Zeroize::zeroize(&mut bytes);
        fail("printed output that is not valid UTF-8".to_string())
    })?;
    Ok(Secret::new(text))
}

#[cfg(unix)]
fn shell(command: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c").arg(command);
    cmd
}

#[cfg(not(unix))]
fn shell(command: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("cmd");
    cmd.arg("/C").arg(command);
    cmd
}
