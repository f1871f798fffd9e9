//! The flag vocabulary `sync`, `daemon` and `export` share: both resource type spellings, one
//! patient flag, duration timeouts, one download default and range, `--flag[=BOOL]`, dates as
//! instants, and `FHIR_ENDPOINT` with its deprecated older name.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use fhir_bulk::UntilParameter;
use fhirsync::config::{
    ConfigFile, DEFAULT_MAX_CONCURRENT_DOWNLOADS, ExportArgs, FileOptions, NoEnv, SyncArgs,
};

use super::{SyncCli, daemon_args, env, file, sync_args};

#[derive(Parser)]
struct ExportCli {
    #[command(flatten)]
    args: ExportArgs,
}

fn export_args(argv: &[&str]) -> ExportArgs {
    ExportCli::try_parse_from(std::iter::once("export").chain(argv.iter().copied()))
        .unwrap()
        .args
}

/// Everything `f` logs at WARN and above, captured for this thread only.
fn warnings_of<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }
    let out = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(out.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let value = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&out.0.lock().unwrap()).into_owned();
    (value, text)
}

#[test]
fn the_endpoint_comes_from_fhir_endpoint_or_the_deprecated_name_with_a_warning() {
    let base = ["--delta-path", "/d"];
    // The current name: no warning.
    let e = env(&[("FHIR_ENDPOINT", "http://current.example/fhir")]);
    let (o, warnings) = warnings_of(|| sync_args(&base).resolve(&e, None).unwrap());
    assert_eq!(o.fhir_endpoint.as_str(), "http://current.example/fhir");
    assert_eq!(warnings, "");

    // The old name of `export` still works, for `sync` and `export` alike, with a warning that
    // names the new variable.
    let e = env(&[("FHIRSYNC_FHIR_ENDPOINT", "http://old.example/fhir")]);
    let (o, warnings) = warnings_of(|| sync_args(&base).resolve(&e, None).unwrap());
    assert_eq!(o.fhir_endpoint.as_str(), "http://old.example/fhir");
    assert!(
        warnings.contains("WARN")
            && warnings.contains("FHIRSYNC_FHIR_ENDPOINT is deprecated")
            && warnings.contains("set FHIR_ENDPOINT"),
        "{warnings}"
    );
    let (x, warnings) = warnings_of(|| {
        export_args(&[])
            .resolve(&e, &FileOptions::default())
            .unwrap()
    });
    assert_eq!(x.fhir_endpoint.as_str(), "http://old.example/fhir");
    assert!(warnings.contains("set FHIR_ENDPOINT"), "{warnings}");

    // Both set: the current name wins, and the warning says the old one is ignored.
    let e = env(&[
        ("FHIR_ENDPOINT", "http://current.example/fhir"),
        ("FHIRSYNC_FHIR_ENDPOINT", "http://old.example/fhir"),
    ]);
    let (o, warnings) = warnings_of(|| sync_args(&base).resolve(&e, None).unwrap());
    assert_eq!(o.fhir_endpoint.as_str(), "http://current.example/fhir");
    assert!(warnings.contains("ignored"), "{warnings}");

    // A flag beats both, and the file comes after them.
    let f = file("fhir_endpoint = \"http://file.example/fhir\"\n");
    let (o, _) = warnings_of(|| {
        sync_args(&[
            "--delta-path",
            "/d",
            "--fhir-endpoint",
            "http://flag.example/fhir",
        ])
        .resolve(&e, Some(&f.options))
        .unwrap()
    });
    assert_eq!(o.fhir_endpoint.as_str(), "http://flag.example/fhir");
    let o = sync_args(&base).resolve(&NoEnv, Some(&f.options)).unwrap();
    assert_eq!(o.fhir_endpoint.as_str(), "http://file.example/fhir");
}

#[test]
fn resource_types_take_both_spellings_for_sync_and_daemon() {
    let base = ["--fhir-endpoint", "http://x/fhir", "--delta-path", "/d"];
    let spellings: [&[&str]; 4] = [
        &["--resource-types", "Patient", "Observation"],
        &["--resource-types", "Patient,Observation"],
        &["--types", "Patient,Observation"],
        &["--types", "Patient", "Observation", "Patient"],
    ];
    for spelling in spellings {
        let argv: Vec<&str> = base.iter().chain(spelling).copied().collect();
        let o = sync_args(&argv).resolve(&NoEnv, None).unwrap();
        assert_eq!(o.resource_types, ["Patient", "Observation"], "{argv:?}");
        let mut daemon_argv = argv.clone();
        daemon_argv.extend(["--schedule", "@hourly"]);
        let c = daemon_args(&daemon_argv)
            .resolve_with(&NoEnv, ConfigFile::default(), None)
            .unwrap();
        assert_eq!(
            c.jobs[0].sync.resource_types,
            ["Patient", "Observation"],
            "{daemon_argv:?}"
        );
    }
    // The flag beats the file's list.
    let f = file("resource_types = \"Encounter Condition\"\n");
    let argv: Vec<&str> = base
        .iter()
        .chain(&["--types", "Patient"])
        .copied()
        .collect();
    let o = sync_args(&argv).resolve(&NoEnv, Some(&f.options)).unwrap();
    assert_eq!(o.resource_types, ["Patient"]);
    let o = sync_args(&base).resolve(&NoEnv, Some(&f.options)).unwrap();
    assert_eq!(o.resource_types, ["Encounter", "Condition"]);
}

