//! Fault injection over the shared-memory protocol (issue #16): a peer is killed (SIGKILL)
//! at each named point of the protocol (`shm/fault.rs`) and at random instants, in scenarios
//! over rendezvous and buffered channels, plain and Alt, and every trial is accounted for
//! exactly (`account.rs`): each value delivered once or provably lost with the dead process,
//! nothing duplicated, every survivor done within a bound of the death, and no descriptor,
//! mapping, thread or child left behind.
//!
//! A trial: the channels and one end per participant and channel are made, then the
//! participants start (forked processes, and a thread of this process); the victim (always
//! forked) is armed for `(point, nth)` and stops itself there with SIGSTOP, or is stopped by
//! the harness after a random delay. Stopped, its rings are snapshot (what it holds), then it
//! is SIGKILLed and reaped, and the harness retires its ends, as its host would: the
//! survivors then end by end-of-stream, or by the poison the death caused.
//!
//! `FERROCSP_SLOW=1`: every point in every scenario at several hits, and random trials, over
//! 1000 in all. Otherwise (CI) each point once, in the first scenario that reaches it, and
//! `RANDOM_QUICK` random trials. `FERROCSP_FAULT_SEED=n` replays the random choices.
#![cfg(target_os = "linux")]

mod account;
mod inspect;
mod log;
mod peers;
mod scenarios;

#[path = "../shm_support/mod.rs"]
mod shm_support;

use std::collections::BTreeMap;
use std::time::Duration;

use ferrocsp::shm::fault;

use scenarios::{run, Kill, Report, Scenario};
use shm_support::Rng;

const RANDOM_QUICK: usize = 50;
/// Points a process passes only a few times in a trial: the quick run stops at the first.
const RARE: &[&str] = &["ring.punch", "ring.rewound", "alt.fired", "cell.fired", "cell.acquired"];
const RANDOM_SLOW: usize = 400;
/// A survivor must be done this soon after the death (issue #16 asks 1 s for the outcome;
/// the rest is margin for this loaded 2-core machine and for the traffic still to flow).
const DONE_AFTER_DEATH: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Row {
    trials: usize,
    killed: usize,
    blocked: usize,
    stale: usize,
    tally: account::Tally,
    causes: BTreeMap<String, usize>,
    max_latency: Duration,
}

/// `FERROCSP_FAULT=name:nth` arms a process that was not armed by `fault::arm` (a child the
/// test does not fork itself, a Python one): here a forked child that sets it before it
/// passes its first point stops at its first lock.
fn env_arms_a_child() {
    use ferrocsp::shm::ShmChannel;
    let pid = shm_support::fork(|| {
        std::env::set_var("FERROCSP_FAULT", "lock.taken:1");
        let ch = ShmChannel::create(0, 1 << 16).expect("create");
        let _ = ch.stats();
        0 // not stopped: the harness sees it exit
    });
    let seen = inspect::stopped_or_ended(pid, Duration::from_secs(10));
    inspect::signal(pid, libc::SIGKILL);
    let _ = inspect::reap_by(pid, std::time::Instant::now() + Duration::from_secs(10));
    assert_eq!(seen, Some(inspect::Outcome::Stopped), "FERROCSP_FAULT did not arm the child");
}

