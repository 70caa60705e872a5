//! The signal that stops a server: both binaries (the mock and the proxy) stop on the first
//! SIGINT (Ctrl-C) or SIGTERM (what `kill` and container runtimes send), and finish what is in
//! flight before they exit.

/// Resolves on the first SIGINT, or SIGTERM on Unix. A signal whose handler cannot be installed
/// is left out (the other one still stops the server) rather than taken as a stop at start.
pub async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::Duration;

    #[tokio::test]
    async fn sigterm_resolves_it() {
        let stop = super::signal();
        tokio::pin!(stop);
        // One poll installs the handlers (after it, SIGTERM no longer ends this process).
        tokio::select! {
            biased;
            () = &mut stop => panic!("resolved before any signal"),
            () = std::future::ready(()) => {}
        }
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        tokio::time::timeout(Duration::from_secs(10), stop)
            .await
            .expect("SIGTERM resolves the future");
    }
}
