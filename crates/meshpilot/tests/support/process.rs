//! Stopping child processes (Envoy, meshpilot) without blocking a test for long.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::wait::POLL;

/// SIGTERM, then SIGKILL if the process has not exited after `grace`; reaps it either way.
pub fn terminate(child: &mut Child, grace: Duration) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    // SIGTERM through kill(1): this crate forbids unsafe code, so no libc::kill.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
}
