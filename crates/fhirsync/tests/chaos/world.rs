//! A scenario's world: a test server with seeded data that the scenario changes round by
//! round, and the fault-free reference: the same syncs, without faults, into a path of their
//! own, whose tables every faulty run is compared with.
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use bulk_test_server::{DataSource, ServerConfig, TestServer};
use fhirsync::config::SyncOptions;
use fhirsync::logging::LogMode;
use fhirsync::run::{RunKind, SyncReport};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::TALLY;
use crate::check::{self, Contents, Rows};

/// The resource types every scenario syncs.
pub const TYPES: [&str; 4] = ["Patient", "Condition", "Observation", "Encounter"];

/// The server's data as of one round, and the tables the fault-free sync made of it.
pub struct Round {
    /// The last change of the round (epoch ms): an export whose `transactionTime` is at or
    /// after it, and before the next round's, sees this round's data.
    pub from_ms: i64,
    pub contents: Contents,
    /// Log lines of the reference sync, when it ran the binary.
    pub lines: usize,
    /// The phase a kill after each count of its log lines lands in (index 0: before any).
    pub phases: Vec<&'static str>,
}

impl Round {
    /// A kill point (a count of log lines) in a phase drawn first, so that short phases
    /// (the commits, the state write) are hit as often as long ones.
    pub fn kill_point(&self, rng: &mut impl Rng) -> usize {
        let mut phases: Vec<&str> = self.phases.clone();
        phases.sort_unstable();
        phases.dedup();
        let Some(phase) = phases.choose(rng) else {
            return 0;
        };
        let points: Vec<usize> = (0..self.phases.len())
            .filter(|&i| self.phases[i] == *phase)
            .collect();
        points.choose(rng).copied().unwrap_or(0)
    }
}

pub struct World {
    pub rng: StdRng,
    pub server: TestServer,
    pub dir: tempfile::TempDir,
    pub reference: PathBuf,
    pub rounds: Vec<Round>,
    pub app_id: String,
    /// Options of the reference syncs (and the base of the faulty ones): extensions encoded,
    /// SMART Backend Services with the test key.
    pub extensions: bool,
    pub auth: bool,
    /// The reference syncs run the binary (and count its log lines) instead of the library.
    pub reference_binary: bool,
}

/// A key of the auth tests.
pub fn key(name: &str) -> PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../smart-auth/tests/keys")
    .join(name)
}

/// SMART Backend Services for the client `chaos` and its RSA key; tokens live an hour (only
/// faults expire them).
pub fn smart_config() -> anyhow::Result<bulk_test_server::smart::SmartServerConfig> {
    let jwk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(key("rsa-a.public.jwk.json"))?)?;
    Ok(bulk_test_server::smart::SmartServerConfig {
        token_lifetime: Duration::from_secs(3600),
        clients: vec![bulk_test_server::smart::RegisteredClient {
            client_id: "chaos".into(),
            jwks: Some(json!({ "keys": [jwk] })),
            client_secret: None,
        }],
    })
}

/// A server for `seed`: a few synthetic patients, several files per type, quick polls.
pub fn server_config(rng: &mut StdRng) -> ServerConfig {
    ServerConfig {
        data: DataSource::Synthetic {
            patients: rng.random_range(2..=4),
            seed: rng.random(),
        },
        polls_before_complete: rng.random_range(0..=2),
        retry_after_secs: 0,
        resources_per_file: rng.random_range(20..=60),
        ..ServerConfig::default()
    }
}

