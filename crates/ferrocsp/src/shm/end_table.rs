//! The end table: one byte per counted end ever made (reader, writer, retired), in the page
//! after the header. All copies of an end, in every process, share its slot, so retiring any
//! copy retires it everywhere.
//!
//! Invariants:
//! - A slot goes `END_FREE -> END_READER | END_WRITER -> END_RETIRED`, under the channel's
//!   lock, never back; the live counts in the header change with it.
//! - Reading a slot's state needs no lock (an atomic byte); an index outside the table reads
//!   as retired.

use std::sync::atomic::Ordering;

use super::channel::{ShmChannel, MAX_ENDS};
use crate::Error;

// End-table states.
pub(super) const END_FREE: u8 = 0;
pub(super) const END_READER: u8 = 1;
pub(super) const END_WRITER: u8 = 2;
pub(super) const END_RETIRED: u8 = 3;

/// Which kind of end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndKind {
    /// A reading end.
    Reader,
    /// A writing end.
    Writer,
}

impl ShmChannel {
    /// Records a new counted end; returns its index in the end table.
    pub fn new_end(&self, kind: EndKind) -> Result<u32, Error> {
        let g = self.lock()?;
        let st = g.st();
        let i = st.ends_next as usize;
        if i >= MAX_ENDS {
            return Err(Error::TooMany { what: "ends", max: MAX_ENDS });
        }
        let (tag, made, live) = match kind {
            EndKind::Reader => (END_READER, &mut st.reader_ends_made, &mut st.reader_ends_live),
            EndKind::Writer => (END_WRITER, &mut st.writer_ends_made, &mut st.writer_ends_live),
        };
        let (Some(m), Some(l)) = (made.checked_add(1), live.checked_add(1)) else {
            return Err(self.corrupt(&g));
        };
        (*made, *live) = (m, l);
        st.ends_next += 1;
        self.ends()[i].store(tag, Ordering::Release);
        Ok(i as u32)
    }

    /// Records `made` ends of `kind` made before the channel moved here, `live` of them not
    /// retired; those that are still live get their table index later with `new_end`-like
    /// `adopt_end` (so they are counted once).
    pub fn adopt_counts(&self, kind: EndKind, made: u32, live: u32) -> Result<(), Error> {
        let g = self.lock()?;
        let st = g.st();
        let (m, l) = match kind {
            EndKind::Reader => (&mut st.reader_ends_made, &mut st.reader_ends_live),
            EndKind::Writer => (&mut st.writer_ends_made, &mut st.writer_ends_live),
        };
        // The counts are the segment's (anything), the additions the caller's.
        let (Some(m2), Some(l2)) = (m.checked_add(made), l.checked_add(live)) else {
            return Err(self.corrupt(&g));
        };
        (*m, *l) = (m2, l2);
        Ok(())
    }

    /// A table index for a live end already counted by `adopt_counts`.
    pub fn adopt_end(&self, kind: EndKind) -> Result<u32, Error> {
        let g = self.lock()?;
        let st = g.st();
        let i = st.ends_next as usize;
        if i >= MAX_ENDS {
            return Err(Error::TooMany { what: "ends", max: MAX_ENDS });
        }
        st.ends_next += 1;
        let tag = if kind == EndKind::Reader { END_READER } else { END_WRITER };
        self.ends()[i].store(tag, Ordering::Release);
        Ok(i as u32)
    }

    /// Whether end `i` has retired (an index never handed out counts as retired).
    pub fn end_retired(&self, i: u32) -> bool {
        let t = self.ends().get(i as usize).map_or(END_RETIRED, |e| e.load(Ordering::Acquire));
        matches!(t, END_RETIRED | END_FREE)
    }

    /// Retires end `i` (idempotent: every copy of an end is that one end).
    pub fn retire_end(&self, i: u32) -> Result<(), Error> {
        let g = self.lock()?;
        let Some(slot) = self.ends().get(i as usize) else {
            return Ok(());
        };
        let st = g.st();
        match slot.load(Ordering::Acquire) {
            END_READER => self.dec(&g, &mut st.reader_ends_live),
            END_WRITER => self.dec(&g, &mut st.writer_ends_live),
            _ => return Ok(()),
        }
        slot.store(END_RETIRED, Ordering::Release);
        self.changed_all(&g);
        Ok(())
    }
}
