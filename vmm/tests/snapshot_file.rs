//! Snapshot files through the control socket: written while paused, loaded by the library,
//! the same landmark and RAM digest as the `digest` request; never over an existing file.

mod common;

use std::time::Duration;

use common::Api;
use serde_json::json;
use vmm::persist::file::SnapshotFile;
use vmm::persist::hex;

#[test]
fn a_paused_vm_snapshots_to_a_file_that_loads_with_its_digest() {
    common::require_kvm();
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = dir.path().join("api.sock");
    let _vmm = common::spawn_with_api("guest.mode=ticks guest.hz=1000 guest.ticks=1000000", &sock);
    let mut api = Api::connect(&sock);
    let path = dir.path().join("vm.snap");
    let running = api.call(json!({"cmd": "snapshot", "path": path}));
    assert_eq!(
        running["ok"],
        json!(false),
        "snapshot needs a pause: {running}"
    );
    assert!(!path.exists());

    let now = api.call(json!({"cmd": "status"}))["landmark"]
        .as_u64()
        .expect("landmark");
    let paused = api.call(json!({"cmd": "pause", "landmark": now + 300}));
    assert_eq!(paused["state"], json!("paused"), "{paused}");
    let landmark = paused["landmark"].as_u64().expect("landmark");
    let digest = api.call(json!({"cmd": "digest"}));
    assert_eq!(digest["ok"], json!(true), "{digest}");

    let relative = api.call(json!({"cmd": "snapshot", "path": "vm.snap"}));
    assert_eq!(relative["ok"], json!(false), "{relative}");
    assert!(
        relative["error"]
            .as_str()
            .is_some_and(|e| e.contains("not absolute")),
        "{relative}"
    );

    let snap = api.call(json!({"cmd": "snapshot", "path": path}));
    assert_eq!(snap["ok"], json!(true), "{snap}");
    assert_eq!(snap["landmark"], json!(landmark));
    let size = std::fs::metadata(&path).expect("snapshot file").len();
    assert_eq!(snap["bytes"], json!(size));

    let file = SnapshotFile::load(&path).expect("load the snapshot");
    assert_eq!(file.machine.landmark, landmark, "the pause landmark");
    assert_eq!(
        json!(hex(&file.ram_digest())),
        digest["memory"],
        "RAM in the file = RAM the digest hashed"
    );
    assert_eq!(
        file.memory.len() as u64,
        vmm::config::DEFAULT_MEM_MIB << 20,
        "all of the default guest RAM"
    );

    let again = api.call(json!({"cmd": "snapshot", "path": path}));
    assert_eq!(again["ok"], json!(false), "never overwritten: {again}");
    assert_eq!(std::fs::metadata(&path).expect("still there").len(), size);

    // The CLI reads the same file.
    let info = std::process::Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["--snapshot-info", path.to_str().expect("path")])
        .output()
        .expect("run vmm --snapshot-info");
    assert!(info.status.success(), "{info:?}");
    let summary: serde_json::Value = serde_json::from_slice(&info.stdout).expect("JSON");
    assert_eq!(summary["landmark"], json!(landmark));
    assert_eq!(summary["memory"], digest["memory"]);

    // The VM goes on as if nothing happened.
    assert_eq!(api.call(json!({"cmd": "resume"}))["ok"], json!(true));
    std::thread::sleep(Duration::from_millis(200));
    let later = api.call(json!({"cmd": "status"}));
    assert_eq!(later["state"], json!("running"), "{later}");
    assert!(
        later["landmark"].as_u64().expect("landmark") > landmark,
        "guest did not run on: {later}"
    );
}
