//! Baselines for `bench/net`: raw `async-nats`, by hand, on one server.
//!
//! `raw_nats URL N` prints two lines of JSON:
//! - `rr_us`: median and mean microseconds of a core request/reply round trip (a responder
//!   task on its own connection answers each request), N requests one after another;
//! - `pubsub_per_s`: messages per second of N small core publishes received by a subscriber
//!   on another connection (end to end, publisher not waiting for acks).
//! - `js_*`: raw JetStream by hand, messages per second (see `js_baselines`): what bounds a
//!   buffered channel's one sequential writer and reader, and what pipelining would give.
//!
//! - `rr_remote_us`: the same with the responder in another OS process (this program run as
//!   `raw_nats respond URL SUBJECT`): the raw counterpart of a reader on another machine.
//!
//! Also measures `ferrocsp-net` itself from Rust (rendezvous write with a reader waiting,
//! buffered write + read by one writer and one reader, and with 64 writes and 64 reads in
//! flight at once), so the Python layer's cost can be told apart.
//!
//! `raw_nats read URL NAME N` is a ferrocsp-net rendezvous reader of channel `NAME` in its own
//! process (prints `ready`, then reads `N` values): `bench/net/run.py` writes to it from Python
//! to tell the Python reader's cost from the writer's.

use std::time::{Duration, Instant};

use async_nats::jetstream::{
    self, consumer, consumer::PullConsumer, context::PublishAckFuture, message::PublishMessage,
    stream, stream::StorageType,
};
use ferrocsp_net::{ChanOps, Connection, Options};
use futures_util::StreamExt;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

// One thread for the requester, the responder and both connections: on a small (virtual)
// machine, cross-thread wake-ups would dominate the baseline and flatter everything else.
#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<(), BoxErr> {
    let mut args = std::env::args().skip(1).peekable();
    match args.peek().map(String::as_str) {
        Some("respond") => {
            let (url, subj) = (args.nth(1).ok_or("URL")?, args.next().ok_or("SUBJECT")?);
            return respond(&url, subj).await;
        }
        Some("read") => {
            let url = args.nth(1).ok_or("URL")?;
            let name = args.next().ok_or("NAME")?;
            let n: usize = args.next().ok_or("N")?.parse()?;
            return tokio::task::spawn_blocking(move || read_values(url, &name, n)).await?;
        }
        _ => {}
    }
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

    // The responder in another OS process (its own connection, runtime and socket).
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["respond", url.as_str(), "bench.rrx"])
        .stdout(std::process::Stdio::piped())
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    let out = child.stdout.take().ok_or("responder stdout")?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)?;
    if line.trim() != "ready" {
        return Err("the responder process did not start".into());
    }
    for _ in 0..200 {
        client.request("bench.rrx", "x".into()).await?;
    }
    let mut lat = Vec::with_capacity(n);
    let t0 = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        client.request("bench.rrx", "x".into()).await?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let mean = t0.elapsed().as_secs_f64() * 1e6 / n as f64;
    drop(child.stdin.take()); // the responder exits when its stdin closes
    child.wait()?;
    println!(
        "{{\"name\": \"rr_remote_us\", \"median\": {:.1}, \"mean\": {:.1}}}",
        median(lat),
        mean
    );

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

    js_baselines(&client, &server, n.min(5000)).await?;

    // ferrocsp-net from Rust: blocking API, so run it off the async threads.
    let url2 = url.clone();
    let out =
        tokio::task::spawn_blocking(move || -> Result<(f64, f64, f64, f64, usize), String> {
            let conn = std::sync::Arc::new(
                Connection::connect(Options::new(url2.clone())).map_err(|e| e.to_string())?,
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
            // The same writes to a reader in another OS process (this program, `read` mode).
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let mut child = std::process::Command::new(exe)
                .args(["read", url2.as_str(), "benchrustx", &(m + 200).to_string()])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| e.to_string())?;
            let out = child.stdout.take().ok_or("reader stdout")?;
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)
                .map_err(|e| e.to_string())?;
            if line.trim() != "ready" {
                return Err("the reader process did not start".to_owned());
            }
            let x = conn.channel("benchrustx", 0).map_err(|e| e.to_string())?;
            let write = |x: &std::sync::Arc<ferrocsp_net::Chan>| -> Result<(), String> {
                let w = x.write(&conn, "x".into(), None);
                w.wait(None);
                w.take().ok_or("no result")?.map_err(|e| e.to_string())
            };
            for _ in 0..200 {
                write(&x)?;
            }
            let t0 = Instant::now();
            for _ in 0..m {
                write(&x)?;
            }
            let rv_remote_us = t0.elapsed().as_secs_f64() * 1e6 / m as f64;
            child.wait().map_err(|e| e.to_string())?;
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
            // Many writers and readers in this process at once, through the one connection:
            // `window` writes and `window` reads in flight (each still one value, its ack awaited,
            // each read pulling one value and confirming its ack).
            let window = 64;
            let b = conn.channel("benchrustbufk", 1000).map_err(|e| e.to_string())?;
            let mk = (m * 4).max(window);
            let t0 = Instant::now();
            let (c2, b2) = (std::sync::Arc::clone(&conn), b.clone());
            let writer = std::thread::spawn(move || {
                let mut ops = std::collections::VecDeque::new();
                for _ in 0..mk {
                    if ops.len() == window {
                        let op: ferrocsp_net::Op<()> = ops.pop_front().expect("window");
                        op.wait(None);
                    }
                    ops.push_back(b2.write(&c2, "x".into(), None));
                }
                for op in ops {
                    op.wait(None);
                }
            });
            let mut ops = std::collections::VecDeque::new();
            let mut got = 0;
            for _ in 0..mk {
                if ops.len() == window {
                    let op: ferrocsp_net::Op<ferrocsp_net::Bytes> =
                        ops.pop_front().expect("window");
                    op.wait(None);
                    got += usize::from(matches!(op.take(), Some(Ok(_))));
                }
                ops.push_back(b.read(&conn, None));
            }
            for op in ops {
                op.wait(None);
                got += usize::from(matches!(op.take(), Some(Ok(_))));
            }
            writer.join().map_err(|_| "writer panicked".to_owned())?;
            if got != mk {
                return Err(format!("read {got} of {mk} values"));
            }
            let conc_per_s = mk as f64 / t0.elapsed().as_secs_f64();
            Ok((rv_us, rv_remote_us, buf_per_s, conc_per_s, window))
        })
        .await??;
    println!(
        "{{\"name\": \"ferrocsp_net_rust\", \"rendezvous_us\": {:.1}, \"rendezvous_remote_us\": {:.1}, \"buffered_per_s\": {:.0}, \"buffered_conc_per_s\": {:.0}, \"window\": {}}}",
        out.0, out.1, out.2, out.3, out.4
    );
    Ok(())
}

