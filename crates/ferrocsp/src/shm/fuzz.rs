//! Fuzzing the segment: a channel segment made of arbitrary bytes goes through the checks of
//! `attach` and then through the operations that read its state and walk its ring. Used by the
//! cargo-fuzz targets (`fuzz/`), the smoke run every `cargo test` makes
//! (`tests/shm_fuzz_smoke.rs`) and the unit tests that run under Miri (`scripts/sanitizers.sh`).
//!
//! An input is `[flags][ops; N_OPS][header up to its AltRecords][RECORDS AltRecords]
//! [WAITS WaitRecords][END_BYTES of the end table][ring]`; what is missing reads as zeros, and the ring is the
//! rest rounded up to whole entries (at least 4, at most [`RING_MAX`] bytes). Flag
//! [`STAMP`] writes a valid identity (magic, version, lengths) over the header, so that most
//! inputs get past `attach` to the ring; without it the identity is the input's too.
//!
//! Invariants:
//! - Only the engine's own code runs on the image: `ShmChannel::over` (attach's checks), the
//!   checked ring walk, claim, reserve, advance, offers, ends, stats, an Alt's step. Nothing
//!   is re-implemented here, so what passes here is what a process attaching a scribbled
//!   segment does.
//! - Every input ends with attach refused or the operations returning (`Ok`, or an error such
//!   as the channel poisoned as corrupt); never a panic, an access outside the image (the image
//!   is a heap allocation of exactly the segment's size, which AddressSanitizer and Miri
//!   bound), or an endless loop (no operation here waits: every wait has a deadline of now,
//!   `nowait` ones too, since a `nowait` Alt or rendezvous write that sees a reader counted
//!   as waiting waits for it to take the value).
//! - The segment's lock word is the one thing the input does not set (it is freed): a word
//!   naming a holder costs a look at that holder after a slice (`lock.rs`), 100 ms per input;
//!   `tests/shm_untrusted.rs` scribbles over it instead.

use std::mem::{offset_of, size_of};
use std::time::Instant;

use super::cells::CellRef;
use super::channel::ShmChannel;
use super::end_table::EndKind;
use super::layout::{
    round_up, AltRecord, Entry, Header, WaitRecord, ALIGN, DATA_OFF, HEADER_BYTES, MAGIC, MAX_ENDS,
    VERSION,
};
use super::select::{select, SelOp, Selected};
use super::sys::Mapping;
use super::wait::Wait;

/// Flag: write a valid identity over the header.
pub const STAMP: u8 = 1;
/// Operations one input runs (its bytes 1..=N_OPS).
pub const N_OPS: usize = 8;
/// The largest ring an input makes.
pub const RING_MAX: usize = 1 << 14;
/// Where the header starts in an input (a header field at offset `o` is at `HDR_AT + o`).
pub const HDR_AT: usize = 1 + N_OPS;
/// The header up to its `AltRecord`s (state, counters).
const HDR_BYTES: usize = offset_of!(Header, alt);
/// `AltRecord`s an input sets (the others stay unused: they are read the same way).
const RECORDS: usize = 4;
const REC_BYTES: usize = RECORDS * size_of::<AltRecord>();
/// `WaitRecord`s an input sets (the others stay free).
const WAITS: usize = 4;
const WAIT_BYTES: usize = WAITS * size_of::<WaitRecord>();
const WAITS_OFF: usize = offset_of!(Header, waits);
/// Bytes of the end table an input sets.
const END_BYTES: usize = 64;
/// Where the ring starts in an input.
pub const RING_AT: usize = HDR_AT + HDR_BYTES + REC_BYTES + WAIT_BYTES + END_BYTES;
const _: () = assert!(END_BYTES <= MAX_ENDS);

/// Runs one input (see the module docs). Returns whether attach accepted the segment.
pub fn segment(data: &[u8]) -> bool {
    let Some(ch) = attach_image(data) else { return false };
    for &op in data.get(1..HDR_AT).unwrap_or(&[]) {
        run(&ch, op);
    }
    let _ = ch.stats();
    true
}

