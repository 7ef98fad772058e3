//! The roles a process (or a thread of the test process) plays in a trial: a writer, a
//! reader, an Alt reader over several channels, an Alt writer offering on several. Each logs
//! what it did (`log.rs`) and retires its ends when it is done, so the others see the stream
//! end; none waits without a deadline, so a hang shows as `fail::HANG`.
//!
//! Messages are numbered: bytes 0..8 are the id, the rest a pattern made from it, so a
//! message that arrives mixed with another's bytes is caught (`fail::GARBLED`). Both copies
//! (in and out) go in two halves through two calls of `buf()`: the second call is the
//! `write.buf` / `read.buf` fault point in the middle of a copy.

use std::ops::Range;
use std::time::{Duration, Instant};

use ferrocsp::shm::{select, SelOp, Selected, ShmChannel, Wait};
use ferrocsp::Error;

use crate::log::{fail, Ev, Log};

/// The longest any one operation may wait: past it, a survivor is taken to hang.
pub const HANG: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub enum Role {
    /// Writes `ids` on channel `ch`.
    Writer { ch: usize, ids: Range<u64> },
    /// Reads channel `ch` until it ends.
    Reader { ch: usize },
    /// Reads whichever of `chs` is ready, until all end.
    AltReader { chs: Vec<usize> },
    /// Writes `ids`, each on whichever of `chs` takes it first.
    AltWriter { chs: Vec<usize>, ids: Range<u64> },
}

impl Role {
    /// The channels it writes and those it reads (for its ends).
    pub fn uses(&self) -> (Vec<usize>, Vec<usize>) {
        match self {
            Role::Writer { ch, .. } => (vec![*ch], vec![]),
            Role::AltWriter { chs, .. } => (chs.clone(), vec![]),
            Role::Reader { ch } => (vec![], vec![*ch]),
            Role::AltReader { chs } => (vec![], chs.clone()),
        }
    }
}

pub fn message(id: u64, len: usize) -> Vec<u8> {
    let mut m: Vec<u8> = (0..len).map(|i| (id as u8) ^ (i as u8).wrapping_mul(31)).collect();
    m[..8].copy_from_slice(&id.to_le_bytes());
    m
}

fn parse(m: &[u8]) -> Option<u64> {
    let id = u64::from_le_bytes(m.get(..8)?.try_into().ok()?);
    (message(id, m.len()) == m).then_some(id)
}

/// What ended a role early (a failure bit) or normally (0).
fn failure(e: Error) -> u64 {
    match e {
        Error::Poisoned | Error::Retired => 0,
        Error::Timeout | Error::Interrupted => fail::HANG,
        _ => fail::UNEXPECTED,
    }
}

/// How an error ends a role: (by poison, failure bits).
fn end(e: Error) -> (bool, u64) {
    (e == Error::Poisoned, failure(e))
}

fn deadline() -> Option<Instant> {
    Some(Instant::now() + HANG)
}

/// An Alt with a deadline waits for it even when every guard is dead (the deadline is a
/// `Timeout` guard), so an Alt waits with none, and gives up as interrupted after `HANG`.
fn hang_check() -> impl FnMut() -> bool {
    let until = Instant::now() + HANG;
    move || Instant::now() >= until
}

fn no_deadline(check: &mut dyn FnMut() -> bool) -> Wait<'_> {
    Wait {
        deadline: None,
        nowait: false,
        slice: Some(Duration::from_millis(100)),
        interrupted: check,
        sleeper: None,
    }
}

/// Plays `role` as log row `row` on `chans`; returns its failure bits (0: it ended well).
/// A role that ends by poison poisons every channel it uses, as a process that ends by
/// `ChannelPoisoned` does (DESIGN), so the poison a death causes spreads to the network.
pub fn play(role: &Role, row: usize, chans: &[ShmChannel], log: &Log, len: usize) -> u64 {
    let (poisoned, bits) = play_until_end(role, row, chans, log, len);
    if poisoned {
        let (writes, reads) = role.uses();
        for c in writes.into_iter().chain(reads) {
            let _ = chans[c].poison();
        }
    }
    bits
}

