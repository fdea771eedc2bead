//! `mx2 queue adopt` and `mx2 queue reset`: the way out when the server refuses a damaged
//! embedded queue (see `queue::embedded::guard`). Both work on the files while the server is
//! stopped, and neither deletes anything: what they replace is kept in `state_dir/damaged-*`.

use super::load;
use crate::config::StorageConfig;
use crate::queue::embedded;
use std::path::Path;
use std::process::ExitCode;

fn embedded_dir(config: &Path) -> Result<std::path::PathBuf, ExitCode> {
    let c = load(config)?;
    match c.storage {
        StorageConfig::Embedded => Ok(c.state_dir),
        StorageConfig::Postgres(_) => {
            eprintln!(
                "mx2: {}: the queue is in PostgreSQL; adopt and reset are for the embedded queue \
                 (restore PostgreSQL with its own tools)",
                config.display()
            );
            Err(ExitCode::from(2))
        }
    }
}

/// `mx2 queue adopt`: accept queue.sqlite as it reads now.
pub fn adopt(config: &Path) -> ExitCode {
    let dir = match embedded_dir(config) {
        Ok(d) => d,
        Err(code) => return code,
    };
    match embedded::adopt(&dir) {
        Ok(a) => {
            println!(
                "adopted {}: {} message(s), {} recipient(s) waiting, at commit {}\n\
                 the files as they were are kept in {}",
                dir.join("queue.sqlite").display(),
                a.messages,
                a.recipients,
                a.commits,
                a.copy.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mx2: {e}");
            ExitCode::from(1)
        }
    }
}

/// `mx2 queue reset --i-understand`: set the queue's files aside; the next start is empty.
pub fn reset(config: &Path, understood: bool) -> ExitCode {
    let dir = match embedded_dir(config) {
        Ok(d) => d,
        Err(code) => return code,
    };
    if !understood {
        eprintln!(
            "mx2: this makes the next start begin with an empty queue: the mail in {} is then \
             lost to mx2 (its files are moved to {}/damaged-TIME, not deleted). If that is what \
             you want, run it again with --i-understand",
            dir.join("queue.sqlite").display(),
            dir.display()
        );
        return ExitCode::from(2);
    }
    match embedded::reset(&dir) {
        Ok((to, moved)) if moved.is_empty() => {
            let _ = std::fs::remove_dir(&to);
            println!("no queue files in {}: nothing to reset", dir.display());
            ExitCode::SUCCESS
        }
        Ok((to, moved)) => {
            println!(
                "moved {} to {}; the next start creates an empty queue",
                moved.join(", "),
                to.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mx2: {e}");
            ExitCode::from(1)
        }
    }
}