/// The channel `data` describes, through attach's checks (None: refused).
pub fn attach_image(data: &[u8]) -> Option<ShmChannel> {
    let at = |from: usize, len: usize| {
        let from = from.min(data.len());
        &data[from..(from + len).min(data.len())]
    };
    let flags = data.first().copied().unwrap_or(0);
    let ring = data.len().saturating_sub(RING_AT);
    let data_len = round_up(ring.max(4 * ALIGN)).min(RING_MAX);
    let total = DATA_OFF + data_len;
    let map = Mapping::image(total).ok()?;
    let base = map.ptr();
    let put = |off: usize, bytes: &[u8], room: usize| {
        let n = bytes.len().min(room);
        // SAFETY: `off + room` lies inside the image (each caller's region is), and `n <= room`.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), base.add(off), n) }
    };
    put(0, at(HDR_AT, HDR_BYTES), HDR_BYTES);
    put(HDR_BYTES, at(HDR_AT + HDR_BYTES, REC_BYTES), REC_BYTES);
    put(WAITS_OFF, at(HDR_AT + HDR_BYTES + REC_BYTES, WAIT_BYTES), WAIT_BYTES);
    put(HEADER_BYTES, at(HDR_AT + HDR_BYTES + REC_BYTES + WAIT_BYTES, END_BYTES), END_BYTES);
    put(DATA_OFF, at(RING_AT, data_len), data_len);
    let h: *mut Header = base.cast();
    // SAFETY: the header lies at the start of the image, which nothing else uses yet.
    let uuid = unsafe {
        // Free: a lock word naming a holder is a wait of a slice per input (`lock.rs` looks
        // at its holder after one), which `shm_untrusted.rs` covers instead.
        std::ptr::addr_of_mut!((*h).lock).write(std::sync::atomic::AtomicU64::new(0));
        if flags & STAMP != 0 {
            (*h).magic = MAGIC;
            (*h).version = VERSION;
            (*h).total_len = total as u64;
            (*h).data_len = data_len as u64;
        }
        (*h).uuid
    };
    ShmChannel::over(map, None, total, &uuid).ok()
}

/// A wait that never sleeps: its deadline has passed (`nowait` or not).
fn no_wait(nowait: bool) -> Wait<'static> {
    let mut w = Wait::until(Some(Instant::now()));
    w.nowait = nowait;
    w
}

/// One operation: the low nibble of `op` says which, the high one is its argument.
pub fn run(ch: &ShmChannel, op: u8) {
    let arg = op >> 4;
    let len = usize::from(arg) * 61;
    match op & 0x0f {
        0 => drop(ch.stats()),
        1 => {
            if let Ok(slot) = ch.begin_read(&mut no_wait(true)) {
                let sum = slot.buf().iter().fold(0u8, |a, &b| a.wrapping_add(b));
                std::hint::black_box(sum);
                if arg & 1 != 0 {
                    let _ = slot.finish();
                }
            }
        }
        2 | 3 => {
            let slot = if op & 0x0f == 2 {
                ch.begin_write(len, &mut no_wait(arg & 2 != 0))
            } else {
                ch.begin_write_adopted(len)
            };
            if let Ok(mut slot) = slot {
                slot.buf().fill(arg);
                if arg & 1 != 0 {
                    let _ = slot.commit(&mut no_wait(arg & 2 != 0));
                }
            }
        }
        4 => {
            let kind = if arg & 1 != 0 { EndKind::Reader } else { EndKind::Writer };
            let _ = ch.new_end(kind);
        }
        5 => {
            std::hint::black_box(ch.end_retired(u32::from(arg)));
            let _ = ch.retire_end(u32::from(arg));
        }
        6 => {
            let kind = if arg & 1 != 0 { EndKind::Reader } else { EndKind::Writer };
            let _ = ch.adopt_counts(kind, u32::from(arg), u32::from(arg / 2));
        }
        7 => {
            if let Ok(g) = ch.lock() {
                ch.advance(&g);
            }
        }
        8 => {
            if let Ok(g) = ch.lock() {
                ch.drop_dead_holders(&g);
                ch.wake_offers(&g);
            }
        }
        9 => offer(ch, len, arg),
        10 if arg == 0xf => drop(ch.poison()),
        11 => {
            if let Ok(g) = ch.lock() {
                std::hint::black_box(ch.alt_waiting(&g));
                std::hint::black_box(ch.ready_offers(&g));
            }
        }
        12 => {
            if let Ok(g) = ch.lock() {
                if let Some(i) = ch.add_record(&g, &CellRef::default()) {
                    ch.remove_own_record(&g, i, &CellRef::default());
                }
            }
        }
        // Miri has no memfd for the selection's cell: there the Alt is not run.
        13 if !cfg!(miri) => alt(ch, len, arg),
        _ => {
            std::hint::black_box((ch.poison_cause(), ch.max_message(), ch.coop_waiting()));
        }
    }
}

