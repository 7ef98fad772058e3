//! `Op`: a networked operation running on the connection's runtime, seen from a blocking or
//! asyncio caller.
//!
//! Invariants:
//! - The result slot is written exactly once, by the task running the operation; `cancel`
//!   only asks the task to withdraw. The task alone decides whether the operation happened, so
//!   an operation that completed in the race with its cancellation keeps its result (a value
//!   is never lost to Ctrl-C or asyncio cancellation).
//! - The completion callback runs exactly once, after the result is stored: at completion if it
//!   was installed before, or at installation if the result was already there.

use std::future::Future;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::watch;

use crate::error::NetError;

type Callback = Box<dyn FnOnce() + Send>;

struct Slot<T> {
    result: Option<Result<T, NetError>>,
    done: bool,
    callback: Option<Callback>,
}

struct Inner<T> {
    slot: Mutex<Slot<T>>,
    cv: Condvar,
    cancel: watch::Sender<bool>,
}

/// A handle on an operation in flight.
pub struct Op<T> {
    inner: Arc<Inner<T>>,
}

impl<T: Send + 'static> std::fmt::Debug for Op<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Op").field("done", &self.is_done()).finish()
    }
}

/// Stores the result; if the task is dropped unfinished (its runtime shut down when the
/// connection closed), stores `Closed`, so no waiter hangs.
struct Finish<T>(Option<Arc<Inner<T>>>);

impl<T> Finish<T> {
    fn finish(&mut self, r: Result<T, NetError>) {
        let Some(inner) = self.0.take() else { return };
        let cb = {
            let mut s = lock(&inner.slot);
            s.result = Some(r);
            s.done = true;
            s.callback.take()
        };
        inner.cv.notify_all();
        if let Some(cb) = cb {
            cb();
        }
    }
}

impl<T> Drop for Finish<T> {
    fn drop(&mut self) {
        self.finish(Err(NetError::Closed));
    }
}

/// What a running operation sees of its cancellation.
#[derive(Clone, Debug)]
pub(crate) struct Cancel(watch::Receiver<bool>);

impl Cancel {
    pub(crate) fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// A cancellation nobody can ask for: for work that must finish once started (a batch's
    /// reserved slots are filled whatever its caller does).
    pub(crate) fn never() -> Cancel {
        Cancel(watch::channel(false).1)
    }

    /// Resolves once the owner asked to withdraw.
    pub(crate) async fn wait(&mut self) {
        // The sender lives in the Op's Inner; if it is gone nobody can cancel any more.
        if self.0.wait_for(|c| *c).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T: Send + 'static> Op<T> {
    /// Spawns `make(cancel)` on `rt` and returns its handle.
    pub(crate) fn spawn<F, Fut>(rt: &tokio::runtime::Handle, make: F) -> Op<T>
    where
        F: FnOnce(Cancel) -> Fut,
        Fut: Future<Output = Result<T, NetError>> + Send + 'static,
    {
        let (tx, rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            slot: Mutex::new(Slot { result: None, done: false, callback: None }),
            cv: Condvar::new(),
            cancel: tx,
        });
        let fut = make(Cancel(rx));
        let guard = Finish(Some(Arc::clone(&inner)));
        rt.spawn(async move {
            let mut guard = guard;
            let r = fut.await;
            guard.finish(r);
        });
        Op { inner }
    }

    /// An operation that is already finished.
    pub(crate) fn ready(r: Result<T, NetError>) -> Op<T> {
        let (tx, _) = watch::channel(false);
        Op {
            inner: Arc::new(Inner {
                slot: Mutex::new(Slot { result: Some(r), done: true, callback: None }),
                cv: Condvar::new(),
                cancel: tx,
            }),
        }
    }

    /// Whether the result is available.
    pub fn is_done(&self) -> bool {
        lock(&self.inner.slot).done
    }

    /// Blocks until done or `until` passes; returns whether it is done.
    pub fn wait(&self, until: Option<Instant>) -> bool {
        let mut s = lock(&self.inner.slot);
        while !s.done {
            match until {
                None => s = self.inner.cv.wait(s).unwrap_or_else(PoisonError::into_inner),
                Some(t) => {
                    let now = Instant::now();
                    if now >= t {
                        return false;
                    }
                    s = self
                        .inner
                        .cv
                        .wait_timeout(s, t - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
        true
    }

    /// Takes the result once done (`None` before, or when already taken).
    pub fn take(&self) -> Option<Result<T, NetError>> {
        lock(&self.inner.slot).result.take()
    }

    /// Asks the operation to withdraw; it completes with `Cancelled` unless it already happened.
    pub fn cancel(&self) {
        self.inner.cancel.send_replace(true);
    }

    /// Runs `f` once the result is available (at once if it already is), on whatever thread
    /// completes the operation.
    pub fn on_done(&self, f: impl FnOnce() + Send + 'static) {
        let mut s = lock(&self.inner.slot);
        if s.done {
            drop(s);
            f();
        } else {
            s.callback = Some(Box::new(f));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn result_and_callback_once() {
        let rt = rt();
        let (tx, rx) = std::sync::mpsc::channel();
        let op = Op::spawn(rt.handle(), |_| async { Ok::<_, NetError>(7) });
        let t = tx.clone();
        op.on_done(move || t.send(1).expect("send"));
        assert!(op.wait(None));
        assert_eq!(op.take(), Some(Ok(7)));
        assert_eq!(op.take(), None);
        // Installed after completion: called at once, in this thread.
        op.on_done(move || tx.send(2).expect("send"));
        let mut got = [
            rx.recv_timeout(Duration::from_secs(5)).expect("first"),
            rx.recv_timeout(Duration::from_secs(5)).expect("second"),
        ];
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn cancel_is_seen_by_the_task_which_decides() {
        let rt = rt();
        let op: Op<()> = Op::spawn(rt.handle(), |mut c| async move {
            c.wait().await;
            Err(NetError::Cancelled)
        });
        assert!(!op.wait(Instant::now().checked_add(Duration::from_millis(20))));
        op.cancel();
        assert!(op.wait(None));
        assert_eq!(op.take(), Some(Err(NetError::Cancelled)));
        // A task that already finished keeps its result whatever cancel says.
        let done = Op::spawn(rt.handle(), |_| async { Ok::<_, NetError>(1) });
        assert!(done.wait(None));
        done.cancel();
        assert_eq!(done.take(), Some(Ok(1)));
    }

    #[test]
    fn a_dropped_task_completes_with_closed() {
        let rt = rt();
        let op: Op<()> = Op::spawn(rt.handle(), |_| std::future::pending());
        rt.shutdown_background();
        assert!(op.wait(Instant::now().checked_add(Duration::from_secs(5))));
        assert_eq!(op.take(), Some(Err(NetError::Closed)));
    }
}
