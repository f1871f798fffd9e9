//! Keeping a job's secrets out of what the daemon reports.
use crate::config::{AuthOptions, JobConfig, SecretSource};

/// Removes secret values this job knows of from a message (a defence in depth: errors from
/// libraries should not carry secrets in the first place).
pub(super) fn redact(message: &str, job: &JobConfig) -> String {
    let mut secrets = secret_values(&job.sync.auth);
    let stores = job.sync.storage_options.iter();
    for (k, v) in stores.chain(&job.sync.export_storage_options) {
        let k = k.to_ascii_uppercase();
        if ["SECRET", "TOKEN", "PASSWORD", "KEY"]
            .iter()
            .any(|w| k.contains(w))
            && !k.ends_with("KEY_ID")
        {
            secrets.push(v.clone());
        }
    }
    let mut out = message.to_owned();
    for s in secrets {
        // Very short values would redact ordinary words.
        if s.len() >= 6 {
            out = out.replace(&s, "<redacted>");
        }
    }
    out
}

fn secret_values(auth: &AuthOptions) -> Vec<String> {
    let mut v = Vec::new();
    for source in [&auth.private_key, &auth.client_secret]
        .into_iter()
        .flatten()
    {
        match source {
            SecretSource::Inline(s) => v.push(s.expose().to_owned()),
            SecretSource::Env(name) => v.extend(std::env::var(name).ok()),
            SecretSource::File(_) | SecretSource::Command(_) => {}
        }
    }
    // A key's individual lines can show up in parser errors too.
    let lines: Vec<String> = v
        .iter()
        .flat_map(|s| {
            s.lines()
                .map(str::trim)
                .filter(|l| l.len() >= 16 && !l.starts_with("-----"))
        })
        .map(str::to_owned)
        .collect();
    v.extend(lines);
    v
}
