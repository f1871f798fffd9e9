//! Bad config files, resolved as `sync` (the top level) or `daemon` (its jobs and `[daemon]`)
//! resolve them: each is refused before anything runs, with a message that names the file or
//! the option and says why (one line, but for TOML syntax errors, which show where), or is
//! accepted when only odd. A value that would break a run later (a wait that overflows the
//! clock, a schedule that never fires) is refused here.
use std::path::Path;

use fhirsync::config::{ConfigError, ConfigFile, DaemonArgs, NoEnv, SyncArgs};

/// How the file is resolved.
#[derive(Clone, Copy)]
enum As {
    Sync,
    Daemon,
}

struct Case {
    kind: &'static str,
    resolve: As,
    toml: String,
    /// `Err(reason)`: refused saying it; `Ok(())`: accepted.
    expect: Result<(), &'static str>,
}

const BASE: &str = "fhir_endpoint = \"https://fhir.example/r4\"\ndelta_path = \"/data/fhir\"\n";

/// A `sync` config of the endpoint and delta path, with `more` lines.
fn sync(kind: &'static str, more: &str, expect: Result<(), &'static str>) -> Case {
    Case {
        kind,
        resolve: As::Sync,
        toml: format!("{BASE}{more}\n"),
        expect,
    }
}

/// A `daemon` config: the sync's, an hourly schedule, and `more` lines.
fn daemon(kind: &'static str, more: &str, expect: Result<(), &'static str>) -> Case {
    scheduled(kind, "0 * * * *", more, expect)
}

/// A `daemon` config: the sync's on `schedule`, and `more` lines.
fn scheduled(
    kind: &'static str,
    schedule: &str,
    more: &str,
    expect: Result<(), &'static str>,
) -> Case {
    Case {
        kind,
        resolve: As::Daemon,
        toml: format!("{BASE}schedule = \"{schedule}\"\n{more}\n"),
        expect,
    }
}

/// One case a line: a table.
#[rustfmt::skip]
fn cases() -> Vec<Case> {
    const YEARS: &str = "more than 100 years";
    vec![
        sync("not TOML", "delta_path = ", Err("is not valid TOML")),
        sync("unknown key (a typo)", "timout = \"2h\"", Err("unknown field `timout`")),
        sync("key given twice", "delta_path = \"/other\"", Err("is not valid TOML")),
        sync("timeout of 2^63 - 1 seconds", "timeout = 9223372036854775807", Err(YEARS)),
        sync("timeout of 500 billion years", "timeout = \"500000000000years\"", Err(YEARS)),
        sync("timeout negative", "timeout = -5", Err("expected a duration: a number of seconds or text")),
        sync("timeout a boolean", "timeout = true", Err("expected a duration: a number of seconds or text")),
        sync("resource types a number", "resource_types = 7", Err("expected a list: an array of strings or one string")),
        sync("timeout in unknown units", "timeout = \"2 fortnights\"", Err("timeout")),
        sync("token expiry tolerance beyond 100 years", "[auth]\ntoken_expiry_tolerance = \"200years\"", Err(YEARS)),
        Case { kind: "endpoint not http(s)", resolve: As::Sync, toml: "fhir_endpoint = \"ftp://fhir.example\"\ndelta_path = \"/d\"".into(), expect: Err("expected an http(s) URL") },
        sync("resource type in lower case", "resource_types = [\"patient\"]", Err("not a FHIR resource type name")),
        sync("since not an instant", "since = \"yesterday\"", Err("neither an RFC 3339 instant")),
        sync("no parallel downloads", "max_concurrent_downloads = 0", Err("must be at least 1")),
        sync("a million parallel downloads", "max_concurrent_downloads = 1000000", Err("at most 64")),
        sync("storage options not strings", "storage_options = { AWS_REGION = 1 }", Err("expected a string (in `storage_options.AWS_REGION`)")),
        sync("timeout of exactly 100 years", "timeout = \"100years\"", Ok(())),
        scheduled("schedule on 30 February", "0 0 30 2 *", "", Err("would never run")),
        daemon("schedule field with an empty list item", "full_refresh_schedule = \", 0 * ? * *\"", Err("empty list item")),
        scheduled("schedule with 7 fields", "0 0 0 * * * 2030", "", Err("got 7")),
        scheduled("schedule of an unknown nickname", "@fortnightly", "", Err("schedule")),
        daemon("time zone not IANA", "timezone = \"CEST\"", Err("not an IANA time zone")),
        daemon("jitter beyond 100 years", "jitter = \"101years\"", Err(YEARS)),
        daemon("stale_after beyond 100 years", "[daemon]\nstale_after = 9223372036854775807", Err(YEARS)),
        daemon("stale_after zero", "[daemon]\nstale_after = 0", Err("must be greater than zero")),
        daemon("listen not an address", "[daemon]\nlisten = \"localhost\"", Err("expected e.g. 127.0.0.1:9464")),
        daemon("jobs not tables", "jobs = 1", Err("expected [[jobs]] tables")),
        daemon("two jobs of one name", "[[jobs]]\nname = \"a\"\n[[jobs]]\nname = \"a\"\ndelta_path = \"/other\"", Err("a")),
        daemon("job name with a slash", "[[jobs]]\nname = \"a/b\"", Err("use letters, digits")),
        scheduled("leap day schedule", "0 0 29 2 *", "", Ok(())),
    ]
}

fn resolve(case: &Case) -> Result<(), ConfigError> {
    let file = ConfigFile::parse(&case.toml, Path::new("bad.toml"))?;
    match case.resolve {
        As::Sync => SyncArgs::default()
            .resolve(&NoEnv, Some(&file.options))
            .map(drop),
        As::Daemon => DaemonArgs::default()
            .resolve_with(&NoEnv, file, None)
            .map(drop),
    }
}

#[test]
fn bad_config_files_are_refused_before_anything_runs() {
    let cases = cases();
    let mut failures = Vec::new();
    for case in &cases {
        let problem = match (resolve(case), case.expect) {
            (Ok(()), Ok(())) => None,
            (Ok(()), Err(reason)) => {
                Some(format!("accepted; it should be refused saying {reason:?}"))
            }
            (Err(e), Ok(())) => Some(format!("refused: {e}")),
            (Err(e), Err(reason)) => {
                let message = e.to_string();
                let syntax = matches!(e, ConfigError::ParseFile { .. });
                (!message.contains(reason) || (!syntax && message.contains('\n')))
                    .then(|| format!("refused with {message:?}, not one line saying {reason:?}"))
            }
        };
        if let Some(p) = problem {
            failures.push(format!("{}: {p}", case.kind));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
