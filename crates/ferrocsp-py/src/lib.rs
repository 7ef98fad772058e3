//! `ferrocsp._native`: the PyO3 bindings of the ferrocsp engine.
//!
//! Thin by design: channel semantics live in the `ferrocsp` crate, process orchestration in the
//! Python package. This crate converts arguments, builds exceptions, and decides how a Python
//! thread waits (GIL released, signals checked in the main thread).

mod aio;
mod aio_op;
mod aio_waiter;
mod aio_wake;
mod alt;
mod alt_map;
mod batch;
mod call_end;
mod channel;
mod coro_alt;
mod coro_op;
mod deadlock;
mod detach;
mod ends;
mod errors;
mod fast_method;
mod flavor;
mod loan;
mod move_lock;
#[cfg(feature = "net")]
mod net;
mod net_side;
#[cfg(feature = "net")]
mod net_wait;
mod process;
mod py_tls;
mod pythread;
mod sched;
mod select;
mod shm;
mod shm_aio;
mod shm_coop;
mod shm_move;
mod shm_msg;
mod shm_select;
mod shm_side;
mod slot;
mod step_lock;
mod test_hooks;
mod thread_name;
mod trace;
mod wait;

use pyo3::prelude::*;

/// The native core of ferrocsp (use the `ferrocsp` package, not this module).
#[pymodule(gil_used = false)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    detach::init();
    m.add_class::<channel::Channel>()?;
    m.add("_Moved", m.py().get_type::<errors::Moved>())?;
    m.add_class::<ends::Reader>()?;
    m.add_class::<ends::Writer>()?;
    m.add("_CallEnd", call_end::call_end_type(m.py())?)?;
    m.add_function(wrap_pyfunction!(call_end::_vectorcall, m)?)?;
    m.add_class::<loan::Loan>()?;
    m.add_class::<loan::LoanBuffer>()?;
    m.add("_AsyncOp", aio_op::op_type(m.py())?)?;
    m.add_class::<shm::PyShmChannel>()?;
    m.add_class::<shm_side::ShmSide>()?;
    m.add_class::<shm_aio::ShmOp>()?;
    m.add_function(wrap_pyfunction!(shm_select::_shm_select, m)?)?;
    m.add_function(wrap_pyfunction!(shm_aio::_shm_await, m)?)?;
    m.add_function(wrap_pyfunction!(process::_shared_wait, m)?)?;
    m.add_function(wrap_pyfunction!(select::_select, m)?)?;
    m.add_function(wrap_pyfunction!(select::_aselect, m)?)?;
    m.add_class::<alt::NativeAlt>()?;
    fast_method::install(m.py())?;
    m.add_function(wrap_pyfunction!(aio_wake::_wake_future, m)?)?;
    m.add_class::<sched::Scheduler>()?;
    m.add_class::<aio_waiter::Waiter>()?;
    m.add_class::<aio_waiter::RunQueue>()?;
    m.add_function(wrap_pyfunction!(sched::_in_scheduler, m)?)?;
    m.add_function(wrap_pyfunction!(coro_op::_in_coroutine, m)?)?;
    m.add_function(wrap_pyfunction!(detach::_freeze_hubs, m)?)?;
    m.add_function(wrap_pyfunction!(process::_set_process_name, m)?)?;
    m.add_function(wrap_pyfunction!(process::_process_name, m)?)?;
    m.add_function(wrap_pyfunction!(trace::_set_trace, m)?)?;
    m.add_class::<deadlock::ParticipantRef>()?;
    m.add_function(wrap_pyfunction!(deadlock::_participants, m)?)?;
    m.add_function(wrap_pyfunction!(deadlock::_participant_enter, m)?)?;
    m.add_function(wrap_pyfunction!(deadlock::_participant_exit, m)?)?;
    m.add_function(wrap_pyfunction!(process::_joining, m)?)?;
    m.add_function(wrap_pyfunction!(process::_io_wait, m)?)?;
    m.add_function(wrap_pyfunction!(deadlock::_idle_thread, m)?)?;
    m.add_function(wrap_pyfunction!(deadlock::_ignore_thread, m)?)?;
    m.add_function(wrap_pyfunction!(deadlock::_stop_watchdog, m)?)?;
    m.add_function(wrap_pyfunction!(deadlock::cross::_xtable_create, m)?)?;
    m.add_function(wrap_pyfunction!(deadlock::cross::_xtable_attach, m)?)?;
    m.add_function(wrap_pyfunction!(deadlock::cross::_xtable_reserve, m)?)?;
    m.add_function(wrap_pyfunction!(deadlock::cross::_xtable_release, m)?)?;
    m.add_function(wrap_pyfunction!(deadlock::cross::_xtable_slots, m)?)?;
    m.add_function(wrap_pyfunction!(deadlock::cross::_xidle, m)?)?;
    m.add_function(wrap_pyfunction!(test_hooks::_hold_lock_for_test, m)?)?;
    #[cfg(feature = "net")]
    {
        m.add_class::<net::NetConnection>()?;
        m.add_class::<net::NetChan>()?;
        m.add_class::<net::NetOp>()?;
        m.add_function(wrap_pyfunction!(net::_net_connect, m)?)?;
    }
    Ok(())
}
