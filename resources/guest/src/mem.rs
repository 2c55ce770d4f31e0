//! memcpy, memmove, memset, memcmp and bcmp.
//!
//! The compiler emits calls to these symbols (struct copies, slice operations, core::fmt)
//! and expects the C library to provide them; there is none here (`-nostdlib`), and
//! compiler_builtins exports them only for targets without a libc. They must not be written
//! as plain Rust loops: LLVM recognises such loops as the very idiom and would compile
//! `memcpy` into a call to `memcpy`. So the copies and fills are `rep movsb`/`rep stosb`
//! (fast on any CPU with ERMSB, and ring 3 runs natively) and the comparisons read through
//! `read_volatile`, which LLVM cannot turn into a library call.

use core::arch::asm;
use core::ptr::read_volatile;

/// # Safety
/// `dest` and `src` must be valid for `n` bytes and must not overlap.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    asm!(
        "rep movsb",
        inout("rcx") n => _,
        inout("rdi") dest => _,
        inout("rsi") src => _,
        options(nostack, preserves_flags)
    );
    dest
}

/// # Safety
/// `dest` and `src` must be valid for `n` bytes; they may overlap.
#[no_mangle]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // dest is below src or past its end: a forward copy never overwrites unread bytes.
        memcpy(dest, src, n)
    } else {
        // dest overlaps the tail of src: copy backwards (DF = 1), then restore DF = 0 as the
        // ABI requires.
        asm!(
            "std",
            "rep movsb",
            "cld",
            inout("rcx") n => _,
            inout("rdi") dest.add(n - 1) => _,
            inout("rsi") src.add(n - 1) => _,
            options(nostack)
        );
        dest
    }
}

/// # Safety
/// `dest` must be valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    asm!(
        "rep stosb",
        inout("rcx") n => _,
        inout("rdi") dest => _,
        in("al") c as u8,
        options(nostack, preserves_flags)
    );
    dest
}

/// # Safety
/// `a` and `b` must be valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        let (x, y) = (read_volatile(a.add(i)), read_volatile(b.add(i)));
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// # Safety
/// `a` and `b` must be valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    memcmp(a, b, n)
}
