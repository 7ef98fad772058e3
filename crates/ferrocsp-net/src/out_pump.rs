//! The output pump: serves the Output guards of this process's Alts on one channel, for both
//! protocols. While an Alt waits with an Output guard on the channel, the pump gets the right
//! to send one value without sending it (rendezvous: a reader held elsewhere,
//! `rendezvous::claim_reader`; buffered: a slot reserved in the stream, `reserve::reserve`),
//! queues it on `reads.won`, then tries to win a waiting Alt (`Offer::take_output`, the Alt's
//! one CAS). The winner takes a queued right and sends its value (`commit`); with no winner,
//! one unused right is given back at once (`release_claim` / `give_back`).
//!
//! Invariants:
//! - A right is queued before the win is tried, so a winner always finds one, whatever thread
//!   runs it and however late; rights are interchangeable (each is one reader or one slot).
//! - The pump serves `out_demand - out_won` Alts: one it won is committing, not waiting, until
//!   its selection ends and withdraws its demand. `out_won` is raised before each try (a
//!   winner may withdraw before the try returns) and lowered by every withdrawal, so it never
//!   exceeds the winners still counted in `out_demand`: the pump may make one try too many,
//!   never one too few.
//! - The pump runs while `reads.out_pump_running`; it clears it under the `reads` lock only
//!   when no Alt is left to serve, and a new demand restarts it under the same lock.

use std::sync::Arc;
use std::time::Duration;

use crate::chan::Chan;
use crate::lock::lock;
use crate::rendezvous::Claimed;
use crate::turn::Turn;

/// An Alt of this process starts (`up`) or stops waiting with an Output guard on `chan`.
pub(crate) fn alt_out_demand(chan: &Arc<Chan>, up: bool) {
    let mut r = lock(&chan.reads);
    if !up {
        r.out_demand = r.out_demand.saturating_sub(1);
        r.out_won = r.out_won.saturating_sub(1);
        return;
    }
    r.out_demand += 1;
    chan.out_wake.notify_one();
    if !r.out_pump_running {
        r.out_pump_running = true;
        tokio::spawn(out_pump(Arc::clone(chan)));
    }
}

/// Takes a right won for an Output Alt of this process (see the module doc).
pub(crate) fn take_won(chan: &Chan) -> Option<(String, u64)> {
    lock(&chan.reads).won.pop_front()
}

async fn out_pump(chan: Arc<Chan>) {
    let mut turn = Turn::new(&chan);
    while goes_on(&chan) {
        let s = *turn.status.borrow_and_update();
        turn.ready.borrow_and_update();
        // Poisoned or no reader left: the Alt sees it through its token channel (the bindings
        // mirror the status there); nothing to get.
        if !(s.poisoned || s.readers_retired) {
            let right = if chan.capacity == 0 {
                match crate::rendezvous::claim_reader(&chan).await {
                    Claimed::Hold(h) => Some(h),
                    Claimed::Wait => None,
                    Claimed::Again => continue,
                }
            } else {
                crate::reserve::reserve(&chan).await
            };
            if let Some(right) = right {
                lock(&chan.reads).won.push_back(right);
                if win(&chan).await {
                    turn.reset();
                    continue;
                }
                // No winner: give back one unused right (this one, or an equivalent one if an
                // earlier winner took this one meanwhile).
                let back = lock(&chan.reads).won.pop_back();
                if let Some(back) = back {
                    if chan.capacity == 0 {
                        crate::rendezvous::release_claim(&chan, back).await;
                    } else {
                        crate::reserve::give_back(&chan, back).await;
                    }
                }
            }
        }
        tokio::select! {
            () = chan.out_wake.notified() => {}
            () = turn.next() => {}
        }
    }
}

/// Whether an Alt is left to serve; if not, the pump stops (see the module doc).
fn goes_on(chan: &Chan) -> bool {
    let mut r = lock(&chan.reads);
    if r.out_demand > r.out_won {
        return true;
    }
    r.out_pump_running = false;
    false
}

/// Wins a waiting Output Alt, giving one that announced itself just before registering three
/// more chances 1 ms apart.
async fn win(chan: &Chan) -> bool {
    for i in 0..4 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Counted before the CAS: a winner may withdraw its demand (and lower `out_won`)
        // before `take_output` even returns here.
        lock(&chan.reads).out_won += 1;
        if chan.take_output() {
            return true;
        }
        let mut r = lock(&chan.reads);
        r.out_won = r.out_won.saturating_sub(1);
    }
    false
}