/// An Alt over the channel (`select.rs`), one input and one output guard, in the order `arg`
/// says; it may leave its offer and record in the segment for as long as its one step runs.
fn alt(ch: &ShmChannel, len: usize, arg: u8) {
    let fill = |b: &mut [u8]| b.fill(arg);
    let (r, w) = (SelOp::read(ch), SelOp::write(ch, len, &fill));
    let ops = if arg & 1 != 0 { [r, w] } else { [w, r] };
    let mut wait = no_wait(arg & 2 != 0);
    let chosen = select(&ops, &mut wait);
    if let Ok((_, Selected::Read(slot))) = chosen {
        std::hint::black_box(slot.buf().first());
        if arg & 4 != 0 {
            let _ = slot.finish();
        }
    }
}

/// A selection's conditional offer, as `select.rs` makes one: reserved, filled, published,
/// then withdrawn by its selection (or taken by a reader first: op 1).
fn offer(ch: &ShmChannel, len: usize, arg: u8) {
    // A cell of no process: a reader that finds the offer withdraws it (its selection is gone).
    let cell = CellRef::default();
    let Ok(Some(pos)) = ch.reserve_offer(len, &cell) else { return };
    ch.offer_buf(pos, len).fill(arg);
    if let Ok(g) = ch.lock() {
        if arg & 1 != 0 {
            ch.publish_offer(&g, pos);
        }
        if arg & 2 != 0 {
            ch.withdraw_own_offer(&g, pos, &cell);
        }
    }
}

/// The input that describes `ch` as it is now, followed by `ops` (only the first [`N_OPS`]
/// count): a seed for the fuzzer from a state the protocol really reaches.
pub fn snapshot(ch: &ShmChannel, ops: &[u8]) -> Vec<u8> {
    let mut out = vec![STAMP];
    let mut ops = ops.to_vec();
    ops.resize(N_OPS, 0);
    out.extend_from_slice(&ops);
    let base = ch.base();
    let take = |off: usize, len: usize| {
        // SAFETY: callers read inside the mapping (header page, end table, ring); the bytes
        // are copied as they are, racing writers are no concern of a seed.
        unsafe { std::slice::from_raw_parts(base.add(off), len) }.to_vec()
    };
    out.extend(take(0, HDR_BYTES + REC_BYTES));
    out.extend(take(WAITS_OFF, WAIT_BYTES));
    out.extend(take(HEADER_BYTES, END_BYTES));
    out.extend(take(DATA_OFF, ch.data_len().min(RING_MAX)));
    // What differs from run to run goes: the lock word (freed by every replay anyway), the
    // wait records (this process) and the holders of entries (this process; in a replay a
    // process long gone, as 0 is), so the same states make the same seeds
    // (`tests/shm_fuzz_smoke.rs` checks the committed ones).
    let lock = HDR_AT + offset_of!(Header, lock);
    out[lock..lock + size_of::<u64>()].fill(0);
    let waits = HDR_AT + HDR_BYTES + REC_BYTES;
    out[waits..waits + WAIT_BYTES].fill(0);
    let mut held = Vec::new();
    if let Ok(g) = ch.lock() {
        let _ = ch.scan(&g, |pos, _| {
            held.push(pos as usize % ch.data_len());
            None::<()>
        });
    }
    let owner = offset_of!(Entry, owner_pid)..offset_of!(Entry, owner_start) + size_of::<u64>();
    for at in held {
        if let Some(b) = out.get_mut(RING_AT + at + owner.start..RING_AT + at + owner.end) {
            b.fill(0);
        }
    }
    out
}

/// A new channel in a heap image (no memfd: usable under Miri), ring `ring_bytes` (at most
/// [`RING_MAX`]).
pub fn channel(capacity: usize, ring_bytes: usize) -> std::io::Result<ShmChannel> {
    let data_len = round_up(ring_bytes.clamp(4 * ALIGN, RING_MAX));
    let map = Mapping::image(DATA_OFF + data_len)?;
    ShmChannel::init(map, None, [0x5a; 16], data_len, capacity)
}

