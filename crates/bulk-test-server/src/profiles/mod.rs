//! Vendor profiles: the server reproduces a real Bulk Data server's documented departures from
//! the IG, so that clients can be tested against each. A profile is data ([`Behaviour`]) that
//! the handlers consult; [`Profile::Spec`] is the IG as written.
mod aidbox;
mod aws;
mod azure;
mod behaviour;
mod epic;
mod firely;
mod gcp;
mod hapi;
mod medplum;
mod oracle;

use std::fmt;
use std::str::FromStr;

pub(crate) use behaviour::{Behaviour, DeletedArray, FileAccept, FilePath};
pub use epic::Epic;
pub use hapi::Hapi;
pub use oracle::Oracle;

use crate::config::ServerConfig;

/// Which server the test server behaves like.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Profile {
    /// The Bulk Data IG as written.
    #[default]
    Spec,
    /// HAPI FHIR JPA server (and Smile CDR).
    Hapi(Hapi),
    /// Firely Server.
    Firely,
    /// Epic.
    Epic(Epic),
    /// Oracle Health (Cerner Millennium).
    Oracle(Oracle),
    /// Medplum.
    Medplum,
    /// Aidbox.
    Aidbox,
    /// Azure Health Data Services (output in Azure Blob storage).
    Azure,
    /// Google Cloud Healthcare API (output in Cloud Storage).
    Gcp,
    /// AWS HealthLake (output in S3).
    Aws,
}

impl Profile {
    /// Every profile with its default settings, in a stable order.
    pub fn all() -> Vec<Profile> {
        vec![
            Profile::Spec,
            Profile::Hapi(Hapi::default()),
            Profile::Firely,
            Profile::Epic(Epic::default()),
            Profile::Oracle(Oracle::default()),
            Profile::Medplum,
            Profile::Aidbox,
            Profile::Azure,
            Profile::Gcp,
            Profile::Aws,
        ]
    }

    /// The profile's name, as [`FromStr`] reads it.
    pub fn name(&self) -> &'static str {
        match self {
            Profile::Spec => "spec",
            Profile::Hapi(_) => "hapi",
            Profile::Firely => "firely",
            Profile::Epic(_) => "epic",
            Profile::Oracle(_) => "oracle",
            Profile::Medplum => "medplum",
            Profile::Aidbox => "aidbox",
            Profile::Azure => "azure",
            Profile::Gcp => "gcp",
            Profile::Aws => "aws",
        }
    }

    /// What the profile does differently from the IG, in one line.
    pub fn description(&self) -> &'static str {
        match self {
            Profile::Spec => "the Bulk Data IG as written",
            Profile::Hapi(_) => hapi::DESCRIPTION,
            Profile::Firely => firely::DESCRIPTION,
            Profile::Epic(_) => epic::DESCRIPTION,
            Profile::Oracle(_) => oracle::DESCRIPTION,
            Profile::Medplum => medplum::DESCRIPTION,
            Profile::Aidbox => aidbox::DESCRIPTION,
            Profile::Azure => azure::DESCRIPTION,
            Profile::Gcp => gcp::DESCRIPTION,
            Profile::Aws => aws::DESCRIPTION,
        }
    }

    pub(crate) fn behaviour(&self) -> Behaviour {
        match self {
            Profile::Spec => Behaviour::spec(),
            Profile::Hapi(h) => h.behaviour(),
            Profile::Firely => firely::behaviour(),
            Profile::Epic(e) => e.behaviour(),
            Profile::Oracle(o) => o.behaviour(),
            Profile::Medplum => medplum::behaviour(),
            Profile::Aidbox => aidbox::behaviour(),
            Profile::Azure => azure::behaviour(),
            Profile::Gcp => gcp::behaviour(),
            Profile::Aws => aws::behaviour(),
        }
    }

    /// Sets the `Retry-After` the profile sends, for profiles that fix one (so that a test or a
    /// trial by hand need not wait minutes or hours); others take
    /// [`ServerConfig::retry_after_secs`].
    pub fn set_retry_after(&mut self, secs: u64) {
        match self {
            Profile::Hapi(h) => h.retry_after_secs = secs,
            Profile::Epic(e) => e.retry_after_secs = secs,
            Profile::Oracle(o) => o.retry_after_secs = secs,
            Profile::Spec
            | Profile::Firely
            | Profile::Medplum
            | Profile::Aidbox
            | Profile::Azure
            | Profile::Gcp
            | Profile::Aws => {}
        }
    }

    /// Settings the profile fixes whatever the configuration says (where files are served,
    /// `requiresAccessToken`, how many jobs may run).
    pub(crate) fn apply(&self, cfg: &mut ServerConfig) {
        match self {
            Profile::Oracle(_) => oracle::apply(cfg),
            Profile::Aidbox => aidbox::apply(cfg),
            _ => {}
        }
    }

    /// Whether the profile writes its output files to a bucket, so that the server needs an
    /// output store ([`ServerConfig::output_store`]).
    pub fn needs_output_store(&self) -> bool {
        self.behaviour().output_in_store
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A profile name that is not known.
#[derive(Debug, thiserror::Error)]
#[error("unknown server profile {0:?} (known: {known})", known = known_names())]
pub struct UnknownProfile(pub String);

fn known_names() -> String {
    Profile::all()
        .iter()
        .map(Profile::name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for Profile {
    type Err = UnknownProfile;

    /// A profile by name (case-insensitive), with its default settings.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        Profile::all()
            .into_iter()
            .find(|p| p.name() == wanted)
            .ok_or_else(|| UnknownProfile(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let names: Vec<&str> = Profile::all().iter().map(Profile::name).collect();
        assert_eq!(
            names,
            [
                "spec", "hapi", "firely", "epic", "oracle", "medplum", "aidbox", "azure", "gcp",
                "aws"
            ]
        );
        for p in Profile::all() {
            assert_eq!(p.to_string().parse::<Profile>().unwrap(), p);
            assert!(!p.description().is_empty());
        }
        assert_eq!(
            "HAPI".parse::<Profile>().unwrap(),
            Profile::Hapi(Hapi::default())
        );
        let e = "nope".parse::<Profile>().unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("hapi"), "{e}");
    }
}
