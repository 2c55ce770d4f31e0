//! The boot GDT and its segment descriptors (Intel SDM Vol. 3A, 3.4.5 "Segment Descriptors").
//!
//! The Linux 64-bit boot protocol wants `__BOOT_CS` = 0x10 (flat 64-bit code) and
//! `__BOOT_DS` = 0x18 (flat data); KVM wants the same information twice: once as raw
//! descriptors in guest memory (the guest may reload segments) and once as `kvm_segment`s in
//! the sregs (the hidden part of the segment registers).

use kvm_bindings::kvm_segment;

/// Index of each entry in the boot GDT.
pub const NULL_INDEX: u16 = 0;
pub const CODE_INDEX: u16 = 2;
pub const DATA_INDEX: u16 = 3;
pub const TSS_INDEX: u16 = 4;

/// Builds a raw 8-byte segment descriptor from flags (type, S, DPL, P, AVL, L, D/B, G packed
/// as in bits 8..23 of the descriptor's high word), base and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The boot GDT: null, null, 64-bit code (0x10), data (0x18), TSS (0x20).
/// Flags: 0xa09b = G, L, P, DPL0, S, execute/read accessed; 0xc093 = G, D/B, P, S,
/// read/write accessed; 0x808b = G, P, 64-bit busy TSS.
pub fn boot_gdt() -> [u64; 5] {
    [
        gdt_entry(0, 0, 0),
        gdt_entry(0, 0, 0),
        gdt_entry(0xa09b, 0, 0xfffff),
        gdt_entry(0xc093, 0, 0xfffff),
        gdt_entry(0x808b, 0, 0xfffff),
    ]
}

/// `bits` (at most 8) bits of `entry` from bit `shift`.
fn field(entry: u64, shift: u32, bits: u32) -> u8 {
    let masked = (entry >> shift) & ((1 << bits.min(8)) - 1);
    u8::try_from(masked).unwrap_or(u8::MAX)
}

/// Decodes a raw descriptor into the `kvm_segment` that KVM loads into the hidden part of a
/// segment register whose selector is `index * 8`.
pub fn kvm_segment_from_gdt(entry: u64, index: u16) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    // 20 bits (Intel SDM vol. 3A, 3.4.5): fits a u32.
    let raw_limit = u32::try_from((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)).unwrap_or(0);
    let g = field(entry, 55, 1);
    // With G set the limit counts 4 KiB pages; KVM wants it in bytes.
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    kvm_segment {
        base,
        limit,
        selector: index * 8,
        type_: field(entry, 40, 4),
        present: field(entry, 47, 1),
        dpl: field(entry, 45, 2),
        db: field(entry, 54, 1),
        s: field(entry, 44, 1),
        l: field(entry, 53, 1),
        g,
        avl: field(entry, 52, 1),
        padding: 0,
        unusable: u8::from(field(entry, 47, 1) == 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_segment_round_trips() {
        let gdt = boot_gdt();
        let cs = kvm_segment_from_gdt(gdt[CODE_INDEX as usize], CODE_INDEX);
        assert_eq!(cs.selector, 0x10);
        assert_eq!(
            (cs.l, cs.db, cs.present, cs.s, cs.type_, cs.dpl),
            (1, 0, 1, 1, 0xb, 0)
        );
        assert_eq!(cs.limit, 0xffff_ffff);
        assert_eq!(cs.base, 0);
    }

    #[test]
    fn data_segment_is_32bit_flat() {
        let gdt = boot_gdt();
        let ds = kvm_segment_from_gdt(gdt[DATA_INDEX as usize], DATA_INDEX);
        assert_eq!(ds.selector, 0x18);
        assert_eq!((ds.l, ds.db, ds.type_, ds.g), (0, 1, 3, 1));
    }

    #[test]
    fn base_and_limit_are_split_as_the_sdm_says() {
        let e = gdt_entry(0x808b, 0x1234_5678, 0xabcde);
        assert_eq!(e & 0xffff, 0xbcde);
        assert_eq!((e >> 16) & 0xff_ffff, 0x34_5678);
        assert_eq!(e >> 56, 0x12);
        let seg = kvm_segment_from_gdt(e, 1);
        assert_eq!(seg.base, 0x1234_5678);
        assert_eq!(seg.limit, 0xabcd_efff);
        assert_eq!(seg.unusable, 0);
        assert_eq!(kvm_segment_from_gdt(0, 0).unusable, 1);
    }
}
