//! Tests of the PIC model.
use super::*;
use crate::persist::Persist;

const NS_EOI: u8 = 0x20;
const READ_IRR: u8 = 0x0a;
const READ_ISR: u8 = 0x0b;

/// The sequence Linux's init_8259A() uses: edge mode, cascade, ICW4 (8086, `icw4`),
/// vectors 0x20 and 0x28, everything unmasked afterwards.
fn init_with(icw1: u8, icw4: u8) -> Pic {
    let mut pic = Pic::new();
    for (cmd, data, base, icw3) in [
        (MASTER_CMD, MASTER_DATA, 0x20, 0x04),
        (SLAVE_CMD, SLAVE_DATA, 0x28, 0x02),
    ] {
        pic.pio_write(cmd, icw1);
        pic.pio_write(data, base);
        pic.pio_write(data, icw3);
        pic.pio_write(data, icw4);
        pic.pio_write(data, 0x00);
    }
    pic
}

fn init() -> Pic {
    init_with(0x11, 0x01)
}

fn reg(pic: &mut Pic, cmd: u16, ocw3: u8) -> u8 {
    pic.pio_write(cmd, ocw3);
    pic.pio_read(cmd)
}

#[test]
fn power_on_masks_everything_until_initialized() {
    let mut pic = Pic::new();
    pic.pulse_irq(0);
    assert!(!pic.has_pending());
    assert_eq!(pic.acknowledge(), None);
    assert_eq!(pic.pio_read(MASTER_DATA), 0xff);
    assert_eq!(pic.pio_read(0x22), 0xff);
}

#[test]
fn irr_isr_imr_readback_via_ocw3() {
    let mut pic = init();
    pic.pio_write(MASTER_DATA, 0xa5);
    pic.pio_write(SLAVE_DATA, 0x3c);
    assert_eq!(pic.pio_read(MASTER_DATA), 0xa5);
    assert_eq!(pic.pio_read(SLAVE_DATA), 0x3c);
    pic.pio_write(MASTER_DATA, 0);
    pic.pulse_irq(1);
    pic.pulse_irq(4);
    assert_eq!(reg(&mut pic, MASTER_CMD, READ_IRR), 0x12);
    assert_eq!(reg(&mut pic, MASTER_CMD, READ_ISR), 0x00);
    assert_eq!(pic.acknowledge(), Some(0x21));
    // The RR/RIS selection sticks until the next OCW3 with RR = 1.
    assert_eq!(pic.pio_read(MASTER_CMD), 0x02);
    pic.pio_write(MASTER_CMD, 0x08); // OCW3 with RR = 0: no change
    assert_eq!(pic.pio_read(MASTER_CMD), 0x02);
    assert_eq!(reg(&mut pic, MASTER_CMD, READ_IRR), 0x10);
}

#[test]
fn icw1_resets_masks_requests_and_edge_sense() {
    let mut pic = init();
    pic.pio_write(MASTER_DATA, 0x0f);
    pic.set_irq_level(5, true);
    assert_eq!(pic.acknowledge(), Some(0x25));
    pic.pulse_irq(6);
    pic.pio_write(MASTER_CMD, 0x11);
    assert_eq!(pic.pio_read(MASTER_DATA), 0x00, "ICW1 clears the IMR");
    pic.pio_write(MASTER_DATA, 0x40);
    pic.pio_write(MASTER_DATA, 0x04);
    pic.pio_write(MASTER_DATA, 0x01);
    assert_eq!(reg(&mut pic, MASTER_CMD, READ_ISR), 0);
    assert!(
        !pic.has_pending(),
        "latched IRR and the still-high IRQ 5 are forgotten"
    );
    pic.set_irq_level(5, false);
    pic.set_irq_level(5, true);
    assert_eq!(pic.acknowledge(), Some(0x45), "new ICW2 vector base");
}