/// Seeds: inputs from states the protocol reaches (backlogs, a wrapped ring with its pad,
/// entries being written and read, offers, ends), each with a script of operations.
pub fn seeds() -> Result<Vec<Vec<u8>>, Box<dyn std::error::Error>> {
    const OPS: [u8; N_OPS] = [0x11, 0x32, 0x07, 0x00, 0x21, 0x19, 0x0b, 0x15];
    let mut out = Vec::new();
    // An empty buffered channel and an empty rendezvous one.
    out.push(snapshot(&channel(4, 1024)?, &OPS));
    out.push(snapshot(&channel(0, 1024)?, &[0x12, 0x39, 0x11, 0x0b, 0x00, 0x08, 0x07, 0x00]));
    // A backlog, the head moved past a read message, and a pad at the ring's end.
    let ch = channel(8, 512)?;
    let _ = ch.new_end(EndKind::Writer)?;
    let _ = ch.new_end(EndKind::Reader)?;
    for n in [100, 10, 150, 3] {
        let mut s = ch.begin_write(n, &mut no_wait(false))?;
        s.buf().fill(n as u8);
        s.commit(&mut no_wait(false))?;
        if n == 10 {
            ch.begin_read(&mut Wait::nowait())?.finish()?;
            ch.begin_read(&mut Wait::nowait())?.finish()?;
        }
    }
    out.push(snapshot(&ch, &OPS));
    // A message being written and one being read (their holders are this process).
    let w = ch.begin_write(20, &mut no_wait(false))?;
    let r = ch.begin_read(&mut Wait::nowait())?;
    out.push(snapshot(&ch, &[0x08, 0x11, 0x12, 0x07, 0x00, 0x05, 0x06, 0x14]));
    drop((w, r));
    // A rendezvous channel with an offer published, and one being filled.
    let ch = channel(0, 2048)?;
    if let Some(pos) = ch.reserve_offer(40, &CellRef::default())? {
        let g = ch.lock()?;
        ch.publish_offer(&g, pos);
    }
    let _ = ch.reserve_offer(7, &CellRef::default())?;
    out.push(snapshot(&ch, &[0x0b, 0x01, 0x08, 0x00, 0x11, 0x07, 0x39, 0x00]));
    Ok(out)
}

/// The segment's checks over heap images, small enough for Miri (`scripts/sanitizers.sh`):
/// attach's refusals, the walk's, and the seeds with a few mutations through every operation.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::channel::PoisonCause;
    use crate::shm::layout::TEST_LAYOUT as L;

    fn put(input: &mut [u8], at: usize, v: u64) {
        input[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    fn empty() -> Vec<u8> {
        seeds().expect("seeds").swap_remove(0)
    }

    #[test]
    fn seeds_attach_and_run() {
        for s in seeds().expect("seeds") {
            assert!(segment(&s));
        }
    }

    #[test]
    fn attach_refuses_what_is_not_a_channel() {
        assert!(attach_image(&[]).is_none(), "all zeros");
        let mut raw = empty();
        raw[0] &= !STAMP;
        assert!(attach_image(&raw).is_some(), "a snapshot carries its own identity");
        put(&mut raw, HDR_AT + L.data_len, 1 << 40);
        assert!(attach_image(&raw).is_none(), "a ring larger than the segment");
        put(&mut raw, HDR_AT + L.data_len, (RING_AT as u64) + 1);
        assert!(attach_image(&raw).is_none(), "a ring of another length");
        let mut cap = empty();
        put(&mut cap, HDR_AT + L.capacity, u64::MAX);
        let ch = attach_image(&cap).expect("any capacity is a capacity");
        assert_eq!(ch.capacity(), usize::MAX);
    }

    /// An entry of size 0 (what a writer dying between moving the tail and writing its entry
    /// leaves) or positions the protocol cannot produce poison the channel, never loop.
    #[test]
    fn a_ring_that_does_not_fit_poisons() {
        let bad: [&[(usize, u64)]; 4] = [
            &[(L.tail, 64), (L.ready, 1), (L.buffered, 1)],
            &[(L.head, 128), (L.tail, 64)],
            &[(L.tail, 65)],
            &[(L.head, u64::MAX - 63), (L.tail, u64::MAX - 63)],
        ];
        for fields in bad {
            let mut input = empty();
            for &(f, v) in fields {
                put(&mut input, HDR_AT + f, v);
            }
            let ch = attach_image(&input).expect("attached");
            run(&ch, 0x01);
            assert_eq!(ch.poison_cause(), Some(PoisonCause::Corrupt), "{fields:?}");
        }
    }

    #[test]
    fn mutations_run_clean() {
        let seeds = seeds().expect("seeds");
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for i in 0..64 {
            let mut input = seeds[i % seeds.len()].clone();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = HDR_AT + L.state + (x as usize % (L.state_len / 8)) * 8;
                let v = [0, 64, u64::MAX, x >> 3][(x >> 60) as usize % 4];
                put(&mut input, at, v);
                let e = RING_AT + 64 * ((x >> 20) as usize % 4);
                input[e + (x >> 30) as usize % 24] ^= (x >> 40) as u8;
            }
            segment(&input);
        }
    }
}
