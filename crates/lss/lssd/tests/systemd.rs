//! The service units in `contrib/systemd` (issue 13) pass `systemd-analyze
//! verify` (Debian's systemd, installed when missing) without a single
//! complaint: every key known, every section right, the commands present
//! (the units name `/usr/local/bin/...`; the test points them at the binaries
//! it built, and at lssd in place of lightningd, which cannot be installed
//! here). They are not run under systemd: the test machine has no systemd
//! as PID 1.

use std::path::Path;
use std::process::Command;

fn verify(unit: &str, replace: &[(&str, &str)]) {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../contrib/systemd")
            .join(unit),
    )
    .expect("the unit is in the repository");
    for directive in [
        "DynamicUser=yes",
        "StateDirectory=",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "Restart=on-failure",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(text.contains(directive), "{unit} lacks {directive:?}");
    }
    let text = replace
        .iter()
        .fold(text, |text, (from, to)| text.replace(from, to));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(unit);
    std::fs::write(&path, text).expect("write");
    let analyze = lk_testkit::debian::command("systemd-analyze", "systemd");
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let complaints = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && complaints.trim().is_empty(),
        "{unit}: {complaints}"
    );
}

#[test]
fn the_service_units_verify_cleanly() {
    let lssd = env!("CARGO_BIN_EXE_lssd");
    verify("lssd.service", &[("/usr/local/bin/lssd", lssd)]);
    verify("lightningd.service", &[("/usr/local/bin/lightningd", lssd)]);
}
