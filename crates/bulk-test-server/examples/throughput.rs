//! Measures how fast the server generates and sends synthetic exports, and how much memory it
//! needs while doing so.
//!
//! `cargo run --release -p bulk-test-server --example throughput -- [patients] [seed] [gzip]`
use std::time::Instant;

use bulk_test_server::{DataSource, ServerConfig, TestServer};

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_string)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let patients: usize = args
        .first()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    let seed: u64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let gzip = args.get(2).is_some_and(|s| s == "gzip");

    let t0 = Instant::now();
    let server = TestServer::start(ServerConfig {
        data: DataSource::Synthetic { patients, seed },
        polls_before_complete: 0,
        retry_after_secs: 0,
        resources_per_file: 100_000,
        ..ServerConfig::default()
    })
    .await?;
    let startup = t0.elapsed();
    let client = reqwest::Client::builder().no_gzip().build()?;
    let t1 = Instant::now();
    let kick = client
        .get(format!("{}/$export", server.base_url()))
        .header("Accept", "application/fhir+json")
        .header("Prefer", "respond-async")
        .send()
        .await?;
    let status = kick.headers()["content-location"].to_str()?.to_string();
    let manifest: serde_json::Value = loop {
        let r = client.get(&status).send().await?;
        if r.status() == 200 {
            break r.json().await?;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let planned = t1.elapsed();
    let mut bytes = 0u64;
    let mut wire = 0u64;
    let mut resources = 0u64;
    let t2 = Instant::now();
    for o in manifest["output"].as_array().into_iter().flatten() {
        resources += o["count"].as_u64().unwrap_or(0);
        let mut req = client.get(o["url"].as_str().unwrap_or_default());
        if gzip {
            req = req.header("Accept-Encoding", "gzip");
        }
        let mut r = req.send().await?;
        while let Some(chunk) = r.chunk().await? {
            wire += chunk.len() as u64;
            if !gzip {
                bytes += chunk.len() as u64;
            }
        }
    }
    let secs = t2.elapsed().as_secs_f64();
    println!("patients:            {patients}");
    println!("resources:           {resources}");
    println!("startup:             {:.3} s", startup.as_secs_f64());
    println!("kick-off to manifest:{:.3} s", planned.as_secs_f64());
    println!("download:            {secs:.2} s");
    println!(
        "bytes on the wire:   {wire} ({:.1} MB/s{})",
        wire as f64 / secs / 1e6,
        if gzip { ", gzip" } else { "" }
    );
    if !gzip {
        println!(
            "NDJSON per patient:  {:.0} bytes",
            bytes as f64 / patients.max(1) as f64
        );
        println!("resources per second:{:.0}", resources as f64 / secs);
    }
    println!("peak RSS:            {:.0} MB", peak_rss_mb());
    server.shutdown().await;
    Ok(())
}
