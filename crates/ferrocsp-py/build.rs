//! Refuses to build the extension for a platform ferrocsp does not support, with a message
//! that says so, instead of a wall of errors from Linux-only code (memfd, futex,
//! process_vm_readv). Supported: Linux (glibc or musl) on any architecture Rust supports.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "linux" {
        eprintln!(
            "error: ferrocsp supports Linux only, and this build targets '{os}'.\n\
             Its OS-process channels live in shared memory that needs Linux (memfd_create, \
             futex, process_vm_readv).\n\
             On macOS or Windows, use it in a Linux container or WSL 2 \
             (see docs/install.md, 'Platforms')."
        );
        std::process::exit(1);
    }
}
