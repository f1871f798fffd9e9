//! Storage faults on an object store: syncs into the local S3 server (`.ci/run` starts it;
//! `FHIRSYNC_TEST_S3_ENDPOINT`) through a proxy that injects `SlowDown`, internal errors,
//! resets, uploads cut short and responses lost after the write. A failed run is followed by
//! another; every table stays at a consistent export and converges to the fault-free run's.
use anyhow::Context;
use fhirsync::run::RunKind;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::s3_proxy::S3Proxy;
use crate::server_faults::one_line;
use crate::world::{self, TYPES, World};
use crate::{Outcome, TALLY, check};

const MAX_FAULTY_RUNS: usize = 5;

/// `lost_commits`: a commit's write to the log may be done by the store and its answer lost.
pub async fn run(seed: u64, lost_commits: bool) -> anyhow::Result<Outcome> {
    let Ok(endpoint) = std::env::var("FHIRSYNC_TEST_S3_ENDPOINT") else {
        anyhow::ensure!(
            std::env::var_os("CI").is_none(),
            "FHIRSYNC_TEST_S3_ENDPOINT must be set in CI"
        );
        return Ok(Outcome::Skipped("FHIRSYNC_TEST_S3_ENDPOINT not set".into()));
    };
    // The tables are read back straight from the S3 server, past the proxy.
    anyhow::ensure!(
        std::env::var("AWS_ENDPOINT_URL").is_ok_and(|e| e == endpoint),
        "AWS_ENDPOINT_URL must name the S3 server of FHIRSYNC_TEST_S3_ENDPOINT (as .ci/run sets it)"
    );
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5353);
    let mut world = World::new(seed, |c| c.polls_before_complete = 0).await?;
    let proxy = S3Proxy::start(&endpoint, seed, rng.random_range(0.03..0.12), lost_commits).await?;
    let prefix = format!("s3://fhirsync-test/chaos-{seed}-{}", uuid::Uuid::new_v4());
    let state = world.path("s3-work/state.json");
    let mut opts = world.options(std::path::Path::new(&prefix));
    opts.delta_path = prefix.clone();
    opts.state_file = Some(state.clone());
    opts.storage_options
        .insert("AWS_ENDPOINT_URL".into(), proxy.endpoint.clone());
    let rounds = 2;
    let mut message_error = None;
    for round in 0..rounds {
        world.next_round().await?;
        opts.deletion_vectors = round > 0 && rng.random_bool(0.5);
        let context = format!("round {round}, deletion vectors: {}", opts.deletion_vectors);
        proxy.faults(true);
        let mut done = false;
        for attempt in 0..MAX_FAULTY_RUNS {
            TALLY.add("sync runs", 1);
            match world::run(&opts, RunKind::Incremental).await {
                Ok(_) => {
                    done = true;
                    break;
                }
                Err(e) => {
                    TALLY.add("sync runs failed (then rerun)", 1);
                    // The data invariants are checked before an unclear message fails the seed.
                    if let Err(unclear) = one_line(&e, &context) {
                        message_error.get_or_insert(unclear);
                    }
                    world
                        .consistent_at(
                            &prefix,
                            &state,
                            &format!("{context}, failed run {attempt}: {e:#}"),
                        )
                        .await?;
                    check::left_behind(&prefix, &TYPES, &TALLY).await?;
                }
            }
        }
        proxy.faults(false);
        if !done {
            TALLY.add("rounds finished by a fault-free run", 1);
            world::run(&opts, RunKind::Incremental)
                .await
                .with_context(|| format!("the fault-free run ({context})"))?;
        }
        check::same_as(&prefix, world.last(), &TALLY, &context).await?;
        world.consistent_at(&prefix, &state, &context).await?;
        TALLY.add("rounds converged", 1);
    }
    world.vacuumed(&prefix, Some(&state)).await?;
    world.server.shutdown().await;
    if let Some(e) = message_error {
        return Err(e);
    }
    Ok(Outcome::Passed)
}
