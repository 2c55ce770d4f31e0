/*
 * Ring-0 shim of the test guest (Intel syntax, assembled by rustc's global_asm!).
 *
 * On the development machines guest ring 0 is *emulated* (~1 us per instruction) and the
 * emulator lacks SSE/xsave/rdtscp/int n (docs: kvm-on-these-machines.md). Therefore this
 * file uses plain integer instructions only and keeps every path short: all descriptor tables
 * and page tables are prebuilt at assembly time, and ring 0 only runs
 *   - the boot sequence (~25 instructions) ending in iretq to ring 3,
 *   - the IRQ stubs (count + EOI, 6-7 instructions),
 *   - the int3 "system call" gate (idle / triple fault),
 *   - the fatal-exception reporter.
 * Everything else (the Rust program) runs in ring 3, natively.
 *
 * NOTE: this text goes through global_asm!, which treats curly braces as format
 * placeholders: do not use them, not even in comments. Local labels: no 0/1-only names
 * (in Intel syntax LLVM would read `1b` as a binary number).
 *
 * Selectors (GDT below; the order null, kcode, kdata, udata, ucode is the one SYSRET expects,
 * kept for familiarity even though SYSRET is not used):
 */
    .set KERNEL_CS, 0x08
    .set KERNEL_DS, 0x10
    .set USER_DS,   0x18 | 3
    .set USER_CS,   0x20 | 3
    .set TSS_SEL,   0x28

    /* Load address of the .boot section; linker.ld asserts boot_base == BOOT_BASE. */
    .set BOOT_BASE, 0x100000

    .set COM1,      0x3f8       /* 16550 THR: the VMM's UART is always ready */
    .set FAIL_PORT, 0x501       /* guest failure port (GUEST-ABI.md) */
    .set FAIL_EXCEPTION, 3      /* failure code for an unexpected exception */

    /* SDM Vol. 3A 2.5: CR4.PAE (long mode), OSFXSR (SSE in ring 3), OSXMMEXCPT (#XM).
     * Written as an exact value so that e.g. SMEP/SMAP from the VMM cannot survive: every page
     * is user-accessible, so SMEP would fault on the shim's own code. */
    .set CR4_VALUE, (1 << 5) | (1 << 9) | (1 << 10)
    /* CR0: PE, MP, ET, NE, WP, PG; EM=0 and TS=0 (x87/SSE usable without #NM), CD=NW=0. */
    .set CR0_VALUE, (1 << 0) | (1 << 1) | (1 << 4) | (1 << 5) | (1 << 16) | (1 << 31)

    /* 2 MiB page-directory entry flags (SDM Vol. 3A 4.5, Table 4-18): P | RW | U/S | PS.
     * The 3-4 GiB window (virtio-mmio devices) is additionally PWT | PCD: uncached. */
    .set PDE_RAM,  (1 << 0) | (1 << 1) | (1 << 2) | (1 << 7)
    .set PDE_MMIO, PDE_RAM | (1 << 3) | (1 << 4)
    /* Upper-level entries: P | RW | U/S (U/S must be set at every level for ring-3 access). */
    .set PTE_TABLE, (1 << 0) | (1 << 1) | (1 << 2)

    .section .boot, "awx", @progbits

/* ------------------------------------------------------------------------------------------
 * Entry, per the Linux 64-bit boot protocol: long mode, paging on (identity map of at least
 * the first GiB), interrupts off, RSI = physical address of the zero page.
 * ------------------------------------------------------------------------------------------ */
    .global _start
    .global boot_base