#[test]
fn patients_take_one_flag_shape_and_the_file_list() {
    let base = ["--fhir-endpoint", "http://x/fhir", "--delta-path", "/d"];
    for spelling in [
        &["--patient", "1", "Patient/2"][..],
        &["--patient", "1,Patient/2"],
        &["--patient", "1", "--patient", "Patient/2"],
        &["--patients", "1", "Patient/2"],
    ] {
        let argv: Vec<&str> = base.iter().chain(spelling).copied().collect();
        let o = sync_args(&argv).resolve(&NoEnv, None).unwrap();
        assert_eq!(o.patients, ["1", "Patient/2"], "{argv:?}");
    }
    let f = file("patients = [\"3\", \"Patient/4\"]\n");
    let o = sync_args(&base).resolve(&NoEnv, Some(&f.options)).unwrap();
    assert_eq!(o.patients, ["3", "Patient/4"]);
}

#[test]
fn timeouts_are_durations_from_flag_and_file() {
    let base = ["--fhir-endpoint", "http://x/fhir", "--delta-path", "/d"];
    for (given, secs) in [("30m", 1800), ("24h", 86_400), ("90s", 90), ("3600", 3600)] {
        let argv: Vec<&str> = base.iter().chain(&["--timeout", given]).copied().collect();
        let o = sync_args(&argv).resolve(&NoEnv, None).unwrap();
        assert_eq!(o.timeout, Some(Duration::from_secs(secs)), "{given}");
        let x = export_args(&["--timeout", given]);
        assert_eq!(x.timeout, Some(Duration::from_secs(secs)), "{given}");
    }
    for (text, secs) in [("timeout = \"2h\"", 7200), ("timeout = 600", 600)] {
        let o = sync_args(&base)
            .resolve(&NoEnv, Some(&file(text).options))
            .unwrap();
        assert_eq!(o.timeout, Some(Duration::from_secs(secs)), "{text}");
    }
    let o = sync_args(&base).resolve(&NoEnv, None).unwrap();
    assert_eq!(o.timeout, None, "no limit by default");
    let err = sync_args(&base)
        .resolve(&NoEnv, Some(&file("timeout = \"0s\"").options))
        .unwrap_err();
    assert!(err.to_string().contains("greater than zero"), "{err}");
    assert!(ExportCli::try_parse_from(["export", "--timeout", "soon"]).is_err());
}

#[test]
fn export_and_sync_share_the_download_default_and_range() {
    let e = env(&[("FHIR_ENDPOINT", "http://x/fhir"), ("DELTA_PATH", "/d")]);
    let sync = SyncArgs::default().resolve(&e, None).unwrap();
    let export = ExportArgs::default()
        .resolve(&e, &FileOptions::default())
        .unwrap();
    assert_eq!(
        sync.max_concurrent_downloads,
        DEFAULT_MAX_CONCURRENT_DOWNLOADS
    );
    assert_eq!(
        export.max_concurrent_downloads,
        DEFAULT_MAX_CONCURRENT_DOWNLOADS
    );
    assert_eq!(DEFAULT_MAX_CONCURRENT_DOWNLOADS, 10);

    // The same range, whether the number comes from a flag or the file.
    for n in ["0", "65"] {
        let err = sync_args(&["--max-concurrent-downloads", n])
            .resolve(&e, None)
            .unwrap_err();
        assert!(err.to_string().contains("at most 64"), "{err}");
        let err = export_args(&["--max-concurrent-downloads", n])
            .resolve(&e, &FileOptions::default())
            .unwrap_err();
        assert!(err.to_string().contains("at most 64"), "{err}");
        let text = format!("max_concurrent_downloads = {n}");
        let err = SyncArgs::default()
            .resolve(&e, Some(&file(&text).options))
            .unwrap_err();
        assert!(err.to_string().contains("at most 64"), "{err}");
    }
    let o = sync_args(&["--max-concurrent-downloads", "64"])
        .resolve(&e, None)
        .unwrap();
    assert_eq!(o.max_concurrent_downloads, 64);
}

