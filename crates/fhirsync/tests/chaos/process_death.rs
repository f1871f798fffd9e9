//! Process death: `fhirsync sync` killed with SIGKILL at seeded moments of every phase
//! (kick-off, polling, download, encode, each table's commit, the state write), again and
//! again, over a full sync and incremental ones (with deletion vectors or without), under
//! slow bodies and delayed manifests. After every kill each table holds exactly the export
//! its cursor names and the state file is not ahead; a last run converges to the fault-free
//! tables.
//!
//! A kill point is a count of the sync's own log lines, not a time: a replay of the seed
//! kills at the same stage however fast the machine is.
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::schedule::{self, Profile};
use crate::world::World;
use crate::{Outcome, TALLY, check, cli};

/// `full_refresh`: the rounds after the first are full refreshes (an export without `_since`,
/// so a killed one is resumed by the next run whatever the tables' cursors).
pub async fn run(seed: u64, full_refresh: bool) -> anyhow::Result<Outcome> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xdead);
    let mut world = World::new(seed, |c| c.polls_before_complete = 1).await?;
    world.reference_binary = true;
    let delta = world.path("killed");
    let rounds = 2;
    for round in 0..rounds {
        world.next_round().await?;
        let lines = world.rounds[round].lines.max(2);
        // Slow bodies and delayed manifests stretch downloads and polls, so kills land there
        // too; they cost the client no backoff.
        let profile = Profile {
            rate: 0.5,
            fatal_rate: 0.0,
            auth: false,
            file_tokens: false,
            cheap: true,
        };
        world
            .server
            .faults()
            .set_source(Some(schedule::source(seed ^ (round as u64) << 8, profile)));
        let mut flags: Vec<&str> = Vec::new();
        if round > 0 && rng.random_bool(0.5) {
            flags.push("--deletion-vectors");
        }
        if round > 0 && full_refresh {
            flags.push("--full-refresh");
        }
        let kills = rng.random_range(2..=4);
        for k in 0..kills {
            let at = world.rounds[round].kill_point(&mut rng);
            let cmd = cli::sync(&world.server.base_url(), &delta, &flags);
            TALLY.add("sync runs", 1);
            let exit = cli::kill_after(cmd, at).await?;
            let context =
                format!("round {round} {flags:?}, kill {k} after {at} of {lines} log lines");
            cli::judge(&exit, &context)?;
            if exit.killed {
                TALLY.fault(format!(
                    "process: SIGKILL during {}",
                    cli::phase(&exit.last_message, exit.commits)
                ));
            } else if !exit.success() {
                anyhow::bail!(
                    "a sync that was not killed failed ({context}): {}",
                    exit.error()
                );
            }
            world.consistent(&delta, &context).await?;
        }
        world.server.faults().set_source(None);
        TALLY.add("sync runs", 1);
        let what = format!("the sync after the kills (round {round}, {flags:?})");
        cli::run_ok(cli::sync(&world.server.base_url(), &delta, &flags), &what).await?;
        let context = format!("round {round}, after the kills");
        check::same_as(&delta.display().to_string(), world.last(), &TALLY, &context).await?;
        world.consistent(&delta, &context).await?;
        TALLY.add("rounds converged", 1);
    }
    let path = delta.display().to_string();
    world.vacuumed(&path, None).await?;
    world.server.shutdown().await;
    Ok(Outcome::Passed)
}
