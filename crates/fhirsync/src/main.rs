use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fhirsync::error_line::error_line;
use fhirsync::logging::{self, LogFormat};

#[cfg(test)]
mod cli_doc;
mod cmd;

/// The help heading of the options every subcommand takes.
const GLOBAL: &str = "Global options";

/// Keeps Delta Lake tables in sync with FHIR servers via Bulk Data export.
#[derive(Parser)]
#[command(name = "fhirsync", version, about, propagate_version = true)]
struct Cli {
    /// Log format: `human` (with progress bars) on a terminal, `json` otherwise.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto, env = "FHIRSYNC_LOG_FORMAT", help_heading = GLOBAL)]
    log_format: LogFormat,

    /// Log filter (tracing `EnvFilter` syntax), e.g. `info`, `debug` or `warn,fhir_bulk=debug`
    /// [default: `info`; `warn` under the progress bars of `export`, `sync` and `import` on a
    /// terminal, where `debug` adds one line per file and per commit]
    #[arg(long, global = true, value_name = "FILTER", env = "FHIRSYNC_LOG", help_heading = GLOBAL)]
    log_level: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Demo: the built-in server with bundled Synthea data, a full sync, server changes, an incremental sync, a query.
    Demo(cmd::demo::Args),
    /// One sync: export (incremental from the last committed cursor), encode, merge into Delta tables.
    Sync(cmd::sync::Args),
    /// Apply a local directory of NDJSON files (e.g. a previous export) to the Delta tables.
    Import(cmd::import::Args),
    /// Run syncs on cron schedules and serve /health and /metrics.
    Daemon(cmd::daemon::Args),
    /// Exit 0 if the last sync is recent and did not fail, 1 otherwise (one JSON line on stdout).
    Health(cmd::health::Args),
    /// Cursor, last sync and per-table version, rows, files and size.
    Status(cmd::status::Args),
    /// SQL over all tables (registered by resource type name).
    Query(cmd::query::Args),
    /// Compact small files, vacuum old ones, write checkpoints.
    Maintain(cmd::maintain::Args),
    /// Run a Bulk Data export and write the NDJSON files, manifest, errors and deletions to a directory.
    Export(cmd::export::Args),
    /// Ask a FHIR server what it supports (levels, _since, files, tokens) and print the settings that fit it.
    Check(cmd::check::Args),
    /// Start the built-in Bulk Data test server (synthetic or bundled Synthea data) on loopback.
    ServeTest(cmd::serve_test::Args),
    /// Encode a directory of NDJSON files into one Parquet file per resource type (Pathling encoding).
    Encode(cmd::encode::Args),
    /// SQL on FHIR views: run a ViewDefinition over the synced tables.
    View(cmd::view::Args),
}

fn main() -> ExitCode {
    fhirsync::memory::limit_malloc_arenas();
    fhirsync::panics::quiet_caught_library_panics();
    let cli = Cli::parse();
    let bars = matches!(
        cli.command,
        Command::Export(_) | Command::Sync(_) | Command::Import(_)
    );
    let mode = match logging::init(cli.log_format, cli.log_level.as_deref(), bars) {
        Ok(mode) => mode,
        Err(e) => {
            eprintln!("fhirsync: {}", error_line(&e));
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fhirsync: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Demo(args) => cmd::demo::run(args, mode).await,
            Command::Sync(args) => cmd::sync::run(args, mode).await,
            Command::Import(args) => cmd::import::run(args, mode).await,
            Command::Daemon(args) => cmd::daemon::run(args, mode).await,
            Command::Health(args) => cmd::health::run(args, mode).await,
            Command::Status(args) => cmd::status::run(args, mode).await,
            Command::Query(args) => cmd::query::run(args, mode).await,
            Command::Maintain(args) => cmd::maintain::run(args, mode).await,
            Command::Export(args) => cmd::export::run(args, mode).await,
            Command::ServeTest(args) => cmd::serve_test::run(args, mode).await,
            Command::Check(args) => cmd::check::run(args, mode).await,
            Command::Encode(args) => cmd::encode::run(args, mode).await,
            Command::View(args) => cmd::view::run(args, mode).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, with the whole context chain, for people and for log scrapers.
            let line = error_line(&e);
            tracing::error!(error = %line, "fhirsync failed");
            eprintln!("fhirsync: {line}");
            ExitCode::FAILURE
        }
    }
}

