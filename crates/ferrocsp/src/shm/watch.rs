//! Waiting on shared memory without a thread per waiter: a process's futex watchers.
//!
//! A thread waits for a shared channel by sleeping on futex words of its segment
//! ([`super::Wait::block`]). A cooperative process (a greenlet, an asyncio task) cannot sleep
//! its thread, since others run on it; it hands the words it waits on and its [`Waker`] to
//! [`watch`] and switches away. One *watcher* thread sleeps on up to [`PER_WATCHER`] distinct
//! words at once (`futex_waitv`) and wakes every registration whose word moved or whose
//! deadline passed; more distinct words start another watcher. Cooperative waits only ever
//! watch channels' change counters (`seq`; see `Wait::coarse` and the `coop` count in the
//! channel header), so the number of watcher threads is bounded by the number of distinct
//! channels being waited on, divided by `PER_WATCHER`, not by the number of waiters.
//!
//! A registration of more words than fit one watcher (a choice over hundreds of channels, or
//! a thread's choice over more than `futex_waitv` takes: `Wait::block`) is split into *parts*,
//! one per watcher it needs; the parts share one [`Once`] waker, the deadline and the quiet
//! hook ride on the first part only, and the hook looks at the other parts' words first.
//!
//! Invariants:
//! - A watcher never holds more than [`PER_WATCHER`] distinct words (with its bell, what one
//!   `futex_waitv` takes): words are only added by [`watch_quiet`], which counts them under the
//!   registry's lock, held until every part is inserted (removals only make room meanwhile).
//! - A registration's words stay mapped while it is registered: its [`Watch`] handle borrows
//!   the channels for as long as it lives (`Watch<'a>`), and dropping it unregisters under the
//!   watcher's lock, after which that watcher never reads its words again.
//! - A registration is woken at most once, by whoever removes it from the table (the watcher
//!   finding it due, never the owner's drop), and never with the table's lock held.
//! - The watchers are this process's (`fork.rs`): a child made by `fork` starts its own
//!   instead of registering with threads it did not inherit, under a lock no thread of its
//!   parent can hold.
//! - A watcher sleeps only on words whose value every one of their registrations saw: a word
//!   that already moved for some registration wakes that one at once instead.
//! - The watcher's own `bell` word is bumped (and woken) by a registration that adds a word it
//!   does not sleep on or an earlier deadline, so either is taken into account at once.
//! - A registration made with a [`Quiet`] hook (`watch_quiet`) is looked at every period while
//!   none of its words moved (first within its period plus [`QUIET_NAP`]: its timer rings no
//!   bell, and a watcher that ever had a hook sleeps at most that long): the watcher checks its words under the table's lock, then calls
//!   the hook with no lock held. The hook never runs again for a registration removed before
//!   that check (it may run once more just after the owner removed it: it must cope).
//! - Before it sleeps, a watcher spins for the engine's spin budget (as a waiting thread
//!   would): the waiters' own threads run other processes and never spin. It reads the words
//!   only under the table's lock (a removed registration's mapping may be gone); the kernel
//!   alone sees the addresses of its sleep, and copes with a stale one.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::fork::PerProcess;
use crate::Waker;

/// Distinct words one watcher thread sleeps on (`futex_waitv` takes 128; one is its bell).
pub const PER_WATCHER: usize = super::sys::FUTEX_WAITV_MAX - 1;

/// An address of a futex word in a mapping that outlives every registration naming it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Word(usize);

impl Word {
    fn get(self) -> &'static AtomicU32 {
        // SAFETY: a `Word` is only dereferenced while a registration naming it is in the table
        // (under the watcher's lock or from the sleeping thread, which only passes addresses
        // to the kernel), and the registration's `Watch` keeps the mapping alive until it is
        // removed (module invariants). The 'static lifetime never escapes this module.
        unsafe { &*(self.0 as *const AtomicU32) }
    }
}

struct Reg {
    words: Vec<(Word, u32)>,
    until: Option<Instant>,
    waker: Waker,
    /// The quiet hook, its period and when it is next due.
    quiet: Option<(Arc<dyn Quiet>, Duration, Instant)>,
}

