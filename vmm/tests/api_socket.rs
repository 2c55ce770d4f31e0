//! The control socket against other local users: mode 0600, so another user's connect gets
//! EACCES from the kernel; with `--socket-group` (0660) a member of that group gets in.
//! Needs root (to be another user in a child); fails loudly without it.

use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;

use vhost_harness::{connect_from_child, ChildIds};

const NOBODY: u32 = 65534;
const GROUP: u32 = 4242;

#[test]
fn another_user_gets_eacces_and_a_group_member_gets_in() {
    assert_eq!(
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() },
        0,
        "this test needs root (it runs a child as uid {NOBODY})"
    );
    let dir = tempfile::tempdir().expect("dir");
    // The directory lets anyone through, so only the socket's own mode decides.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let nobody = |groups: Vec<u32>| ChildIds {
        uid: NOBODY,
        gid: NOBODY,
        groups,
    };

    let path = dir.path().join("api.sock");
    let _listener = vmm::api::bind(&path, None).expect("bind");
    let e = connect_from_child(&path, Some(&nobody(vec![]))).expect_err("another user");
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    // Its owner still gets in.
    connect_from_child(&path, None).expect("the owner connects");

    let shared = dir.path().join("shared.sock");
    let _listener = vmm::api::bind(&shared, Some(GROUP)).expect("bind with a group");
    let e = connect_from_child(&shared, Some(&nobody(vec![]))).expect_err("not in the group");
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    connect_from_child(&shared, Some(&nobody(vec![GROUP]))).expect("a member of the group");
}