#[test]
fn until_goes_under_the_name_given_by_flag_or_file() {
    let e = env(&[("FHIR_ENDPOINT", "http://x/fhir"), ("DELTA_PATH", "/d")]);
    let resolve =
        |argv: &[&str], text: &str| sync_args(argv).resolve(&e, Some(&file(text).options));
    assert_eq!(
        resolve(&[], "").unwrap().until_parameter,
        UntilParameter::Until
    );
    assert_eq!(
        resolve(&[], r#"until_parameter = "_till""#)
            .unwrap()
            .until_parameter,
        UntilParameter::Till
    );
    assert_eq!(
        resolve(
            &["--until-parameter", "_until"],
            r#"until_parameter = "_till""#
        )
        .unwrap()
        .until_parameter,
        UntilParameter::Until
    );
    let wrong = resolve(&[], r#"until_parameter = "till""#)
        .unwrap_err()
        .to_string();
    assert!(
        wrong.contains("until_parameter") && wrong.contains("_till"),
        "{wrong}"
    );
    let flag = SyncCli::try_parse_from(["sync", "--until-parameter", "until"])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(flag.contains("_until, _till"), "{flag}");
}

#[test]
fn boolean_flags_take_an_optional_value_and_beat_the_file() {
    let e = env(&[("FHIR_ENDPOINT", "http://x/fhir"), ("DELTA_PATH", "/d")]);
    let resolve = |argv: &[&str], text: &str| {
        sync_args(argv)
            .resolve(&e, Some(&file(text).options))
            .unwrap()
    };
    assert!(resolve(&["--extensions"], "").extensions);
    assert!(resolve(&["--extensions=true"], "").extensions);
    assert!(!resolve(&["--extensions=false"], "extensions = true").extensions);
    assert!(resolve(&[], "extensions = true").extensions);
    assert!(!resolve(&["--gzip=false"], "").gzip);
    assert!(resolve(&["--gzip"], "gzip = false").gzip);
    assert!(resolve(&["--full-refresh"], "").full_refresh);
    assert!(
        !resolve(&["--full-refresh=false"], "full_refresh = true").full_refresh,
        "the flag turns off what the file turns on"
    );
    assert!(resolve(&["--reconcile=true"], "").reconcile);
    assert!(
        resolve(&["--auth-use-form-for-basic-auth"], "")
            .auth
            .use_form_for_basic_auth
    );
    // `--flag value` is not a value: the word is left over and refused.
    assert!(SyncCli::try_parse_from(["sync", "--extensions", "false"]).is_err());
    assert!(SyncCli::try_parse_from(["sync", "--extensions=maybe"]).is_err());

    // The daemon's own switch, from the flag or each job's file entry.
    let args = daemon_args(&["--schedule", "@hourly", "--run-on-start=false"]);
    let f = file("run_on_start = true\n");
    let c = args.resolve_with(&e, f, None).unwrap();
    assert!(!c.jobs[0].schedule.run_on_start);
}

#[test]
fn instants_in_flags_and_file_take_a_date_as_midnight_utc() {
    let base = ["--fhir-endpoint", "http://x/fhir", "--delta-path", "/d"];
    let argv: Vec<&str> = base
        .iter()
        .chain(&["--since", "2024-01-31"])
        .copied()
        .collect();
    let o = sync_args(&argv).resolve(&NoEnv, None).unwrap();
    assert_eq!(
        o.since.map(|t| t.to_rfc3339()).as_deref(),
        Some("2024-01-31T00:00:00+00:00")
    );
    let f = file("until = \"2024-02-01\"\nsince = \"2024-01-31T12:00:00+02:00\"\n");
    let o = sync_args(&base).resolve(&NoEnv, Some(&f.options)).unwrap();
    assert_eq!(
        o.until.map(|t| t.to_rfc3339()).as_deref(),
        Some("2024-02-01T00:00:00+00:00")
    );
    assert_eq!(
        o.since.map(|t| t.to_rfc3339()).as_deref(),
        Some("2024-01-31T12:00:00+02:00")
    );
    let err = sync_args(&base)
        .resolve(&NoEnv, Some(&file("since = \"last week\"").options))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("since") && msg.contains("RFC 3339") && msg.contains("date"),
        "{msg}"
    );
}

#[test]
fn patients_per_export_comes_from_the_flag_or_the_file_and_is_at_least_one() {
    let e = env(&[("FHIR_ENDPOINT", "http://x/fhir"), ("DELTA_PATH", "/d")]);
    let resolve =
        |argv: &[&str], text: &str| sync_args(argv).resolve(&e, Some(&file(text).options));
    assert_eq!(resolve(&[], "").unwrap().patients_per_export, 500);
    assert_eq!(
        resolve(&["--patients-per-export", "7"], "patients_per_export = 9")
            .unwrap()
            .patients_per_export,
        7
    );
    assert_eq!(
        resolve(&[], "patients_per_export = 9")
            .unwrap()
            .patients_per_export,
        9
    );
    let err = resolve(&["--patients-per-export", "0"], "").unwrap_err();
    assert!(err.to_string().contains("patients_per_export"), "{err}");
}
