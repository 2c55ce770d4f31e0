//! Boots every mode of the test guest (build/guest.elf) and checks output and exit status.

mod common;

use std::time::Duration;

use common::{boot_guest, stat};

const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn hello_prints_banner_and_command_line_then_powers_off() {
    let run = boot_guest("guest.mode=hello extra=word", TIMEOUT);
    run.assert_success();
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("guest: hello"))
        .expect("banner");
    assert!(
        line.contains("guest.mode=hello extra=word"),
        "banner without the command line: {line}"
    );
    assert!(
        run.elapsed < Duration::from_secs(10),
        "hello took {:?}",
        run.elapsed
    );
}

#[test]
fn ticks_counts_100_ticks_at_100_hz() {
    let run = boot_guest("guest.mode=ticks guest.hz=100 guest.ticks=100", TIMEOUT);
    run.assert_success();
    assert!(
        run.stdout.contains("guest: ticks=100"),
        "stdout:\n{}",
        run.stdout
    );
    // 100 ticks of a 100 Hz PIT cannot take much less than a second: the PIT period is right.
    assert!(
        run.elapsed >= Duration::from_millis(900),
        "100 ticks at 100 Hz in {:?}",
        run.elapsed
    );
    assert!(stat(&run, "interrupts_injected") >= 100);
    // The guest idles in `hlt` between ticks: one HLT exit per tick, roughly, not a busy loop.
    let hlt = stat(&run, "hlt");
    assert!((100..=400).contains(&hlt), "hlt exits: {hlt}");
}

#[test]
fn ticks_at_1000_hz() {
    let run = boot_guest("guest.mode=ticks guest.hz=1000 guest.ticks=200", TIMEOUT);
    run.assert_success();
    assert!(
        run.stdout.contains("guest: ticks=200"),
        "stdout:\n{}",
        run.stdout
    );
    assert!(
        run.elapsed >= Duration::from_millis(180),
        "200 ticks at 1000 Hz in {:?}",
        run.elapsed
    );
}

#[test]
fn spin_gets_ticks_in_ring3_at_exits() {
    let run = boot_guest(
        "guest.mode=spin guest.report=20000000 guest.lines=5 guest.hz=100",
        TIMEOUT,
    );
    run.assert_success();
    let ticks: Vec<u64> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("guest: spin"))
        .map(|l| {
            let t = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix("ticks="))
                .expect("ticks=");
            t.parse().expect("tick count")
        })
        .collect();
    assert_eq!(ticks.len(), 5, "stdout:\n{}", run.stdout);
    assert!(
        ticks.windows(2).all(|w| w[0] <= w[1]),
        "ticks went backwards: {ticks:?}"
    );
    assert!(
        ticks[4] > ticks[0],
        "no tick reached the spinning ring-3 loop: {ticks:?}"
    );
}

#[test]
fn pio_mode_counts_its_exits() {
    let run = boot_guest("guest.mode=pio guest.count=20000", TIMEOUT);
    run.assert_success();
    assert!(
        run.stdout.contains("guest: pio done count=20000"),
        "stdout:\n{}",
        run.stdout
    );
    assert!(stat(&run, "pio_out") >= 20000);
}

#[test]
fn guest_page_fault_is_reported_with_nonzero_exit() {
    let run = boot_guest("guest.mode=fault", TIMEOUT);
    assert_eq!(run.status, Some(5), "stderr:\n{}", run.stderr);
    assert!(
        run.stdout.contains("guest: exception vector=0x0e"),
        "stdout:\n{}",
        run.stdout
    );
    assert!(run.stdout.contains("rip=0x"), "stdout:\n{}", run.stdout);
    assert!(
        run.stderr.contains("guest reported failure code 3"),
        "stderr:\n{}",
        run.stderr
    );
}

#[test]
fn triple_fault_is_a_clear_error() {
    let run = boot_guest("guest.mode=triple", TIMEOUT);
    assert_eq!(run.status, Some(3), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains("triple fault"),
        "stderr:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("rip="),
        "registers missing:\n{}",
        run.stderr
    );
}

#[test]
fn unknown_mode_fails() {
    let run = boot_guest("guest.mode=nonsense", TIMEOUT);
    assert_ne!(run.status, Some(0), "stdout:\n{}", run.stdout);
}