fn play_until_end(
    role: &Role,
    row: usize,
    chans: &[ShmChannel],
    log: &Log,
    len: usize,
) -> (bool, u64) {
    match role {
        Role::Writer { ch, ids } => {
            for id in ids.clone() {
                log.push(row, Ev::Try, id);
                match write(&chans[*ch], &message(id, len)) {
                    Ok(()) => log.push(row, Ev::Wrote, id),
                    Err(e) => {
                        log.push(row, Ev::WriteFailed, id);
                        return end(e);
                    }
                }
            }
            (false, 0)
        }
        Role::Reader { ch } => loop {
            let ch = &chans[*ch];
            match ch.begin_read(&mut Wait::until(deadline())) {
                Ok(slot) => {
                    if let Err(e) = take(slot, row, log) {
                        return e;
                    }
                }
                Err(e) => return end(e),
            }
        },
        Role::AltReader { chs } => loop {
            let ops: Vec<SelOp<'_>> = chs.iter().map(|&c| SelOp::read(&chans[c])).collect();
            match select(&ops, &mut no_deadline(&mut hang_check())) {
                Ok((_, Selected::Read(slot))) => {
                    if let Err(e) = take(slot, row, log) {
                        return e;
                    }
                }
                Ok((_, Selected::Poisoned)) => return (true, 0),
                Ok(_) => return (false, fail::UNEXPECTED),
                Err(e) => return end(e),
            }
        },
        Role::AltWriter { chs, ids } => {
            for id in ids.clone() {
                log.push(row, Ev::Try, id);
                match alt_write(chans, chs, &message(id, len)) {
                    Ok(true) => log.push(row, Ev::Wrote, id),
                    Ok(false) => {
                        log.push(row, Ev::WriteFailed, id);
                        return (true, 0);
                    }
                    Err(e) => {
                        log.push(row, Ev::WriteFailed, id);
                        return e;
                    }
                }
            }
            (false, 0)
        }
    }
}

/// One Alt over output guards on `chs`, all offering `msg`: Ok(true) written, Ok(false) a
/// poisoned guard chosen, Err(failure bits).
fn alt_write(chans: &[ShmChannel], chs: &[usize], msg: &[u8]) -> Result<bool, (bool, u64)> {
    let fill = |b: &mut [u8]| b.copy_from_slice(msg);
    let ops: Vec<SelOp<'_>> =
        chs.iter().map(|&c| SelOp::write(&chans[c], msg.len(), &fill)).collect();
    let chosen = select(&ops, &mut no_deadline(&mut hang_check()));
    match chosen {
        Ok((_, Selected::Wrote)) => Ok(true),
        Ok((_, Selected::Poisoned)) => Ok(false),
        Ok(_) => Err((false, fail::UNEXPECTED)),
        Err(e) => Err(end(e)),
    }
}

fn write(ch: &ShmChannel, msg: &[u8]) -> Result<(), Error> {
    // One deadline for the whole write: a hang shows within `HANG`.
    let until = deadline();
    let mut slot = ch.begin_write(msg.len(), &mut Wait::until(until))?;
    let half = msg.len() / 2;
    slot.buf()[..half].copy_from_slice(&msg[..half]);
    slot.buf()[half..].copy_from_slice(&msg[half..]);
    slot.commit(&mut Wait::until(until))
}

/// Copies a claimed message out (in two halves), logs it, releases it.
pub fn take(slot: ferrocsp::shm::ReadSlot<'_>, row: usize, log: &Log) -> Result<(), (bool, u64)> {
    let first = slot.buf();
    let (len, half) = (first.len(), first.len() / 2);
    let mut m = vec![0u8; len];
    m[..half].copy_from_slice(&first[..half]);
    m[half..].copy_from_slice(&slot.buf()[half..]);
    let Some(id) = parse(&m) else { return Err((false, fail::GARBLED)) };
    log.push(row, Ev::Copied, id);
    match slot.finish() {
        Ok(()) => {
            log.push(row, Ev::Read, id);
            Ok(())
        }
        Err(e) => {
            log.push(row, Ev::ReadFailed, id);
            Err(end(e))
        }
    }
}
