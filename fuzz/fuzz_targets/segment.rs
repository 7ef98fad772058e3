//! A channel segment of arbitrary bytes through attach's checks and the ring's operations
//! (`ferrocsp::shm::fuzz`): it must be refused or handled, never crash or read out of bounds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferrocsp::shm::fuzz::segment(data);
});
