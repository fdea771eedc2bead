//! Giving freed heap back to the system: building a configuration generation for 10,000
//! domains allocates tens of megabytes that are freed a moment later, and glibc's allocator
//! keeps such memory in its per-thread arenas unless asked to return it ([`trim`]); and
//! large buffers (a login's 19 MiB argon2 memory, a message the inbox reads whole) are
//! mapped on their own and unmapped when freed ([`keep_large_buffers_apart`]). Nothing else
//! here.

/// Buffers at least this large are mapped on their own.
const LARGE: usize = 4 << 20;

/// Makes glibc map each buffer of at least [`LARGE`] bytes on its own, always. By default
/// the threshold rises to the size of each mapped buffer freed (up to 32 MiB), after which
/// buffers of that size come from the arenas and their pages stay with the process when
/// freed: one burst of logins or of large inbox reads kept a hundred megabytes resident for
/// good (measured by `tests/it/inbox_memory.rs`). Called once, before any thread starts.
pub fn keep_large_buffers_apart() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes two integers and only sets the allocator's tunables; it is
    // called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE as libc::c_int);
    }
}

/// Returns free heap memory to the system (glibc on Linux; elsewhere nothing to do).
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and only walks the allocator's own free lists;
    // it is thread-safe (it locks each arena).
    unsafe {
        libc::malloc_trim(0);
    }
}
