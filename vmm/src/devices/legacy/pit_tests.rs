//! Tests of the PIT model.
use super::*;
use crate::persist::Persist;

const T0: u64 = 5_000_000_000;

/// Guest time of the `ticks`-th clock pulse after `T0`.
fn at(ticks: u64) -> u64 {
    after(T0, ticks)
}

fn after(base: u64, ticks: u64) -> u64 {
    base + ticks_to_ns(ticks)
}

fn program(pit: &mut Pit, channel: u16, mode: u8, count: u16, now: u64) {
    pit.pio_write(
        PIT_CONTROL,
        (channel.to_le_bytes()[0] << 6) | 0x30 | (mode << 1),
        now,
    );
    let [lo, hi] = count.to_le_bytes();
    pit.pio_write(PIT_CHANNEL0 + channel, lo, now);
    pit.pio_write(PIT_CHANNEL0 + channel, hi, now);
}

/// Counter latch command, then LSB and MSB reads.
fn latched_count(pit: &mut Pit, channel: u16, now: u64) -> u16 {
    pit.pio_write(PIT_CONTROL, channel.to_le_bytes()[0] << 6, now);
    let lo = pit.pio_read(PIT_CHANNEL0 + channel, now);
    let hi = pit.pio_read(PIT_CHANNEL0 + channel, now);
    u16::from_le_bytes([lo, hi])
}

fn read_back_status(pit: &mut Pit, channel: u16, now: u64) -> u8 {
    pit.pio_write(PIT_CONTROL, 0xe0 | (2 << channel), now);
    pit.pio_read(PIT_CHANNEL0 + channel, now)
}

#[test]
fn unprogrammed_counter0_is_disarmed() {
    let mut pit = Pit::new();
    assert_eq!(pit.channel0_timer(), TimerRequest::Disarmed);
    pit.pio_write(PIT_CONTROL, 0x34, T0);
    assert_eq!(
        pit.channel0_timer(),
        TimerRequest::Disarmed,
        "control word without count"
    );
    pit.pio_write(0x40, 0x9c, T0);
    assert_eq!(
        pit.channel0_timer(),
        TimerRequest::Disarmed,
        "only the LSB written"
    );
    assert_eq!(pit.pio_read(PIT_CONTROL, T0), 0xff);
}

#[test]
fn mode2_periods_for_100hz_and_1000hz() {
    let mut pit = Pit::new();
    program(&mut pit, 0, 2, 11932, T0);
    assert_eq!(
        pit.channel0_timer(),
        TimerRequest::Periodic {
            first_deadline_ns: T0 + 10_000_151,
            period_ns: 10_000_150
        }
    );
    program(&mut pit, 0, 2, 1193, T0);
    assert_eq!(
        pit.channel0_timer(),
        TimerRequest::Periodic {
            first_deadline_ns: T0 + 999_848,
            period_ns: 999_847
        }
    );
}

#[test]
fn reload_zero_means_65536() {
    let mut pit = Pit::new();
    program(&mut pit, 0, 2, 0, T0);
    assert_eq!(
        pit.channel0_timer(),
        TimerRequest::Periodic {
            first_deadline_ns: T0 + 54_925_402,
            period_ns: 54_925_401
        }
    );
    assert_eq!(latched_count(&mut pit, 0, T0), 0);
    assert_eq!(latched_count(&mut pit, 0, at(1)), 0xffff);
    assert_eq!(latched_count(&mut pit, 0, at(65535)), 1);
    assert_eq!(latched_count(&mut pit, 0, at(65536)), 0);
}

#[test]
fn counter_latch_holds_value_across_time() {
    let mut pit = Pit::new();
    program(&mut pit, 0, 2, 0x1234, T0);
    pit.pio_write(PIT_CONTROL, 0x00, at(0x34));
    pit.pio_write(PIT_CONTROL, 0x00, at(0x100)); // ignored: previous latch unread
    let lo = pit.pio_read(0x40, at(0x200));
    let hi = pit.pio_read(0x40, at(0x300));
    assert_eq!((lo, hi), (0x00, 0x12));
    // The latch is released: the next pair of reads is live.
    assert_eq!(pit.pio_read(0x40, at(0x1000)), 0x34);
    assert_eq!(pit.pio_read(0x40, at(0x1000)), 0x02);
}

