//! The text a process writes into its slot of the participant table (one line per
//! participant), and the report made from the slots of a proven deadlock.
//!
//! Invariants:
//! - A line is `kind, name, pid, since, alt, waits` separated by U+001F, waits by U+001E;
//!   those characters and newlines in names are replaced, so a line always splits the same.
//! - Text read back was written by another process that may have died mid-write (the table's
//!   seqlock makes that rare, not impossible): malformed lines are skipped, numbers that do
//!   not parse read as 0, nothing read is trusted.

use std::fmt::Write as _;

use ferrocsp::shm::Proof;

use super::participant::Participant;
use super::record::{Inner, Stamp};

const FIELD: char = '\u{1f}';
const ITEM: char = '\u{1e}';

fn clean(s: &str) -> String {
    s.chars().map(|c| if c == FIELD || c == ITEM || c == '\n' { '?' } else { c }).collect()
}

/// One line of a slot's text: kind (`B` blocked in a channel operation, `X` in a confirmed
/// shared wait, `S` a shared wait not seen by detection, `J` joining, `T` blocked with a
/// timeout, `R` running), name, pid, since (ms of the system's monotonic clock), alt, waits.
pub(super) fn line(p: &Participant, i: &Inner, pid: u32, out: &mut String) {
    if i.removed {
        return;
    }
    let name = clean(i.name.as_deref().unwrap_or(&p.fallback));
    let (kind, since, alt, waits): (char, Option<Stamp>, bool, &[(String, bool)]) =
        if i.join_depth > 0 {
            ('J', i.join_since, false, &[])
        } else if i.blocked.on && i.io_depth == 0 {
            let b = &i.blocked;
            (if b.timeout { 'T' } else { 'B' }, Some(b.since), b.alt, &b.waits)
        } else if let Some((w, since, _)) = &i.shared {
            let k = if i.xwait.is_some_and(|x| x.confirmed) && i.io_depth == 0 { 'X' } else { 'S' };
            (k, Some(*since), w.len() > 1, w)
        } else if i.xwait.is_some_and(|x| x.confirmed) && i.io_depth == 0 {
            // A confirmed shared wait whose caller did not describe it (`_shared_wait`).
            ('X', None, false, &[])
        } else {
            ('R', None, false, &[])
        };
    let ms = since.map_or(0, |s| s.0.as_millis());
    let ws: Vec<String> =
        waits.iter().map(|(c, w)| format!("{}{}", if *w { 'w' } else { 'r' }, clean(c))).collect();
    let _ = writeln!(
        out,
        "{kind}{FIELD}{name}{FIELD}{pid}{FIELD}{ms}{FIELD}{}{FIELD}{}",
        u8::from(alt),
        ws.join(&ITEM.to_string())
    );
}

/// One participant as read back from a slot's text.
pub(super) struct Line {
    pub(super) kind: char,
    pub(super) name: String,
    pub(super) pid: u32,
    pub(super) since_ms: u128,
    pub(super) alt: bool,
    pub(super) waits: Vec<(String, bool)>,
}

pub(super) fn parse(text: &str) -> Vec<Line> {
    let mut out = Vec::new();
    for l in text.lines() {
        // Another process wrote this: anything malformed is skipped, never trusted.
        let f: Vec<&str> = l.split(FIELD).collect();
        let [kind, name, pid, ms, alt, waits] = f[..] else { continue };
        let Some(kind) = kind.chars().next() else { continue };
        let waits = waits
            .split(ITEM)
            .filter_map(|w| {
                let mut cs = w.chars();
                match cs.next() {
                    Some('w') => Some((cs.as_str().to_owned(), true)),
                    Some('r') => Some((cs.as_str().to_owned(), false)),
                    _ => None,
                }
            })
            .collect();
        out.push(Line {
            kind,
            name: name.to_owned(),
            pid: pid.parse().unwrap_or(0),
            since_ms: ms.parse().unwrap_or(0),
            alt: alt == "1",
            waits,
        });
    }
    out
}

fn describe(l: &Line, now: u128, out: &mut String) {
    let _ = write!(out, "'{}' (pid {})", l.name, l.pid);
    if l.kind != 'J' {
        let ops: Vec<String> = l
            .waits
            .iter()
            .map(|(c, w)| format!("{} '{c}'", if *w { "writes" } else { "reads" }))
            .collect();
        if ops.is_empty() {
            out.push_str(" waits on a shared channel");
        } else if l.alt {
            let _ = write!(out, " alts on {}", ops.join(", "));
        } else {
            let _ = write!(out, " {}", ops.join(", "));
        }
    }
    if l.since_ms > 0 {
        let secs = now.saturating_sub(l.since_ms) as f64 / 1000.0;
        let _ = write!(out, " (for {secs:.1} s)");
    }
}

/// The report every deadlocked operation of the network raises.
pub(super) fn report(proof: &Proof) -> String {
    let now = Stamp::now().0.as_millis();
    let (mut blocked, mut joining) = (Vec::new(), Vec::new());
    for s in &proof.slots {
        for l in parse(&s.text) {
            let mut d = String::new();
            describe(&l, now, &mut d);
            match l.kind {
                'J' => joining.push(d),
                'B' | 'X' => blocked.push(d),
                _ => {}
            }
        }
    }
    let n = blocked.len();
    let k = proof.slots.len();
    let mut msg = format!(
        "Deadlock: {n} {} forever across {k} OS processes: {}",
        if n == 1 { "process waits" } else { "processes wait" },
        blocked.join(", ")
    );
    if !joining.is_empty() {
        let _ = write!(msg, "; waiting for them: {}", joining.join(", "));
    }
    msg
}
