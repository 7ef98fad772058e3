//! The scenarios (who plays what, on which channels) and one trial of a scenario: start the
//! participants, stop and kill the victim, wait for the survivors, account for every value,
//! check the outcome the death must have caused and that nothing leaked.

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use ferrocsp::shm::{fault, select, EndKind, PoisonCause, SelOp, ShmChannel, Wait};

use crate::account::{self, Facts, Tally};
use crate::inspect::{self, Outcome};
use crate::log::{fail, now_ns, Ev, Log};
use crate::peers::{play, take, Role, HANG};
use crate::shm_support::fork;

/// Where a participant runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    Forked,
    /// A thread of the test process (its leaks are the test process's).
    Thread,
}

pub struct Scenario {
    pub name: &'static str,
    pub capacity: usize,
    pub chans: usize,
    pub ring: usize,
    pub len: usize,
    /// The victim is `parts[0]`, always forked.
    pub parts: Vec<(Role, At)>,
    /// Random kills land within this many microseconds of the start.
    pub random_window_us: u64,
}

/// How the victim dies.
#[derive(Clone, Copy, Debug)]
pub enum Kill {
    /// It stops itself at the `nth` pass of this point.
    At(&'static str, u64),
    /// The harness stops it this long after it was forked.
    After(Duration),
}

/// What a trial found.
#[derive(Debug)]
pub struct Report {
    pub killed: bool,
    /// A read with a deadline, tried while the victim was stopped, missed it (a failure;
    /// counted for the table).
    pub blocked: bool,
    /// Readers still counted as waiting once every process was gone (a failure; counted for
    /// the table).
    pub stale: usize,
    pub tally: Tally,
    /// Each poisoned channel's cause.
    pub causes: Vec<String>,
    /// How long after the death the last survivor was done (0 without a death).
    pub latency: Duration,
}

/// Points where the victim holds at least one channel's lock: its death must poison that
/// channel with `OwnerDied`.
const LOCK_HELD: &[&str] = &[
    "lock.taken",
    "ring.reserved",
    "ring.rewound",
    "ring.advanced",
    "ring.punch",
    "write.commit",
    "write.ready",
    "write.taken",
    "read.claimed",
    "read.finish",
    "read.released",
    "alt.record",
    "alt.published",
    "alt.fired",
    "cell.fired",
];

const N: u64 = 24;

fn w(ch: usize, k: u64) -> Role {
    Role::Writer { ch, ids: k * 1000..k * 1000 + N }
}

pub fn all() -> Vec<Scenario> {
    use At::{Forked, Thread};
    let r = |ch| Role::Reader { ch };
    let plain = |name, capacity, victim: Role, rest: Vec<(Role, At)>| Scenario {
        name,
        capacity,
        chans: 1,
        ring: 1 << 20,
        len: 512,
        parts: std::iter::once((victim, Forked)).chain(rest).collect(),
        random_window_us: 4000,
    };
    let two = |name, capacity, victim: Role, rest: Vec<(Role, At)>| Scenario {
        chans: 2,
        ..plain(name, capacity, victim, rest)
    };
    let ar = || Role::AltReader { chs: vec![0, 1] };
    let aw = |k: u64| Role::AltWriter { chs: vec![0, 1], ids: k * 1000..k * 1000 + N };
    vec![
        plain("rdv_writer", 0, w(0, 1), vec![(w(0, 2), Forked), (r(0), Forked), (r(0), Thread)]),
        plain("buf_writer", 4, w(0, 1), vec![(w(0, 2), Forked), (r(0), Forked), (r(0), Thread)]),
        plain("rdv_reader", 0, r(0), vec![(w(0, 1), Forked), (w(0, 2), Forked), (r(0), Thread)]),
        plain("buf_reader", 4, r(0), vec![(w(0, 1), Forked), (w(0, 2), Forked), (r(0), Thread)]),
        two(
            "rdv_alt_reader",
            0,
            ar(),
            vec![(w(0, 1), Forked), (w(1, 2), Forked), (ar(), Forked), (r(0), Thread)],
        ),
        two(
            "buf_alt_reader",
            2,
            ar(),
            vec![(w(0, 1), Forked), (w(1, 2), Forked), (ar(), Forked), (r(0), Thread)],
        ),
        two(
            "rdv_alt_writer",
            0,
            aw(1),
            vec![(w(0, 2), Forked), (ar(), Forked), (r(0), Forked), (r(1), Thread)],
        ),
        // A writer dies, and the one reader of its channel is an Alt: only that Alt can find
        // the dead writer's entry (and end, once the stream is over).
        two("rdv_alt_behind", 0, w(0, 1), vec![(w(1, 2), Forked), (ar(), Forked)]),
        two("buf_alt_behind", 2, w(0, 1), vec![(w(1, 2), Forked), (ar(), Forked)]),
        // A reader dies while an Alt offers to it: it fires the Alt's cell (`cell.fired`).
        // It is channel 0's only reader, so it is the one that fires.
        two(
            "rdv_alt_offered",
            0,
            r(0),
            vec![
                (aw(1), Forked),
                (w(1, 2), Forked),
                (Role::AltReader { chs: vec![1] }, Forked),
                (r(1), Thread),
            ],
        ),
        two(
            "buf_alt_writer",
            2,
            aw(1),
            vec![(w(0, 2), Forked), (ar(), Forked), (r(0), Forked), (r(1), Thread)],
        ),
        // A standing backlog of large messages: the head leaves 2 MiB pieces of the ring
        // (given back: `ring.punch`) without the ring ever emptying.
        Scenario {
            ring: 4 << 20,
            len: 200 << 10,
            ..plain(
                "buf_backlog",
                6,
                r(0),
                vec![(w(0, 1), Forked), (w(0, 2), Forked), (r(0), Thread)],
            )
        },
    ]
}

/// Makes this process's first selection cell, so the leak checks compare like with like.
/// (A selection takes a cell only once it must wait: with a short deadline a slow start
/// could skip that, so it waits with none and gives up after its first sleep.)
pub fn warm_up() {
    let ch = ShmChannel::create(0, 1 << 16).expect("warm-up channel");
    let ops = [SelOp::read(&ch)];
    let mut once = || true;
    let mut w = Wait {
        deadline: None,
        nowait: false,
        slice: Some(Duration::from_millis(1)),
        interrupted: &mut once,
        sleeper: None,
    };
    assert_eq!(select(&ops, &mut w).map(|(i, _)| i), Err(ferrocsp::Error::Interrupted));
}

/// Runs one trial of `sc`.
pub fn run(sc: &Scenario, kill: &Kill) -> Result<Report, String> {
    let base = inspect::held();
    let chans: Arc<Vec<ShmChannel>> = Arc::new(
        (0..sc.chans).map(|_| ShmChannel::create(sc.capacity, sc.ring).expect("create")).collect(),
    );
    let ends: Vec<Vec<(usize, u32)>> = sc
        .parts
        .iter()
        .map(|(role, _)| {
            let (writes, reads) = role.uses();
            let mk = |c: usize, k| (c, chans[c].new_end(k).expect("end"));
            let mut e: Vec<_> = writes.into_iter().map(|c| mk(c, EndKind::Writer)).collect();
            e.extend(reads.into_iter().map(|c| mk(c, EndKind::Reader)));
            e
        })
        .collect();
    let log = Arc::new(Log::new());
    let kill = *kill;
    let participant = |row: usize, victim: bool, at: At| {
        let (role, chans, log, ends, len) =
            (sc.parts[row].0.clone(), chans.clone(), log.clone(), ends[row].clone(), sc.len);
        move || {
            // A thread's process is the test process, checked as a whole after the trial.
            let base = (!victim && at == At::Forked).then(inspect::held);
            if let (true, Kill::At(p, nth)) = (victim, kill) {
                fault::arm(p, nth).expect("arm");
            }
            let mut bits = play(&role, row, &chans, &log, len);
            log.push(row, Ev::Done, now_ns());
            for &(c, e) in &ends {
                let _ = chans[c].retire_end(e);
            }
            if let Some(b) = base {
                let now = inspect::held();
                if b != now {
                    eprintln!("row {row} held {b:?} before, {now:?} after: {}", inspect::listing());
                    bits |= fail::LEAK;
                }
            }
            log.push(row, Ev::End, bits);
        }
    };
    let mut pids = Vec::new();
    let mut threads = Vec::new();
    let (tx, rx) = mpsc::channel();
    for (row, (_, at)) in sc.parts.iter().enumerate() {
        let body = participant(row, row == 0, *at);
        match at {
            At::Forked => pids.push((
                row,
                fork(move || {
                    warm_up();
                    body();
                    0
                }),
            )),
            At::Thread => {
                let tx = tx.clone();
                threads.push(std::thread::spawn(move || {
                    body();
                    let _ = tx.send(row);
                }));
            }
        }
    }
    drop(tx);
    let victim = pids[0].1;
    if let Kill::After(d) = kill {
        std::thread::sleep(d);
        inspect::signal(victim, libc::SIGSTOP);
    }
    let seen = inspect::stopped_or_ended(victim, HANG + Duration::from_secs(2));
    let (mut at_stop, mut dead, mut death_ns) = (Vec::new(), None, None);
    // Channels whose probe could not keep its deadline while the victim was stopped.
    let mut blocked = Vec::new();
    // Channels whose lock the stopped victim held.
    let mut locked: Vec<bool> = vec![false; sc.chans];
    match seen {
        Some(Outcome::Stopped) => {
            at_stop = inspect::stable_snapshot(&chans);
            locked = chans.iter().map(|c| inspect::lock_held_by(c, victim as u32)).collect();
            // Every probe must come back by its deadline (given time enough for a loaded
            // machine); one that does not is waited for only until the victim is gone.
            let bound = PROBE_BOUND_FREE;
            let probes = probe(&chans, &log, sc.parts.len(), bound);
            let killed_at = Instant::now();
            inspect::signal(victim, libc::SIGKILL);
            inspect::reap_by(victim, Instant::now() + HANG).ok_or("the killed victim lingers")?;
            death_ns = Some(now_ns());
            dead = Some((0, victim as u32));
            // What its host does for a crashed process (here: retire, so that the survivors'
            // accounting stays exact; the Python host poisons).
            for &(c, e) in &ends[0] {
                let _ = chans[c].retire_end(e);
            }
            for (i, (t, started)) in probes.into_iter().enumerate() {
                let back = t.join().map_err(|_| "a probe panicked")?;
                // Blocked: it could only come back once the victim was dead.
                if back > killed_at {
                    blocked.push((i, back - started, back - killed_at));
                }
            }
        }
        Some(Outcome::Exited(_)) => {
            inspect::reap_by(victim, Instant::now() + HANG).ok_or("reap the victim")?;
        }
        None => return Err("the victim neither stopped nor ended (a hang?)".into()),
    }
    let until = Instant::now() + HANG + Duration::from_secs(2);
    let mut problems = Vec::new();
    for &(row, pid) in &pids[1..] {
        match inspect::reap_by(pid, until) {
            Some(0) => {}
            Some(s) => problems.push(format!("row {row} (forked) ended with status {s:#x}")),
            None => {
                let rings: Vec<_> = chans.iter().map(inspect::snapshot).collect();
                let stats: Vec<_> = chans.iter().map(|c| c.stats()).collect();
                problems.push(format!(
                    "while row {row} hung: rings {rings:?}, stats {stats:?}, at stop {at_stop:?}"
                ));
                inspect::signal(pid, libc::SIGKILL);
                let _ = inspect::reap_by(pid, Instant::now() + HANG);
                problems.push(format!("row {row} (forked) hung"));
            }
        }
    }
    for _ in &threads {
        if rx.recv_timeout(until.saturating_duration_since(Instant::now())).is_err() {
            panic!("a participant thread hung (problems so far: {problems:?})");
        }
    }
    for t in threads {
        t.join().map_err(|_| "a participant thread panicked")?;
    }
    // Every process is gone: the rings hold what is left.
    let at_end: Vec<_> = chans.iter().map(inspect::snapshot).collect();
    let mut latency = Duration::ZERO;
    for row in 1..sc.parts.len() {
        let ev = log.events(row);
        match ev.iter().find(|e| e.0 == Ev::End) {
            Some(&(_, 0)) => {}
            Some(&(_, bits)) => problems.push(format!("row {row} failed: bits {bits:#x}")),
            None => problems.push(format!("row {row} never ended")),
        }
        if let (Some(d), Some(&(_, done))) = (death_ns, ev.iter().find(|e| e.0 == Ev::Done)) {
            latency = latency.max(Duration::from_nanos(done.saturating_sub(d)));
        }
    }
    // Nobody waits any more: a count left is a waiter nobody took off (a dead one is taken off
    // by `stats`, `shm/waiters.rs`). (`stats` also locks every channel once more: a lock the
    // victim died holding is then found, where no survivor locked it since.)
    let stale = chans.iter().map(|c| c.stats().map_or(0, |s| s.readers_waiting)).sum::<usize>();
    if stale > 0 {
        problems.push(format!("{stale} readers counted as waiting, none alive"));
    }
    let causes: Vec<Option<PoisonCause>> = chans.iter().map(ShmChannel::poison_cause).collect();
    // A death poisons a channel `OwnerDied` exactly where the victim held its lock.
    if dead.is_some() {
        for (i, (&held, c)) in locked.iter().zip(&causes).enumerate() {
            if held != (*c == Some(PoisonCause::OwnerDied)) {
                problems.push(format!("channel {i}: victim held its lock: {held}, cause {c:?}"));
            }
        }
    }
    let facts =
        Facts { rows: sc.parts.len() + 1, dead, at_stop: &at_stop, at_end: &at_end, chans: &chans };
    let tally = account::check(&log, &facts);
    expect_outcome(&kill, dead.is_some(), &causes, &at_stop, victim as u32)
        .unwrap_or_else(|e| problems.push(e));
    // Even behind a lock the stopped victim holds, a read keeps its deadline (`shm/lock.rs`:
    // a lock wait gives up with the operation's deadline).
    if !blocked.is_empty() {
        problems.push(format!(
            "(channel, took, back after the kill) {blocked:?}: a read with a deadline of \
             {PROBE_DEADLINE:?} missed it (victim held a lock: {locked:?})"
        ));
    }
    let tally = tally.map_err(|e| {
        let pids: Vec<_> = pids.iter().map(|p| p.1).collect();
        format!(
            "accounting: {e}; {problems:?} (pids by forked row {pids:?}, test {})",
            std::process::id()
        )
    })?;
    drop(chans);
    drop(log);
    if !inspect::no_children() {
        problems.push("a child left unreaped".into());
    }
    let now = inspect::held();
    if now != base {
        problems.push(format!(
            "the test process held {base:?} before, {now:?} after: {}",
            inspect::listing()
        ));
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    Ok(Report {
        stale,
        blocked: !blocked.is_empty(),
        killed: dead.is_some(),
        tally,
        causes: causes.iter().flatten().map(|c| format!("{c:?}")).collect(),
        latency,
    })
}

/// How long a probe may take past its deadline before it counts as blocked.
const PROBE_DEADLINE: Duration = Duration::from_millis(100);
const PROBE_BOUND_FREE: Duration = Duration::from_secs(3);

/// While the victim is stopped (alive, holding whatever it holds at its point), a read with
/// a deadline on each channel must keep it ("timeouts are honoured in every wait state"):
/// returns each probe's thread (it may still be blocked: join it after the kill; it returns
/// when it came back) and when it started, having waited `bound` at most for them. A probe
/// that gets a message reads it as a participant would (log row `row`), so the accounting
/// sees it. (Putting it back instead would turn a fired Alt offer into a plain message that a
/// poison may then drop, its Alt told it wrote.)
fn probe(
    chans: &Arc<Vec<ShmChannel>>,
    log: &Arc<Log>,
    row: usize,
    bound: Duration,
) -> Vec<(std::thread::JoinHandle<Instant>, Instant)> {
    let (tx, rx) = mpsc::channel();
    let started = Instant::now();
    let threads: Vec<_> = (0..chans.len())
        .map(|i| {
            let (chans, log, tx) = (chans.clone(), log.clone(), tx.clone());
            std::thread::spawn(move || {
                let until = Some(Instant::now() + PROBE_DEADLINE);
                if let Ok(slot) = chans[i].begin_read(&mut Wait::until(until)) {
                    let _ = take(slot, row, &log);
                }
                let back = Instant::now();
                let _ = tx.send(());
                back
            })
        })
        .collect();
    let until = started + bound;
    for _ in 0..chans.len() {
        if rx.recv_timeout(until.saturating_duration_since(Instant::now())).is_err() {
            break;
        }
    }
    threads.into_iter().map(|t| (t, started)).collect()
}

/// The poison a death must (and must not) cause.
fn expect_outcome(
    kill: &Kill,
    died: bool,
    causes: &[Option<PoisonCause>],
    at_stop: &[Vec<inspect::Seen>],
    pid: u32,
) -> Result<(), String> {
    let l = ShmChannel::layout_for_tests();
    if !died {
        return match causes.iter().flatten().next() {
            Some(c) => Err(format!("poisoned ({c:?}) though nobody died")),
            None => Ok(()),
        };
    }
    // A survivor that ends by poison poisons its other channels (`Poisoned`): only after a
    // death poisoned one.
    let by_death = causes.iter().flatten().any(|c| account::death_cause(*c));
    for (i, c) in causes.iter().enumerate() {
        match c {
            Some(PoisonCause::Poisoned) if by_death => {}
            Some(c) if !account::death_cause(*c) => {
                return Err(format!("channel {i} poisoned {c:?} after a death"))
            }
            Some(PoisonCause::PeerDied) => {
                let held = at_stop[i].iter().any(|s| s.owner == pid && s.state == l.entry_reading);
                if !held {
                    return Err(format!("channel {i}: PeerDied, but the dead held no entry"));
                }
            }
            _ => {}
        }
    }
    if let Kill::At(p, _) = kill {
        let owner_died = causes.contains(&Some(PoisonCause::OwnerDied));
        if LOCK_HELD.contains(p) != owner_died {
            return Err(format!("died at {p}: poison causes {causes:?}"));
        }
    }
    Ok(())
}