boot_base:
_start:
    lea rsp, [rip + kernel_stack_top]

    /* Own descriptor tables. CS keeps its cached 64-bit descriptor until the iretq below
     * loads USER_CS; no far jump is needed (and none is emulated). */
    lgdt [rip + gdt_ptr]
    lidt [rip + idt_ptr]
    mov ax, KERNEL_DS
    mov ss, ax
    xor eax, eax            /* data segments are unused in 64-bit mode: null them */
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    mov ax, TSS_SEL         /* TSS: RSP0 for ring 3 -> 0 and the I/O permission bitmap */
    ltr ax

    /* Own page tables (identity map of 0-8 GiB), then control registers. */
    lea rax, [rip + pml4]
    mov cr3, rax
    mov eax, CR4_VALUE
    mov cr4, rax
    mov eax, CR0_VALUE
    mov cr0, rax

    /* iretq to ring 3 (SDM Vol. 3A 6.14.3: the frame is SS, RSP, RFLAGS, CS, RIP).
     * RFLAGS = IF | reserved bit 1; IOPL = 0, so port access is governed by the TSS bitmap. */
    mov rdi, rsi            /* argument of user_entry: the zero page */
    push USER_DS
    lea rax, [rip + user_stack_top]
    push rax
    push 0x202
    push USER_CS
    lea rax, [rip + user_entry]
    push rax
    iretq

/* ------------------------------------------------------------------------------------------
 * Vector 3 (int3), a DPL-3 interrupt gate: the ring-3 -> ring-0 "system call" (syscall does
 * not reach ring 0 here and int n from ring 3 raises #UD). Service number in RAX:
 *   0: idle. sti; hlt; cli: the hlt exits to the VMM, which injects an interrupt; its stub
 *      runs on this stack and returns to the cli. Returns after one interrupt was handled.
 *   1: triple fault on purpose: an empty IDT makes the #UD undeliverable (#UD -> #DF ->
 *      shutdown, SDM Vol. 3A 6.15 "Interrupt 8").
 *   other: returns RAX = -1.
 * The gate clears IF on entry; iretq restores the caller's RFLAGS (including IF and the
 * arithmetic flags changed here).
 * ------------------------------------------------------------------------------------------ */
syscall_entry:
    test rax, rax
    jnz 2f
    sti                     /* the STI shadow covers hlt: no wake-up is lost in between */
    hlt
    cli
    iretq
2:
    cmp rax, 1
    jne 3f
    lidt [rip + null_idt_ptr]
    ud2
3:
    mov rax, -1
    iretq

/* ------------------------------------------------------------------------------------------
 * IRQ stubs, vectors 0x20-0x2f (PIC remapped by the ring-3 code, src/pic.rs). Count the IRQ
 * in IRQ_COUNT[irq] and send a non-specific EOI (OCW2 = 0x20, 8259A datasheet) to the master,
 * and first to the slave for IRQ 8-15 (the slave's output is the master's IRQ 2). Only RAX is
 * touched (saved); the flags changed by inc are restored by iretq.
 * ------------------------------------------------------------------------------------------ */
    .macro IRQ_STUB irq
irq_\irq:
    push rax
    inc qword ptr [rip + IRQ_COUNT + 8 * \irq]
    mov al, 0x20
    .if \irq >= 8
    out 0xa0, al
    .endif
    out 0x20, al
    pop rax
    iretq
    .endm

    .irp irq, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    IRQ_STUB \irq
    .endr

/* ------------------------------------------------------------------------------------------
 * Exceptions 0-31 (except 3, the system-call gate). The CPU pushes an error code only for
 * vectors 8, 10-14, 17, 21 (SDM Vol. 3A Table 6-1) and 29, 30 (AMD #VC, #SX); the other
 * stubs push a 0 so that the frame is uniform: [rsp] = vector, [rsp+8] = error code,
 * [rsp+16] = RIP, then CS, RFLAGS, RSP, SS.
 * ------------------------------------------------------------------------------------------ */
    .macro EXC_NOERR vec
exc_\vec:
    push 0
    push \vec
    jmp exception_common
    .endm

    .macro EXC_ERR vec
exc_\vec:
    push \vec
    jmp exception_common
    .endm

    .irp vec, 0,1,2,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
    EXC_NOERR \vec
    .endr
    .irp vec, 8,10,11,12,13,14,17,21,29,30
    EXC_ERR \vec
    .endr

/* Fatal: print "guest: exception vector=0xVV error=0xEEEE rip=0xRRRRRRRRRRRRRRRR\n" on COM1,
 * write FAIL_EXCEPTION to the failure port and stop. Nothing needs to be preserved. */
