//! Runs the emulator by hand: `gcs-emulator --port 4443 --bucket data`.

use std::net::{IpAddr, SocketAddr};

use clap::Parser;
use gcs_emulator::GcsEmulator;

/// An in-memory Google Cloud Storage server (XML API) for tests.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on (0: a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Buckets to create at start (repeatable).
    #[arg(long = "bucket", value_name = "NAME")]
    buckets: Vec<String>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let emulator = GcsEmulator::start_on(SocketAddr::new(args.host, args.port)).await?;
    for b in &args.buckets {
        emulator.create_bucket(b);
    }
    // The settings a client (object_store, delta-rs, fhirsync) needs, as environment lines.
    println!("GOOGLE_BASE_URL={}", emulator.base_url());
    for (k, v) in emulator.client_settings() {
        println!("{k}='{v}'");
    }
    tokio::signal::ctrl_c().await?;
    emulator.shutdown().await;
    Ok(())
}
