//! Concurrency: two syncs on one path, a sync and `maintain` (compaction and a vacuum of
//! everything unreferenced), a daemon and a manual sync, the second started at a seeded
//! moment of the first. Whatever overlaps, one waits its turn or is refused with a one-line
//! message naming the lock, nothing is lost, and the tables converge to the fault-free run's.
use anyhow::{bail, ensure};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cli::{self, Exit};
use crate::world::{TYPES, World};
use crate::{Outcome, TALLY, check};

/// What a run refused because another holds the lock says.
const LOCKED: &str = "another fhirsync run holds the lock";

/// Succeeded, or refused because of the lock (with one clear line); true if it succeeded.
fn ran_or_locked(exit: &Exit, what: &str) -> anyhow::Result<bool> {
    cli::judge(exit, what)?;
    if exit.success() {
        return Ok(true);
    }
    if !exit.error().contains(LOCKED) {
        bail!(
            "{what} failed for another reason than the lock: {}",
            exit.error()
        );
    }
    TALLY.add("concurrency: runs refused by the lock", 1);
    Ok(false)
}

pub async fn run(seed: u64) -> anyhow::Result<Outcome> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xc0c0);
    let mut world = World::new(seed, |c| c.polls_before_complete = 1).await?;
    world.reference_binary = true;
    let delta = world.path("shared");
    let path = delta.display().to_string();
    let endpoint = world.server.base_url();

    // Two syncs on one path.
    world.next_round().await?;
    let lines = world.last_lines();
    let after = rng.random_range(0..lines);
    let (a, b) = cli::overlap(
        cli::sync(&endpoint, &delta, &[]),
        cli::sync(&endpoint, &delta, &[]),
        after,
        false,
    )
    .await?;
    TALLY.fault("concurrency: two syncs on one path");
    let ok = [
        ran_or_locked(&a, "the first sync")?,
        ran_or_locked(&b, "the second sync")?,
    ];
    ensure!(
        ok.contains(&true),
        "neither of two overlapping syncs succeeded"
    );
    world
        .consistent(
            &delta,
            &format!("two syncs, the second after {after} lines"),
        )
        .await?;
    check::same_as(&path, world.last(), &TALLY, "after two overlapping syncs").await?;

    // A sync and maintenance.
    world.next_round().await?;
    let lines = world.last_lines();
    let after = rng.random_range(0..lines);
    let maintain = cli::fhirsync(&[
        "maintain",
        "--delta-path",
        &path,
        "--zorder",
        "--vacuum-retention",
        "0",
        "--force-short-retention",
        "--checkpoint",
    ]);
    let (sync, maintenance) =
        cli::overlap(cli::sync(&endpoint, &delta, &[]), maintain, after, false).await?;
    TALLY.fault("concurrency: sync and maintain");
    ran_or_locked(&maintenance, "maintain")?;
    if !ran_or_locked(&sync, "the sync")? {
        cli::run_ok(
            cli::sync(&endpoint, &delta, &[]),
            "the sync after maintenance",
        )
        .await?;
    }
    world
        .consistent(&delta, &format!("sync and maintain after {after} lines"))
        .await?;
    check::same_as(
        &path,
        world.last(),
        &TALLY,
        "after a sync beside maintenance",
    )
    .await?;

    world.vacuumed(&path, None).await?;
    TALLY.add("rounds converged", 2);
    world.server.shutdown().await;
    Ok(Outcome::Passed)
}

/// A daemon (its run-on-start sync) and a manual sync on one path, the manual one started
/// at a seeded moment of the daemon's; the daemon then stops on SIGTERM, cancelling its sync.
pub async fn run_daemon(seed: u64) -> anyhow::Result<Outcome> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xdae0);
    let mut world = World::new(seed, |c| c.polls_before_complete = 1).await?;
    let delta = world.path("shared");
    let path = delta.display().to_string();
    let endpoint = world.server.base_url();
    world.next_round().await?;
    let after = rng.random_range(0..12);
    let port = cli::free_port()?;
    let daemon = cli::fhirsync(&[
        "daemon",
        "--fhir-endpoint",
        endpoint.as_str(),
        "--delta-path",
        &path,
        "--resource-types",
        &TYPES.join(","),
        "--schedule",
        "0 0 1 1 *",
        "--run-on-start",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]);
    let (daemon, manual) =
        cli::overlap(daemon, cli::sync(&endpoint, &delta, &[]), after, true).await?;
    TALLY.fault("concurrency: daemon and manual sync");
    cli::judge(&daemon, "the daemon")?;
    ensure!(
        daemon.success(),
        "the daemon did not exit 0 on SIGTERM: {}",
        cli::tail(&daemon.stderr)
    );
    ran_or_locked(&manual, "the manual sync")?;
    world
        .consistent(
            &delta,
            &format!("daemon and manual sync after {after} lines"),
        )
        .await?;
    cli::run_ok(
        cli::sync(&endpoint, &delta, &[]),
        "the sync after the daemon",
    )
    .await?;
    check::same_as(
        &path,
        world.last(),
        &TALLY,
        "after the daemon and a manual sync",
    )
    .await?;
    world.consistent(&delta, "at the end").await?;
    world.vacuumed(&path, None).await?;
    TALLY.add("rounds converged", 1);
    world.server.shutdown().await;
    Ok(Outcome::Passed)
}
