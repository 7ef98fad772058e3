//! Commstime on OS threads: the classic CSP channel benchmark (occam, JCSP, PyCSP).
//!
//! ```text
//!   Prefix(0) --a--> Delta --b--> Consumer        Delta writes b, then c (sequential outputs)
//!      ^               |
//!      d               c
//!      +---- Succ <----+
//! ```
//!
//! Each cycle is 4 communications (a, b, c, d) over rendezvous channels. The consumer times
//! `cycles` values after the first one arrives and reports microseconds per communication;
//! the median of `runs` runs is printed, one line per implementation:
//!
//! ```text
//! commstime impl=ferrocsp us_per_comm=1.234 cycles=100000 runs=3 samples=1.3,1.234,1.2
//! commstime impl=crossbeam us_per_comm=1.000 cycles=100000 runs=3 samples=1.0,1.1,0.9
//! commstime impl=std-sync-channel us_per_comm=2.000 cycles=100000 runs=3 samples=2.0,2.1,1.9
//! commstime ratio ferrocsp/crossbeam=1.234 ferrocsp/std-sync-channel=0.617
//! ```
//!
//! Run: `cargo bench -p ferrocsp --bench commstime -- [--cycles N] [--runs K] [--only NAME]`.
//! Shutdown: ferrocsp channels are poisoned by the consumer; crossbeam and std channels
//! disconnect when the consumer drops its receiver, and the disconnection travels around
//! the ring as each thread returns.

mod common;

use std::thread;
use std::time::{Duration, Instant};

/// One way to make a rendezvous channel for `u64`, seen from commstime's four threads.
trait Flavor {
    const NAME: &'static str;
    type Tx: Send + 'static;
    type Rx: Send + 'static;
    fn channel() -> (Self::Tx, Self::Rx);
    /// `false` once the channel is shut down.
    fn send(tx: &Self::Tx, v: u64) -> bool;
    /// `None` once the channel is shut down.
    fn recv(rx: &Self::Rx) -> Option<u64>;
    /// A handle the consumer keeps to stop the network with, if the flavor needs one.
    fn stopper(tx: &Self::Tx) -> Option<Self::Tx>;
    /// Called by the consumer on each of its stoppers when it is done.
    fn stop(stopper: &Self::Tx);
}

struct Ferrocsp;
impl Flavor for Ferrocsp {
    const NAME: &'static str = "ferrocsp";
    type Tx = ferrocsp::Channel<u64>;
    type Rx = ferrocsp::Channel<u64>;
    fn channel() -> (Self::Tx, Self::Rx) {
        let ch = ferrocsp::Channel::new(0);
        (ch.clone(), ch)
    }
    fn send(tx: &Self::Tx, v: u64) -> bool {
        tx.write(v).is_ok()
    }
    fn recv(rx: &Self::Rx) -> Option<u64> {
        rx.read().ok()
    }
    fn stopper(tx: &Self::Tx) -> Option<Self::Tx> {
        Some(tx.clone())
    }
    fn stop(ch: &Self::Tx) {
        ch.poison();
    }
}

struct Crossbeam;
impl Flavor for Crossbeam {
    const NAME: &'static str = "crossbeam";
    type Tx = crossbeam_channel::Sender<u64>;
    type Rx = crossbeam_channel::Receiver<u64>;
    fn channel() -> (Self::Tx, Self::Rx) {
        crossbeam_channel::bounded(0)
    }
    fn send(tx: &Self::Tx, v: u64) -> bool {
        tx.send(v).is_ok()
    }
    fn recv(rx: &Self::Rx) -> Option<u64> {
        rx.recv().ok()
    }
    fn stopper(_tx: &Self::Tx) -> Option<Self::Tx> {
        None // a kept sender would keep its channel connected; dropping b's receiver stops all
    }
    fn stop(_tx: &Self::Tx) {}
}

struct StdSync;
impl Flavor for StdSync {
    const NAME: &'static str = "std-sync-channel";
    type Tx = std::sync::mpsc::SyncSender<u64>;
    type Rx = std::sync::mpsc::Receiver<u64>;
    fn channel() -> (Self::Tx, Self::Rx) {
        std::sync::mpsc::sync_channel(0)
    }
    fn send(tx: &Self::Tx, v: u64) -> bool {
        tx.send(v).is_ok()
    }
    fn recv(rx: &Self::Rx) -> Option<u64> {
        rx.recv().ok()
    }
    fn stopper(_tx: &Self::Tx) -> Option<Self::Tx> {
        None
    }
    fn stop(_tx: &Self::Tx) {}
}