#[test]
fn single_byte_latch_is_released_by_one_read() {
    let mut pit = Pit::new();
    pit.pio_write(PIT_CONTROL, 0x14, T0); // counter 0, LSB only, mode 2
    pit.pio_write(0x40, 0x80, T0);
    pit.pio_write(PIT_CONTROL, 0x00, at(0x10));
    assert_eq!(pit.pio_read(0x40, at(0x20)), 0x70, "latched");
    assert_eq!(pit.pio_read(0x40, at(0x20)), 0x60, "live again");
}

#[test]
fn mode0_first_byte_of_a_new_count_stops_counting_and_drops_out() {
    let mut pit = Pit::new();
    program(&mut pit, 0, 0, 100, T0);
    assert_eq!(read_back_status(&mut pit, 0, at(150)) >> 7, 1);
    pit.pio_write(0x40, 0x50, at(200));
    assert_eq!(
        read_back_status(&mut pit, 0, at(200)) >> 7,
        0,
        "OUT low at once"
    );
    assert_eq!(
        latched_count(&mut pit, 0, at(300)),
        0xff9c,
        "counting disabled"
    );
    assert_eq!(latched_count(&mut pit, 0, at(400)), 0xff9c);
    assert_eq!(pit.channel0_timer(), TimerRequest::Disarmed);
    pit.pio_write(0x40, 0x00, at(400));
    assert_eq!(
        pit.channel0_timer(),
        TimerRequest::OneShot {
            deadline_ns: after(at(400), 0x50)
        }
    );
}

#[test]
fn counter2_gate_low_holds_mode2_and_rising_edge_reloads() {
    let mut pit = Pit::new();
    pit.pio_write(PORT_B, 0x01, T0);
    program(&mut pit, 2, 2, 100, T0);
    pit.pio_write(PORT_B, 0x00, at(30));
    assert_eq!(latched_count(&mut pit, 2, at(99)), 70, "counting stopped");
    assert_eq!(pit.pio_read(PORT_B, at(99)) & 0x20, 0x20, "OUT forced high");
    let rise = at(500);
    pit.pio_write(PORT_B, 0x01, rise);
    assert_eq!(latched_count(&mut pit, 2, rise), 100, "reloaded");
    assert_eq!(latched_count(&mut pit, 2, after(rise, 40)), 60);
}

#[test]
fn unlatched_reads_take_each_byte_at_its_own_time() {
    let mut pit = Pit::new();
    program(&mut pit, 0, 0, 0x0300, T0);
    assert_eq!(pit.pio_read(0x40, at(1)), 0xff); // LSB of 0x02ff
    assert_eq!(pit.pio_read(0x40, at(0x101)), 0x01); // MSB of 0x01ff
}

#[test]
fn access_modes_lsb_msb_and_word() {
    let mut pit = Pit::new();
    // LSB only: count = value, reads return the LSB.
    pit.pio_write(PIT_CONTROL, 0x14, T0);
    pit.pio_write(0x40, 0x80, T0);
    assert_eq!(
        pit.channel0_timer(),
        TimerRequest::Periodic {
            first_deadline_ns: at(0x80),
            period_ns: period_ns(0x80)
        }
    );
    assert_eq!(pit.pio_read(0x40, at(0x10)), 0x70);
    assert_eq!(pit.pio_read(0x40, at(0x10)), 0x70);
    // MSB only: count = value << 8, reads return the MSB.
    pit.pio_write(PIT_CONTROL, 0x24, T0);
    pit.pio_write(0x40, 0x02, T0);
    assert_eq!(pit.pio_read(0x40, at(0xff)), 0x01);
    assert_eq!(pit.pio_read(0x40, at(0x101)), 0x00);
    // LSB then MSB.
    program(&mut pit, 0, 2, 0xabcd, T0);
    assert_eq!(pit.pio_read(0x40, T0), 0xcd);
    assert_eq!(pit.pio_read(0x40, T0), 0xab);
    assert_eq!(pit.pio_read(0x40, T0), 0xcd);
}

