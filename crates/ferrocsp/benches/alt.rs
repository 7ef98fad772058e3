//! The cost of choice: a selection (Alt) against a plain read, on OS threads.
//!
//! Workloads, each timed on the consuming thread over `n` operations after a short warm-up:
//!
//! - `select-random` / `select-fair`: one `Select` over two rendezvous channels, each with a
//!   writer thread blocked writing to it forever (two always-ready writers), policy
//!   [`Policy::Random`] / [`Policy::Fair`]: microseconds per selection;
//! - `read`: `Channel::read` from one rendezvous channel with one always-ready writer:
//!   microseconds per read (the baseline a selection is compared with);
//! - `read2`: `Channel::read` from one rendezvous channel with two always-ready writers (as
//!   many threads as `select`, to separate the cost of the Alt from that of one more thread);
//! - `mux8-fair`: Go's select-heavy shape, a multiplexer: 8 producer threads, each writing to
//!   its own rendezvous channel, one consumer fair-selecting over the 8: microseconds per
//!   message.
//!
//! crossbeam-channel (`bounded(0)`, `Select::select` vs `recv`) runs the same shapes as a
//! reference point. The median of `runs` runs is printed, one line per workload:
//!
//! ```text
//! alt impl=engine-select-random us_per_op=1.234 n=200000 runs=5
//! alt impl=engine-read us_per_op=1.000 n=200000 runs=5
//! alt ratio engine select-random/read=1.234 select-fair/read=1.200
//! ```
//!
//! Run: `cargo bench -p ferrocsp --bench alt -- [--n N] [--runs K] [--only PREFIX]`.
//! Shutdown: the consumer poisons the ferrocsp channels (writers see `Poisoned` and return);
//! crossbeam writers see a disconnection when the consumer drops its receivers.

mod common;

use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ferrocsp::{Channel, Policy, Select};

/// Starts a thread that writes `value` to `chan` until the channel is poisoned.
fn forever_writer(chan: &Channel<u64>, value: u64) -> JoinHandle<()> {
    let chan = chan.clone();
    thread::spawn(move || while chan.write(value).is_ok() {})
}

fn join_all(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        h.join().expect("writer thread panicked");
    }
}

/// A selection over `k` rendezvous channels, each with an always-ready writer.
fn engine_select(k: usize, policy: Policy, n: u64) -> Duration {
    let chans: Vec<Channel<u64>> = (0..k).map(|_| Channel::new(0)).collect();
    let writers = chans.iter().enumerate().map(|(i, c)| forever_writer(c, i as u64)).collect();
    let mut sel = Select::new();
    for c in &chans {
        sel.read(c);
    }
    let mut counts = vec![0u64; k];
    let start = Instant::now();
    for _ in 0..n {
        let fired = sel.select(policy).expect("selection failed");
        counts[fired.index] += 1;
        debug_assert_eq!(fired.value, Some(fired.index as u64));
    }
    let elapsed = start.elapsed();
    chans.iter().for_each(Channel::poison);
    join_all(writers);
    assert_eq!(counts.iter().sum::<u64>(), n);
    elapsed
}

/// Plain reads from one rendezvous channel with `k` always-ready writers.
fn engine_read(k: usize, n: u64) -> Duration {
    let chan: Channel<u64> = Channel::new(0);
    let writers = (0..k).map(|_| forever_writer(&chan, 1)).collect();
    let start = Instant::now();
    for _ in 0..n {
        let v = chan.read().expect("read failed");
        debug_assert_eq!(v, 1);
    }
    let elapsed = start.elapsed();
    chan.poison();
    join_all(writers);
    elapsed
}

fn crossbeam_writers(k: usize) -> (Vec<crossbeam_channel::Receiver<u64>>, Vec<JoinHandle<()>>) {
    (0..k)
        .map(|i| {
            let (tx, rx) = crossbeam_channel::bounded(0);
            (rx, thread::spawn(move || while tx.send(i as u64).is_ok() {}))
        })
        .unzip()
}

fn crossbeam_select(k: usize, n: u64) -> Duration {
    let (rxs, writers) = crossbeam_writers(k);
    let mut sel = crossbeam_channel::Select::new();
    for rx in &rxs {
        sel.recv(rx);
    }
    let start = Instant::now();
    for _ in 0..n {
        let op = sel.select();
        let i = op.index();
        op.recv(&rxs[i]).expect("crossbeam recv failed");
    }
    let elapsed = start.elapsed();
    drop(sel);
    drop(rxs);
    join_all(writers);
    elapsed
}

fn crossbeam_recv(n: u64) -> Duration {
    let (rxs, writers) = crossbeam_writers(1);
    let start = Instant::now();
    for _ in 0..n {
        rxs[0].recv().expect("crossbeam recv failed");
    }
    let elapsed = start.elapsed();
    drop(rxs);
    join_all(writers);
    elapsed
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Median microseconds per operation over `runs` runs (after one untimed warm-up run).
fn measure(run: &dyn Fn(u64) -> Duration, n: u64, runs: usize) -> f64 {
    run(n.min(2_000));
    let samples = (0..runs).map(|_| run(n).as_secs_f64() * 1e6 / n as f64).collect();
    median(samples)
}

type Workload = (&'static str, Box<dyn Fn(u64) -> Duration>);

fn main() {
    let args = common::parse_args("alt", "--n", 200_000, "engine|crossbeam|IMPL");
    let workloads: Vec<Workload> = vec![
        ("engine-select-random", Box::new(|n| engine_select(2, Policy::Random, n))),
        ("engine-select-fair", Box::new(|n| engine_select(2, Policy::Fair, n))),
        ("engine-read", Box::new(|n| engine_read(1, n))),
        ("engine-read2", Box::new(|n| engine_read(2, n))),
        ("engine-mux8-fair", Box::new(|n| engine_select(8, Policy::Fair, n))),
        ("crossbeam-select", Box::new(|n| crossbeam_select(2, n))),
        ("crossbeam-recv", Box::new(crossbeam_recv)),
        ("crossbeam-mux8", Box::new(|n| crossbeam_select(8, n))),
    ];
    let mut results: Vec<(&str, f64)> = Vec::new();
    for (name, run) in &workloads {
        if args.only.as_deref().is_some_and(|o| !name.starts_with(o)) {
            continue;
        }
        let us = measure(run.as_ref(), args.size, args.runs);
        println!("alt impl={name} us_per_op={us:.4} n={} runs={}", args.size, args.runs);
        results.push((name, us));
    }
    let get = |name: &str| results.iter().find(|(n, _)| *n == name).map(|&(_, us)| us);
    for backend in ["engine", "crossbeam"] {
        let Some(read) = get(&format!("{backend}-read")).or(get(&format!("{backend}-recv"))) else {
            continue;
        };
        let ratios: Vec<String> = ["select-random", "select-fair", "select", "read2"]
            .iter()
            .filter_map(|w| {
                get(&format!("{backend}-{w}")).map(|us| format!("{w}/read={:.3}", us / read))
            })
            .collect();
        if !ratios.is_empty() {
            println!("alt ratio {backend} {}", ratios.join(" "));
        }
    }
}