#[test]
fn lower_irq_number_wins_and_nesting_follows_priority() {
    let mut pic = init();
    pic.pulse_irq(3);
    pic.pulse_irq(1);
    assert_eq!(pic.acknowledge(), Some(0x21));
    // IRQ 3 has lower priority than the in-service IRQ 1.
    assert!(!pic.has_pending());
    assert_eq!(pic.acknowledge(), None);
    pic.pulse_irq(0);
    assert_eq!(pic.acknowledge(), Some(0x20), "IRQ 0 preempts IRQ 1");
    assert_eq!(reg(&mut pic, MASTER_CMD, READ_ISR), 0x03);
    pic.pio_write(MASTER_CMD, NS_EOI);
    assert_eq!(
        pic.pio_read(MASTER_CMD),
        0x02,
        "non-specific EOI resets the highest ISR bit"
    );
    assert!(!pic.has_pending());
    pic.pio_write(MASTER_CMD, NS_EOI);
    assert_eq!(pic.acknowledge(), Some(0x23));
}

#[test]
fn specific_eoi_clears_only_the_named_level() {
    let mut pic = init();
    pic.pulse_irq(4);
    assert_eq!(pic.acknowledge(), Some(0x24));
    pic.pulse_irq(1);
    assert_eq!(pic.acknowledge(), Some(0x21));
    pic.pio_write(MASTER_CMD, 0x60 | 4); // specific EOI for IR4
    assert_eq!(reg(&mut pic, MASTER_CMD, READ_ISR), 0x02);
    pic.pio_write(MASTER_CMD, 0x60 | 1);
    assert_eq!(pic.pio_read(MASTER_CMD), 0x00);
}

#[test]
fn masked_irq_is_held_until_unmasked() {
    let mut pic = init();
    pic.pio_write(MASTER_DATA, 0x01);
    pic.pulse_irq(0);
    assert!(!pic.has_pending());
    assert_eq!(pic.acknowledge(), None);
    assert_eq!(
        reg(&mut pic, MASTER_CMD, READ_IRR),
        0x01,
        "request stays latched in the IRR"
    );
    pic.pio_write(MASTER_DATA, 0x00);
    assert!(pic.has_pending());
    assert_eq!(pic.acknowledge(), Some(0x20));
}

#[test]
fn held_edge_line_does_not_retrigger_but_a_new_edge_does() {
    let mut pic = init();
    pic.set_irq_level(4, true);
    assert_eq!(pic.acknowledge(), Some(0x24));
    pic.pio_write(MASTER_CMD, NS_EOI);
    pic.set_irq_level(4, true);
    assert!(!pic.has_pending());
    pic.set_irq_level(4, false);
    assert!(!pic.has_pending());
    pic.set_irq_level(4, true);
    assert_eq!(pic.acknowledge(), Some(0x24));
}

#[test]
fn level_mode_follows_the_line() {
    let mut pic = init_with(0x19, 0x01);
    pic.set_irq_level(3, true);
    assert_eq!(pic.acknowledge(), Some(0x23));
    pic.pio_write(MASTER_CMD, NS_EOI);
    assert_eq!(
        pic.acknowledge(),
        Some(0x23),
        "still high: requests again after EOI"
    );
    pic.pio_write(MASTER_CMD, NS_EOI);
    pic.set_irq_level(3, false);
    assert!(!pic.has_pending());
}

#[test]
fn cascade_delivers_slave_vector_and_needs_both_eois() {
    let mut pic = init();
    pic.pulse_irq(10);
    assert!(pic.has_pending());
    assert_eq!(pic.acknowledge(), Some(0x2a));
    assert_eq!(reg(&mut pic, MASTER_CMD, READ_ISR), 0x04);
    assert_eq!(reg(&mut pic, SLAVE_CMD, READ_ISR), 0x04);
    pic.pio_write(SLAVE_CMD, NS_EOI);
    assert_eq!(pic.pio_read(SLAVE_CMD), 0x00);
    pic.pulse_irq(11);
    assert!(
        !pic.has_pending(),
        "master IR2 still in service (fully nested mode)"
    );
    pic.pio_write(MASTER_CMD, NS_EOI);
    assert_eq!(pic.pio_read(MASTER_CMD), 0x00);
    assert_eq!(pic.acknowledge(), Some(0x2b));
}

