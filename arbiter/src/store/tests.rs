//! Unit tests of the flag store.

use super::*;

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn init(p: &Path) -> Store {
    Store::open_with(p, Open::Init).expect("init")
}

fn tas(s: &mut Store, vm: &str, epoch: u64, owner: &str) -> Decision {
    s.test_and_set(vm, epoch, owner).expect("test_and_set")
}

fn d(granted: bool, owner: &str, epoch: u64, stale: bool) -> Decision {
    Decision {
        granted,
        owner: owner.into(),
        epoch,
        stale,
    }
}

#[test]
fn first_wins_second_refused_same_owner_idempotent() {
    let t = dir();
    let mut s = init(t.path());
    assert_eq!(tas(&mut s, "vm", 1, "host-a"), d(true, "host-a", 1, false));
    assert_eq!(tas(&mut s, "vm", 1, "host-b"), d(false, "host-a", 1, false));
    assert_eq!(tas(&mut s, "vm", 1, "host-a"), d(true, "host-a", 1, false));
    assert_eq!(tas(&mut s, "vm", 1, "host-b"), d(false, "host-a", 1, false));
    // Flags are per vm.
    assert_eq!(
        tas(&mut s, "other", 1, "host-b"),
        d(true, "host-b", 1, false)
    );
}

#[test]
fn stale_epoch_refused_higher_epoch_open_to_anyone() {
    let t = dir();
    let mut s = init(t.path());
    assert_eq!(tas(&mut s, "vm", 5, "host-a"), d(true, "host-a", 5, false));
    assert_eq!(tas(&mut s, "vm", 6, "host-b"), d(true, "host-b", 6, false));
    // Epoch 5 is now stale, even for its former winner.
    assert_eq!(tas(&mut s, "vm", 5, "host-a"), d(false, "host-b", 6, true));
    assert_eq!(tas(&mut s, "vm", 4, "host-c"), d(false, "host-b", 6, true));
    assert_eq!(tas(&mut s, "vm", 6, "host-a"), d(false, "host-b", 6, false));
    assert_eq!(tas(&mut s, "vm", 9, "host-a"), d(true, "host-a", 9, false));
    assert_eq!(s.flags().len(), 1);
}

#[test]
fn grants_survive_reopen() {
    let t = dir();
    {
        let mut s = init(t.path());
        tas(&mut s, "vm", 3, "host-a");
        tas(&mut s, "vm2", 1, "host-b");
    }
    let mut s = Store::open(t.path()).unwrap();
    assert_eq!(tas(&mut s, "vm", 3, "host-b"), d(false, "host-a", 3, false));
    assert_eq!(tas(&mut s, "vm", 2, "host-b"), d(false, "host-a", 3, true));
    let flags = load(t.path()).unwrap();
    assert_eq!(flags.len(), 2);
    assert_eq!(
        (flags[1].vm.as_str(), flags[1].owner.as_str()),
        ("vm2", "host-b")
    );
    assert!(flags[0].granted_at_unix_ms > 1_600_000_000_000);
}

#[test]
fn second_store_on_same_dir_is_refused() {
    let t = dir();
    let _s = init(t.path());
    assert!(matches!(Store::open(t.path()), Err(Error::Locked(_))));
}

#[test]
fn missing_dir_is_an_error() {
    let t = dir();
    let p = t.path().join("nope");
    assert!(matches!(Store::open(&p), Err(Error::StateDirMissing(_))));
    assert!(!p.exists());
}

#[test]
fn corrupt_state_is_a_startup_error() {
    let t = dir();
    {
        let mut s = init(t.path());
        tas(&mut s, "vm", 1, "host-a");
    }
    let path = t.path().join(STATE_FILE);
    let good = fs::read_to_string(&path).unwrap();
    let cases = [
        good[..good.len() / 2].to_string(),
        String::new(),
        "garbage".into(),
        good.replace("\"version\": 1", "\"version\": 2"),
        good.replace("host-a", "x\\u0007"),
        good.replace("\"vm\": \"vm\"", "\"vm\": \"../vm\""),
        good.replace("\"owner\"", "\"owner_\""),
    ];
    for bad in cases {
        assert_ne!(bad, good);
        fs::write(&path, &bad).unwrap();
        match Store::open(t.path()) {
            Err(Error::CorruptState { .. }) => {}
            other => panic!("{bad:?}: expected CorruptState, got {other:?}"),
        }
        // Nothing was reset.
        assert_eq!(fs::read_to_string(&path).unwrap(), bad);
    }
}

#[test]
fn leftover_temp_file_is_ignored() {
    let t = dir();
    fs::write(t.path().join(TEMP_FILE), "half a wri").unwrap();
    let mut s = init(t.path());
    assert_eq!(tas(&mut s, "vm", 1, "host-a"), d(true, "host-a", 1, false));
    assert!(!t.path().join(TEMP_FILE).exists());
}

#[test]
fn missing_state_file_is_not_a_fresh_start() {
    let t = dir();
    // Never initialised: refused, and nothing is created.
    assert!(matches!(Store::open(t.path()), Err(Error::StateMissing(_))));
    assert!(matches!(load(t.path()), Err(Error::StateMissing(_))));
    assert!(!t.path().join(STATE_FILE).exists());
    {
        let mut s = init(t.path());
        tas(&mut s, "vm", 7, "host-a");
    }
    // --init never overwrites the flags already granted.
    match Store::open_with(t.path(), Open::Init) {
        Err(Error::StateExists(_)) => {}
        other => panic!("expected StateExists, got {other:?}"),
    }
    assert_eq!(load(t.path()).unwrap().len(), 1);
    // A deleted file does not make the arbiter forget epoch 7.
    fs::remove_file(t.path().join(STATE_FILE)).unwrap();
    assert!(matches!(Store::open(t.path()), Err(Error::StateMissing(_))));
    // --init on an empty directory writes an empty, loadable state.
    let t = dir();
    drop(init(t.path()));
    assert!(load(t.path()).unwrap().is_empty());
    assert!(Store::open(t.path()).unwrap().flags().is_empty());
}

#[test]
fn reset_forgets_one_vm_durably() {
    let t = dir();
    {
        let mut s = init(t.path());
        tas(&mut s, "vm", u64::MAX, "intruder");
        tas(&mut s, "other", 3, "host-a");
        let old = s.reset("vm").unwrap();
        assert_eq!((old.epoch, old.owner.as_str()), (u64::MAX, "intruder"));
        assert!(matches!(s.reset("vm"), Err(Error::NoFlag(_))));
        assert!(matches!(s.reset("nope"), Err(Error::NoFlag(_))));
    }
    let mut s = Store::open(t.path()).unwrap();
    assert_eq!(s.flags().len(), 1);
    assert_eq!(tas(&mut s, "vm", 5, "host-b"), d(true, "host-b", 5, false));
    // The other vm's flag is untouched.
    assert_eq!(
        tas(&mut s, "other", 3, "host-b"),
        d(false, "host-a", 3, false)
    );
}
