//! The relay as its operator meets it, part two (issue 27): a relay's own bound on a
//! talk's time-to-live, and logs at debug that say what happened without saying to
//! whom (no mailbox ids, keys or client addresses, no quinn/rustls internals).

#![allow(clippy::unwrap_used)]

use nook_e2e::{Nook, Relay};

#[test]
fn a_relay_refuses_a_talk_longer_than_its_max_ttl_naming_the_maximum() {
    let relay = Relay::start_with(&["--max-ttl", "1h"]);
    let a = Nook::new();
    let r = a.run(&["new", "--relay", &relay.address, "--ttl", "2h"]);
    assert_eq!(r.code, 5, "stdout {} stderr {}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("1h") && r.stderr.contains("3600 s"),
        "the refusal names the relay's maximum: {}",
        r.stderr
    );
    // Within the bound, the same relay makes the talk.
    a.ok(&["new", "--relay", &relay.address, "--ttl", "30m"]);
}