#[test]
fn slave_irqs_rank_between_irq1_and_irq3() {
    let mut pic = init();
    pic.pulse_irq(3);
    pic.pulse_irq(12);
    assert_eq!(pic.acknowledge(), Some(0x2c));
    pic.pulse_irq(1);
    assert_eq!(pic.acknowledge(), Some(0x21), "IRQ 1 preempts a slave IRQ");
}

#[test]
fn special_fully_nested_lets_a_higher_slave_irq_nest() {
    let mut pic = init();
    pic.pio_write(MASTER_CMD, 0x11);
    for v in [0x20, 0x04, 0x11, 0x00] {
        pic.pio_write(MASTER_DATA, v);
    }
    pic.pulse_irq(12);
    assert_eq!(pic.acknowledge(), Some(0x2c));
    pic.pulse_irq(9);
    assert_eq!(pic.acknowledge(), Some(0x29));
    pic.pulse_irq(13);
    assert!(
        !pic.has_pending(),
        "a lower slave IRQ is still blocked by the slave ISR"
    );
}

#[test]
fn auto_eoi_leaves_isr_clear() {
    let mut pic = init_with(0x11, 0x03);
    pic.pulse_irq(1);
    assert_eq!(pic.acknowledge(), Some(0x21));
    assert_eq!(reg(&mut pic, MASTER_CMD, READ_ISR), 0);
    pic.pulse_irq(5);
    assert_eq!(
        pic.acknowledge(),
        Some(0x25),
        "no EOI needed for a lower level"
    );
    pic.pulse_irq(9);
    pic.pulse_irq(14);
    assert_eq!(pic.acknowledge(), Some(0x29));
    assert_eq!(
        pic.acknowledge(),
        Some(0x2e),
        "the slave re-requests through the cascade"
    );
    assert_eq!(pic.acknowledge(), None);
}

#[test]
fn spurious_irq7_when_the_request_vanishes_before_inta() {
    let mut pic = init_with(0x19, 0x01); // level triggered
    pic.set_irq_level(5, true);
    assert!(pic.has_pending());
    pic.set_irq_level(5, false);
    assert_eq!(pic.acknowledge(), None, "INT no longer asserted");
    assert_eq!(pic.inta(), 0x27, "a raw INTA now gets the IR7 vector");
    assert_eq!(
        reg(&mut pic, MASTER_CMD, READ_ISR),
        0,
        "no ISR bit for a spurious IRQ 7"
    );
}

#[test]
fn spurious_irq15_when_the_slave_request_vanishes() {
    let mut pic = init();
    // Slave in level mode, master in edge mode (latches the slave's INT on IR2).
    pic.pio_write(SLAVE_CMD, 0x19);
    for v in [0x28, 0x02, 0x01, 0x00] {
        pic.pio_write(SLAVE_DATA, v);
    }
    pic.set_irq_level(10, true);
    pic.set_irq_level(10, false);
    assert!(pic.has_pending(), "master IR2 request is latched");
    assert_eq!(pic.acknowledge(), Some(0x2f));
    assert_eq!(reg(&mut pic, SLAVE_CMD, READ_ISR), 0);
    assert_eq!(
        reg(&mut pic, MASTER_CMD, READ_ISR),
        0x04,
        "master must still get an EOI"
    );
}

