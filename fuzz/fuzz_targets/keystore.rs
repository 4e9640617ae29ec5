//! The key store (`keys.slots`) read back from damaged bytes: a pristine store of live
//! and effaced slots is made once; each input damages a copy (bytes flipped or set,
//! cut short, extended) — or, when it starts with `ff`, is the file itself. Opening
//! must refuse with an error or open; an open store must allocate, sync and read a
//! key back, and must not have invented a slot. No panic.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nook_vault::KeyStore;

fn path(what: &str) -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base.join(format!(
        "nook-fuzz-keys-{}-{what}.slots",
        std::process::id()
    ))
}

fn pristine() -> &'static Vec<u8> {
    static P: OnceLock<Vec<u8>> = OnceLock::new();
    P.get_or_init(|| {
        let path = path("pristine");
        let _ = std::fs::remove_file(&path);
        let mut keys = KeyStore::open(&path).expect("new key store");
        let slots: Vec<_> = (0..6)
            .map(|_| keys.allocate().expect("allocate").0)
            .collect();
        keys.efface(slots[1]).expect("efface");
        keys.efface(slots[4]).expect("efface");
        keys.sync().expect("sync");
        drop(keys);
        let bytes = std::fs::read(&path).expect("read");
        let _ = std::fs::remove_file(&path);
        bytes
    })
}

fuzz_target!(|data: &[u8]| {
    let file = match data {
        [0xff, raw @ ..] => raw.to_vec(),
        ops => {
            let mut file = pristine().clone();
            for op in ops.chunks_exact(4) {
                let at = usize::from(u16::from_le_bytes([op[1], op[2]])) % (file.len() + 1);
                match op[0] % 4 {
                    0 if at < file.len() => file[at] ^= op[3] | 1,
                    1 if at < file.len() => file[at] = op[3],
                    2 => file.truncate(at),
                    _ => file.extend(std::iter::repeat_n(op[3], usize::from(op[3]))),
                }
            }
            file
        }
    };
    let path = path("case");
    std::fs::write(&path, &file).expect("write key store");
    if let Ok(mut keys) = KeyStore::open(&path) {
        let live = keys.live_slots();
        assert!(live <= keys.slot_count());
        if let Ok((slot, key)) = keys.allocate() {
            keys.sync().expect("sync");
            let again = keys.get(slot).expect("allocated slot reads back");
            assert_eq!(again.dangerous_as_bytes(), key.dangerous_as_bytes());
            assert_eq!(keys.live_slots(), live + 1);
        }
    }
    let _ = std::fs::remove_file(&path);
});
