//! Making the allocator give freed audio memory back to the system at once.
//!
//! The workers use mimalloc (faster for their many small buffers), which
//! keeps freed pages resident for a while before purging them. For the audio
//! workers that delay breaks the memory bound: a job that frees 200 MiB of
//! samples and the next job that reserves them in the audio budget would
//! briefly both count in the process's RSS (the memory benchmark measured
//! 815 MiB peak under a 512 MiB budget). mimalloc reads its options from the
//! environment once, when the process starts, and setting them in code
//! needs `unsafe` FFI; so an audio worker started without
//! `MIMALLOC_PURGE_DELAY` re-executes itself once with it set to `0`
//! (purge at once), same PID, same arguments. An operator's own setting wins.

use std::os::unix::process::CommandExt;

/// The mimalloc option this sets.
pub const PURGE_DELAY_VAR: &str = "MIMALLOC_PURGE_DELAY";

/// Re-executes the current binary with `MIMALLOC_PURGE_DELAY=0` unless the
/// variable is set already. Returns only if no re-execution was needed or it
/// failed (then the worker runs with mimalloc's default, and says so).
pub fn purge_freed_memory_at_once() {
    if std::env::var_os(PURGE_DELAY_VAR).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(PURGE_DELAY_VAR, "0")
        .exec();
    // Only reached if exec failed; logging is not set up yet.
    eprintln!(
        "warning: could not re-execute with {PURGE_DELAY_VAR}=0 ({err}); freed audio memory \
         may stay resident briefly beyond the audio budget"
    );
}