exception_common:
    cld
    lea rsi, [rip + msg_vector]
    call puts
    mov rax, [rsp]
    mov ecx, 2
    call puthex
    lea rsi, [rip + msg_error]
    call puts
    mov rax, [rsp + 8]
    mov ecx, 4
    call puthex
    lea rsi, [rip + msg_rip]
    call puts
    mov rax, [rsp + 16]
    mov ecx, 16
    call puthex
    mov al, 0x0a
    mov dx, COM1
    out dx, al
    mov al, FAIL_EXCEPTION
    mov dx, FAIL_PORT
    out dx, al
3:
    cli
    hlt
    jmp 3b

/* puts: write the NUL-terminated string at RSI to COM1. Clobbers RAX, RDX, RSI. */
puts:
    mov dx, COM1
2:
    mov al, [rsi]
    test al, al
    jz 3f
    out dx, al
    inc rsi
    jmp 2b
3:
    ret

/* puthex: write the low ECX (1-16) hex digits of RAX to COM1, most significant first,
 * lower case. Clobbers RAX, RCX, RDX, R8, R9. */
puthex:
    mov r9, rax
    mov r8d, ecx
    neg ecx
    lea ecx, [rcx * 4 + 64]     /* move the first digit to the top nibble */
    shl r9, cl
    mov dx, COM1
2:
    rol r9, 4
    mov eax, r9d
    and eax, 0x0f
    add al, 0x30                /* '0' */
    cmp al, 0x39                /* '9' */
    jbe 3f
    add al, 0x27                /* 'a' - '9' - 1 */
3:
    out dx, al
    dec r8d
    jnz 2b
    ret

msg_vector: .asciz "guest: exception vector=0x"
msg_error:  .asciz " error=0x"
msg_rip:    .asciz " rip=0x"

/* ------------------------------------------------------------------------------------------
 * Tables. An IDT gate or TSS descriptor splits its address into fields, which no ELF
 * relocation can express; so addresses inside this section are computed at assembly time as
 * BOOT_BASE + (symbol - boot_base), an absolute value because both symbols are in .boot.
 * ------------------------------------------------------------------------------------------ */
    .balign 8
null_idt_ptr:                   /* limit 0: every vector is out of range (service 1) */
    .word 0
    .quad 0

    .balign 8
gdt_ptr:
    .word gdt_end - gdt - 1
    .quad gdt

    .balign 8
idt_ptr:
    .word idt_end - idt - 1
    .quad idt

/* GDT (SDM Vol. 3A 3.4.5). Accessed bits preset so that the CPU never writes them back. */
    .balign 16
gdt:
    .quad 0                     /* 0x00 null */
    .quad 0x00af9b000000ffff    /* 0x08 kernel code: L=1 (64-bit), P, DPL 0 */
    .quad 0x00cf93000000ffff    /* 0x10 kernel data: P, DPL 0, writable */
    .quad 0x00cff3000000ffff    /* 0x18 user data:   P, DPL 3, writable */
    .quad 0x00affb000000ffff    /* 0x20 user code:   L=1, P, DPL 3 */
    /* 0x28 TSS: 16-byte system descriptor, type 9 = available 64-bit TSS (SDM 7.2.3) */
    .word (tss_end - tss - 1) & 0xffff
    .word (BOOT_BASE + (tss - boot_base)) & 0xffff
    .byte ((BOOT_BASE + (tss - boot_base)) >> 16) & 0xff
    .byte 0x89                  /* P, DPL 0, type 9 */
    .byte ((tss_end - tss - 1) >> 16) & 0x0f
    .byte ((BOOT_BASE + (tss - boot_base)) >> 24) & 0xff
    .long 0                     /* base 63:32: the image lives below 4 GiB */
    .long 0
gdt_end:

/* IDT (SDM Vol. 3A 6.14.1): vectors 0x00-0x2f. Higher vectors are beyond the limit and
 * raise #GP, which is reported like any other exception. Gate types: 0x8e = P, DPL 0,
 * 64-bit interrupt gate (IF cleared on entry); 0xee = the same with DPL 3, reachable by
 * int3 from ring 3. IST = 0 everywhere: ring-3 entries use TSS.RSP0, ring-0 entries (only
 * IRQs during the idle service) the current stack. */
    .macro IDT_GATE handler, type
    .word (BOOT_BASE + (\handler - boot_base)) & 0xffff
    .word KERNEL_CS
    .byte 0
    .byte \type
    .word ((BOOT_BASE + (\handler - boot_base)) >> 16) & 0xffff
    .long 0
    .long 0
    .endm

    .balign 16
