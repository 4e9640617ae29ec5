//! Snapshots of the `nook` command line as its users see it: `nook --help`, each
//! command's `--help`, and errors of each exit code that needs no relay.
//!
//! Each case is `tests/cmd/NAME.toml` (the arguments and the expected exit code) with
//! `NAME.stdout` / `NAME.stderr` beside it, run with the real `nook` binary by trycmd.
//! Errors are named by their exit code (`exit-3-no-talk`); a `-json` case is the same
//! error under `--json`. A change to a help text or an error message shows up as a
//! change to these files, to be reviewed like code. After a deliberate change:
//!
//! ```sh
//! TRYCMD=overwrite cargo test -p nook-cli --test cli
//! ```
//!
//! then read the diff of `tests/cmd/`.
//!
//! - Every case runs with an empty environment (`[env] inherit = false`), so neither
//!   `NOOK_HOME`/`NOOK_RELAY` (which `--help` prints) nor the developer's home can
//!   leak in.
//! - Error cases run in a fresh temporary folder (`fs.sandbox = true`); those that get
//!   past the command line pass `--home home`, a folder inside it.
//! - JSON error objects are compared byte for byte (`binary = true`), since trycmd's
//!   text mode would show JSON's `\"` as `/"` (it normalizes path separators).
//! - Exit codes 6 (talk closed) and 7 (wrong relay key) need a live relay, which
//!   trycmd cannot start, and are not snapshotted (7 is checked end to end in
//!   `tests/tests/lifecycle.rs`).

use std::path::Path;
use std::time::Duration;

#[test]
fn help_texts_and_errors_match_their_snapshots() {
    trycmd::TestCases::new()
        .register_bin("nook", Path::new(env!("CARGO_BIN_EXE_nook")))
        .default_bin_name("nook")
        // No case should come near this; it turns a hang into a failure.
        .timeout(Duration::from_secs(30))
        .case("tests/cmd/*.toml")
        .run();
}
