//! Passes the freestanding link options and the linker script (absolute path) to the guest
//! binary's link, and makes cargo relink the guest whenever the script changes (rustflags
//! alone would not track it). `-bins` keeps them away from the library's unit-test binary,
//! which is an ordinary std program.

/// No C runtime: no crt1.o/crti.o, no libc, no libgcc; `_start` is ours (src/arch/boot.S).
const FREESTANDING: &[&str] = &[
    "-nostartfiles",
    "-nostdlib",
    "-static",
    "-no-pie",
    "-Wl,--build-id=none",
    "-Wl,-z,max-page-size=4096",
];

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR is set by cargo");
    for arg in FREESTANDING {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-changed=build.rs");
}
