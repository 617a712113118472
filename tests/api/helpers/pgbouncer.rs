//! A real PgBouncer (Debian's `pgbouncer` package) in transaction pooling mode in front of one
//! test database, on a free loopback port, with its own auth file; stopped on drop.
//!
//! PgBouncer refuses to run as root, so when the tests run as root it runs as the `postgres`
//! system user (as the embedded cluster does) from a directory that user owns.

use std::io::Read as _;
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::unistd::{Uid, User};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use uuid::Uuid;

const MISSING: &str = "pgbouncer is not installed: install Debian's package \
     (apt-get install -y pgbouncer; .ci/run installs it) to run the PgBouncer tests";

#[derive(Debug)]
pub struct PgBouncer {
    pub port: u16,
    /// The name clients connect to (the test database's name).
    pub database: String,
    dir: PathBuf,
    child: Child,
}

/// What to write into `pgbouncer.ini` beyond the fixed transaction-mode setup.
#[derive(Debug, Clone)]
pub struct BouncerConfig {
    /// Server connections per user and database: below the app's pool size, so PgBouncer
    /// really multiplexes client connections onto fewer server connections.
    pub pool_size: u32,
    /// `ignore_startup_parameters`, empty for none.
    pub ignore_startup_parameters: String,
}

impl Default for BouncerConfig {
    fn default() -> Self {
        Self {
            pool_size: 2,
            ignore_startup_parameters: String::new(),
        }
    }
}

fn binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("pgbouncer"))
            .find(|candidate| candidate.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/sbin/pgbouncer")).filter(|p| p.is_file()))
        .unwrap_or_else(|| panic!("{MISSING}"))
}

impl PgBouncer {
    /// Starts PgBouncer in front of the database of `upstream`, admitting `users` (name,
    /// password) with SCRAM and logging in to the server with the same credentials.
    pub fn start(
        upstream: &PgConnectOptions,
        users: &[(&str, &str)],
        config: &BouncerConfig,
    ) -> Self {
        let binary = binary();
        let database = upstream
            .get_database()
            .expect("the upstream names its database")
            .to_owned();
        let dir =
            std::env::temp_dir().join(format!("instauth-pgbouncer-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("pgbouncer dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("free port")
            .port();
        let userlist: String = users
            .iter()
            .map(|(name, password)| format!("\"{name}\" \"{password}\"\n"))
            .collect();
        std::fs::write(dir.join("userlist.txt"), userlist).expect("userlist");
        let ini = format!(
            "[databases]\n\
             {database} = host={host} port={upstream_port} dbname={database}\n\
             \n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = scram-sha-256\n\
             auth_file = {userlist}\n\
             pool_mode = transaction\n\
             default_pool_size = {pool_size}\n\
             max_client_conn = 100\n\
             ignore_startup_parameters = {ignore}\n\
             logfile = {log}\n",
            host = upstream.get_host(),
            upstream_port = upstream.get_port(),
            userlist = dir.join("userlist.txt").display(),
            pool_size = config.pool_size,
            ignore = config.ignore_startup_parameters,
            log = dir.join("pgbouncer.log").display(),
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).expect("pgbouncer.ini");
        let mut command = Command::new(&binary);
        command
            .arg(dir.join("pgbouncer.ini"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if Uid::effective().is_root() {
            let user = User::from_name("postgres")
                .ok()
                .flatten()
                .expect("running as root, PgBouncer needs the `postgres` system user to run as");
            for entry in ["", "userlist.txt", "pgbouncer.ini"] {
                std::os::unix::fs::chown(
                    dir.join(entry),
                    Some(user.uid.as_raw()),
                    Some(user.gid.as_raw()),
                )
                .expect("hand the pgbouncer dir to postgres");
            }
            command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("starting {}: {err}", binary.display()));
        let mut bouncer = Self {
            port,
            database,
            dir,
            child,
        };
        bouncer.wait_until_listening();
        bouncer
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                panic!("pgbouncer exited ({status}): {stderr}\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("pgbouncer did not listen within 15 s:\n{}", self.log());
    }

    /// Connection options for `user` through PgBouncer. sqlx's default `extra_float_digits`
    /// startup parameter is left out: PgBouncer refuses it (instauth's pool leaves it out too).
    pub fn connect_options(&self, user: &str, password: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username(user)
            .password(password)
            .database(&self.database)
            .ssl_mode(PgSslMode::Disable)
            .extra_float_digits(None)
    }

    /// PgBouncer's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