/// A look at a registration whose words have not moved (see [`watch_quiet`]). Deadlock
/// detection across processes confirms a cooperative wait with it, as a thread's quiet sleep
/// slice confirms the thread's wait (`slice_was_quiet`), without waking the waiter.
pub trait Quiet: Send + Sync {
    /// Called by the watcher thread, with no lock of the watcher held, once per period during
    /// which the registration stayed registered: its words were all found unchanged from the
    /// values the registration saw, after the previous call returned (or after it was
    /// registered). May be called once more after the owner removed the registration. Returns
    /// true to wake the registration now, as if a word had moved.
    fn quiet(&self) -> bool;
}

struct Table {
    regs: HashMap<u64, Reg>,
    /// The registrations naming each word, by the value they saw it with: the words the
    /// watcher sleeps on. A word moved for every registration under another value than its
    /// current one, so a change is found without looking at the waiters that it does not wake.
    words: HashMap<Word, HashMap<u32, HashSet<u64>>>,
    /// The registrations with a deadline, earliest first.
    deadlines: BTreeSet<(Instant, u64)>,
    /// The registrations with a quiet hook, by when it is next due.
    quiet: BTreeSet<(Instant, u64)>,
    /// The deadline the watcher sleeps until (None: none, or it is awake).
    sleeping_until: Option<Instant>,
    /// Whether the watcher is asleep (or about to be) on the words it last listed.
    asleep: bool,
    /// Whether a quiet hook was ever registered here (then the watcher naps: `QUIET_NAP`).
    quiet_used: bool,
    next: u64,
}

impl Table {
    /// Adds a registration; returns whether the watcher must be told (a word it does not
    /// sleep on, or a deadline earlier than the one it sleeps until).
    fn insert(&mut self, id: u64, reg: Reg) -> bool {
        let mut bell = !self.asleep;
        for (x, seen) in &reg.words {
            let by_value = self.words.entry(*x).or_default();
            bell |= by_value.is_empty();
            by_value.entry(*seen).or_default().insert(id);
        }
        if let Some(u) = reg.until {
            self.deadlines.insert((u, id));
            bell |= self.sleeping_until.is_none_or(|s| u < s);
        }
        if let Some((_, _, next)) = &reg.quiet {
            // No bell for a look's time: a watcher that has quiet hooks never sleeps longer
            // than `QUIET_NAP` (see `run`), and ringing on every cooperative sleep cost each
            // one a wake-up of this thread.
            self.quiet.insert((*next, id));
            self.quiet_used = true;
        }
        self.regs.insert(id, reg);
        bell
    }

    fn remove(&mut self, id: u64) -> Option<Reg> {
        let reg = self.regs.remove(&id)?;
        for (x, seen) in &reg.words {
            if let Some(by_value) = self.words.get_mut(x) {
                if let Some(ids) = by_value.get_mut(seen) {
                    ids.remove(&id);
                    if ids.is_empty() {
                        by_value.remove(seen);
                    }
                }
                if by_value.is_empty() {
                    self.words.remove(x);
                }
            }
        }
        if let Some(u) = reg.until {
            self.deadlines.remove(&(u, id));
        }
        if let Some((_, _, next)) = &reg.quiet {
            self.quiet.remove(&(*next, id));
        }
        Some(reg)
    }

    /// Whether any registration is due (see `due`), without collecting them.
    fn any_moved(&self, now: Instant) -> bool {
        self.deadlines.first().is_some_and(|(u, _)| *u <= now)
            || self.words.iter().any(|(x, by_value)| {
                let v = x.get().load(Ordering::Acquire);
                by_value.keys().any(|s| *s != v)
            })
    }