idt:
    .irp vec, 0,1,2
    IDT_GATE exc_\vec, 0x8e
    .endr
    IDT_GATE syscall_entry, 0xee
    .irp vec, 4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    IDT_GATE exc_\vec, 0x8e
    .endr
    .irp irq, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    IDT_GATE irq_\irq, 0x8e
    .endr
idt_end:

/* 64-bit TSS (SDM Vol. 3A 7.7) followed by the I/O permission bitmap (SDM Vol. 1 19.5.2):
 * one bit per port, 0 = allowed. All zero, so ring-3 in/out never #GP but exit to the VMM
 * (with IOPL 0 the CPU consults this bitmap). The bitmap must be followed by a byte 0xff. */
    .balign 16
tss:
    .long 0                     /* reserved */
    .quad kernel_stack_top      /* RSP0: stack for ring 3 -> ring 0 transitions */
    .quad 0                     /* RSP1 */
    .quad 0                     /* RSP2 */
    .quad 0                     /* reserved */
    .quad 0, 0, 0, 0, 0, 0, 0   /* IST1-7: unused */
    .quad 0                     /* reserved */
    .word 0                     /* reserved */
    .word iomap - tss           /* I/O map base address */
iomap:
    .fill 8192, 1, 0
    .byte 0xff
tss_end:

/* Page tables (SDM Vol. 3A 4.5): identity map of 0-8 GiB with 2 MiB pages, all user-
 * accessible and writable. One PML4 entry -> one PDPT with 8 entries -> 8 page directories
 * (pd + 0, 4096, ..., 28672), 4096 PDEs in all. 4-8 GiB is RAM for guests larger than 3 GiB
 * (the VMM puts RAM above the MMIO window there). Above 8 GiB nothing is mapped: the
 * `fault` mode relies on that. */
    .balign 4096
pml4:
    .quad pdpt + PTE_TABLE
    .fill 511, 8, 0
pdpt:
    .quad pd + 0x0000 + PTE_TABLE
    .quad pd + 0x1000 + PTE_TABLE
    .quad pd + 0x2000 + PTE_TABLE
    .quad pd + 0x3000 + PTE_TABLE
    .quad pd + 0x4000 + PTE_TABLE
    .quad pd + 0x5000 + PTE_TABLE
    .quad pd + 0x6000 + PTE_TABLE
    .quad pd + 0x7000 + PTE_TABLE
    .fill 504, 8, 0
pd:
    .set pde_index, 0
    .rept 1536                  /* 0-3 GiB: RAM (and whatever else the VMM put there) */
    .quad (pde_index << 21) | PDE_RAM
    .set pde_index, pde_index + 1
    .endr
    .rept 512                   /* 3-4 GiB: device (MMIO) window */
    .quad (pde_index << 21) | PDE_MMIO
    .set pde_index, pde_index + 1
    .endr
    .rept 2048                  /* 4-8 GiB: RAM above the MMIO window */
    .quad (pde_index << 21) | PDE_RAM
    .set pde_index, pde_index + 1
    .endr

/* ------------------------------------------------------------------------------------------
 * Data shared with ring 3, and the stacks.
 * ------------------------------------------------------------------------------------------ */
    .section .data.irq_count, "aw", @progbits
    .balign 64
    .global IRQ_COUNT
IRQ_COUNT:                      /* [u64; 16], incremented by the IRQ stubs */
    .fill 16, 8, 0

    .section .bss.stacks, "aw", @nobits
    .balign 16
kernel_stack:                   /* ring 0: interrupt frames and the exception reporter */
    .skip 16 * 1024
kernel_stack_top:
    .balign 16
user_stack:                     /* ring 3: the Rust program */
    .skip 256 * 1024
    .global user_stack_top
user_stack_top:
