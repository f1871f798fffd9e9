//! Seeded fault schedules: for every request the test server sees, a fault (or none) drawn
//! from the seed and the request's target and attempt, so a replay of a seed draws the same
//! faults however concurrent downloads interleave.
use std::sync::Arc;

use bulk_test_server::{Fault, FaultRequest, FaultSource, FaultTarget, RetryAfter};

use crate::TALLY;

/// A 64-bit mix of the seed and what identifies a draw (SplitMix64 over FNV-1a).
pub fn mix(seed: u64, key: &str, n: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = seed ^ h ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform draw in `[0, 1)` of `(seed, key, n)`.
pub fn unit(seed: u64, key: &str, n: u64) -> f64 {
    (mix(seed, key, n) >> 11) as f64 / (1u64 << 53) as f64
}

/// Which faults a schedule draws, and how often.
#[derive(Clone, Debug)]
pub struct Profile {
    /// Chance that a request gets a fault that the client retries.
    pub rate: f64,
    /// Chance that a request gets a fault that ends the run (a fatal 500, a file or job that
    /// expired): the sync fails and the next run must finish the work.
    pub fatal_rate: f64,
    /// SMART auth is on (token faults make sense).
    pub auth: bool,
    /// Files need the token (token faults on downloads make sense).
    pub file_tokens: bool,
    /// Only faults that cost the client no backoff wait (for the binary, whose retries wait
    /// real seconds): slow bodies, delayed manifests, throttled polls.
    pub cheap: bool,
}

/// The name a fault is counted under in the summary.
pub fn kind(f: &Fault) -> String {
    match f {
        Fault::TooManyRequests(ra) => format!(
            "429 Retry-After {}",
            match ra {
                RetryAfter::Seconds(_) => "seconds",
                RetryAfter::HttpDate(_) => "HTTP-date",
                RetryAfter::EpochTimestamp(_) => "epoch seconds",
                RetryAfter::EpochMillis(_) => "epoch millis",
                RetryAfter::FractionalMillis(_) => "fractional",
                RetryAfter::Absent => "absent",
                RetryAfter::Invalid => "invalid",
            }
        ),
        Fault::Transient { status } => format!("{status} transient OperationOutcome"),
        Fault::Fatal { status } => format!("{status} fatal OperationOutcome"),
        Fault::PlainStatus { status } => format!("{status} HTML page"),
        Fault::ResetAfter { .. } => "connection reset mid-body".into(),
        Fault::Truncate { chunked: false, .. } => "body truncated (Content-Length)".into(),
        Fault::Truncate { chunked: true, .. } => "body truncated (chunked)".into(),
        Fault::Slow { .. } => "slow body".into(),
        Fault::Gone { status } => format!("file {status} mid-export"),
        Fault::DelayManifest => "manifest delayed".into(),
        Fault::DuplicateIds { .. } => "duplicate ids, older versions after newer".into(),
        Fault::BadLines => "bad lines".into(),
        Fault::FailJob => "job failed on the server".into(),
        Fault::UnreadableResources { .. } => "unreadable resources".into(),
        Fault::ExpireTokens => "token expired (401)".into(),
        Fault::RevokeTokens => "token revoked (401)".into(),
        Fault::ExpireJob => "job expired (404)".into(),
    }
}

fn retry_after(r: u64) -> RetryAfter {
    match r % 7 {
        0 => RetryAfter::Seconds(r % 3),
        1 => RetryAfter::HttpDate(1 + r % 2),
        2 => RetryAfter::EpochTimestamp(1),
        3 => RetryAfter::EpochMillis(1),
        4 => RetryAfter::FractionalMillis(r % 900),
        5 => RetryAfter::Absent,
        _ => RetryAfter::Invalid,
    }
}

/// The fault of one request under `profile`, if any.
pub fn draw(seed: u64, profile: &Profile, req: &FaultRequest) -> Option<Fault> {
    let key = format!(
        "{:?}/{}",
        req.target,
        req.resource_type.as_deref().unwrap_or("")
    );
    let n = u64::from(req.attempt);
    let p = unit(seed, &key, n);
    let r = mix(seed, &key, n ^ 0x5555);
    let file = matches!(req.target, FaultTarget::FileIndex(_) | FaultTarget::AnyFile);
    if p < profile.fatal_rate && !profile.cheap {
        return Some(match (&req.target, r % 3) {
            (FaultTarget::FileIndex(_), 0) => Fault::Gone { status: 410 },
            (FaultTarget::FileIndex(_), 1) => Fault::Gone { status: 404 },
            (FaultTarget::Status, 0) | (FaultTarget::FileIndex(_), _) => Fault::ExpireJob,
            (FaultTarget::Token, _) => Fault::Transient { status: 503 },
            _ => Fault::Fatal { status: 500 },
        });
    }
    if p >= profile.fatal_rate + profile.rate {
        return None;
    }
    let mut options: Vec<Fault> = Vec::new();
    if profile.cheap {
        match req.target {
            FaultTarget::Status => options.push(Fault::DelayManifest),
            _ if file => options.push(Fault::Slow {
                bytes_per_sec: 200_000 + r % 400_000,
            }),
            _ => {}
        }
    } else {
        options.push(Fault::TooManyRequests(retry_after(r >> 8)));
        options.push(Fault::Transient {
            status: [503, 502, 504][(r >> 16) as usize % 3],
        });
        options.push(Fault::PlainStatus { status: 502 });
        match req.target {
            FaultTarget::Status => options.push(Fault::DelayManifest),
            _ if file => {
                options.push(Fault::ResetAfter {
                    bytes: (r >> 20) % 3000,
                });
                options.push(Fault::Truncate {
                    bytes: (r >> 20) % 3000,
                    chunked: r & 1 == 0,
                });
                options.push(Fault::Slow {
                    bytes_per_sec: 200_000 + r % 400_000,
                });
            }
            _ => {}
        }
        let tokens_here = match req.target {
            FaultTarget::KickOff | FaultTarget::Status | FaultTarget::Read => profile.auth,
            _ if file => profile.file_tokens,
            _ => false,
        };
        if tokens_here {
            options.push(Fault::ExpireTokens);
            options.push(Fault::RevokeTokens);
        }
    }
    if req.target == FaultTarget::Token && !profile.cheap {
        // The token endpoint's own retries wait real time (half a second and more): rare.
        options.retain(|f| matches!(f, Fault::Transient { .. }));
        if !r.is_multiple_of(8) {
            return None;
        }
    }
    if options.is_empty() {
        return None;
    }
    Some(options[(r >> 32) as usize % options.len()].clone())
}

/// A fault source for the test server drawing from `(seed, profile)`, counting what it injects.
pub fn source(seed: u64, profile: Profile) -> FaultSource {
    Arc::new(move |req: &FaultRequest| {
        let fault = draw(seed, &profile, req)?;
        TALLY.fault(format!("server: {}", kind(&fault)));
        Some(fault)
    })
}
