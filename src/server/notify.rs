//! Talking to systemd (`Type=notify`): READY=1 once the member serves, STOPPING=1 when it
//! stops, and watchdog pings while the runtime is alive. Without `NOTIFY_SOCKET` (not run by
//! systemd) each call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::{debug, warn};

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "could not notify the service manager");
    }
}

/// The member serves: its listeners are up and its log is replayed.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// The member is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Pings the watchdog at half its interval when systemd asked for one (`WatchdogSec=`): a
/// member whose runtime hangs stops pinging and is restarted.
pub fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let interval = sd_notify::watchdog_enabled()?;
    debug!(interval = ?interval, "systemd watchdog enabled");
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval((interval / 2).max(Duration::from_millis(100)));
        loop {
            tick.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    }))
}
