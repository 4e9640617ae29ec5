//! The envelope log's recovery (`Log::open`, `Log::inspect`) on a damaged folder.
//!
//! A pristine log of records of many sizes, over several segments, is made once; each
//! input damages a copy of it (bytes flipped or set, segments cut short or extended
//! with junk) and opens it. Opening must not panic; it either refuses (an error that
//! names the damage) or recovers, and then every record that lies wholly before the
//! first damaged byte of its segment must come back exactly, and the log must take
//! appends again.
#![no_main]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nook_vault::{Loc, Log};

const SEGMENT_BYTES: u64 = 4096;

struct Pristine {
    /// Segment file name → bytes.
    files: BTreeMap<String, Vec<u8>>,
    /// Every record appended: (segment, offset, len) → (namespace, key, sealed).
    records: BTreeMap<Loc, (u64, Vec<u8>, Vec<u8>)>,
}

fn scratch() -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base.join(format!("nook-fuzz-log-{}", std::process::id()))
}

fn pristine() -> &'static Pristine {
    static P: OnceLock<Pristine> = OnceLock::new();
    P.get_or_init(|| {
        let dir = scratch().join("pristine");
        let _ = std::fs::remove_dir_all(&dir);
        let (log, _) = Log::open(&dir, SEGMENT_BYTES, |_| true).expect("new log");
        let mut records = BTreeMap::new();
        for i in 0u64..60 {
            let key = [&b"e"[..], &i.to_be_bytes()].concat();
            let len = [0usize, 1, 40, 333, 1500, 5000][(i % 6) as usize];
            let sealed: Vec<u8> = (0..len).map(|j| (i as usize * 31 + j) as u8).collect();
            let loc = log.append(i % 3, &key, &sealed).expect("append");
            records.insert(loc, (i % 3, key, sealed));
            if i % 7 == 0 {
                log.sync().expect("sync");
            }
        }
        log.sync().expect("sync");
        drop(log);
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let entry = entry.expect("entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            files.insert(name, std::fs::read(entry.path()).expect("read"));
        }
        let _ = std::fs::remove_dir_all(&dir);
        Pristine { files, records }
    })
}

fuzz_target!(|data: &[u8]| {
    let p = pristine();
    let names: Vec<&String> = p.files.keys().collect();
    let mut files: Vec<Vec<u8>> = p.files.values().cloned().collect();
    // The first damaged offset of each segment (usize::MAX: untouched).
    let mut first_damage = vec![usize::MAX; files.len()];
    for op in data.chunks_exact(5) {
        let i = usize::from(op[0]) % files.len();
        let file = &mut files[i];
        let at = usize::from(u16::from_le_bytes([op[2], op[3]])) % (file.len() + 1);
        let before = file.clone();
        match op[1] % 4 {
            0 if at < file.len() => file[at] ^= op[4] | 1,
            1 if at < file.len() => file[at] = op[4],
            2 => file.truncate(at),
            3 => file.extend(std::iter::repeat_n(op[4], usize::from(op[4] % 64) + 1)),
            _ => {}
        }
        if let Some(d) = (0..before.len()).find(|&j| file.get(j) != before.get(j)) {
            first_damage[i] = first_damage[i].min(d);
        }
    }
    let dir = scratch().join("case");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    for (name, bytes) in names.iter().zip(&files) {
        std::fs::write(dir.join(name), bytes).expect("write segment");
    }
    let _ = Log::inspect(&dir);
    let mut found = Vec::new();
    let opened = Log::open(&dir, SEGMENT_BYTES, |r| {
        found.push(r);
        true
    });
    if let Ok((log, _)) = opened {
        let got: BTreeMap<Loc, _> = found.into_iter().map(|r| (r.loc, r)).collect();
        for (loc, (ns, key, sealed)) in &p.records {
            let seg = names
                .iter()
                .position(|n| n.trim_end_matches(".seg") == format!("{:016x}", loc.segment))
                .expect("record's segment");
            let end = (loc.offset + u64::from(loc.len)) as usize;
            if end <= first_damage[seg] {
                let r = got
                    .get(loc)
                    .unwrap_or_else(|| panic!("intact record at {loc:?} lost"));
                assert!(r.namespace == *ns && r.key == *key && r.sealed == *sealed);
            }
        }
        let loc = log
            .append(9, b"after", b"x")
            .expect("append after recovery");
        if log.sync().is_ok() {
            assert_eq!(log.read(loc).expect("read back").sealed, b"x");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
});