#[test]
fn peers_killed_at_every_point_and_at_random_instants() {
    let slow = std::env::var_os("FERROCSP_SLOW").is_some_and(|v| v != "0");
    let seed = std::env::var("FERROCSP_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| log::now_ns() | 1);
    eprintln!("shm_faults: seed {seed} (FERROCSP_FAULT_SEED={seed} replays it), slow: {slow}");
    let mut rng = Rng(seed);
    // First, before this process passes any point (the environment is read at the first).
    env_arms_a_child();
    scenarios::warm_up();
    // FERROCSP_FAULT_ONLY=name[,name...]: only those scenarios (to chase one finding).
    let only = std::env::var("FERROCSP_FAULT_ONLY").ok();
    let mut all = scenarios::all();
    if let Some(only) = &only {
        all.retain(|s| only.split(',').any(|n| n == s.name));
        assert!(!all.is_empty(), "FERROCSP_FAULT_ONLY={only}: no such scenario");
    }
    let mut table: BTreeMap<(String, String), Row> = BTreeMap::new();
    let mut reached: BTreeMap<&str, usize> = BTreeMap::new();
    let mut record = |sc: &Scenario, what: String, r: Report| {
        let row = table.entry((sc.name.to_string(), what)).or_default();
        row.trials += 1;
        if r.killed {
            row.killed += 1;
        }
        if r.blocked {
            row.blocked += 1;
        }
        row.stale += r.stale;
        row.tally.delivered += r.tally.delivered;
        row.tally.lost_with_dead += r.tally.lost_with_dead;
        row.tally.dropped_by_poison += r.tally.dropped_by_poison;
        row.tally.failed_writes += r.tally.failed_writes;
        for c in r.causes {
            *row.causes.entry(c).or_default() += 1;
        }
        row.max_latency = row.max_latency.max(r.latency);
        assert!(
            r.latency <= DONE_AFTER_DEATH,
            "{}: a survivor was done {:?} after the death",
            sc.name,
            r.latency
        );
        r.killed
    };
    let trial = |sc: &Scenario, kill: Kill| -> Report {
        let what = format!("{} {kill:?} (seed {seed})", sc.name);
        run(sc, &kill).unwrap_or_else(|e| panic!("{what}: {e}"))
    };
    let mut total = 0;
    for &point in fault::points() {
        let hits: Vec<u64> = if slow {
            vec![1, 2, 3, 4, 7, 1 + rng.below(40) as u64]
        } else if point.ends_with(".buf") {
            vec![3, 4] // before the 2nd value's copy, and in the middle of it
        } else if RARE.contains(&point) {
            vec![1]
        } else {
            vec![3]
        };
        for nth in hits {
            let mut done = false;
            // A point that depends on who wins a race may be missed by one pass (a rare one
            // missed all three passes 1 quick run in 6 on a loaded machine, `cell.fired`):
            // more passes cost time only while it is missed.
            let rounds = if slow {
                1
            } else if RARE.contains(&point) {
                12
            } else {
                3
            };
            for sc in all.iter().cycle().take(all.len() * rounds) {
                if !slow && done {
                    break;
                }
                let killed = record(sc, point.to_string(), trial(sc, Kill::At(point, nth)));
                total += 1;
                if killed {
                    *reached.entry(point).or_default() += 1;
                    done = true;
                }
            }
        }
    }
    let random = if slow { RANDOM_SLOW.max(1000usize.saturating_sub(total)) } else { RANDOM_QUICK };
    for i in 0..random {
        let sc = &all[i % all.len()];
        let delay = Duration::from_micros(rng.below(sc.random_window_us as usize) as u64);
        record(sc, "random".into(), trial(sc, Kill::After(delay)));
        total += 1;
    }
    eprintln!("shm_faults: {total} trials");
    eprintln!(
        "{:<15} {:<14} {:>6} {:>6} {:>7} {:>5} {:>9} {:>5} {:>7} {:>6} {:>9}  causes",
        "scenario",
        "point",
        "trials",
        "killed",
        "blocked",
        "stale",
        "delivered",
        "lost",
        "dropped",
        "failed",
        "max_lat"
    );
    for ((sc, what), r) in &table {
        eprintln!(
            "{sc:<15} {what:<14} {:>6} {:>6} {:>7} {:>5} {:>9} {:>5} {:>7} {:>6} {:>7}ms  {:?}",
            r.trials,
            r.killed,
            r.blocked,
            r.stale,
            r.tally.delivered,
            r.tally.lost_with_dead,
            r.tally.dropped_by_poison,
            r.tally.failed_writes,
            r.max_latency.as_millis(),
            r.causes
        );
    }
    if only.is_some() {
        return;
    }
    let missed: Vec<&str> =
        fault::points().iter().copied().filter(|p| !reached.contains_key(p)).collect();
    assert!(missed.is_empty(), "points no scenario reached: {missed:?}");
}