impl World {
    pub async fn new(seed: u64, adjust: impl FnOnce(&mut ServerConfig)) -> anyhow::Result<World> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut config = server_config(&mut rng);
        adjust(&mut config);
        let server = TestServer::start(config).await?;
        let dir = tempfile::tempdir()?;
        let reference = dir.path().join("reference");
        let app_id = fhirsync::sync::sync_identity(&server.base_url(), None);
        Ok(World {
            rng,
            server,
            dir,
            reference,
            rounds: Vec::new(),
            app_id,
            extensions: false,
            auth: false,
            reference_binary: false,
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Options of a sync of this world's server into `delta`.
    pub fn options(&self, delta: &Path) -> SyncOptions {
        let mut o = SyncOptions::new(self.server.base_url(), delta.display().to_string());
        o.resource_types = TYPES.iter().map(|t| t.to_string()).collect();
        o.extensions = self.extensions;
        if self.auth {
            o.auth.enabled = true;
            o.auth.client_id = Some("chaos".into());
            o.auth.private_key = Some(fhirsync::config::SecretSource::File(key(
                "rsa-a.private.jwk.json",
            )));
        }
        o
    }

    /// Ids of `how_many` resources of type `t` on the server, drawn at random.
    fn pick(&mut self, t: &str, how_many: std::ops::RangeInclusive<usize>) -> Vec<String> {
        let n = self.rng.random_range(how_many);
        let ids = self.server.store().ids(t);
        ids.choose_multiple(&mut self.rng, n).cloned().collect()
    }

    /// Changes the server's data at random (updates, new resources, deletions), as a server
    /// in use changes between syncs; returns the time of the last change.
    pub fn mutate(&mut self) -> anyhow::Result<i64> {
        let store = self.server.store();
        let round = self.rounds.len();
        let mut last = 0;
        // Patients stay: their compartments hold the other resources.
        for t in &TYPES[1..] {
            for id in self.pick(t, 0..=2) {
                if store.delete(t, &id) {
                    TALLY.add("server changes: deletions", 1);
                }
            }
        }
        for t in TYPES {
            for id in self.pick(t, 1..=3) {
                let Some(mut r) = store.get(t, &id) else {
                    continue;
                };
                r["meta"]["tag"] =
                    json!([{ "system": "urn:chaos", "code": format!("round-{round}") }]);
                if t == "Patient" {
                    let gender =
                        ["male", "female", "other", "unknown"][self.rng.random_range(0..4)];
                    r["gender"] = json!(gender);
                }
                last = last.max(stored_at(&store.upsert(r)?));
                TALLY.add("server changes: updates", 1);
            }
        }
        let patient = format!("new-{round}-{}", self.rng.random::<u16>());
        let p = store.upsert(json!({
            "resourceType": "Patient", "id": patient, "gender": "female", "birthDate": "1990-01-01",
            "extension": [{ "url": "http://example.org/chaos", "valueString": format!("round {round}") }]
        }))?;
        let o = store.upsert(json!({
            "resourceType": "Observation", "id": format!("{patient}-obs"), "status": "final",
            "code": { "text": "chaos" }, "subject": { "reference": format!("Patient/{patient}") },
            "valueQuantity": { "value": round, "unit": "1" }
        }))?;
        TALLY.add("server changes: new resources", 2);
        Ok(last.max(stored_at(&p)).max(stored_at(&o)))
    }

    /// The fault-free sync of this round into the reference path (faults are set aside while
    /// it runs); records the round.
    pub async fn reference_round(&mut self, from_ms: i64) -> anyhow::Result<&Contents> {
        let faults = self.server.faults();
        let rules = faults.pending();
        faults.clear();
        let opts = self.options(&self.reference);
        let mut lines = 0;
        let mut phases = Vec::new();
        let result = if self.reference_binary {
            let flags: &[&str] = if self.extensions {
                &["--extensions"]
            } else {
                &[]
            };
            let cmd = crate::cli::sync(&self.server.base_url(), &self.reference, flags);
            crate::cli::run_ok(cmd, "the fault-free reference sync")
                .await
                .map(|exit| {
                    lines = exit.lines;
                    phases = crate::cli::phases(&exit.stderr);
                })
        } else {
            run(&opts, RunKind::Incremental).await.map(|_| ())
        };
        for r in rules {
            faults.add(r);
        }
        result.context("the fault-free reference sync")?;
        let contents =
            check::contents(&self.reference.display().to_string(), &TYPES, &TALLY).await?;
        self.rounds.push(Round {
            from_ms,
            contents,
            lines,
            phases,
        });
        Ok(&self.rounds[self.rounds.len() - 1].contents)
    }

    /// The next round: data changed (but for the first), then its reference.
    pub async fn next_round(&mut self) -> anyhow::Result<()> {
        let from = if self.rounds.is_empty() {
            i64::MIN
        } else {
            self.mutate()?
        };
        self.reference_round(from).await?;
        Ok(())
    }

    /// A reference round of the server's data as it is now (changed by someone else).
    pub async fn next_round_without_changes(&mut self) -> anyhow::Result<()> {
        let from = self.rounds.last().map_or(i64::MIN, |r| r.from_ms);
        self.reference_round(from).await?;
        Ok(())
    }

    /// Log lines of the last reference sync (at least 2).
    pub fn last_lines(&self) -> usize {
        self.rounds.last().map_or(2, |r| r.lines.max(2))
    }

    pub fn last(&self) -> &Contents {
        &self.rounds[self.rounds.len() - 1].contents
    }

    /// The rows of `t` that an export with this `transactionTime` (epoch ms) leaves.
    pub fn expected(&self, t: &str, cursor: i64) -> &Rows {
        let round = self
            .rounds
            .iter()
            .rposition(|r| r.from_ms <= cursor)
            .unwrap_or(0);
        &self.rounds[round].contents[t]
    }

    /// Checks a table path after any run: each table at a consistent export, the state file
    /// not ahead.
    pub async fn consistent(&self, delta: &Path, context: &str) -> anyhow::Result<()> {
        let state = delta.join("_fhirsync/state.json");
        self.consistent_at(&delta.display().to_string(), &state, context)
            .await
    }

    /// [`World::consistent`] for any delta path (`s3://` too) and state file.
    pub async fn consistent_at(
        &self,
        delta: &str,
        state_file: &Path,
        context: &str,
    ) -> anyhow::Result<()> {
        check::consistent(
            delta,
            state_file,
            &self.app_id,
            &TYPES,
            |t, c| self.expected(t, c),
            &TALLY,
            context,
        )
        .await
    }
}

impl World {
    /// `fhirsync maintain` vacuums every unreferenced file of the tables at `delta` (taking
    /// the lock beside `state_file`); then no table has a file its log does not reference,
    /// and the rows are still the last round's.
    pub async fn vacuumed(&self, delta: &str, state_file: Option<&Path>) -> anyhow::Result<()> {
        let mut vacuum = crate::cli::vacuum(delta);
        if let Some(state) = state_file {
            vacuum.arg("--state-file").arg(state);
        }
        crate::cli::run_ok(vacuum, "fhirsync maintain (vacuum)").await?;
        check::no_orphans(delta, &TYPES, &TALLY, "after vacuum").await?;
        check::same_as(delta, self.last(), &TALLY, "after vacuum").await
    }
}

fn stored_at(resource: &serde_json::Value) -> i64 {
    resource["meta"]["lastUpdated"]
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map_or(0, |t| t.timestamp_millis())
}

/// The library's client for `opts`, with retries and polls in milliseconds rather than
/// seconds (hints from the server are clamped to them), so faults cost no real waiting.
pub async fn client(opts: &SyncOptions) -> anyhow::Result<fhirsync::sync::SyncClient> {
    let mut c = fhirsync::sync::client_config(opts, LogMode::Json).await?;
    c.poll.min_delay = Duration::from_millis(5);
    c.poll.initial_delay = Duration::from_millis(5);
    c.poll.max_delay = Duration::from_millis(50);
    c.retry.initial_backoff = Duration::from_millis(5);
    c.retry.max_backoff = Duration::from_millis(50);
    c.read_timeout = Duration::from_secs(20);
    Ok(c)
}

/// One sync through the library.
pub async fn run(opts: &SyncOptions, kind: RunKind) -> anyhow::Result<SyncReport> {
    let client = client(opts).await?;
    fhirsync::sync::run_sync(opts, kind, client, CancellationToken::new()).await
}
