//! `fhirsync serve-test`: the built-in Bulk Data test server, for trying fhirsync (or any Bulk
//! Data client) without a real FHIR server.
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bulk_test_server::smart::{RegisteredClient, SmartServerConfig};
use bulk_test_server::{DataSource, OutputStore, Profile, ServerConfig, TestServer};
use clap::ArgAction;
use fhirsync::config::{parse_duration, parse_key_val};
use fhirsync::logging::LogMode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Port to listen on (0 = any free port)
    #[arg(long, default_value_t = 8080)]
    pub port: u16,

    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,

    /// Serve this many deterministic synthetic patients (about 10-15 KB of NDJSON each)
    /// instead of the bundled 100-patient Synthea export
    #[arg(long, value_name = "N", conflicts_with = "data_dir")]
    pub synthetic_patients: Option<usize>,

    /// Seed of the synthetic data
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        requires = "synthetic_patients"
    )]
    pub seed: u64,

    /// Serve the `.ndjson` / `.ndjson.gz` files of this directory
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// FHIR base path
    #[arg(long, value_name = "PATH", default_value = "/fhir")]
    pub base_path: String,

    /// Maximum resources per output file
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub resources_per_file: usize,

    /// Status polls answered with 202 before the manifest is ready
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub polls: u32,

    /// `Retry-After` on in-progress status responses, in whole seconds (`1s`, `1m`, or a bare
    /// number of seconds) [default: 1s, or the profile's own: hapi 2m, epic 5m, oracle 5h]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub retry_after: Option<Duration>,

    /// Set `requiresAccessToken` in manifests (and require tokens on file downloads when SMART
    /// auth is on)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub requires_access_token: bool,

    /// Require SMART Backend Services tokens for this client id
    #[arg(long, value_name = "ID", requires = "smart_auth")]
    pub smart_client_id: Option<String>,

    /// Public JWKS file of the client (`private_key_jwt`)
    #[arg(long, value_name = "FILE", group = "smart_auth")]
    pub smart_jwks: Option<PathBuf>,

    /// Client secret (`client_secret_basic` / `client_secret_post`)
    #[arg(
        long,
        value_name = "SECRET",
        group = "smart_auth",
        env = "FHIRSYNC_TEST_CLIENT_SECRET",
        hide_env_values = true
    )]
    pub smart_client_secret: Option<String>,

    /// Access token lifetime (`5m`, `1h`, or a bare number of seconds)
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub token_lifetime: Duration,

    /// Behave as a real server does where it departs from the Bulk Data IG: spec (the IG as
    /// written), hapi, firely, epic, oracle, medplum, aidbox, azure, gcp or aws (the last three
    /// write output files to --output-store)
    #[arg(long, value_name = "NAME", default_value = "spec")]
    pub profile: Profile,

    /// Write output files to this bucket and list them from there, as cloud servers do:
    /// `az://container/prefix`, `abfss://container@account.dfs.core.windows.net/prefix`,
    /// `gs://bucket/prefix` or `s3://bucket/prefix` (required by --profile azure, gcp, aws)
    #[arg(long, value_name = "URL")]
    pub output_store: Option<String>,

    /// Setting of the output store over the cloud's environment variables (`AZURE_*`,
    /// `GOOGLE_*`, `AWS_*`), e.g. `AZURE_STORAGE_USE_EMULATOR=true` (repeatable)
    #[arg(long = "output-store-option", value_name = "KEY=VALUE", value_parser = parse_key_val, requires = "output_store")]
    pub output_store_options: Vec<(String, String)>,
}

pub(crate) fn config(args: &Args) -> anyhow::Result<ServerConfig> {
    let data = match (&args.synthetic_patients, &args.data_dir) {
        (Some(patients), _) => DataSource::Synthetic {
            patients: *patients,
            seed: args.seed,
        },
        (None, Some(dir)) => {
            anyhow::ensure!(
                dir.is_dir(),
                "--data-dir {} is not a directory",
                dir.display()
            );
            DataSource::Dir(dir.clone())
        }
        (None, None) => DataSource::Synthea,
    };
    let smart = match &args.smart_client_id {
        None => {
            anyhow::ensure!(
                args.smart_jwks.is_none() && args.smart_client_secret.is_none(),
                "--smart-jwks and --smart-client-secret need --smart-client-id"
            );
            None
        }
        Some(client_id) => {
            let jwks = match &args.smart_jwks {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read the JWKS file {}", path.display()))?;
                    let v: serde_json::Value = serde_json::from_str(&text)
                        .with_context(|| format!("{} is not JSON", path.display()))?;
                    anyhow::ensure!(
                        v.get("keys").is_some_and(|k| k.is_array()),
                        "{} is not a JWKS (no \"keys\" array)",
                        path.display()
                    );
                    Some(v)
                }
                None => None,
            };
            Some(SmartServerConfig {
                token_lifetime: args.token_lifetime.max(Duration::from_secs(1)),
                clients: vec![RegisteredClient {
                    client_id: client_id.clone(),
                    jwks,
                    client_secret: args.smart_client_secret.clone(),
                }],
            })
        }
    };
    let mut profile = args.profile.clone();
    let retry_after = match args.retry_after {
        Some(explicit) => {
            profile.set_retry_after(explicit.as_secs());
            explicit
        }
        None => Duration::from_secs(1),
    };
    anyhow::ensure!(
        retry_after.subsec_nanos() == 0,
        "--retry-after takes whole seconds (it is sent as a Retry-After header)"
    );
    anyhow::ensure!(
        args.resources_per_file > 0,
        "--resources-per-file must be at least 1"
    );
    anyhow::ensure!(
        args.output_store.is_some() || !args.profile.needs_output_store(),
        "--profile {} writes output files to a bucket: give --output-store URL (az://, gs:// \
         or s3://) and its credentials (environment or --output-store-option)",
        args.profile
    );
    let output_store = args.output_store.as_ref().map(|url| OutputStore {
        url: url.clone(),
        options: args.output_store_options.iter().cloned().collect(),
    });
    Ok(ServerConfig {
        data,
        bind: SocketAddr::new(args.bind, args.port),
        base_path: args.base_path.clone(),
        requires_access_token: args.requires_access_token,
        smart,
        resources_per_file: args.resources_per_file,
        polls_before_complete: args.polls,
        retry_after_secs: retry_after.as_secs(),
        profile,
        output_store,
        ..ServerConfig::default()
    })
}

pub async fn run(args: Args, _mode: LogMode) -> anyhow::Result<()> {
    let config = config(&args)?;
    let server = TestServer::start(config)
        .await
        .context("cannot start the test server")?;
    let counts = server.store().counts();
    let total: u64 = counts.values().sum();
    tracing::info!(
        base_url = %server.base_url(),
        resources = total,
        types = counts.len(),
        profile = %args.profile,
        "test server listening; stop with Ctrl-C"
    );
    if args.profile != Profile::Spec {
        tracing::info!(profile = %args.profile, "{}", args.profile.description());
    }
    if server.smart().is_some() {
        tracing::info!(token_url = %server.token_url(), "SMART Backend Services auth is required");
    }
    // The base URL alone on stdout, so scripts can capture it.
    println!("{}", server.base_url());
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}