#[test]
fn mode2_count_decreases_and_wraps_at_reload() {
    let mut pit = Pit::new();
    program(&mut pit, 0, 2, 100, T0);
    let counts: Vec<u16> = [0, 1, 50, 99, 100, 101, 250]
        .iter()
        .map(|&t| latched_count(&mut pit, 0, at(t)))
        .collect();
    assert_eq!(counts, [100, 99, 50, 1, 100, 99, 50]);
    // OUT is low only while the count is 1.
    assert_eq!(read_back_status(&mut pit, 0, at(98)) >> 7, 1);
    assert_eq!(read_back_status(&mut pit, 0, at(99)) >> 7, 0);
    assert_eq!(read_back_status(&mut pit, 0, at(100)) >> 7, 1);
}

#[test]
fn mode2_new_count_waits_for_the_end_of_the_cycle() {
    let mut pit = Pit::new();
    program(&mut pit, 0, 2, 1000, T0);
    pit.pio_write(0x40, 200, at(1500));
    pit.pio_write(0x40, 0, at(1500));
    assert_eq!(
        pit.channel0_timer(),
        TimerRequest::Periodic {
            first_deadline_ns: at(2000),
            period_ns: period_ns(200)
        }
    );
    assert_eq!(
        read_back_status(&mut pit, 0, at(1600)) & 0x40,
        0x40,
        "null count"
    );
    assert_eq!(latched_count(&mut pit, 0, at(1600)), 400);
    assert_eq!(latched_count(&mut pit, 0, at(2000)), 200);
    assert_eq!(latched_count(&mut pit, 0, after(at(2000), 150)), 50);
    assert_eq!(latched_count(&mut pit, 0, after(at(2000), 200)), 200);
    assert_eq!(read_back_status(&mut pit, 0, at(2150)) & 0x40, 0);
}

#[test]
fn mode3_square_wave() {
    let mut pit = Pit::new();
    program(&mut pit, 0, 3, 100, T0);
    assert_eq!(
        pit.channel0_timer(),
        TimerRequest::Periodic {
            first_deadline_ns: at(100),
            period_ns: 83_809
        }
    );
    let counts: Vec<u16> = [0, 1, 49, 50, 51, 99, 100]
        .iter()
        .map(|&t| latched_count(&mut pit, 0, at(t)))
        .collect();
    assert_eq!(counts, [100, 98, 2, 100, 98, 2, 100]);
    let out = |pit: &mut Pit, t| read_back_status(pit, 0, at(t)) >> 7;
    assert_eq!(
        (
            out(&mut pit, 49),
            out(&mut pit, 50),
            out(&mut pit, 99),
            out(&mut pit, 100)
        ),
        (1, 0, 0, 1)
    );
    // Odd count: high for (N+1)/2 pulses, low for (N-1)/2.
    program(&mut pit, 0, 3, 5, T0);
    assert_eq!(
        (
            out(&mut pit, 2),
            out(&mut pit, 3),
            out(&mut pit, 4),
            out(&mut pit, 5)
        ),
        (1, 0, 0, 1)
    );
    // Mode 7 is an alias of mode 3.
    program(&mut pit, 0, 7, 100, T0);
    assert_eq!(latched_count(&mut pit, 0, at(1)), 98);
}

