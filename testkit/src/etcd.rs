//! A real etcd (Debian's `etcd-server`) for tests: free loopback ports, a temporary data dir,
//! stopped and removed on drop.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A running etcd member. Dropping it kills the process and removes its data dir.
#[derive(Debug)]
pub struct Etcd {
    child: Child,
    client: SocketAddr,
    dir: PathBuf,
}

/// Why etcd could not be started.
#[derive(Debug)]
pub struct EtcdError(pub String);

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EtcdError {}

fn free_port() -> Result<u16, EtcdError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| EtcdError(format!("no free loopback port: {e}")))
}

impl Etcd {
    /// Starts etcd on two free loopback ports (client, peer) and waits until it accepts
    /// connections (at most 20 s).
    pub fn start() -> Result<Etcd, EtcdError> {
        let client = free_port()?;
        let peer = free_port()?;
        static STARTED: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "edgeplay-etcd-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| EtcdError(format!("cannot create {}: {e}", dir.display())))?;
        let curl = format!("http://127.0.0.1:{client}");
        let purl = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.join("etcd.log"))
            .map_err(|e| EtcdError(format!("cannot create the etcd log: {e}")))?;
        let child = Command::new("etcd")
            .arg("--name=test")
            .arg(format!("--data-dir={}", dir.join("data").display()))
            .arg(format!("--listen-client-urls={curl}"))
            .arg(format!("--advertise-client-urls={curl}"))
            .arg(format!("--listen-peer-urls={purl}"))
            .arg(format!("--initial-advertise-peer-urls={purl}"))
            .arg(format!("--initial-cluster=test={purl}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                EtcdError(format!(
                    "cannot start etcd: {e}; install it with `apt-get install etcd-server` (or `cargo xtask setup`)"
                ))
            })?;
        let mut me = Etcd {
            child,
            client: SocketAddr::from(([127, 0, 0, 1], client)),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect_timeout(&me.client, Duration::from_millis(200)).is_ok() {
                return Ok(me);
            }
            if let Ok(Some(status)) = me.child.try_wait() {
                return Err(EtcdError(format!(
                    "etcd exited with {status}; see {}",
                    me.dir.join("etcd.log").display()
                )));
            }
            if Instant::now() > deadline {
                return Err(EtcdError("etcd did not listen within 20 s".into()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The client address (`127.0.0.1:PORT`).
    pub fn addr(&self) -> SocketAddr {
        self.client
    }

    /// The broker's `--store` argument for this etcd, with a key prefix of its own.
    pub fn store_url(&self, prefix: &str) -> String {
        format!("etcd://{}/{prefix}", self.client)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
