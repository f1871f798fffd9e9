//! The daemon soak: `fhirsync daemon` on a schedule of one sync a second (a tick while a sync
//! runs queues the next, so syncs follow each other) against a server whose data changes
//! between syncs (and whose bodies and manifests are sometimes slow), for
//! `FHIRSYNC_CHAOS_SOAK_SYNCS` syncs (1,000 by default). After every sync it samples the
//! daemon's resident memory and open file descriptors; at the end the daemon stops on SIGTERM,
//! one more sync catches up with the last changes, and the tables must equal a fresh
//! fault-free sync of the server's final data.
//!
//! Resident memory is printed (its peak, and its level early and late in the soak); open file
//! descriptors must not grow: a handful more at the end than after the first syncs fails.
use std::io::{BufRead, BufReader};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;

use crate::schedule::{self, Profile};
use crate::world::{TYPES, World};
use crate::{Outcome, TALLY, check, cli};

/// File descriptors the daemon may hold at the end beyond what it held after the first syncs
/// (a connection or a table file open at the moment of the sample).
const FD_SLACK: u64 = 16;

/// `(resident KiB, peak resident KiB)` of a process.
fn memory(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .with_context(|| format!("{name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn open_fds(pid: u32) -> anyhow::Result<u64> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64)
}

/// The daemon's process, killed if the soak ends early.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

enum Event {
    Succeeded,
    Failed(String),
}

pub async fn run(seed: u64) -> anyhow::Result<Outcome> {
    let syncs = std::env::var("FHIRSYNC_CHAOS_SOAK_SYNCS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(1000);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x50a4);
    let mut world = World::new(seed, |c| c.polls_before_complete = 0).await?;
    let delta = world.path("daemon");
    let path = delta.display().to_string();
    let endpoint = world.server.base_url();
    world.server.faults().set_source(Some(schedule::source(
        seed,
        Profile {
            rate: 0.05,
            fatal_rate: 0.0,
            auth: false,
            file_tokens: false,
            cheap: true,
        },
    )));
    let port = cli::free_port()?;
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_fhirsync"));
    daemon
        .args([
            "--log-format",
            "json",
            "--log-level",
            "info",
            "daemon",
            "--fhir-endpoint",
        ])
        .arg(endpoint.as_str())
        .arg("--delta-path")
        .arg(&delta)
        .args(["--resource-types", &TYPES.join(",")])
        .args([
            "--schedule",
            "* * * * * *",
            "--run-on-start",
            "--on-overlap",
            "skip",
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = Daemon(daemon.spawn().context("starting the daemon")?);
    let pid = child.0.id();
    let stderr = child.0.stderr.take().context("stderr")?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            let event = match v["message"].as_str() {
                Some("sync succeeded") => Event::Succeeded,
                Some(m) if m.starts_with("sync failed") => {
                    Event::Failed(v["error"].as_str().unwrap_or(m).to_string())
                }
                _ if line.contains("panicked at") => Event::Failed(line.clone()),
                _ => continue,
            };
            if tx.send(event).is_err() {
                break;
            }
        }
    });

    let (mut done, mut failed) = (0u64, 0u64);
    let mut early: Option<(u64, u64)> = None;
    let (mut rss, mut peak, mut fds, mut max_fds) = (0, 0, 0, 0);
    let mut failure = None;
    while done < syncs {
        match rx.recv().await {
            Some(Event::Succeeded) => done += 1,
            Some(Event::Failed(e)) => {
                failed += 1;
                if e.contains("panicked") || failed > syncs / 20 + 5 {
                    failure = Some(e);
                    break;
                }
            }
            None => {
                failure = Some("the daemon ended by itself".into());
                break;
            }
        }
        (rss, peak) = memory(pid)?;
        fds = open_fds(pid)?;
        max_fds = max_fds.max(fds);
        if done == (syncs / 10).max(1) && early.is_none() {
            early = Some((rss, fds));
        }
        if done % 100 == 0 {
            println!(
                "  soak: {done} syncs, {failed} failed, RSS {rss} KiB (peak {peak}), {fds} fds"
            );
        }
        // The server changes between syncs.
        if rng.random_bool(0.5) {
            world.mutate()?;
        }
    }
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let status = child.0.wait()?;
    let _ = reader.join();
    if let Some(e) = failure {
        bail!("the soak stopped after {done} syncs: {e}");
    }
    ensure!(
        status.success(),
        "the daemon did not exit 0 on SIGTERM: {status}"
    );
    TALLY.add("soak: daemon syncs", done);
    TALLY.add(
        "soak: daemon syncs failed (retried at the next tick)",
        failed,
    );
    TALLY.peak("soak: peak RSS (KiB)", peak);
    let (early_rss, early_fds) = early.unwrap_or((rss, fds));
    TALLY.peak("soak: RSS after a tenth of the syncs (KiB)", early_rss);
    TALLY.peak("soak: RSS at the end (KiB)", rss);
    TALLY.peak("soak: open fds after a tenth of the syncs", early_fds);
    TALLY.peak("soak: open fds at the end", fds);
    TALLY.peak("soak: open fds, most", max_fds);
    ensure!(
        fds <= early_fds + FD_SLACK,
        "open file descriptors grew from {early_fds} to {fds} over {done} syncs"
    );

    // The last changes, then the comparison with a fresh fault-free sync of the final data.
    world.server.faults().set_source(None);
    cli::run_ok(cli::sync(&endpoint, &delta, &[]), "the sync after the soak").await?;
    let fresh = world.path("fresh");
    world.reference = fresh;
    world.next_round_without_changes().await?;
    check::same_as(&path, world.last(), &TALLY, "after the soak").await?;
    check::cursors(&path, &world.app_id, &TYPES).await?;
    world.vacuumed(&path, None).await?;
    TALLY.add("rounds converged", 1);
    world.server.shutdown().await;
    Ok(Outcome::Passed)
}
