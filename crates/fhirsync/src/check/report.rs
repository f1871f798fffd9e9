//! What `fhirsync check` found, the settings it recommends, and how both are printed.
use serde::Serialize;

/// One finding: a capability and whether the server has it (`None`: not determined).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Finding {
    pub what: String,
    pub works: Option<bool>,
    pub detail: String,
}

/// The whole result of a check.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct CheckReport {
    pub fhir_endpoint: String,
    /// The server software as the CapabilityStatement names it.
    pub software: Option<String>,
    /// The test-server profile (and docs/servers.md section) this server matches.
    pub known_server: Option<String>,
    pub findings: Vec<Finding>,
    pub recommendations: Vec<String>,
    /// A sync with this server cannot work as things stand.
    pub blocking: Vec<String>,
}

impl CheckReport {
    pub fn found(&mut self, what: &str, works: Option<bool>, detail: impl Into<String>) {
        self.findings.push(Finding {
            what: what.to_string(),
            works,
            detail: detail.into(),
        });
    }

    pub fn recommend(&mut self, text: impl Into<String>) {
        self.recommendations.push(text.into());
    }

    pub fn block(&mut self, text: impl Into<String>) {
        self.blocking.push(text.into());
    }

    pub fn works(&self, what: &str) -> Option<bool> {
        self.findings
            .iter()
            .find(|f| f.what == what)
            .and_then(|f| f.works)
    }

    /// The report for a person: one line per finding, then what to set.
    pub fn to_text(&self) -> String {
        let mut out = format!("{}\n", self.fhir_endpoint);
        if let Some(s) = &self.software {
            out.push_str(&format!("  server: {s}"));
            if let Some(k) = &self.known_server {
                out.push_str(&format!(" (profile {k}; see docs/servers.md)"));
            }
            out.push('\n');
        }
        let width = self
            .findings
            .iter()
            .map(|f| f.what.len())
            .max()
            .unwrap_or(0);
        for f in &self.findings {
            let mark = match f.works {
                Some(true) => "yes",
                Some(false) => "no ",
                None => " ? ",
            };
            out.push_str(&format!("  {mark}  {:width$}  {}\n", f.what, f.detail));
        }
        if !self.recommendations.is_empty() {
            out.push_str("recommended:\n");
            for r in &self.recommendations {
                out.push_str(&format!("  - {r}\n"));
            }
        }
        if self.blocking.is_empty() {
            out.push_str("a sync can work with this server\n");
        } else {
            out.push_str("a sync cannot work as things stand:\n");
            for b in &self.blocking {
                out.push_str(&format!("  - {b}\n"));
            }
        }
        out
    }
}

/// The profile a server's software name matches (case-insensitive substrings of
/// `CapabilityStatement.software.name`, `publisher` and `implementation.description`).
pub fn known_server(names: &str) -> Option<&'static str> {
    let n = names.to_ascii_lowercase();
    const KNOWN: &[(&str, &str)] = &[
        ("epic", "epic"),
        ("cerner", "oracle"),
        ("oracle", "oracle"),
        ("millennium", "oracle"),
        ("microsoft", "azure"),
        ("azure", "azure"),
        ("hapi", "hapi"),
        ("smile", "hapi"),
        ("firely", "firely"),
        ("vonk", "firely"),
        ("aidbox", "aidbox"),
        ("health samurai", "aidbox"),
        ("cloud healthcare", "gcp"),
        ("google", "gcp"),
        ("healthlake", "aws"),
        ("amazon", "aws"),
        ("medplum", "medplum"),
    ];
    KNOWN.iter().find(|(k, _)| n.contains(k)).map(|(_, p)| *p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_names_map_to_profiles() {
        assert_eq!(known_server("HAPI FHIR Server"), Some("hapi"));
        assert_eq!(known_server("Microsoft FHIR Server"), Some("azure"));
        assert_eq!(known_server("Firely Server"), Some("firely"));
        assert_eq!(known_server("Cerner Millennium"), Some("oracle"));
        assert_eq!(known_server("Medplum"), Some("medplum"));
        assert_eq!(known_server("something else"), None);
    }

    #[test]
    fn text_lists_findings_recommendations_and_blockers() {
        let mut r = CheckReport {
            fhir_endpoint: "http://h/fhir".into(),
            software: Some("HAPI FHIR 7.0".into()),
            known_server: Some("hapi".into()),
            ..CheckReport::default()
        };
        r.found("_since", Some(true), "accepted");
        r.found("meta.lastUpdated", None, "no resources in the sample");
        r.recommend("schedule a weekly full refresh");
        let text = r.to_text();
        assert!(text.contains("yes  _since"), "{text}");
        assert!(text.contains(" ?   meta.lastUpdated"), "{text}");
        assert!(text.contains("a sync can work"), "{text}");
        r.block("no export level is allowed");
        assert!(r.to_text().contains("cannot work"));
        assert_eq!(r.works("_since"), Some(true));
    }
}
