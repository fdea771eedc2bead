//! Files that hold secrets (tokens, passwords, a database URL, the TLS key): whether other
//! users of the machine can read them. mx2 warns, at every start and in `mx2 config check`,
//! as OpenSSH does for keys; it does not refuse, so that an upgrade never stops a running
//! service (docs/decisions.md).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Why `path` is exposed, if it is: readable (or writable) by users other than its owner and
/// group. A file that cannot be examined is left to the code that reads it.
pub fn exposure(path: &Path) -> Option<String> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o007 != 0).then(|| {
        format!(
            "{} holds a secret but every user of this machine can {} it (mode {mode:04o}): \
             chmod o-rwx {} (0600 owned by mx2's user, or 0640 with group mx2)",
            path.display(),
            if mode & 0o004 != 0 { "read" } else { "use" },
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::Permissions;

    #[test]
    fn only_files_others_can_reach_are_exposed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "secret").unwrap();
        for (mode, exposed) in [(0o600, false), (0o640, false), (0o644, true), (0o602, true)] {
            std::fs::set_permissions(&f, Permissions::from_mode(mode)).unwrap();
            assert_eq!(exposure(&f).is_some(), exposed, "mode {mode:o}");
        }
        std::fs::set_permissions(&f, Permissions::from_mode(0o644)).unwrap();
        let why = exposure(&f).unwrap();
        assert!(
            why.contains("mode 0644") && why.contains("chmod o-rwx"),
            "{why}"
        );
        assert_eq!(exposure(&dir.path().join("missing")), None);
    }
}
