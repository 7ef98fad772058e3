//! The accounting of one trial: from every process's log and the ring snapshots, each value
//! is delivered exactly once, or provably lost with the dead process, or (buffered) dropped
//! by the poison its death caused while it sat in the buffer; never duplicated, and never
//! delivered when its write raised.
//!
//! "Provably lost with the dead process": the dead process is the only one that can hold a
//! value nobody else read, and it holds at most one: the entry it held `READING` in the
//! snapshot taken while it was stopped, or a value its log shows copied out and not yet
//! returned, or an Alt's offer it fired and died before claiming (both happen under the
//! channel's lock: the entry was `OFFERED` when it stopped, its Alt was told it wrote, and
//! the channel is poisoned `OwnerDied`).

use std::collections::HashMap;

use ferrocsp::shm::{PoisonCause, ShmChannel};

use crate::inspect::Seen;
use crate::log::{Ev, Log};

/// What happened to the values of one trial.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tally {
    /// Values read exactly once (their write returned Ok, or the dead writer's last one).
    pub delivered: usize,
    /// Values whose write returned Ok held by the dead process when it died.
    pub lost_with_dead: usize,
    /// Values whose write returned Ok still buffered when their channel was poisoned.
    pub dropped_by_poison: usize,
    /// Writes that raised (nothing delivered).
    pub failed_writes: usize,
}

/// What the harness knows besides the logs.
pub struct Facts<'a> {
    pub rows: usize,
    /// The victim's row and pid, if it was killed.
    pub dead: Option<(usize, u32)>,
    /// Each channel's ring while the victim was stopped (empty if it was not).
    pub at_stop: &'a [Vec<Seen>],
    /// Each channel's ring once every process was gone.
    pub at_end: &'a [Vec<Seen>],
    pub chans: &'a [ShmChannel],
}

pub fn check(log: &Log, f: &Facts<'_>) -> Result<Tally, String> {
    let l = ShmChannel::layout_for_tests();
    let mut reads: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut tried: HashMap<u64, usize> = HashMap::new();
    let (mut wrote, mut failed) = (Vec::new(), Vec::new());
    let mut copied_by_dead = Vec::new();
    for r in 0..f.rows {
        let ev = log.events(r);
        for &(kind, id) in &ev {
            match kind {
                Ev::Try => {
                    if let Some(other) = tried.insert(id, r) {
                        return Err(format!("id {id} tried by rows {other} and {r}"));
                    }
                }
                Ev::Wrote => wrote.push(id),
                Ev::WriteFailed => failed.push(id),
                Ev::Read => reads.entry(id).or_default().push(r),
                Ev::Copied
                    if f.dead.is_some_and(|d| d.0 == r)
                        && !ev.contains(&(Ev::Read, id))
                        && !ev.contains(&(Ev::ReadFailed, id)) =>
                {
                    copied_by_dead.push(id);
                }
                _ => {}
            }
        }
    }
    // What the dead process held: its claimed entry, or a value copied and not returned.
    let mut held = copied_by_dead;
    if let Some((_, pid)) = f.dead {
        for s in f.at_stop.iter().flatten() {
            // (An entry it released `TAKEN` it had copied out: its log says so.)
            if s.owner == pid && s.state == l.entry_reading {
                held.extend(s.id);
            }
        }
    }
    // An offer still `OFFERED` when the victim stopped holding its channel's lock (the
    // channel ends `OwnerDied`), which its Alt was told it wrote and nobody read: only the
    // victim can have fired it (a live reader claims and reads what it fires, and nobody
    // else could fire it under that lock). The entry itself may be withdrawn after the death
    // (a later look finds its cell fired for a selection that is over), so the stop's ring
    // is the proof.
    for (ring, ch) in f.at_stop.iter().zip(f.chans) {
        if ch.poison_cause() == Some(PoisonCause::OwnerDied) {
            let offered = ring.iter().filter(|s| s.state == l.entry_offered).filter_map(|s| s.id);
            held.extend(offered.filter(|id| wrote.contains(id) && !reads.contains_key(id)));
        }
    }
    held.sort_unstable();
    held.dedup();
    if held.len() > 1 {
        return Err(format!("the dead process held {held:?}: more than one value"));
    }
    let mut t = Tally { failed_writes: failed.len(), ..Tally::default() };
    for (id, by) in &reads {
        if by.len() > 1 {
            return Err(format!("id {id} read {} times, by rows {by:?}", by.len()));
        }
        if !tried.contains_key(id) {
            return Err(format!("id {id} read by row {} but never written", by[0]));
        }
        if failed.contains(id) {
            return Err(format!("id {id} delivered to row {} though its write raised", by[0]));
        }
        if held.contains(id) {
            return Err(format!("id {id} read by row {} and held by the dead process", by[0]));
        }
        t.delivered += 1;
    }
    for id in &wrote {
        if reads.contains_key(id) {
            continue;
        }
        if held.contains(id) {
            t.lost_with_dead += 1;
            continue;
        }
        let buffered = f.at_end.iter().zip(f.chans).any(|(ring, ch)| {
            ch.capacity() > 0
                && ch.is_poisoned()
                && ring.iter().any(|s| s.id == Some(*id) && s.state == l.entry_ready)
        });
        if buffered {
            t.dropped_by_poison += 1;
            continue;
        }
        let seen: Vec<_> = (0..f.rows)
            .flat_map(|r| log.events(r).into_iter().filter(|e| e.1 == *id).map(move |e| (r, e.0)))
            .collect();
        let rings = |at: &[Vec<Seen>]| -> Vec<Vec<Seen>> {
            at.iter().map(|r| r.iter().filter(|s| s.id == Some(*id)).copied().collect()).collect()
        };
        return Err(format!(
            "id {id}: its write returned Ok, and it was never delivered (events {seen:?}, \
             at stop {:?}, at end {:?}, causes {:?})",
            rings(f.at_stop),
            rings(f.at_end),
            f.chans.iter().map(ShmChannel::poison_cause).collect::<Vec<_>>()
        ));
    }
    // Every live writer's write ended one way or the other.
    for (id, r) in &tried {
        let dead_row = f.dead.is_some_and(|d| d.0 == *r);
        if !dead_row && !wrote.contains(id) && !failed.contains(id) {
            return Err(format!("id {id}: row {r}'s write never returned"));
        }
    }
    Ok(t)
}

/// Whether `c` is a poison a death may cause.
pub fn death_cause(c: PoisonCause) -> bool {
    matches!(c, PoisonCause::OwnerDied | PoisonCause::PeerDied)
}
