//! `mx2 generate` (hidden; used by the package build): writes the man pages — `mx2(8)`, one
//! page per subcommand (`mx2-queue-list(8)`, …) from the clap definitions, and
//! `mx2.toml(5)` from the configuration reference — and the bash, zsh and fish completions.

use super::Cli;
use clap::{CommandFactory, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum GenerateCmd {
    /// Write the man pages (section 8 and mx2.toml.5) into DIR.
    Man { dir: PathBuf },
    /// Write completions into DIR: mx2.bash, _mx2 (zsh), mx2.fish.
    Completions { dir: PathBuf },
}

pub fn run(cmd: GenerateCmd) -> ExitCode {
    let (dir, result) = match cmd {
        GenerateCmd::Man { dir } => {
            let r = man_pages(&dir);
            (dir, r)
        }
        GenerateCmd::Completions { dir } => {
            let r = completions(&dir);
            (dir, r)
        }
    };
    match result {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mx2: cannot write into {}: {e}", dir.display());
            ExitCode::from(1)
        }
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8], out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, bytes)?;
    out.push(path);
    Ok(())
}

/// The page of `cmd` (named `name`, e.g. `mx2-queue-list`) and of each visible subcommand.
fn pages(
    cmd: clap::Command,
    name: &str,
    dir: &Path,
    out: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let cmd = cmd.name(name.to_string());
    let mut roff = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .section("8")
        .render(&mut roff)?;
    write(dir, &format!("{name}.8"), &roff, out)?;
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let sub_name = format!("{name}-{}", sub.get_name());
        pages(sub.clone(), &sub_name, dir, out)?;
    }
    Ok(())
}

fn man_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    let mut cmd = Cli::command();
    cmd.build();
    pages(cmd, "mx2", dir, &mut out)?;
    let page = super::reference::man_page(env!("CARGO_PKG_VERSION"));
    write(dir, "mx2.toml.5", page.as_bytes(), &mut out)?;
    Ok(out)
}

fn completions(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    use clap_complete::Shell;
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    for (shell, name) in [
        (Shell::Bash, "mx2.bash"),
        (Shell::Zsh, "_mx2"),
        (Shell::Fish, "mx2.fish"),
    ] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "mx2", &mut text);
        write(dir, name, &text, &mut out)?;
    }
    Ok(out)
}
