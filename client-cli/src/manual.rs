//! Shell completions and man pages, both generated from the clap definitions so they
//! never drift from `--help`. Shared by both binaries (nook-relay includes this file),
//! so it depends on nothing of either crate.

use std::path::{Path, PathBuf};

use clap::Command;

/// Prints the completion script of `shell` for `cmd` on stdout.
pub fn completions(mut cmd: Command, shell: clap_complete::Shell) {
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, &mut std::io::stdout());
}

/// Writes `NAME.1` and one `NAME-SUB.1` per subcommand (nested ones too, hidden ones
/// not) into `out`, creating it if needed; gives the files written.
pub fn man_pages(cmd: Command, out: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out)?;
    // Built, every subcommand has its display name, `nook-new`: its page's name.
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    write_pages(cmd, out, &mut written)?;
    Ok(written)
}

fn write_pages(cmd: Command, out: &Path, written: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub.clone(), out, written)?;
    }
    written.push(clap_mangen::Man::new(cmd).generate_to(out)?);
    Ok(())
}