#[test]
fn set_priority_and_rotation() {
    let mut pic = init();
    pic.pio_write(MASTER_CMD, 0xc0 | 3); // IR3 lowest, IR4 highest
    pic.pulse_irq(1);
    pic.pulse_irq(4);
    assert_eq!(pic.acknowledge(), Some(0x24));
    pic.pio_write(MASTER_CMD, 0xc7); // back to IR0 highest
    pic.pio_write(MASTER_CMD, 0xa0); // rotate on non-specific EOI: IR4 becomes lowest
    pic.pulse_irq(4);
    assert_eq!(pic.acknowledge(), Some(0x21), "IR1 outranks IR4 anyway");
    pic.pio_write(MASTER_CMD, 0xa0); // EOI IR1 and make it the lowest
    pic.pulse_irq(1);
    assert_eq!(pic.acknowledge(), Some(0x24), "IR4 now outranks IR1");
    pic.pio_write(MASTER_CMD, 0xe0 | 4); // rotate on specific EOI
    assert_eq!(pic.acknowledge(), Some(0x21));
}

#[test]
fn special_mask_mode_enables_lower_levels() {
    let mut pic = init();
    pic.pulse_irq(1);
    assert_eq!(pic.acknowledge(), Some(0x21));
    pic.pulse_irq(4);
    assert!(!pic.has_pending());
    pic.pio_write(MASTER_DATA, 0x02);
    pic.pio_write(MASTER_CMD, 0x68); // set special mask mode
    assert_eq!(pic.acknowledge(), Some(0x24));
    pic.pio_write(MASTER_CMD, NS_EOI); // must not reset the masked ISR1
    assert_eq!(reg(&mut pic, MASTER_CMD, READ_ISR), 0x02);
}

#[test]
fn poll_command_acknowledges_once() {
    let mut pic = init();
    pic.pulse_irq(6);
    pic.pio_write(MASTER_CMD, 0x0c);
    assert_eq!(pic.pio_read(MASTER_CMD), 0x86);
    assert_eq!(reg(&mut pic, MASTER_CMD, READ_ISR), 0x40);
    pic.pio_write(MASTER_CMD, 0x0c);
    assert_eq!(pic.pio_read(MASTER_DATA), 0x00, "nothing to poll");
    assert_eq!(pic.pio_read(MASTER_DATA), 0x00, "back to reading the IMR");
}

#[test]
fn bad_irq_numbers_are_ignored() {
    let mut pic = init();
    pic.pulse_irq(2);
    pic.pulse_irq(16);
    assert!(!pic.has_pending());
}

#[test]
fn state_restore_round_trip_preserves_behaviour() {
    let mut pic = init();
    pic.pio_write(MASTER_DATA, 0x08);
    pic.pulse_irq(3);
    pic.pulse_irq(10);
    pic.pulse_irq(5);
    pic.set_irq_level(6, true);
    assert_eq!(pic.acknowledge(), Some(0x2a));
    pic.pio_write(SLAVE_CMD, READ_ISR);
    let state = pic.save();
    // Through the wire format too (the join and snapshot files carry it as JSON).
    let json = serde_json::to_vec(&state).expect("serialize");
    let state: PicState = serde_json::from_slice(&json).expect("parse");
    let Ok(mut copy) = Pic::restore((), &state);
    assert_eq!(copy.save(), state);
    assert_ne!(state, PicState::default());
    for p in [&mut pic, &mut copy] {
        assert_eq!(p.pio_read(SLAVE_CMD), 0x04);
        p.pio_write(SLAVE_CMD, NS_EOI);
        p.pio_write(MASTER_CMD, NS_EOI);
        p.set_irq_level(6, true); // still high: no new edge
        assert_eq!(p.acknowledge(), Some(0x25));
        assert_eq!(p.acknowledge(), None);
        p.pio_write(MASTER_DATA, 0x00);
        assert_eq!(p.acknowledge(), Some(0x23), "unmasked IR3 preempts IR5");
        assert_eq!(reg(p, MASTER_CMD, READ_ISR), 0x28);
    }
    assert_eq!(pic, copy);
}
