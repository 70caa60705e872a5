//! A `redis-server` of a run's own, for a fleet that shares limits: on a free loopback port (or
//! a given one, to bring back a server that was stopped), nothing saved to disk; stopped at once
//! when dropped. The scenario runner, the benchmark's `serve-redis` subject and the end-to-end
//! tests all start theirs here.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// How to get `redis-server` when it is missing.
pub const INSTALL: &str = "apt-get install -y redis-server";

/// A running `redis-server`, killed (and waited for, so its port is free again) when dropped.
#[derive(Debug)]
pub struct RedisServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on a port the OS picks and waits until it accepts connections.
    pub async fn start() -> Result<RedisServer, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port for redis-server: {e}"))?
            .port();
        RedisServer::on(port).await
    }

    /// Starts one on `port` (to bring back a server that was stopped) and waits (at most 5 s)
    /// until it accepts connections.
    pub async fn on(port: u16) -> Result<RedisServer, String> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server cannot start ({e}): install it ({INSTALL})"))?;
        let server = RedisServer {
            port,
            child: Some(child),
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "redis-server did not accept connections on port {port} within 5 s"
        ))
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Stops it at once (SIGKILL), as a crash would, and waits until it has gone.
    pub fn kill(mut self) {
        self.stop();
    }

    /// Waits until it exits on its own (or is killed from outside), without blocking the
    /// runtime.
    pub async fn wait(mut self) -> Result<ExitStatus, String> {
        let Some(mut child) = self.child.take() else {
            return Err("redis-server was stopped already".into());
        };
        tokio::task::spawn_blocking(move || child.wait())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
