//! The shipped unit must keep `systemd-analyze security` at 2.0 ("OK") or better.

use std::process::Command;

#[test]
fn unit_exposure_is_at_most_2() {
    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/mambatag.service");
    let out = match Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20", unit])
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "systemd-analyze is missing on CI: {e}"
            );
            eprintln!("SKIPPED: systemd-analyze is not available ({e}); apt-get install systemd");
            return;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no verdict:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let score: f64 = last
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score from `{last}`"));
    eprintln!("{last}");
    assert!(score <= 2.0, "{last}");
    assert!(out.status.success(), "--threshold=20 failed:\n{text}");
    // The unit is a notify service with a watchdog, as the daemon expects.
    let unit_text = std::fs::read_to_string(unit).unwrap();
    for needle in [
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=",
        "SupplementaryGroups=audio",
    ] {
        assert!(unit_text.contains(needle), "unit lacks {needle}");
    }
}
