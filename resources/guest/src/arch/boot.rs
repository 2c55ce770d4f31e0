//! The ring-0 shim (boot.S) and the ring-3 entry stub.
//!
//! boot.S is kept as a separate file for readability and pulled in with `include_str!`; both
//! pieces are in this one Rust module so that they always land in the same object file.

core::arch::global_asm!(include_str!("boot.S"));

// Ring-3 entry, reached by the shim's iretq with RDI = zero page and RSP = top of the user
// stack (16-byte aligned, so the `call` below gives `guest_main` the ABI's alignment).
// .bss is zeroed here rather than trusted to be zero: the ELF loader only copies p_filesz
// bytes. This runs natively in ring 3, before anything (including the stack) is in use, with
// no port access and hence no interrupt. DF is clear (RFLAGS = 0x202 from the shim).
core::arch::global_asm!(
    ".section .text.user_entry, \"ax\", @progbits",
    ".global user_entry",
    "user_entry:",
    "    mov r12, rdi",
    "    lea rdi, [rip + __bss_start]",
    "    lea rcx, [rip + __bss_end]",
    "    sub rcx, rdi",
    "    xor eax, eax",
    "    rep stosb",
    "    mov rdi, r12",
    "    call {main}",
    "    ud2",
    main = sym crate::guest_main,
);