/// Answers every request on `subj` with `+` until stdin closes (`raw_nats respond`); prints
/// `ready` once the subscription is on the server.
async fn respond(url: &str, subj: String) -> Result<(), BoxErr> {
    let c = async_nats::connect(url).await?;
    let mut sub = c.subscribe(subj).await?;
    c.flush().await?;
    println!("ready");
    let eof = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::BufRead::read_line(&mut std::io::stdin().lock(), &mut sink).unwrap_or(0) > 0
        {
            sink.clear();
        }
    });
    tokio::pin!(eof);
    loop {
        tokio::select! {
            m = sub.next() => match m {
                Some(m) => if let Some(r) = m.reply {
                    c.publish(r, "+".into()).await?;
                },
                None => return Ok(()),
            },
            _ = &mut eof => return Ok(()),
        }
    }
}

/// Reads `n` values from rendezvous channel `name` with the Rust API (`raw_nats read`).
fn read_values(url: String, name: &str, n: usize) -> Result<(), BoxErr> {
    let conn = Connection::connect(Options::new(url)).map_err(|e| e.to_string())?;
    let ch = conn.channel(name, 0).map_err(|e| e.to_string())?;
    println!("ready");
    for _ in 0..n {
        let op = ch.read(&conn, None);
        op.wait(None);
        op.take().ok_or("no result")?.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A work-queue stream like a buffered channel's (file storage, discard new, `max_msgs`), with
/// a durable pull consumer with explicit acks; made fresh for each measurement. All values on
/// `bench.<name>`; or, `per_value`, each on its own subject `bench.<name>.<id>` with one
/// message per subject (a buffered channel's layout, which lets an Output guard reserve a slot).
async fn wq_stream_layout(
    js: &jetstream::Context,
    name: &str,
    max_msgs: usize,
    storage: StorageType,
    per_value: bool,
) -> Result<PullConsumer, BoxErr> {
    let _ = js.delete_stream(name).await;
    let stream = js
        .create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![if per_value {
                format!("bench.{name}.*")
            } else {
                format!("bench.{name}")
            }],
            max_messages_per_subject: if per_value { 1 } else { 0 },
            retention: stream::RetentionPolicy::WorkQueue,
            max_messages: i64::try_from(max_msgs)?,
            discard: stream::DiscardPolicy::New,
            storage,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await?;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("r".to_owned()),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: -1,
            ..Default::default()
        })
        .await?;
    Ok(consumer)
}