#[test]
fn read_back_status_byte_and_count() {
    let mut pit = Pit::new();
    pit.pio_write(PIT_CONTROL, 0x34, T0);
    assert_eq!(
        read_back_status(&mut pit, 0, T0),
        0xf4,
        "OUT high, null count, lo/hi, mode 2"
    );
    pit.pio_write(0x40, 0x10, T0);
    pit.pio_write(0x40, 0x00, T0);
    // Latch count and status of counters 0 and 2 at once: status is read first.
    program(&mut pit, 2, 0, 0x20, T0);
    pit.pio_write(PIT_CONTROL, 0xca, at(4));
    assert_eq!(pit.pio_read(0x40, at(9)), 0xb4);
    assert_eq!(pit.pio_read(0x40, at(9)), 0x0c);
    assert_eq!(pit.pio_read(0x40, at(9)), 0x00);
    assert_eq!(
        pit.pio_read(0x42, at(9)),
        0x30,
        "mode 0 OUT low, gate low (port B bit 0 clear)"
    );
    assert_eq!(
        pit.pio_read(0x42, at(9)),
        0x20,
        "gate low: counter 2 did not count"
    );
    assert_eq!(pit.pio_read(0x42, at(9)), 0x00);
}

#[test]
fn mode0_one_shot_on_counter0() {
    let mut pit = Pit::new();
    pit.pio_write(PIT_CONTROL, 0x30, T0);
    assert_eq!(
        read_back_status(&mut pit, 0, T0) >> 7,
        0,
        "mode 0 OUT starts low"
    );
    pit.pio_write(0x40, 0xe8, T0);
    pit.pio_write(0x40, 0x03, T0);
    let deadline = T0 + ticks_to_ns(1000);
    assert_eq!(
        pit.channel0_timer(),
        TimerRequest::OneShot {
            deadline_ns: deadline
        }
    );
    assert_eq!(deadline, T0 + 838_096);
    assert_eq!(read_back_status(&mut pit, 0, deadline - 1) >> 7, 0);
    assert_eq!(read_back_status(&mut pit, 0, deadline) >> 7, 1);
    assert_eq!(
        latched_count(&mut pit, 0, at(1001)),
        0xffff,
        "keeps counting after terminal count"
    );
    assert_eq!(
        pit.channel0_timer(),
        TimerRequest::Disarmed,
        "edge was before the last write"
    );
    program(&mut pit, 0, 0, 1000, T0);
    pit.pio_write(PORT_B, 0, deadline);
    assert_eq!(
        pit.channel0_timer(),
        TimerRequest::Disarmed,
        "edge at the last write"
    );
}

#[test]
fn mode4_one_shot_edge_is_one_pulse_after_terminal_count() {
    let mut pit = Pit::new();
    program(&mut pit, 0, 4, 500, T0); // Linux's oneshot clockevent (control word 0x38)
    assert_eq!(
        pit.channel0_timer(),
        TimerRequest::OneShot {
            deadline_ns: at(501)
        }
    );
    assert_eq!(read_back_status(&mut pit, 0, at(499)) >> 7, 1);
    assert_eq!(read_back_status(&mut pit, 0, at(500)) >> 7, 0, "strobe");
    assert_eq!(read_back_status(&mut pit, 0, at(501)) >> 7, 1);
}

#[test]
fn rearming_after_a_later_write_keeps_the_phase() {
    let mut pit = Pit::new();
    program(&mut pit, 0, 2, 11932, T0);
    pit.pio_write(PIT_CONTROL, 0x00, at(25_000)); // counter latch, as a clocksource read does
    assert_eq!(
        pit.channel0_timer(),
        TimerRequest::Periodic {
            first_deadline_ns: at(3 * 11932),
            period_ns: 10_000_150
        }
    );
    pit.pio_write(PIT_CONTROL, 0x00, at(3 * 11932));
    assert_eq!(
        pit.channel0_timer(),
        TimerRequest::Periodic {
            first_deadline_ns: at(4 * 11932),
            period_ns: 10_000_150
        },
        "an edge at the write itself has already happened"
    );
}

