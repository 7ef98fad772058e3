//! The headers of the rendezvous protocol (the parent module's doc describes it), shared by
//! the writers that send them and the subscription that answers them.
//!
//! Invariant: a request carries at most one of `HDR_CLAIM`, `HDR_RESV` and `HDR_RELEASE`; a
//! plain write carries none, and every request with a value carries `HDR_ID`.

/// The value's id, kept across re-sends.
pub(crate) const HDR_ID: &str = "Csp-Id";
/// A selecting writer's claim of a reader (no value).
pub(crate) const HDR_CLAIM: &str = "Csp-Claim";
/// The hold a committed value is for.
pub(crate) const HDR_RESV: &str = "Csp-Hold";
/// A hold given back by a writer whose Alt chose another guard.
pub(crate) const HDR_RELEASE: &str = "Csp-Release";