async fn wq_stream(
    js: &jetstream::Context,
    name: &str,
    max_msgs: usize,
    storage: StorageType,
) -> Result<PullConsumer, BoxErr> {
    wq_stream_layout(js, name, max_msgs, storage, false).await
}

fn per_s(m: usize, t0: Instant) -> f64 {
    m as f64 / t0.elapsed().as_secs_f64()
}

/// One sequential publisher, each publish awaiting its ack (a buffered channel's write).
async fn publish_each(js: &jetstream::Context, subj: &str, m: usize) -> Result<f64, BoxErr> {
    let t0 = Instant::now();
    for i in 0..m {
        let msg = PublishMessage::build().payload("x".into()).message_id(format!("s{i}"));
        js.send_publish(subj.to_owned(), msg).await?.await?;
    }
    Ok(per_s(m, t0))
}

/// Publishes with up to `window` acks outstanding (every ack still awaited).
async fn publish_pipelined(
    js: &jetstream::Context,
    subj: &str,
    m: usize,
    window: usize,
) -> Result<f64, BoxErr> {
    let t0 = Instant::now();
    let mut acks = std::collections::VecDeque::with_capacity(window);
    for i in 0..m {
        if acks.len() == window {
            let a: PublishAckFuture = acks.pop_front().ok_or("empty")?;
            a.await?;
        }
        let msg = PublishMessage::build().payload("x".into()).message_id(format!("p{i}"));
        acks.push_back(js.send_publish(subj.to_owned(), msg).await?);
    }
    for a in acks {
        a.await?;
    }
    Ok(per_s(m, t0))
}

/// A pull for one message through async-nats's `batch` (a fresh inbox subscription per pull)
/// and its `double_ack` (another fresh inbox per ack): what ferrocsp-net's read did.
async fn pull1_double_ack(c: &PullConsumer) -> Result<(), BoxErr> {
    loop {
        let mut b = c.batch().max_messages(1).expires(Duration::from_secs(1)).messages().await?;
        if let Some(m) = b.next().await {
            return m?.double_ack().await;
        }
    }
}

/// The same two round trips without a subscription per pull or ack: pulls answered on one
/// long-lived wildcard inbox (`inbox.<n>`), the ack confirmed on the client's shared inbox.
struct Lean {
    client: async_nats::Client,
    next_subj: String,
    inbox: String,
    sub: async_nats::Subscriber,
    n: u64,
}

impl Lean {
    async fn new(client: &async_nats::Client, c: &mut PullConsumer) -> Result<Lean, BoxErr> {
        let info = c.cached_info();
        let inbox = client.new_inbox();
        let sub = client.subscribe(format!("{inbox}.*")).await?;
        Ok(Lean {
            client: client.clone(),
            next_subj: format!("$JS.API.CONSUMER.MSG.NEXT.{}.{}", info.stream_name, info.name),
            inbox,
            sub,
            n: 0,
        })
    }

    async fn pull1(&mut self) -> Result<(), BoxErr> {
        loop {
            self.n += 1;
            let reply = format!("{}.{}", self.inbox, self.n);
            self.client
                .publish_with_reply(
                    self.next_subj.clone(),
                    reply,
                    r#"{"batch":1,"expires":1000000000}"#.into(),
                )
                .await?;
            let m = self.sub.next().await.ok_or("inbox closed")?;
            if m.status.is_some_and(|s| s != async_nats::StatusCode::OK) {
                continue;
            }
            let ack = m.reply.ok_or("no ack subject")?;
            self.client.request(ack, "+ACK".into()).await?;
            return Ok(());
        }
    }
}

