//! `fhirsync check`: asks a FHIR server what it can do for a sync and prints the settings
//! that fit it. Exits non-zero when a sync cannot work.
use std::time::Duration;

use anyhow::{Context, bail};
use fhir_bulk::{BulkClient, ClientConfig};
use fhirsync::check::{CheckOptions, check};
use fhirsync::config::{
    AuthArgs, ENV_FHIR_ENDPOINT, ProcessEnv, fhir_endpoint_var, parse_duration, parse_endpoint,
    parse_key_val,
};
use fhirsync::logging::LogMode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// FHIR server base URL [env: FHIR_ENDPOINT]
    #[arg(long, value_name = "URL")]
    pub fhir_endpoint: Option<String>,

    /// Check the export of this Group (servers such as Epic export Groups only)
    #[arg(long, value_name = "ID")]
    pub group_id: Option<String>,

    /// The resource type the trial export asks for
    #[arg(long = "type", value_name = "TYPE", default_value = "Patient")]
    pub resource_type: String,

    /// How long to wait for the trial export: `90s`, `10m`, or a bare number of seconds
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Object store option for export files the server leaves in a bucket (`s3://`, `gs://`,
    /// Azure blob URLs), e.g. `AZURE_STORAGE_ACCOUNT_KEY=...` (repeatable)
    #[arg(long = "export-storage-option", value_name = "KEY=VALUE", value_parser = parse_key_val)]
    pub export_storage_options: Vec<(String, String)>,

    /// Print the report as one JSON object
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = clap::ArgAction::Set)]
    pub json: bool,

    #[command(flatten)]
    pub auth: AuthArgs,
}

pub async fn run(args: Args, _mode: LogMode) -> anyhow::Result<()> {
    let endpoint = args
        .fhir_endpoint
        .clone()
        .or_else(|| fhir_endpoint_var(&ProcessEnv))
        .with_context(|| format!("--fhir-endpoint (or {ENV_FHIR_ENDPOINT}) is required"))?;
    let endpoint = parse_endpoint(&endpoint, "fhir_endpoint")?;
    let mut config = ClientConfig::new(endpoint.clone());
    // Trials answered 429 (one export at a time) are not worth minutes of retries here.
    config.retry.max_retries = 2;
    config.poll.timeout = args.timeout;
    config.storage_options = args.export_storage_options.iter().cloned().collect();
    let auth = args
        .auth
        .resolve(&ProcessEnv, None)
        .context("authentication settings")?;
    let tokens = fhirsync::sync::authenticate(&mut config, &auth)?;
    let client = BulkClient::new(config)?;
    let opts = CheckOptions {
        fhir_endpoint: endpoint,
        group_id: args.group_id.clone(),
        resource_type: args.resource_type.clone(),
        timeout: args.timeout,
    };
    let report = check(&opts, &client, tokens.as_ref()).await;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    if !report.blocking.is_empty() {
        bail!(
            "a sync cannot work with this server: {}",
            report.blocking.join("; ")
        );
    }
    Ok(())
}
