//! A choice over more shared channels than one `futex_waitv` takes (128 words): it must sleep,
//! not spin, and every kind of event on any one of its channels must still end the wait.
//!
//! CPU time is measured over each wait (the selecting thread's own, or the whole process's
//! for a cooperative wait, whose sleeping is done by the futex watcher threads). The bound is
//! generous (a tenth of the wall time) for a loaded machine: a spinning wait uses all of it.
//! The tests of this file run one at a time (`serial`), so a process's CPU time is theirs.
#![cfg(target_os = "linux")]

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ferrocsp::shm::{select, watch, EndKind, SelOp, Selected, ShmChannel, Sleeper, Wait};
use ferrocsp::{Error, Waker};

mod shm_support;

use shm_support::{fork, reap, within, write_by};

/// How long a waiting choice is left alone while its CPU time is measured.
const QUIET_WAIT: Duration = Duration::from_secs(1);
/// How soon an event must end the wait (generous: a loaded 2-core machine).
const PROMPT: Duration = Duration::from_secs(2);
/// Bound on a whole test's blocking part: a hang fails instead of sticking.
const LIMIT: Duration = Duration::from_secs(60);

fn serial() -> MutexGuard<'static, ()> {
    static ONE: Mutex<()> = Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

fn cpu(clock: libc::clockid_t) -> Duration {
    // SAFETY: an all-zero timespec is a valid out-parameter for clock_gettime.
    let mut t: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: t is a valid timespec.
    assert_eq!(unsafe { libc::clock_gettime(clock, &mut t) }, 0);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn thread_cpu() -> Duration {
    cpu(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn process_cpu() -> Duration {
    cpu(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// Fails unless `used` CPU time is well below the `wall` time it was measured over.
fn assert_slept(what: &str, used: Duration, wall: Duration) {
    println!("{what}: {used:?} of CPU time in {wall:?}");
    assert!(
        used * 10 < wall,
        "{what}: {used:?} of CPU time in {wall:?} of waiting (it spins instead of sleeping)"
    );
}

fn channels(n: usize, capacity: usize) -> Arc<Vec<ShmChannel>> {
    enough_fds();
    Arc::new((0..n).map(|_| ShmChannel::create(capacity, 1 << 16).expect("create")).collect())
}

/// Raises this process's soft limit on open files to its hard limit: a channel holds a
/// descriptor, and a soft limit of 1,024 (a common default) is too few for 1,000 of them.
fn enough_fds() {
    // SAFETY: an all-zero rlimit is a valid out-parameter; both calls only read/write it.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Waits (bounded) until `cond` holds.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn stats(ch: &ShmChannel) -> ferrocsp::Stats {
    ch.stats().expect("stats")
}

/// What a selection thread reports: the guard that fired and what it was (the message read,
/// or a name), its own CPU time over the wait, and when it returned.
#[derive(Debug)]
struct Outcome {
    fired: Result<(usize, String), Error>,
    cpu: Duration,
    done: Instant,
}

fn describe(r: Result<(usize, Selected<'_>), Error>) -> Result<(usize, String), Error> {
    r.map(|(i, what)| match what {
        Selected::Read(slot) => {
            let v = String::from_utf8_lossy(slot.buf()).into_owned();
            slot.finish().expect("finish");
            (i, v)
        }
        Selected::Wrote => (i, "wrote".into()),
        Selected::Poisoned => (i, "poisoned".into()),
        Selected::Local => (i, "local".into()),
    })
}

/// Selects over every channel of `chs` on a new thread (input guards, or output guards of
/// `b"out"`, with the ends given), waiting per `wait`; measures that thread's CPU time.
fn select_on_thread(
    chs: &Arc<Vec<ShmChannel>>,
    output: bool,
    ends: Option<Vec<u32>>,
    wait: impl FnOnce() -> Wait<'static> + Send + 'static,
) -> std::thread::JoinHandle<Outcome> {
    let chs = Arc::clone(chs);
    std::thread::spawn(move || {
        let fill = |out: &mut [u8]| out.copy_from_slice(b"out");
        let ops: Vec<SelOp<'_>> = chs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut op = if output { SelOp::write(c, 3, &fill) } else { SelOp::read(c) };
                op.end = ends.as_ref().map(|e| e[i]);
                op
            })
            .collect();
        let mut w = wait();
        let t0 = thread_cpu();
        let fired = describe(select(&ops, &mut w));
        Outcome { fired, cpu: thread_cpu() - t0, done: Instant::now() }
    })
}

/// Waits until the selection over `chs` is registered on every channel (input guards count
/// as waiting readers; rendezvous output guards as offers).
fn registered(chs: &[ShmChannel], output: bool) {
    wait_for("the selection to register everywhere", || {
        chs.iter().all(|c| {
            let s = stats(c);
            if output {
                s.writers_waiting == 1
            } else {
                s.readers_waiting == 1
            }
        })
    });
}

/// Lets the registered selection settle into its sleep, measures its thread's CPU time over
/// [`QUIET_WAIT`] of sleeping (its steps before are work, not waiting), then runs `event` and
/// returns the selection's outcome, checking it ended within [`PROMPT`] of the event.
fn sleep_then(
    t: std::thread::JoinHandle<Outcome>,
    event: impl FnOnce(),
) -> Result<(usize, String), Error> {
    std::thread::sleep(SETTLE);
    let clock = thread_clock(&t);
    let (c0, t0) = (cpu(clock), Instant::now());
    std::thread::sleep(QUIET_WAIT);
    assert_slept("the selecting thread", cpu(clock) - c0, t0.elapsed());
    end_with(t, event)
}

/// As [`sleep_then`] for a cooperative selection: its sleeping is done by the futex watcher
/// threads, so the whole process's CPU time is measured.
fn coop_sleep_then(
    t: std::thread::JoinHandle<Outcome>,
    event: impl FnOnce(),
) -> Result<(usize, String), Error> {
    std::thread::sleep(SETTLE);
    let (c0, t0) = (process_cpu(), Instant::now());
    std::thread::sleep(QUIET_WAIT);
    assert_slept("the process (its watchers)", process_cpu() - c0, t0.elapsed());
    end_with(t, event)
}

/// Runs `event`; the selection's outcome, checked to come within [`PROMPT`] of it.
fn end_with(
    t: std::thread::JoinHandle<Outcome>,
    event: impl FnOnce(),
) -> Result<(usize, String), Error> {
    let at = Instant::now();
    event();
    let out = within(LIMIT, move || t.join().expect("selection thread"));
    let late = out.done.saturating_duration_since(at);
    assert!(late < PROMPT, "the selection ended {late:?} after the event");
    out.fired
}

/// Time for a selection that registered to go to sleep (generous: a loaded machine).
const SETTLE: Duration = Duration::from_millis(300);

/// The CPU-time clock of thread `t` (still running: it waits for an event of the test).
fn thread_clock<T>(t: &std::thread::JoinHandle<T>) -> libc::clockid_t {
    use std::os::unix::thread::JoinHandleExt;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: the thread is alive (it waits for the test's event); clock is a valid out-param.
    assert_eq!(unsafe { libc::pthread_getcpuclockid(t.as_pthread_t(), &mut clock) }, 0);
    clock
}

/// A choice over `n` channels with nothing ready sleeps until its deadline.
fn times_out_asleep(n: usize) {
    let _one = serial();
    let chs = channels(n, 0);
    let started = Instant::now();
    let t = select_on_thread(&chs, false, None, || Wait::until(Some(Instant::now() + QUIET_WAIT)));
    let out = within(LIMIT, move || t.join().expect("selection thread"));
    assert!(matches!(out.fired, Err(Error::Timeout)), "{:?}", out.fired);
    let wall = out.done - started;
    assert!(wall >= QUIET_WAIT, "{wall:?}");
    assert!(wall < QUIET_WAIT + PROMPT, "the deadline was missed by far: {wall:?}");
    assert_slept(&format!("{n} channels"), out.cpu, wall);
    assert!(chs.iter().all(|c| stats(c).readers_waiting == 0), "the timeout withdrew all");
}

#[test]
fn a_choice_over_127_channels_sleeps() {
    times_out_asleep(127); // its channels and its cell: 128 words, one futex_waitv
}

#[test]
fn a_choice_over_128_channels_sleeps() {
    times_out_asleep(128);
}

#[test]
fn a_choice_over_200_channels_sleeps() {
    times_out_asleep(200);
}

#[test]
fn a_choice_over_1000_channels_sleeps() {
    times_out_asleep(1000);
}

/// A write on any one of 1,000 channels, by another thread, ends the sleep with that guard.
#[test]
fn a_write_on_any_of_1000_channels_wakes_the_choice() {
    let _one = serial();
    let chs = channels(1000, 0);
    for k in [999, 0, 500] {
        let t = select_on_thread(&chs, false, None, || Wait::until(None));
        registered(&chs, false);
        let w = Arc::clone(&chs);
        let fired = sleep_then(t, move || {
            std::thread::spawn(move || {
                write_by(&w[k], format!("to {k}").as_bytes(), Some(Instant::now() + LIMIT))
            });
        });
        assert_eq!(fired.expect("select"), (k, format!("to {k}")));
        assert!(chs.iter().all(|c| stats(c).readers_waiting == 0));
    }
}

/// The same with the writer in another process.
#[test]
fn a_write_by_another_process_wakes_the_choice() {
    let _one = serial();
    let chs = channels(1000, 0);
    let t = select_on_thread(&chs, false, None, || Wait::until(None));
    registered(&chs, false);
    let mut pid = 0;
    let fired = sleep_then(t, || {
        pid = fork(|| {
            let r = write_by(&chs[999], b"forked", Some(Instant::now() + LIMIT));
            i32::from(r.is_err())
        });
    });
    assert_eq!(fired.expect("select"), (999, "forked".into()));
    assert_eq!(reap(pid), 0);
}

/// Output guards on 1,000 rendezvous channels: a reader taking one offer fires the choice.
#[test]
fn a_reader_takes_one_of_1000_offers() {
    let _one = serial();
    let chs = channels(1000, 0);
    let t = select_on_thread(&chs, true, None, || Wait::until(None));
    registered(&chs, true);
    let mut reader = None;
    let fired = sleep_then(t, || {
        let r = Arc::clone(&chs);
        reader = Some(std::thread::spawn(move || {
            shm_support::read_by(&r[500], Some(Instant::now() + LIMIT))
        }));
    });
    assert_eq!(fired.expect("select"), (500, "wrote".into()));
    let reader = reader.expect("the reader was started");
    assert_eq!(reader.join().expect("reader").expect("read"), b"out");
    assert!(chs.iter().all(|c| stats(c).writers_waiting == 0), "every other offer withdrawn");
}

/// Output guards on 1,000 full buffered channels: room made on one fires the choice.
#[test]
fn room_on_one_of_1000_full_buffers_fires_the_choice() {
    let _one = serial();
    let chs = channels(1000, 1);
    for c in chs.iter() {
        write_by(c, b"old", Some(Instant::now())).expect("fill the buffer");
    }
    let t = select_on_thread(&chs, true, None, || Wait::until(None));
    let fired = sleep_then(t, || {
        let v = shm_support::read_by(&chs[999], Some(Instant::now() + LIMIT)).expect("read");
        assert_eq!(v, b"old");
    });
    assert_eq!(fired.expect("select"), (999, "wrote".into()));
    let deadline = Some(Instant::now() + LIMIT);
    assert_eq!(shm_support::read_by(&chs[999], deadline).expect("read"), b"out");
}

/// Poison of one of 1,000 channels ends the choice with that guard.
#[test]
fn poison_of_one_of_1000_channels_ends_the_choice() {
    let _one = serial();
    for (k, output) in [(0, false), (999, true)] {
        let chs = channels(1000, 0);
        let t = select_on_thread(&chs, output, None, || Wait::until(None));
        registered(&chs, output);
        let fired = sleep_then(t, || chs[k].poison().expect("poison"));
        assert_eq!(fired.expect("select"), (k, "poisoned".into()));
    }
}

/// The last live guard of 1,000 retiring (its writers, or for outputs its readers) ends a
/// choice with no deadline: every guard is dead.
#[test]
fn the_last_of_1000_guards_retiring_ends_the_choice() {
    let _one = serial();
    for output in [false, true] {
        let chs = channels(1000, 0);
        let kind = if output { EndKind::Reader } else { EndKind::Writer };
        let other = if output { EndKind::Writer } else { EndKind::Reader };
        let theirs: Vec<u32> = chs.iter().map(|c| c.new_end(kind).expect("end")).collect();
        let mine: Vec<u32> = chs.iter().map(|c| c.new_end(other).expect("end")).collect();
        for (c, &e) in chs.iter().zip(&theirs).take(999) {
            c.retire_end(e).expect("retire");
        }
        let t = select_on_thread(&chs, output, Some(mine), || Wait::until(None));
        registered(&chs[999..], output);
        let fired = sleep_then(t, || chs[999].retire_end(theirs[999]).expect("retire"));
        assert!(matches!(fired, Err(Error::Retired)), "{fired:?}");
    }
}

/// A thread's choice over 1,000 channels still asks its interrupt check every slice.
#[test]
fn an_interrupt_ends_a_choice_over_1000_channels() {
    let _one = serial();
    let chs = channels(1000, 0);
    // A static flag (the tests run one at a time: `serial`) keeps the check capture-less, so
    // leaking it for the `'static` wait allocates nothing (AddressSanitizer's leak check).
    static STOP: AtomicBool = AtomicBool::new(false);
    STOP.store(false, Ordering::Release);
    let t = select_on_thread(&chs, false, None, move || Wait {
        deadline: None,
        nowait: false,
        slice: Some(Duration::from_millis(50)),
        interrupted: Box::leak(Box::new(|| STOP.load(Ordering::Acquire))),
        sleeper: None,
    });
    registered(&chs, false);
    let fired = sleep_then(t, || STOP.store(true, Ordering::Release));
    assert!(matches!(fired, Err(Error::Interrupted)), "{fired:?}");
    assert!(chs.iter().all(|c| stats(c).readers_waiting == 0));
}

// --- cooperative waits: the futex watchers hold every word --------------------------------

/// Parks until the watcher wakes it (a stand-in for a scheduler's switch): only the watcher's
/// wake-up (or the deadline it was given) ends the sleep.
struct Parker;

struct Flag {
    set: AtomicBool,
    thread: std::thread::Thread,
}

impl ferrocsp::Wake for Flag {
    fn wake(&self) {
        self.set.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

impl Sleeper for Parker {
    fn sleep(&mut self, words: &[&AtomicU32], seen: &[u32], until: Option<Instant>) -> bool {
        let flag = Arc::new(Flag { set: AtomicBool::new(false), thread: std::thread::current() });
        let w = watch(words, seen, until, Waker::Custom(flag.clone())).expect("watch");
        while !flag.set.load(Ordering::Acquire) {
            std::thread::park();
        }
        drop(w);
        false
    }
}

/// A cooperative wait (no interrupt check: the scheduler's own).
fn coop_wait() -> Wait<'static> {
    Wait {
        deadline: None,
        nowait: false,
        slice: None,
        interrupted: Box::leak(Box::new(|| false)),
        sleeper: Some(Box::leak(Box::new(Parker))),
    }
}

/// A cooperative choice over 1,000 channels: the watcher threads sleep on all their change
/// counters (more than one `futex_waitv` takes), and each kind of event on one channel wakes
/// the choice: a write (channels #999, #0, #500), a reader taking an offer, poison, the last
/// live guard retiring.
#[test]
fn a_cooperative_choice_over_1000_channels_sleeps_and_wakes() {
    let _one = serial();
    for k in [999, 0, 500] {
        let chs = channels(1000, 0);
        let t = select_on_thread(&chs, false, None, coop_wait);
        registered(&chs, false);
        let fired = coop_sleep_then(t, || {
            write_by(&chs[k], b"coop", Some(Instant::now() + LIMIT)).expect("write");
        });
        assert_eq!(fired.expect("select"), (k, "coop".into()));
    }
    let chs = channels(1000, 0);
    let t = select_on_thread(&chs, true, None, coop_wait);
    registered(&chs, true);
    let mut reader = None;
    let fired = coop_sleep_then(t, || {
        let r = Arc::clone(&chs);
        reader = Some(std::thread::spawn(move || {
            shm_support::read_by(&r[700], Some(Instant::now() + LIMIT))
        }));
    });
    assert_eq!(fired.expect("select"), (700, "wrote".into()));
    let reader = reader.expect("the reader was started");
    assert_eq!(reader.join().expect("reader").expect("read"), b"out");
    let chs = channels(1000, 0);
    let t = select_on_thread(&chs, false, None, coop_wait);
    registered(&chs, false);
    let fired = coop_sleep_then(t, || chs[300].poison().expect("poison"));
    assert_eq!(fired.expect("select"), (300, "poisoned".into()));
    let chs = channels(1000, 0);
    let theirs: Vec<u32> = chs.iter().map(|c| c.new_end(EndKind::Writer).expect("end")).collect();
    let mine: Vec<u32> = chs.iter().map(|c| c.new_end(EndKind::Reader).expect("end")).collect();
    for (c, &e) in chs.iter().zip(&theirs).skip(1) {
        c.retire_end(e).expect("retire");
    }
    let t = select_on_thread(&chs, false, Some(mine), coop_wait);
    registered(&chs[..1], false);
    let fired = coop_sleep_then(t, || chs[0].retire_end(theirs[0]).expect("retire"));
    assert!(matches!(fired, Err(Error::Retired)), "{fired:?}");
}

/// A registration naming one word a full watcher already sleeps on, and a new one: the
/// watcher must not take both (one word too many for its `futex_waitv`), and the new word's
/// change must still wake it.
#[test]
fn a_watcher_never_takes_more_words_than_futex_waitv() {
    let _one = serial();
    let n = ferrocsp::shm::PER_WATCHER as u32 + 1;
    let words: Vec<AtomicU32> = (0..n).map(AtomicU32::new).collect();
    let (full, extra) = words.split_at(ferrocsp::shm::PER_WATCHER);
    let full: Vec<&AtomicU32> = full.iter().collect();
    let seen: Vec<u32> = full.iter().map(|w| w.load(Ordering::Acquire)).collect();
    let idle = Arc::new(Flag { set: AtomicBool::new(false), thread: std::thread::current() });
    let first = watch(&full, &seen, None, Waker::Custom(idle.clone())).expect("watch");
    let woken = Arc::new(Flag { set: AtomicBool::new(false), thread: std::thread::current() });
    let both = [full[0], &extra[0]];
    let (cpu0, started) = (process_cpu(), Instant::now());
    let seen2 = [seen[0], extra[0].load(Ordering::Acquire)];
    let second = watch(&both, &seen2, None, Waker::Custom(woken.clone())).expect("watch");
    std::thread::sleep(QUIET_WAIT);
    assert_slept("the watchers", process_cpu() - cpu0, started.elapsed());
    assert!(!woken.set.load(Ordering::Acquire), "nothing moved yet");
    extra[0].fetch_add(1, Ordering::AcqRel);
    futex_wake(&extra[0]);
    wait_for("the wake-up", || woken.set.load(Ordering::Acquire));
    assert!(!idle.set.load(Ordering::Acquire), "the other registration stays asleep");
    drop((first, second));
}

fn futex_wake(w: &AtomicU32) {
    // SAFETY: a plain FUTEX_WAKE on a valid, aligned word (shared, as the engine waits).
    unsafe {
        libc::syscall(libc::SYS_futex, w.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
    }
}

// --- a registration split over several watchers -------------------------------------------

#[derive(Default)]
struct Count(std::sync::atomic::AtomicUsize);

impl ferrocsp::Wake for Count {
    fn wake(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// 300 words: three watchers' worth.
fn many_words() -> Vec<AtomicU32> {
    (0..300).map(|_| AtomicU32::new(0)).collect()
}

fn bump(w: &AtomicU32) {
    w.fetch_add(1, Ordering::AcqRel);
    futex_wake(w);
}

/// Whichever of its parts move (here all three), the owner is woken once.
#[test]
fn a_split_registration_is_woken_once() {
    let _one = serial();
    let words = many_words();
    let refs: Vec<&AtomicU32> = words.iter().collect();
    let count = Arc::new(Count::default());
    let w = watch(&refs, &[0; 300], None, Waker::Custom(count.clone())).expect("watch");
    for i in [0, 150, 299] {
        bump(&words[i]);
    }
    wait_for("the wake-up", || count.0.load(Ordering::SeqCst) >= 1);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken once");
    drop(w);
}

/// A split registration's deadline wakes it once, on time.
#[test]
fn a_split_registration_wakes_at_its_deadline() {
    let _one = serial();
    let words = many_words();
    let refs: Vec<&AtomicU32> = words.iter().collect();
    let count = Arc::new(Count::default());
    let t0 = Instant::now();
    let until = Some(t0 + Duration::from_millis(200));
    let w = watch(&refs, &[0; 300], until, Waker::Custom(count.clone())).expect("watch");
    wait_for("the deadline", || count.0.load(Ordering::SeqCst) >= 1);
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(200) && took < PROMPT, "{took:?}");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken once");
    drop(w);
}

struct Looks(std::sync::atomic::AtomicUsize);

impl ferrocsp::shm::Quiet for Looks {
    fn quiet(&self) -> bool {
        self.0.fetch_add(1, Ordering::SeqCst);
        false
    }
}

/// The quiet hook of a split registration is asked every period while no part moved, and no
/// more once a word of another part than its own moved (that part wakes the owner).
#[test]
fn a_split_quiet_registration_is_looked_at_until_any_part_moves() {
    let _one = serial();
    let words = many_words();
    let refs: Vec<&AtomicU32> = words.iter().collect();
    let count = Arc::new(Count::default());
    let looks = Arc::new(Looks(std::sync::atomic::AtomicUsize::new(0)));
    let hook: Arc<dyn ferrocsp::shm::Quiet> = looks.clone();
    let period = Duration::from_millis(10);
    let w = ferrocsp::shm::watch_quiet(
        &refs,
        &[0; 300],
        None,
        Waker::Custom(count.clone()),
        Some((hook, period)),
    )
    .expect("watch");
    wait_for("three looks", || looks.0.load(Ordering::SeqCst) >= 3);
    assert_eq!(count.0.load(Ordering::SeqCst), 0, "a look does not wake the owner");
    bump(&words[299]);
    wait_for("the wake-up", || count.0.load(Ordering::SeqCst) >= 1);
    let seen = looks.0.load(Ordering::SeqCst);
    // The hook's own part is still registered (the owner has not dropped it yet).
    std::thread::sleep(Duration::from_millis(300));
    assert!(looks.0.load(Ordering::SeqCst) <= seen + 1, "looked at after a part moved");
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
    drop(w);
}

// --- no lost wake-up under load -------------------------------------------------------------

/// One selection after another over 200 channels (more words than one `futex_waitv` takes),
/// while two writers put 200 values each on channels picked at random: every value arrives
/// exactly once, and no selection waits for good on a write it slept through. As a thread
/// (its wait goes through the watchers) and cooperatively.
#[test]
fn selections_over_200_channels_miss_no_wake_up() {
    let _one = serial();
    const PER_WRITER: u32 = 200;
    for coop in [false, true] {
        let chs = channels(200, 0);
        let writers: Vec<_> = (0..2u32)
            .map(|w| {
                let chs = Arc::clone(&chs);
                std::thread::spawn(move || {
                    let mut x = 0x9e37_79b9u32.wrapping_mul(w + 1);
                    for i in 0..PER_WRITER {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        let v = (w * PER_WRITER + i).to_le_bytes();
                        let k = x as usize % chs.len();
                        if i % 8 == 0 {
                            // Now and then the selection runs dry and goes to sleep.
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        write_by(&chs[k], &v, Some(Instant::now() + LIMIT)).expect("write");
                    }
                })
            })
            .collect();
        let c = Arc::clone(&chs);
        let got = within(LIMIT, move || {
            let ops: Vec<SelOp<'_>> = c.iter().map(SelOp::read).collect();
            let mut got = Vec::new();
            for _ in 0..2 * PER_WRITER {
                let mut w = if coop { coop_wait() } else { Wait::until(None) };
                // A deadline far off: a missed wake-up fails by it, not by a hang.
                w.deadline = Some(Instant::now() + Duration::from_secs(20));
                match select(&ops, &mut w).expect("select") {
                    (_, Selected::Read(slot)) => {
                        got.push(u32::from_le_bytes(slot.buf().try_into().expect("4 bytes")));
                        slot.finish().expect("finish");
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            got
        });
        for w in writers {
            w.join().expect("writer");
        }
        let mut got = got;
        got.sort_unstable();
        assert_eq!(got, (0..2 * PER_WRITER).collect::<Vec<_>>(), "coop: {coop}");
        assert!(chs.iter().all(|c| stats(c).readers_waiting == 0));
    }
}