/// The shared vocabulary, subcommand by subcommand, as the binary parses it.
#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use clap::Parser;
    use fhirsync::config::{
        DEFAULT_MAX_CONCURRENT_DOWNLOADS, ExportArgs, FileOptions, NoEnv, ResourceTypeArgs,
    };

    use super::{Cli, Command};

    fn parse(argv: &[&str]) -> Command {
        match Cli::try_parse_from(std::iter::once("fhirsync").chain(argv.iter().copied())) {
            Ok(cli) => cli.command,
            Err(e) => panic!("{argv:?}: {e}"),
        }
    }

    fn refused(argv: &[&str]) -> String {
        match Cli::try_parse_from(std::iter::once("fhirsync").chain(argv.iter().copied())) {
            Ok(_) => panic!("{argv:?} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    /// The resource type flags of whichever subcommand `argv` runs.
    fn types_of(argv: &[&str]) -> ResourceTypeArgs {
        match parse(argv) {
            Command::Demo(a) => a.types,
            Command::Sync(a) => a.sync.export.types,
            Command::Import(a) => a.types,
            Command::Daemon(a) => a.daemon.sync.export.types,
            Command::Query(a) => a.types,
            Command::Maintain(a) => a.types,
            Command::Export(a) => a.export.types,
            _ => panic!("{argv:?} takes no resource types"),
        }
    }

    /// The export flags of `export`, `sync` or `daemon`.
    fn export_of(argv: &[&str]) -> ExportArgs {
        match parse(argv) {
            Command::Sync(a) => a.sync.export,
            Command::Daemon(a) => a.daemon.sync.export,
            Command::Export(a) => a.export,
            _ => panic!("{argv:?} takes no export flags"),
        }
    }

    const SUBCOMMANDS: [&[&str]; 7] = [
        &["demo"],
        &["sync"],
        &["import", "--input", "in", "--delta-path", "d"],
        &["daemon"],
        &["query", "--delta-path", "d", "SELECT 1"],
        &["maintain", "--delta-path", "d"],
        &["export", "--output-dir", "out"],
    ];

    fn with(base: &[&'static str], extra: &[&'static str]) -> Vec<&'static str> {
        // Flags before a positional argument (query's SQL), so that a list flag stops at it.
        let (head, tail) = base.split_at(1);
        let mut argv = head.to_vec();
        argv.extend(extra);
        argv.extend(tail);
        argv
    }

    #[test]
    fn resource_types_take_both_spellings_on_every_subcommand() {
        for base in SUBCOMMANDS {
            for spelling in [
                &["--resource-types", "Patient", "Observation"][..],
                &["--types", "Patient,Observation"],
                &["--types", "Patient", "--resource-types", "Observation"],
                &["--resource-types=Patient,Observation,Patient"],
            ] {
                let argv = with(base, spelling);
                let types = types_of(&argv).resolve().unwrap();
                assert_eq!(
                    types,
                    Some(vec!["Patient".to_owned(), "Observation".to_owned()]),
                    "{argv:?}"
                );
            }
            assert_eq!(types_of(base).resolve().unwrap(), None, "{base:?}");
            let argv = with(base, &["--types", "patient"]);
            let err = types_of(&argv).resolve().unwrap_err();
            assert!(
                err.to_string().contains("not a FHIR resource type"),
                "{err}"
            );
        }
    }

    #[test]
    fn patients_take_one_shape_on_export_sync_and_daemon() {
        for base in [&["sync"][..], &["daemon"], &["export", "--output-dir", "o"]] {
            for spelling in [
                &["--patient", "1", "Patient/2"][..],
                &["--patient", "1,Patient/2"],
                &["--patient", "1", "--patient", "Patient/2"],
                &["--patients", "1", "Patient/2"],
            ] {
                let argv = with(base, spelling);
                let e = export_of(&argv)
                    .resolve(&env_with_endpoint(), &FileOptions::default())
                    .unwrap();
                assert_eq!(e.patients, ["1", "Patient/2"], "{argv:?}");
            }
        }
    }

    fn env_with_endpoint() -> BTreeMap<String, String> {
        BTreeMap::from([("FHIR_ENDPOINT".to_owned(), "http://x/fhir".to_owned())])
    }

    #[test]
    fn timeouts_are_durations_on_export_sync_and_daemon() {
        for base in [&["sync"][..], &["daemon"], &["export", "--output-dir", "o"]] {
            for (given, secs) in [("30m", 1800), ("24h", 86_400), ("90s", 90), ("90", 90)] {
                let argv = with(base, &["--timeout", given]);
                assert_eq!(
                    export_of(&argv).timeout,
                    Some(Duration::from_secs(secs)),
                    "{argv:?}"
                );
            }
            let err = refused(&with(base, &["--timeout", "soon"]));
            assert!(err.contains("90s"), "{err}");
            let e = export_of(base)
                .resolve(&env_with_endpoint(), &FileOptions::default())
                .unwrap();
            assert_eq!(e.timeout, None, "no limit by default: {base:?}");
        }
    }

    #[test]
    fn export_and_sync_share_the_download_default_and_range() {
        for base in [&["sync"][..], &["daemon"], &["export", "--output-dir", "o"]] {
            let e = export_of(base)
                .resolve(&env_with_endpoint(), &FileOptions::default())
                .unwrap();
            assert_eq!(e.max_concurrent_downloads, DEFAULT_MAX_CONCURRENT_DOWNLOADS);
            assert_eq!(e.max_concurrent_downloads, 10);
            for bad in ["0", "65"] {
                let argv = with(base, &["--max-concurrent-downloads", bad]);
                let err = export_of(&argv)
                    .resolve(&env_with_endpoint(), &FileOptions::default())
                    .unwrap_err();
                assert!(err.to_string().contains("at most 64"), "{argv:?}: {err}");
            }
        }
    }

    #[test]
    fn boolean_flags_take_an_optional_value_everywhere() {
        let export = |argv: &[&str]| match parse(argv) {
            Command::Export(a) => a,
            _ => unreachable!(),
        };
        let base = ["export", "--output-dir", "o"];
        assert_eq!(export(&base).export.gzip, None);
        assert_eq!(
            export(&with(&base, &["--gzip=false"])).export.gzip,
            Some(false)
        );
        assert_eq!(export(&with(&base, &["--gzip"])).export.gzip, Some(true));
        assert!(export(&with(&base, &["--resume"])).resume);
        assert!(!export(&with(&base, &["--resume=false"])).resume);
        assert!(!export(&base).keep_job);

        let encoding = |argv: &[&str]| match parse(argv) {
            Command::Sync(a) => a.sync.encoding,
            Command::Import(a) => a.encoding,
            Command::Encode(a) => a.encoding,
            _ => unreachable!(),
        };
        for base in [
            &["sync"][..],
            &["import", "--input", "i", "--delta-path", "d"],
            &["encode", "--input", "i", "--output", "o"],
        ] {
            for (given, expected) in [
                (&[][..], None),
                (&["--extensions"], Some(true)),
                (&["--extensions=true"], Some(true)),
                (&["--extensions=false"], Some(false)),
            ] {
                let argv = with(base, given);
                assert_eq!(encoding(&argv).extensions, expected, "{argv:?}");
            }
            // A value needs `=`: a following word is not taken for it.
            let err = refused(&with(base, &["--extensions", "false"]));
            assert!(err.contains("'false'"), "{err}");
        }
        match parse(&["status", "--delta-path", "d", "--json=false"]) {
            Command::Status(a) => assert!(!a.json),
            _ => unreachable!(),
        }
        match parse(&[
            "maintain",
            "--delta-path",
            "d",
            "--checkpoint",
            "--zorder=true",
        ]) {
            Command::Maintain(a) => assert!(a.checkpoint && a.zorder && !a.no_optimize),
            _ => unreachable!(),
        }
        match parse(&["daemon", "--run-on-start", "--full-refresh=false"]) {
            Command::Daemon(a) => {
                assert_eq!(a.daemon.run_on_start, Some(true));
                assert_eq!(a.daemon.sync.full_refresh, Some(false));
            }
            _ => unreachable!(),
        }
        assert!(refused(&["status", "--delta-path", "d", "--json=yes"]).contains("yes"));
    }

    #[test]
    fn export_reads_the_endpoint_like_sync() {
        let args = export_of(&["export", "--output-dir", "o"]);
        let err = args.resolve(&NoEnv, &FileOptions::default()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("--fhir-endpoint") && msg.contains("FHIR_ENDPOINT"),
            "{msg}"
        );
        let e = args
            .resolve(&env_with_endpoint(), &FileOptions::default())
            .unwrap();
        assert_eq!(e.fhir_endpoint.as_str(), "http://x/fhir");
    }

    #[test]
    fn instants_take_a_date_on_export_and_sync() {
        for base in [&["sync"][..], &["export", "--output-dir", "o"]] {
            let argv = with(
                base,
                &[
                    "--since",
                    "2024-01-31",
                    "--until",
                    "2024-02-01T06:00:00+01:00",
                ],
            );
            let e = export_of(&argv);
            assert_eq!(
                e.since.map(|t| t.to_rfc3339()).as_deref(),
                Some("2024-01-31T00:00:00+00:00")
            );
            assert_eq!(
                e.until.map(|t| t.to_rfc3339()).as_deref(),
                Some("2024-02-01T06:00:00+01:00")
            );
            let err = refused(&with(base, &["--since", "yesterday"]));
            assert!(err.contains("RFC 3339") && err.contains("date"), "{err}");
        }
    }

    #[test]
    fn serve_test_durations_accept_seconds_and_units() {
        for (given, secs) in [("2", 2), ("2s", 2), ("1m", 60)] {
            match parse(&[
                "serve-test",
                "--retry-after",
                given,
                "--token-lifetime",
                given,
            ]) {
                Command::ServeTest(a) => {
                    assert_eq!(a.retry_after, Some(Duration::from_secs(secs)));
                    assert_eq!(a.token_lifetime, Duration::from_secs(secs));
                }
                _ => unreachable!(),
            }
        }
    }

    #[test]
    fn cloud_profiles_of_serve_test_need_an_output_store() {
        let Command::ServeTest(a) = parse(&["serve-test", "--profile", "azure"]) else {
            unreachable!()
        };
        let err = crate::cmd::serve_test::config(&a).unwrap_err().to_string();
        assert!(err.contains("--output-store"), "{err}");
        let Command::ServeTest(a) = parse(&[
            "serve-test",
            "--profile",
            "gcp",
            "--output-store",
            "gs://exports/fhir",
            "--output-store-option",
            "GOOGLE_SKIP_SIGNATURE=true",
        ]) else {
            unreachable!()
        };
        let store = crate::cmd::serve_test::config(&a)
            .unwrap()
            .output_store
            .unwrap();
        assert_eq!(store.url, "gs://exports/fhir");
        assert_eq!(store.options["GOOGLE_SKIP_SIGNATURE"], "true");
        let err = refused(&["serve-test", "--output-store-option", "A=b"]);
        assert!(err.contains("--output-store"), "{err}");
    }
}
