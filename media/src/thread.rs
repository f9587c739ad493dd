//! Video threads yield to the game: encoding and decoding video run at a lower scheduling
//! priority, so on a busy machine a game frame or a game message is not kept waiting behind a
//! video frame (voice keeps its priority: it is small and late voice is heard).

/// Lowers the calling thread's priority (Linux: nice +5 for this thread only); elsewhere, and if
/// the system refuses, nothing changes.
pub fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; setpriority only reads its integer arguments
        // and changes the niceness of the thread it names (ours).
        unsafe {
            let tid = libc::gettid();
            let _ = libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 5);
        }
    }
}