/// One commstime run: the time the consumer took for `cycles` values.
fn commstime<F: Flavor>(cycles: u64) -> Duration {
    let (a_tx, a_rx) = F::channel(); // Prefix -> Delta
    let (b_tx, b_rx) = F::channel(); // Delta -> Consumer
    let (c_tx, c_rx) = F::channel(); // Delta -> Succ
    let (d_tx, d_rx) = F::channel(); // Succ -> Prefix
    let stoppers: Vec<F::Tx> =
        [&a_tx, &b_tx, &c_tx, &d_tx].into_iter().filter_map(F::stopper).collect();

    let prefix = thread::spawn(move || {
        if !F::send(&a_tx, 0) {
            return;
        }
        while let Some(v) = F::recv(&d_rx) {
            if !F::send(&a_tx, v) {
                return;
            }
        }
    });
    let delta = thread::spawn(move || {
        while let Some(v) = F::recv(&a_rx) {
            if !F::send(&b_tx, v) || !F::send(&c_tx, v) {
                return;
            }
        }
    });
    let succ = thread::spawn(move || {
        while let Some(v) = F::recv(&c_rx) {
            if !F::send(&d_tx, v + 1) {
                return;
            }
        }
    });
    let consumer = thread::spawn(move || {
        let first = F::recv(&b_rx).expect("commstime: network stopped before the first value");
        let start = Instant::now();
        let mut last = first;
        for _ in 0..cycles {
            last = F::recv(&b_rx).expect("commstime: network stopped early");
        }
        let elapsed = start.elapsed();
        assert_eq!(last, first + cycles, "commstime: values lost or reordered");
        stoppers.iter().for_each(F::stop);
        drop(b_rx);
        elapsed
    });

    let elapsed = consumer.join().expect("consumer thread panicked");
    for (name, t) in [("prefix", prefix), ("delta", delta), ("succ", succ)] {
        t.join().unwrap_or_else(|_| panic!("{name} thread panicked"));
    }
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

/// Microseconds per communication of `runs` runs (after one short untimed warm-up run).
fn measure<F: Flavor>(cycles: u64, runs: usize) -> Vec<f64> {
    commstime::<F>(cycles.min(1_000));
    (0..runs).map(|_| commstime::<F>(cycles).as_secs_f64() * 1e6 / (4 * cycles) as f64).collect()
}

fn main() {
    let args =
        common::parse_args("commstime", "--cycles", 100_000, "ferrocsp|crossbeam|std-sync-channel");
    let wanted = |name: &str| args.only.as_deref().is_none_or(|o| o == name);
    let mut results: Vec<(&str, f64)> = Vec::new();
    type Measure = fn(u64, usize) -> Vec<f64>;
    let impls: [(&str, Measure); 3] = [
        (Ferrocsp::NAME, measure::<Ferrocsp>),
        (Crossbeam::NAME, measure::<Crossbeam>),
        (StdSync::NAME, measure::<StdSync>),
    ];
    for (name, run) in impls {
        if !wanted(name) {
            continue;
        }
        let samples = run(args.size, args.runs);
        let list: Vec<String> = samples.iter().map(|us| format!("{us:.4}")).collect();
        let us = median(samples);
        println!(
            "commstime impl={name} us_per_comm={us:.4} cycles={} runs={} samples={}",
            args.size,
            args.runs,
            list.join(",")
        );
        results.push((name, us));
    }
    if let Some(&(_, ours)) = results.iter().find(|(n, _)| *n == Ferrocsp::NAME) {
        let ratios: Vec<String> = results
            .iter()
            .filter(|(n, _)| *n != Ferrocsp::NAME)
            .map(|(n, us)| format!("ferrocsp/{n}={:.3}", ours / us))
            .collect();
        if !ratios.is_empty() {
            println!("commstime ratio {}", ratios.join(" "));
        }
    }
}
