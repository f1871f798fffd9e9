//! Epic: Group export only, no `_since`, resources without `meta.lastUpdated`, one export per
//! client and Group until it is deleted, a token endpoint that now and then fails, and
//! `Retry-After` in minutes.
use super::behaviour::{Behaviour, Levels, TokenFailures};

pub(super) const DESCRIPTION: &str = "Epic: Group export only, _since refused, resources \
    without meta.lastUpdated, one export per client and Group until it is deleted (429), \
    occasional bare 400s from the token endpoint, Retry-After in minutes";

/// Epic's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Epic {
    /// `Retry-After` while a job runs and on 429s.
    pub retry_after_secs: u64,
    /// Seed of the draws that make the token endpoint fail.
    pub token_failure_seed: u64,
    /// About one token request in this many gets a bare 400 (0: none).
    pub token_failure_one_in: u32,
}

impl Default for Epic {
    fn default() -> Self {
        Epic {
            retry_after_secs: 300,
            token_failure_seed: 0,
            token_failure_one_in: 20,
        }
    }
}

impl Epic {
    pub(super) fn behaviour(&self) -> Behaviour {
        Behaviour {
            software: "Epic",
            levels: Levels {
                system: false,
                patient: false,
                group: true,
            },
            retry_after_secs: Some(self.retry_after_secs),
            refused_params: &["_since"],
            one_job_per_client_group: true,
            without_last_updated: true,
            token_failures: Some(TokenFailures {
                seed: self.token_failure_seed,
                one_in: self.token_failure_one_in,
            }),
            ..Behaviour::spec()
        }
    }
}
