//! The relay address and invite parsers, on any text a person might paste. What
//! parses must print back to text that parses to the same value.
#![no_main]

use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use nook_crypto::{Invite, RelayAddr};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(addr) = RelayAddr::from_str(text) {
        let again = RelayAddr::from_str(&addr.to_string()).expect("printed address parses");
        assert!(again == addr, "address does not survive printing");
    }
    if let Ok(invite) = Invite::from_str(text) {
        let again = Invite::from_str(&invite.to_text()).expect("printed invite parses");
        assert!(again == invite, "invite does not survive printing");
    }
});
