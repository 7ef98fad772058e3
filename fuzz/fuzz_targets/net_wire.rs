//! Bytes from the wire through every parser of the networked channels' Rust crate
//! (`ferrocsp_net::wire::fuzz`): each input is refused with a clear error or accepted in its
//! one canonical form, never a panic, a hang or an allocation its length does not pay for.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferrocsp_net::wire::fuzz::one(data);
});
