//! A private PostgreSQL cluster started from the installed server binaries, used when no
//! database URL is configured (`serve`, `demo`, and the test suite).
//!
//! Layout under the data directory: `pgdata/` (the cluster, owned by the server's user),
//! `pgdata/instauth.log` (server log), `password` (the superuser password, mode 0600),
//! `port` (the port of the last start) and `lock` (held by the one process using the cluster:
//! a second one is refused, and a server left running by a killed owner is adopted and stopped
//! like one started here). The server listens on 127.0.0.1 only, with password
//! authentication; no Unix socket is opened, so socket path length limits never apply. It takes
//! the port of its last start when that is free, so clients of a restarted cluster reconnect.
//!
//! PostgreSQL refuses to run as root. Started by root, the cluster is created and run as the
//! `postgres` system user, which must be able to reach the data directory.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::{PermissionsExt as _, chown};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{Gid, Uid, User};
use sqlx::postgres::PgConnectOptions;

use super::private_file;

/// Failures a user can act on; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no PostgreSQL server binaries found (initdb and pg_ctl, on PATH or under \
         /usr/lib/postgresql/*/bin): install the `postgresql` package \
         (apt-get install postgresql) or set DATABASE_URL to an existing server"
    )]
    NoBinaries,
    #[error(
        "running as root, but PostgreSQL refuses to run as root and there is no `postgres` \
         system user to run it as: run as a regular user, install the `postgresql` package, \
         or set DATABASE_URL"
    )]
    NoServerUser,
    #[error(
        "running as root, the cluster runs as user `postgres`, which cannot reach {0}: \
         use --data-dir under a directory it can enter (e.g. /var/tmp/instauth), run as a \
         regular user, or set DATABASE_URL"
    )]
    Unreachable(PathBuf),
    #[error("another instauth process is using {0}: stop it, or pass another --data-dir")]
    InUse(PathBuf),
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("preparing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The owner the server processes run as when we are root.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: Uid,
    gid: Gid,
}

/// A running private cluster, owned by this process until dropped; [`EmbeddedPostgres::stop`]
/// stops it.
pub struct EmbeddedPostgres {
    /// Exclusive while this value lives; the kernel releases it if the process dies.
    _lock: Flock<fs::File>,
    bin_dir: PathBuf,
    pgdata: PathBuf,
    port_file: PathBuf,
    run_as: Option<RunAs>,
    port: u16,
    password: String,
}

/// Shows where the cluster is, never its password.
impl std::fmt::Debug for EmbeddedPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedPostgres")
            .field("pgdata", &self.pgdata)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl EmbeddedPostgres {
    /// Initialises the cluster under `data_dir` if needed and starts it. A server found running
    /// there was left by an owner that died (the lock says so); it is adopted as it is.
    ///
    /// `durable: false` trades crash safety for speed (no fsync): for throwaway test clusters.
    pub fn start(data_dir: &Path, durable: bool) -> Result<Self, EmbeddedError> {
        let bin_dir = find_binaries().ok_or(EmbeddedError::NoBinaries)?;
        let run_as = server_user()?;
        fs::create_dir_all(data_dir).map_err(io_at(data_dir))?;
        let data_dir = data_dir.canonicalize().map_err(io_at(data_dir))?;
        if let Some(owner) = run_as {
            ensure_reachable(&data_dir, owner)?;
        }
        let lock = take_lock(&data_dir)?;
        let pgdata = data_dir.join("pgdata");
        let password_file = data_dir.join("password");
        let mut cluster = Self {
            _lock: lock,
            bin_dir,
            port_file: data_dir.join("port"),
            pgdata,
            run_as,
            port: 0,
            password: String::new(),
        };
        if !cluster.pgdata.join("PG_VERSION").exists() {
            cluster.init(&password_file, durable)?;
        }
        cluster.password = fs::read_to_string(&password_file)
            .map_err(io_at(&password_file))?
            .trim()
            .to_owned();
        if let Some(port) = cluster.running_port() {
            cluster.port = port;
            tracing::warn!(port, pgdata = %cluster.pgdata.display(), "adopting an embedded PostgreSQL left running by an instauth that died");
        } else {
            cluster.launch(durable)?;
        }
        Ok(cluster)
    }

    /// Connection options for the `postgres` database as the cluster's superuser.
    pub fn connect_options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username("postgres")
            .password(&self.password)
            .database("postgres")
            .ssl_mode(sqlx::postgres::PgSslMode::Disable)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server.
    pub fn stop(&self) {
        let result = self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "30"]);
        match result {
            Ok(_) => tracing::info!("embedded PostgreSQL stopped"),
            Err(err) => tracing::warn!(error = %err, "stopping embedded PostgreSQL"),
        }
    }

    fn init(&self, password_file: &Path, durable: bool) -> Result<(), EmbeddedError> {
        let password = uuid::Uuid::new_v4().simple().to_string();
        write_private(password_file, &password, None)?;
        // initdb reads the password as the server user; hand it a copy it owns.
        let initdb_pw = self.pgdata.with_extension("initdb-pw");
        write_private(&initdb_pw, &password, self.run_as)?;
        let _ = fs::create_dir_all(&self.pgdata);
        fs::set_permissions(&self.pgdata, fs::Permissions::from_mode(0o700))
            .map_err(io_at(&self.pgdata))?;
        self.chown(&self.pgdata)?;
        let pw_arg = format!("--pwfile={}", initdb_pw.display());
        let pgdata_arg = self.pgdata.display().to_string();
        let mut args = vec![
            "-D",
            &pgdata_arg,
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            &pw_arg,
            "-E",
            "UTF8",
            "--locale=C",
        ];
        if !durable {
            args.push("--no-sync");
        }
        let result = self.run("initdb", &args);
        let _ = fs::remove_file(&initdb_pw);
        result.map(|_| ())
    }

    fn launch(&mut self, durable: bool) -> Result<(), EmbeddedError> {
        let log = self.pgdata.join("instauth.log");
        let mut last_error = None;
        let previous = fs::read_to_string(&self.port_file)
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok())
            .filter(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok());
        // A port picked free can be taken before the server binds it: try a few.
        for attempt in 0..3 {
            let port = match previous {
                Some(port) if attempt == 0 => port,
                _ => free_port().map_err(io_at(Path::new("127.0.0.1:0")))?,
            };
            let mut options = format!(
                "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='' -c max_connections=200"
            );
            if !durable {
                options.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
            }
            let log_arg = log.display().to_string();
            match self.pg_ctl(&["start", "-w", "-t", "60", "-l", &log_arg, "-o", &options]) {
                Ok(_) => {
                    self.port = port;
                    fs::write(&self.port_file, port.to_string()).map_err(io_at(&self.port_file))?;
                    tracing::info!(port, pgdata = %self.pgdata.display(), "embedded PostgreSQL started");
                    return Ok(());
                }
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| EmbeddedError::Command {
            what: "pg_ctl start".into(),
            detail: format!("see {}", log.display()),
        }))
    }

    /// The port of a server already running on this data directory, from `postmaster.pid`.
    fn running_port(&self) -> Option<u16> {
        self.pg_ctl(&["status"]).ok()?;
        let pid_file = fs::read_to_string(self.pgdata.join("postmaster.pid")).ok()?;
        pid_file.lines().nth(3)?.trim().parse().ok()
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<Output, EmbeddedError> {
        let pgdata = self.pgdata.display().to_string();
        let mut full = vec!["-D", pgdata.as_str()];
        full.extend_from_slice(args);
        self.run("pg_ctl", &full)
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<Output, EmbeddedError> {
        let mut command = Command::new(self.bin_dir.join(program));
        command.args(args);
        if let Some(parent) = self.pgdata.parent() {
            // The server user must be able to read its working directory.
            command.current_dir(parent);
        }
        if let Some(owner) = self.run_as {
            command.uid(owner.uid.as_raw()).gid(owner.gid.as_raw());
        }
        let what = format!("{program} {}", args.first().copied().unwrap_or_default());
        let output = command.output().map_err(|err| EmbeddedError::Command {
            what: what.clone(),
            detail: err.to_string(),
        })?;
        if output.status.success() {
            Ok(output)
        } else {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let stdout = String::from_utf8_lossy(&output.stdout);
            Err(EmbeddedError::Command {
                what,
                detail: format!("{} {}", stderr.trim(), stdout.trim())
                    .trim()
                    .to_owned(),
            })
        }
    }

    fn chown(&self, path: &Path) -> Result<(), EmbeddedError> {
        if let Some(owner) = self.run_as {
            chown(path, Some(owner.uid.as_raw()), Some(owner.gid.as_raw())).map_err(io_at(path))?;
        }
        Ok(())
    }
}

/// PATH first, then the newest `/usr/lib/postgresql/<version>/bin` (Debian's layout).
fn find_binaries() -> Option<PathBuf> {
    find_binaries_in(std::env::var_os("PATH"), Path::new("/usr/lib/postgresql"))
}

fn find_binaries_in(path: Option<std::ffi::OsString>, debian_root: &Path) -> Option<PathBuf> {
    let has_tools = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|tool| dir.join(tool).is_file())
    };
    if let Some(dir) = path.and_then(|p| std::env::split_paths(&p).find(|dir| has_tools(dir))) {
        return Some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(debian_root)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_tools(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn take_lock(data_dir: &Path) -> Result<Flock<fs::File>, EmbeddedError> {
    let path = data_dir.join("lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_at(&path))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|_| EmbeddedError::InUse(data_dir.to_path_buf()))
}

fn server_user() -> Result<Option<RunAs>, EmbeddedError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    match User::from_name("postgres") {
        Ok(Some(user)) => Ok(Some(RunAs {
            uid: user.uid,
            gid: user.gid,
        })),
        _ => Err(EmbeddedError::NoServerUser),
    }
}

/// Every ancestor must be searchable by the server user; the data directory itself is handed
/// over to it.
fn ensure_reachable(data_dir: &Path, owner: RunAs) -> Result<(), EmbeddedError> {
    use std::os::unix::fs::MetadataExt as _;
    for dir in data_dir.ancestors().skip(1) {
        let meta = fs::metadata(dir).map_err(io_at(dir))?;
        let mode = meta.mode();
        let searchable = mode & 0o001 != 0
            || (meta.uid() == owner.uid.as_raw() && mode & 0o100 != 0)
            || (meta.gid() == owner.gid.as_raw() && mode & 0o010 != 0);
        if !searchable {
            return Err(EmbeddedError::Unreachable(data_dir.to_path_buf()));
        }
    }
    chown(data_dir, Some(owner.uid.as_raw()), Some(owner.gid.as_raw())).map_err(io_at(data_dir))
}

fn write_private(path: &Path, contents: &str, owner: Option<RunAs>) -> Result<(), EmbeddedError> {
    private_file::write(path, contents.as_bytes()).map_err(io_at(path))?;
    if let Some(owner) = owner {
        chown(path, Some(owner.uid.as_raw()), Some(owner.gid.as_raw())).map_err(io_at(path))?;
    }
    Ok(())
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> EmbeddedError + '_ {
    move |source| EmbeddedError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_name_the_package_and_database_url() {
        let empty = std::env::temp_dir().join("instauth-no-postgres-here");
        assert_eq!(find_binaries_in(Some("".into()), &empty), None);
        let message = EmbeddedError::NoBinaries.to_string();
        assert!(message.contains("apt-get install postgresql"), "{message}");
        assert!(message.contains("DATABASE_URL"), "{message}");
    }
}
