//! Baselines for `bench/net`: raw `async-nats`, by hand, on one server.
//!
//! `raw_nats URL N` prints two lines of JSON:
//! - `rr_us`: median and mean microseconds of a core request/reply round trip (a responder
//!   task on its own connection answers each request), N requests one after another;
//! - `pubsub_per_s`: messages per second of N small core publishes received by a subscriber
//!   on another connection (end to end, publisher not waiting for acks).
//!
//! Also measures `ferrocsp-net` itself from Rust (rendezvous write with a reader waiting,
//! buffered write + read), so the Python layer's cost can be told apart.

use std::time::{Duration, Instant};

use ferrocsp_net::{ChanOps, Connection, Options};
use futures_util::StreamExt;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

// One thread for the requester, the responder and both connections: on a small (virtual)
// machine, cross-thread wake-ups would dominate the baseline and flatter everything else.
#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or("usage: raw_nats URL N")?;
    let n: usize = args.next().ok_or("usage: raw_nats URL N")?.parse()?;

    let server = async_nats::connect(url.as_str()).await?;
    let client = async_nats::connect(url.as_str()).await?;
    let mut sub = server.subscribe("bench.rr").await?;
    let s2 = server.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let Some(r) = m.reply {
                let _ = s2.publish(r, "+".into()).await;
            }
        }
    });
    server.flush().await?;
    // Until the responder answers (its subscription may still be on its way to the server).
    let t = Instant::now();
    while client.request("bench.rr", "x".into()).await.is_err() {
        if t.elapsed() > Duration::from_secs(5) {
            return Err("the responder never answered".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..200 {
        client.request("bench.rr", "x".into()).await?;
    }
    let mut lat = Vec::with_capacity(n);
    let t0 = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        client.request("bench.rr", "x".into()).await?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let mean = t0.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("{{\"name\": \"rr_us\", \"median\": {:.1}, \"mean\": {:.1}}}", median(lat), mean);

    let mut sub = server.subscribe("bench.ps").await?;
    server.flush().await?;
    let recv = tokio::spawn(async move {
        let mut got = 0;
        let mut last = Instant::now();
        // Core NATS is at-most-once: stop at the first 2 s of silence (the JSON says how many
        // arrived).
        while got < n {
            match tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
                Ok(Some(_)) => {
                    got += 1;
                    last = Instant::now();
                }
                _ => break,
            }
        }
        (got, last)
    });
    let t0 = Instant::now();
    for _ in 0..n {
        client.publish("bench.ps", "0123456789".into()).await?;
    }
    client.flush().await?;
    let (got, last) = recv.await?;
    let per_s = got as f64 / last.duration_since(t0).as_secs_f64();
    println!("{{\"name\": \"pubsub_per_s\", \"value\": {per_s:.0}, \"received\": {got}}}");

    // ferrocsp-net from Rust: blocking API, so run it off the async threads.
    let url2 = url.clone();
    let out = tokio::task::spawn_blocking(move || -> Result<(f64, f64), String> {
        let conn = std::sync::Arc::new(
            Connection::connect(Options::new(url2)).map_err(|e| e.to_string())?,
        );
        let ch = conn.channel("benchrust", 0).map_err(|e| e.to_string())?;
        let m = n.min(5000);
        let t0 = Instant::now();
        for _ in 0..m {
            let r = ch.read(&conn, None);
            let w = ch.write(&conn, "x".into(), None);
            w.wait(None);
            r.wait(None);
        }
        let rv_us = t0.elapsed().as_secs_f64() * 1e6 / m as f64;
        let b = conn.channel("benchrustbuf", 1000).map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        let (c2, b2) = (std::sync::Arc::clone(&conn), b.clone());
        let writer = std::thread::spawn(move || {
            for _ in 0..m {
                b2.write(&c2, "x".into(), None).wait(None);
            }
        });
        for _ in 0..m {
            b.read(&conn, None).wait(None);
        }
        writer.join().map_err(|_| "writer panicked".to_owned())?;
        let buf_per_s = m as f64 / t0.elapsed().as_secs_f64();
        Ok((rv_us, buf_per_s))
    })
    .await??;
    println!(
        "{{\"name\": \"ferrocsp_net_rust\", \"rendezvous_us\": {:.1}, \"buffered_per_s\": {:.0}}}",
        out.0, out.1
    );
    Ok(())
}