    /// The registrations due: past their deadline, or one of whose words moved.
    fn due(&self, now: Instant) -> Vec<u64> {
        let mut out: Vec<u64> =
            self.deadlines.iter().take_while(|(u, _)| *u <= now).map(|(_, id)| *id).collect();
        for (x, by_value) in &self.words {
            let v = x.get().load(Ordering::Acquire);
            for (_, ids) in by_value.iter().filter(|(s, _)| **s != v) {
                out.extend(ids);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The quiet hooks due at `now` (call right after removing what `due` found: the others'
    /// words are unchanged), each rescheduled one period on.
    fn quiet_due(&mut self, now: Instant) -> Vec<(u64, Arc<dyn Quiet>)> {
        let ids: Vec<u64> =
            self.quiet.iter().take_while(|(at, _)| *at <= now).map(|(_, id)| *id).collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some((hook, period, next)) = self.regs.get_mut(&id).and_then(|r| r.quiet.as_mut())
            else {
                continue;
            };
            self.quiet.remove(&(*next, id));
            *next = now + *period;
            self.quiet.insert((*next, id));
            out.push((id, Arc::clone(hook)));
        }
        out
    }

    /// When the watcher must look next without a word moving: the earliest deadline or hook.
    fn next_look(&self) -> Option<Instant> {
        let d = self.deadlines.first().map(|(u, _)| *u);
        let q = self.quiet.first().map(|(u, _)| *u);
        match (d, q) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The longest a watcher that has had quiet hooks sleeps: a hook's timer rings no bell, so a
/// look due meanwhile waits at most this long.
pub const QUIET_NAP: Duration = Duration::from_millis(250);

struct Watcher {
    table: Mutex<Table>,
    /// Bumped and woken whenever the table changes in a way the sleeping thread must see.
    bell: AtomicU32,
}

fn lock(m: &Mutex<Table>) -> MutexGuard<'_, Table> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every watcher this process started (never stopped: an idle one sleeps on its bell).
///
/// A child made by `fork` inherits its parent's registry but none of its threads (and maybe a
/// lock another thread held): it must not use them. So the registry is per process
/// (`fork.rs`): a child starts with none and starts its own watchers; the inherited one is
/// left alone, leaked.
static WATCHERS: PerProcess<Mutex<Vec<Arc<Watcher>>>> = PerProcess::new(|| Mutex::new(Vec::new()));

fn watchers() -> &'static Mutex<Vec<Arc<Watcher>>> {
    &WATCHERS
}

/// A registration made by [`watch`]; dropping it unregisters (if not woken already).
pub struct Watch<'a> {
    /// Its parts: each watcher it is registered with, and its id there.
    parts: Vec<(Arc<Watcher>, u64)>,
    _words: std::marker::PhantomData<&'a AtomicU32>,
}

impl std::fmt::Debug for Watch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<u64> = self.parts.iter().map(|(_, id)| *id).collect();
        f.debug_struct("Watch").field("ids", &ids).finish_non_exhaustive()
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        for (watcher, id) in &self.parts {
            let removed = lock(&watcher.table).remove(*id);
            drop(removed); // its waker, outside the lock
        }
    }
}

/// The one waker of a registration split into parts: whichever part is due first wakes the
/// owner, the others find nothing left to wake (module invariants: woken at most once).
struct Once(Mutex<Option<Waker>>);

impl crate::Wake for Once {
    fn wake(&self) {
        let w = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = w {
            wake(w);
        }
    }
}

/// The quiet hook of a split registration, on its first part: the watcher found that part's
/// words unchanged; the other parts' are looked at here (each under its watcher's lock, while
/// it is still registered, so their mappings are alive) before the owner's hook is asked.
struct AllQuiet {
    hook: Arc<dyn Quiet>,
    others: Vec<(Arc<Watcher>, u64)>,
}

impl Quiet for AllQuiet {
    fn quiet(&self) -> bool {
        let unmoved = self.others.iter().all(|(w, id)| {
            let t = lock(&w.table);
            t.regs
                .get(id)
                .is_some_and(|r| r.words.iter().all(|(x, s)| x.get().load(Ordering::Acquire) == *s))
        });
        // A part that moved (or was woken) wakes the owner itself: no look for this period.
        unmoved && self.hook.quiet()
    }
}

/// Wakes `waker` once any `words[i]` differs from `seen[i]` (or after a futex wake-up on one
/// of them), or once `until` has passed. Spurious wake-ups are possible: the woken party
/// re-checks whatever it waits for. Fails only if no watcher thread can be started.
pub fn watch<'a>(
    words: &[&'a AtomicU32],
    seen: &[u32],
    until: Option<Instant>,
    waker: Waker,
) -> std::io::Result<Watch<'a>> {
    watch_quiet(words, seen, until, waker, None)
}