type BoxErr = Box<dyn std::error::Error + Send + Sync>;

/// One sequential writer and one sequential reader (on `other`) at once, by hand. The stream
/// never fills (a full one would measure the writer's wait for a slot, not the round trips).
async fn pair(
    js: &jetstream::Context,
    other: &async_nats::Client,
    name: &str,
    m: usize,
    per_value: bool,
) -> Result<f64, BoxErr> {
    let mut c = wq_stream_layout(js, name, m * 2, StorageType::File, per_value).await?;
    let t0 = Instant::now();
    let mut lean = Lean::new(other, &mut c).await?;
    let reader = tokio::spawn(async move {
        for _ in 0..m {
            lean.pull1().await?;
        }
        Ok::<(), BoxErr>(())
    });
    for i in 0..m {
        let subj = if per_value { format!("bench.{name}.q{i}") } else { format!("bench.{name}") };
        loop {
            let msg = PublishMessage::build().payload("x".into()).message_id(format!("q{i}"));
            match js.send_publish(subj.clone(), msg).await?.await {
                Ok(_) => break,
                Err(e) if e.to_string().contains("maximum messages") => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    reader.await??;
    let per_s = per_s(m, t0);
    let _ = js.delete_stream(name).await;
    Ok(per_s)
}

/// Raw JetStream, by hand: the round trips that bound one sequential writer and reader of a
/// buffered channel, and what pipelining and batching (which a buffered channel's rules
/// forbid across the reader side) would give.
async fn js_baselines(
    client: &async_nats::Client,
    other: &async_nats::Client,
    m: usize,
) -> Result<(), BoxErr> {
    let js = jetstream::new(client.clone());
    let js2 = jetstream::new(other.clone());
    let mut out = Vec::new();

    for (storage, tag) in [(StorageType::File, "file"), (StorageType::Memory, "mem")] {
        let name = format!("RAWB_{tag}");
        let subj = format!("bench.{name}");
        let c = wq_stream(&js, &name, m * 2, storage).await?;
        out.push((format!("js_pub_each_{tag}"), publish_each(&js, &subj, m).await?));
        let t0 = Instant::now();
        for _ in 0..m {
            pull1_double_ack(&c).await?;
        }
        out.push((format!("js_pull1_ack2_{tag}"), per_s(m, t0)));
        let _ = js.delete_stream(&name).await;
    }

    let name = "RAWB_lean";
    let subj = format!("bench.{name}");
    let mut c = wq_stream(&js, name, m * 2, StorageType::File).await?;
    publish_each(&js, &subj, m).await?;
    let mut lean = Lean::new(client, &mut c).await?;
    let t0 = Instant::now();
    for _ in 0..m {
        lean.pull1().await?;
    }
    out.push(("js_pull1_ack2_lean".to_owned(), per_s(m, t0)));

    // A writer and a reader at once, each sequential: a buffered channel's pair, done by hand
    // (reader on its own connection), on one subject and with a subject per value.
    out.push(("js_pair_seq".to_owned(), pair(&js, other, "RAWB_pair", m, false).await?));
    out.push(("js_pair_seq_per_value".to_owned(), pair(&js, other, "RAWB_pairv", m, true).await?));

    // Pipelined publishing (256 acks outstanding) and batched consuming (pull 256, ack each,
    // confirm the last): the bound without per-value round trips.
    let name = "RAWB_batch";
    let subj = format!("bench.{name}");
    let c = wq_stream(&js2, name, m * 2, StorageType::File).await?;
    out.push(("js_pub_pipelined".to_owned(), publish_pipelined(&js, &subj, m, 256).await?));
    let t0 = Instant::now();
    let mut got = 0;
    while got < m {
        let mut b = c.fetch().max_messages(256).messages().await?;
        let mut last = None;
        while let Some(msg) = b.next().await {
            let msg = msg?;
            got += 1;
            if let Some(prev) = last.replace(msg) {
                let prev: jetstream::Message = prev;
                prev.ack().await?;
            }
        }
        if let Some(l) = last {
            l.double_ack().await?;
        }
    }
    out.push(("js_fetch_batched".to_owned(), per_s(m, t0)));
    let _ = js.delete_stream(name).await;

    for (k, v) in out {
        println!("{{\"name\": \"{k}\", \"value\": {v:.0}}}");
    }
    Ok(())
}