#[test]
fn counter2_tsc_calibration_through_port_b() {
    let mut pit = Pit::new();
    // Linux pit_calibrate_tsc(): gate high, speaker off; counter 2 mode 0, 50 ms.
    let b = pit.pio_read(PORT_B, T0);
    pit.pio_write(PORT_B, (b & !0x02) | 0x01, T0);
    let latch = u16::try_from(PIT_HZ / 20).expect("59659");
    pit.pio_write(PIT_CONTROL, 0xb0, T0);
    let [lo, hi] = latch.to_le_bytes();
    pit.pio_write(0x42, lo, T0);
    pit.pio_write(0x42, hi, T0);
    assert_eq!(pit.pio_read(PORT_B, T0) & 0x21, 0x01);
    let expiry = T0 + ticks_to_ns(u64::from(latch));
    assert_eq!(pit.pio_read(PORT_B, expiry - 1) & 0x20, 0);
    assert_eq!(pit.pio_read(PORT_B, expiry) & 0x20, 0x20);
    assert_eq!(
        pit.pio_read(PORT_B, expiry + 1_000_000_000) & 0x20,
        0x20,
        "stays high"
    );
    assert_eq!(
        pit.channel0_timer(),
        TimerRequest::Disarmed,
        "counter 2 is not IRQ 0"
    );
}

#[test]
fn counter2_gate_low_suspends_mode0() {
    let mut pit = Pit::new();
    pit.pio_write(PORT_B, 0x01, T0);
    program(&mut pit, 2, 0, 1000, T0);
    pit.pio_write(PORT_B, 0x00, at(300));
    assert_eq!(latched_count(&mut pit, 2, at(5000)), 700);
    let resumed = at(5000);
    pit.pio_write(PORT_B, 0x01, resumed);
    assert_eq!(latched_count(&mut pit, 2, after(resumed, 600)), 100);
    assert_eq!(pit.pio_read(PORT_B, after(resumed, 700) - 1) & 0x20, 0);
    assert_eq!(pit.pio_read(PORT_B, after(resumed, 700)) & 0x20, 0x20);
}

#[test]
fn counter2_mode1_is_triggered_by_the_gate() {
    let mut pit = Pit::new();
    program(&mut pit, 2, 1, 10, T0);
    assert_eq!(
        pit.pio_read(PORT_B, at(50)) & 0x20,
        0x20,
        "OUT high until triggered"
    );
    pit.pio_write(PORT_B, 0x01, at(100));
    assert_eq!(pit.pio_read(PORT_B, at(105)) & 0x20, 0);
    assert_eq!(pit.pio_read(PORT_B, at(110)) & 0x20, 0x20);
}

#[test]
fn port_b_keeps_writable_bits_and_refresh_toggles() {
    let mut pit = Pit::new();
    pit.pio_write(PORT_B, 0xff, T0);
    let a = pit.pio_read(PORT_B, 0);
    let b = pit.pio_read(PORT_B, REFRESH_PERIOD_NS);
    assert_eq!(a & 0xcf, 0x0f);
    assert_ne!(a & 0x10, b & 0x10);
}

#[test]
fn state_restore_round_trip_preserves_behaviour() {
    let mut pit = Pit::new();
    program(&mut pit, 0, 2, 11932, T0);
    pit.pio_write(PORT_B, 0x03, T0);
    program(&mut pit, 2, 0, 5000, T0);
    pit.pio_write(PIT_CONTROL, 0x00, at(10)); // latch pending across the snapshot
    assert_eq!(pit.pio_read(0x40, at(20)), (11922u16 & 0xff) as u8);
    pit.pio_write(0x40, 0x10, at(30)); // new count pending in mode 2
    pit.pio_write(0x40, 0x00, at(30));
    let state = pit.save();
    // Through the wire format too (the join and snapshot files carry it as JSON).
    let json = serde_json::to_vec(&state).expect("serialize");
    let state: PitState = serde_json::from_slice(&json).expect("parse");
    assert_ne!(state, PitState::default());
    let Ok(mut copy) = Pit::restore((), &state);
    assert_eq!(copy.save(), state);
    assert_eq!(copy.channel0_timer(), pit.channel0_timer());
    for p in [&mut pit, &mut copy] {
        assert_eq!(p.pio_read(0x40, at(40)), (11922u16 >> 8) as u8);
        assert_eq!(latched_count(p, 0, at(11932 + 5)), 11);
        assert_eq!(p.pio_read(PORT_B, at(5000)) & 0x23, 0x23);
    }
    assert_eq!(pit, copy);
}