/// [`watch`], and (given `quiet`: a hook and its period) calls the hook every period while the
/// registration stays registered with none of its words moved (see [`Quiet`]).
pub fn watch_quiet<'a>(
    words: &[&'a AtomicU32],
    seen: &[u32],
    until: Option<Instant>,
    waker: Waker,
    quiet: Option<(Arc<dyn Quiet>, Duration)>,
) -> std::io::Result<Watch<'a>> {
    let words: Vec<(Word, u32)> =
        words.iter().zip(seen).map(|(w, &s)| (Word(std::ptr::from_ref(*w) as usize), s)).collect();
    // Held until every part is inserted: nothing else adds words meanwhile (module invariants).
    let mut all = watchers().lock().unwrap_or_else(|e| e.into_inner());
    let mut groups = split(&all, words);
    // New watchers are numbered from `all.len()` on, in order: start them.
    while groups.last().is_some_and(|(at, _)| *at >= all.len()) {
        all.push(start()?);
    }
    let waker = if groups.len() > 1 {
        Waker::Custom(Arc::new(Once(Mutex::new(Some(waker)))))
    } else {
        waker
    };
    // The first part carries the deadline and the hook; it goes in last, as its hook names
    // the others.
    let mut parts = Vec::with_capacity(groups.len());
    for (at, words) in groups.drain(1..) {
        let w = Arc::clone(&all[at]);
        let waker = match &waker {
            Waker::Custom(c) => Waker::Custom(Arc::clone(c)),
            Waker::Thread(t) => Waker::Thread(t.clone()),
        };
        let id = insert(&w, Reg { words, until: None, waker, quiet: None });
        parts.push((w, id));
    }
    let quiet = quiet.map(|(hook, period)| {
        let hook: Arc<dyn Quiet> = if parts.is_empty() {
            hook
        } else {
            let others = parts.iter().map(|(w, id)| (Arc::clone(w), *id)).collect();
            Arc::new(AllQuiet { hook, others })
        };
        (hook, period, Instant::now() + period)
    });
    let (at, words) = groups.pop().unwrap_or((0, Vec::new()));
    let w = match all.get(at) {
        Some(w) => Arc::clone(w),
        None => {
            // No words at all (a wait on its deadline only): any watcher keeps the time.
            let w = start()?;
            all.push(Arc::clone(&w));
            w
        }
    };
    let id = insert(&w, Reg { words, until, waker, quiet });
    parts.insert(0, (w, id));
    Ok(Watch { parts, _words: std::marker::PhantomData })
}

/// Adds a registration to watcher `w`'s table, ringing its bell if it must look; its id.
fn insert(w: &Watcher, reg: Reg) -> u64 {
    let (id, bell) = {
        let mut t = lock(&w.table);
        let id = t.next;
        t.next += 1;
        let bell = t.insert(id, reg);
        (id, bell)
    };
    if bell {
        w.bell.fetch_add(1, Ordering::AcqRel);
        super::sys::futex_wake_all(&w.bell);
    }
    id
}

/// Splits a registration's words over the watchers `all` (the registry's lock held), as
/// (watcher index, its words), by index: a word some watcher already sleeps on goes to that
/// one; a new word to a watcher with room, one this registration uses already first; the rest
/// to new watchers, numbered from `all.len()` on, [`PER_WATCHER`] each. Words that fit one
/// watcher go there whole ([`fits_one`]).
fn split(all: &[Arc<Watcher>], words: Vec<(Word, u32)>) -> Vec<(usize, Vec<(Word, u32)>)> {
    if let Some(i) = fits_one(all, &words) {
        return vec![(i, words)];
    }
    let mut room: Vec<usize> = Vec::with_capacity(all.len());
    let mut at: HashMap<Word, usize> = HashMap::with_capacity(words.len());
    for (i, w) in all.iter().enumerate() {
        let t = lock(&w.table);
        room.push(PER_WATCHER.saturating_sub(t.words.len()));
        for (x, _) in &words {
            if t.words.contains_key(x) {
                at.entry(*x).or_insert(i);
            }
        }
    }
    let mut used: Vec<usize> = at.values().copied().collect();
    used.sort_unstable();
    used.dedup();
    let mut fresh = 0usize; // words given to new watchers so far
    let mut groups: std::collections::BTreeMap<usize, Vec<(Word, u32)>> = Default::default();
    for (x, seen) in words {
        let i = match at.get(&x) {
            Some(&i) => i,
            None => {
                let i = used.iter().copied().find(|&i| room[i] > 0).or_else(|| {
                    let i = (0..room.len()).find(|&i| room[i] > 0)?;
                    used.push(i);
                    Some(i)
                });
                let i = match i {
                    Some(i) => {
                        room[i] -= 1;
                        i
                    }
                    None => {
                        fresh += 1;
                        all.len() + (fresh - 1) / PER_WATCHER
                    }
                };
                at.insert(x, i); // a word named twice goes where it went first
                i
            }
        };
        groups.entry(i).or_default().push((x, seen));
    }
    groups.into_iter().collect()
}

