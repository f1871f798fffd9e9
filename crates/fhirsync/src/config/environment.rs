//! Environment variables: their names, and where they are read from (the process, or a map in
//! tests, so that no test has to change the process environment).
use std::collections::BTreeMap;

/// Where environment variables are read from.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment. Empty values count as unset.
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Environment for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.is_empty()).cloned()
    }
}

/// No environment at all (per-job options of a multi-job config file).
pub struct NoEnv;

impl Environment for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

pub const ENV_FHIR_ENDPOINT: &str = "FHIR_ENDPOINT";
/// The name `fhirsync export` once read the endpoint from; still read, with a warning.
pub const ENV_FHIR_ENDPOINT_DEPRECATED: &str = "FHIRSYNC_FHIR_ENDPOINT";
pub const ENV_DELTA_PATH: &str = "DELTA_PATH";
pub const ENV_CLIENT_ID: &str = "FHIR_CLIENT_ID";
pub const ENV_CLIENT_ID_FILE: &str = "FHIR_CLIENT_ID_FILE";
pub const ENV_PRIVATE_KEY: &str = "FHIR_PRIVATE_KEY";
pub const ENV_PRIVATE_KEY_FILE: &str = "FHIR_PRIVATE_KEY_FILE";
pub const ENV_CLIENT_SECRET: &str = "FHIR_CLIENT_SECRET";
pub const ENV_CLIENT_SECRET_FILE: &str = "FHIR_CLIENT_SECRET_FILE";
pub const ENV_CONFIG: &str = "FHIRSYNC_CONFIG";

/// The FHIR endpoint from the environment: `FHIR_ENDPOINT`, else the deprecated
/// `FHIRSYNC_FHIR_ENDPOINT` (with a warning naming the new variable).
pub fn fhir_endpoint_var(env: &dyn Environment) -> Option<String> {
    let current = env.var(ENV_FHIR_ENDPOINT);
    let Some(deprecated) = env.var(ENV_FHIR_ENDPOINT_DEPRECATED) else {
        return current;
    };
    if current.is_some() {
        tracing::warn!(
            "{ENV_FHIR_ENDPOINT_DEPRECATED} is deprecated and ignored because {ENV_FHIR_ENDPOINT} \
             is set; unset {ENV_FHIR_ENDPOINT_DEPRECATED}"
        );
        return current;
    }
    tracing::warn!("{ENV_FHIR_ENDPOINT_DEPRECATED} is deprecated: set {ENV_FHIR_ENDPOINT} instead");
    Some(deprecated)
}
