//! The gate's ordering rules, without sockets or threads.

use super::*;

/// Holds output `n` (numbered by the gate) and returns what leaves.
fn output(g: &mut Gate<String>, n: u64) -> Vec<String> {
    let id = g.next_id().expect("FT mode numbers outputs");
    assert_eq!(id, n, "ids are consecutive");
    g.hold(Some(id), format!("out {id}"))
}

#[test]
fn plain_mode_numbers_nothing() {
    let mut g: Gate<String> = Gate::default();
    assert!(!g.is_primary());
    assert_eq!(g.next_id(), None);
}

#[test]
fn outputs_are_numbered_held_and_released_in_order() {
    let mut g = Gate::default();
    assert!(g.connect(true).is_empty());
    for n in 1..=4 {
        assert!(output(&mut g, n).is_empty(), "held until released");
    }
    assert_eq!(g.release(2), ["out 1", "out 2"]);
    assert!(g.release(1).is_empty(), "going backwards changes nothing");
    assert_eq!(g.held_outputs(), 2);
    assert_eq!(g.release(4), ["out 3", "out 4"]);
    assert_eq!(g.held_items(), 0);
}

#[test]
fn a_release_ahead_of_the_announcement_lets_the_output_go_at_once() {
    let mut g = Gate::default();
    g.connect(true);
    assert!(g.release(2).is_empty());
    assert_eq!(output(&mut g, 1), ["out 1"]);
    assert_eq!(output(&mut g, 2), ["out 2"]);
    assert!(output(&mut g, 3).is_empty());
    assert_eq!(g.held_ids().collect::<Vec<_>>(), [3]);
}

#[test]
fn a_follower_waits_for_the_outputs_before_it_and_never_holds_up_later_ones() {
    let mut g = Gate::default();
    g.connect(true);
    // Nothing held: a follower leaves at once.
    assert_eq!(g.hold(None, "f0".to_string()), ["f0"]);
    output(&mut g, 1);
    assert!(g.hold(None, "f1".to_string()).is_empty());
    output(&mut g, 2);
    assert_eq!(g.held_outputs(), 2);
    assert_eq!(g.held_items(), 3);
    assert_eq!(
        g.iter().cloned().collect::<Vec<_>>(),
        ["out 1", "f1", "out 2"]
    );
    // Releasing 1 lets the follower behind it go too, but not output 2.
    assert_eq!(g.release(1), ["out 1", "f1"]);
    assert_eq!(g.release(2), ["out 2"]);
}

#[test]
fn going_live_releases_everything_and_ids_continue() {
    let mut g = Gate::default();
    g.connect(true);
    for n in 1..=3 {
        output(&mut g, n);
    }
    g.hold(None, "f".to_string());
    assert_eq!(g.set_primary(false), ["out 1", "out 2", "out 3", "f"]);
    assert_eq!(g.next_id(), None);
    assert!(g.release(3).is_empty(), "a late release finds nothing");
    g.set_primary(true);
    assert!(output(&mut g, 4).is_empty(), "held again in FT mode");
    // A new connection hands back what was still held, to discard, and restarts the ids.
    assert_eq!(g.connect(true), ["out 4"]);
    assert_eq!(g.next_id(), Some(1));
}

#[test]
fn the_end_of_the_connection_discards_held_outputs_and_a_late_release_runs_nothing() {
    let mut g = Gate::default();
    g.connect(true);
    for n in 1..=3 {
        output(&mut g, n);
    }
    assert_eq!(g.release(1), ["out 1"]);
    assert_eq!(g.disconnect(), ["out 2", "out 3"]);
    assert_eq!(g.held_items(), 0);
    assert!(!g.is_primary());
    assert!(g.release(3).is_empty());
    assert!(g.set_primary(false).is_empty());
    assert_eq!(g.next_id(), None);
}