/// The common case, as cheap as before registrations were split: the one watcher that can
/// take all of `words` (a few channels' counters), preferring one that already sleeps on
/// some of them. None: a new watcher or several are needed ([`split`]).
fn fits_one(all: &[Arc<Watcher>], words: &[(Word, u32)]) -> Option<usize> {
    if words.len() > PER_WATCHER {
        return None;
    }
    let mut roomy = None;
    for (i, w) in all.iter().enumerate() {
        let t = lock(&w.table);
        let missing = words.iter().filter(|(x, _)| !t.words.contains_key(x)).count();
        if t.words.len() + missing > PER_WATCHER {
            continue;
        }
        if missing < words.len() {
            return Some(i);
        }
        roomy = roomy.or(Some(i));
    }
    roomy
}

/// Starts a new, empty watcher thread.
fn start() -> std::io::Result<Arc<Watcher>> {
    let w = Arc::new(Watcher {
        table: Mutex::new(Table {
            regs: HashMap::new(),
            words: HashMap::new(),
            deadlines: BTreeSet::new(),
            quiet: BTreeSet::new(),
            sleeping_until: None,
            asleep: false,
            quiet_used: false,
            next: 0,
        }),
        bell: AtomicU32::new(0),
    });
    let mine = Arc::clone(&w);
    std::thread::Builder::new().name("ferrocsp-shm-watch".into()).spawn(move || run(&mine))?;
    Ok(w)
}

/// How many watcher threads this process has started.
pub fn watcher_threads() -> usize {
    watchers().lock().unwrap_or_else(|e| e.into_inner()).len()
}

/// The watcher thread: sleep on every registered word and the bell, wake what is due.
fn run(w: &Watcher) {
    loop {
        let bell = w.bell.load(Ordering::Acquire);
        let mut due = Vec::new();
        let mut hooks = Vec::new();
        let mut words: Vec<&AtomicU32> = Vec::new();
        let mut seen: Vec<u32> = Vec::new();
        let mut until: Option<Instant> = None;
        {
            let mut t = lock(&w.table);
            t.asleep = false;
            let now = Instant::now();
            for id in t.due(now) {
                due.extend(t.remove(id).map(|r| r.waker));
            }
            if due.is_empty() {
                hooks = t.quiet_due(now);
            }
            if due.is_empty() && hooks.is_empty() {
                until = t.next_look();
                if t.quiet_used {
                    // A quiet hook registered while this thread sleeps rings no bell: nap.
                    let nap = now + QUIET_NAP;
                    until = Some(until.map_or(nap, |u| u.min(nap)));
                }
                // Sleep on the values the registrations saw: a word that moved since makes
                // the futex return at once, so no change is lost.
                for (x, by_value) in &t.words {
                    if let Some(s) = by_value.keys().next() {
                        words.push(x.get());
                        seen.push(*s);
                    }
                }
                // From now on a registration rings the bell only for what we do not watch.
                t.asleep = true;
                t.sleeping_until = until;
            }
        }
        if !due.is_empty() {
            for waker in due {
                wake(waker);
            }
            continue; // the table may have changed meanwhile: look again before sleeping
        }
        if !hooks.is_empty() {
            for (id, hook) in hooks {
                if hook.quiet() {
                    let removed = lock(&w.table).remove(id);
                    if let Some(r) = removed {
                        wake(r.waker);
                    }
                }
            }
            continue;
        }
        words.push(&w.bell);
        seen.push(bell);
        // The engine's short spin, here rather than in the waiters (whose thread runs other
        // processes): a counterpart that answers within microseconds costs no system call.
        // Words are read under the table's lock only: outside it a registration may be gone
        // and its channel unmapped.
        let moved =
            || w.bell.load(Ordering::Acquire) != bell || lock(&w.table).any_moved(Instant::now());
        if crate::spin_until(moved, crate::spin_budget()) {
            continue;
        }
        let timeout = until.map(|u| u.saturating_duration_since(Instant::now()));
        if words.len() == 1 {
            super::sys::futex_wait(&w.bell, bell, timeout);
        } else {
            super::sys::futex_wait_any(&words, &seen, timeout);
        }
    }
}

fn wake(waker: Waker) {
    match waker {
        Waker::Thread(t) => t.unpark(),
        Waker::Custom(c) => c.wake(),
    }
}
