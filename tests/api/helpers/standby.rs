//! A primary with a real streaming replica, for the read-replica tests: a private primary
//! cluster of its own (so pausing or stopping its standby slows no other test), one migrated
//! database on it, and a hot standby made with `pg_basebackup -R` and started on its own port.
//! Both are stopped on drop.
//!
//! PostgreSQL refuses to run as root: run as root, the standby's tools run as the `postgres`
//! system user, as the embedded cluster does.

use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use instauth::tools::embedded_pg::EmbeddedPostgres;
use nix::unistd::{Uid, User};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection as _, Executor as _, PgConnection};

use super::pg::TestDatabase;
use super::scratch_dir;

const BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct Replicated {
    primary: EmbeddedPostgres,
    /// The migrated database on the primary, as the app and the seed pool use it.
    pub database: PgConnectOptions,
    pub name: String,
    password: String,
    standby_dir: PathBuf,
    pub standby_port: u16,
    run_as: Option<User>,
}

impl Replicated {
    /// Starts the primary, creates and migrates `instauth_test_replicated`, makes the standby
    /// and waits until it has replayed everything the primary wrote.
    pub async fn start() -> Self {
        let dir = scratch_dir("replicated");
        let run_as = Uid::effective().is_root().then(|| {
            User::from_name("postgres")
                .ok()
                .flatten()
                .expect("running as root, the standby needs the `postgres` system user")
        });
        if let Some(user) = &run_as {
            chown(&dir, Some(user.uid.as_raw()), Some(user.gid.as_raw())).expect("chown");
        }
        let primary =
            EmbeddedPostgres::start(&dir.join("primary"), false).expect("primary cluster starts");
        let password = std::fs::read_to_string(dir.join("primary").join("password"))
            .expect("password")
            .trim()
            .to_owned();
        let name = format!("instauth_test_{}", uuid::Uuid::new_v4().simple());
        let admin = primary.connect_options();
        let mut conn = PgConnection::connect_with(&admin).await.expect("admin");
        conn.execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
            .await
            .expect("create database");
        conn.close().await.ok();
        let database = admin.clone().database(&name);
        instauth::db::migrate(&instauth::db::DatabaseSettings::new(database.clone()))
            .await
            .expect("migrations apply");
        let standby_dir = dir.join("standby");
        let port = free_port();
        let replicated = Self {
            primary,
            database,
            name,
            password,
            standby_dir,
            standby_port: port,
            run_as,
        };
        replicated.base_backup();
        replicated.start_standby();
        replicated.wait_until_caught_up().await;
        replicated
    }

    /// A [`TestDatabase`] naming the primary's database, for `spawn_app_on` (its drop looks for
    /// the name on the shared test server, where it does not exist, and drops nothing).
    pub fn test_database(&self) -> TestDatabase {
        TestDatabase {
            name: self.name.clone(),
            options: self.database.clone(),
            url: format!(
                "postgres://postgres:{}@127.0.0.1:{}/{}",
                self.password,
                self.primary.port(),
                self.name
            ),
        }
    }

    /// The primary's port.
    pub fn primary_port(&self) -> u16 {
        self.primary.port()
    }

    /// The standby's options for the same database.
    pub fn standby(&self) -> PgConnectOptions {
        self.database.clone().port(self.standby_port)
    }

    /// Waits until the standby has replayed everything the primary has written so far. The
    /// primary commits asynchronously (its WAL reaches the standby only once flushed), so one
    /// transaction that writes WAL is committed synchronously first: that flushes every
    /// earlier commit, and gives the standby a replayed commit to measure its lag from.
    pub async fn wait_until_caught_up(&self) {
        let mut primary = PgConnection::connect_with(&self.database)
            .await
            .expect("primary");
        primary
            .execute("SET synchronous_commit = on")
            .await
            .expect("synchronous commit");
        // A transactional message is WAL written by the transaction, so its commit is flushed
        // (a commit that wrote nothing else would be asynchronous still).
        primary
            .execute("SELECT pg_logical_emit_message(true, 'instauth-test', 'flush')")
            .await
            .expect("a flushed commit");
        let written: String = sqlx::query_scalar("SELECT pg_current_wal_flush_lsn()::text")
            .fetch_one(&mut primary)
            .await
            .expect("primary lsn");
        let mut standby = self.connect_standby().await;
        for _ in 0..600 {
            let caught_up: bool = sqlx::query_scalar(
                "SELECT pg_is_in_recovery() AND pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
            )
            .bind(&written)
            .fetch_one(&mut standby)
            .await
            .expect("standby lsn");
            if caught_up {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the standby never replayed up to {written}");
    }

    /// Cuts the standby off from its primary while both keep running: its WAL receiver is
    /// pointed at a port nothing listens on and restarted, and the call returns once no
    /// receiver runs. The standby keeps answering queries on what it last replayed.
    pub async fn cut_off_standby(&self) {
        let mut standby = self.connect_standby().await;
        standby
            .execute(
                "ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=1 connect_timeout=1'",
            )
            .await
            .expect("point the receiver nowhere");
        standby
            .execute("SELECT pg_reload_conf()")
            .await
            .expect("reload");
        for _ in 0..600 {
            // The reload restarts the receiver with the new address, where it fails to connect.
            let running: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT FROM pg_stat_wal_receiver WHERE pid IS NOT NULL)",
            )
            .fetch_one(&mut standby)
            .await
            .expect("receiver state");
            if !running {
                return;
            }
            let _ = standby
                .execute("SELECT pg_terminate_backend(pid) FROM pg_stat_wal_receiver")
                .await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the standby's WAL receiver kept running");
    }

    /// Pauses replay on the standby and waits until it is paused.
    pub async fn pause_replay(&self) {
        let mut standby = self.connect_standby().await;
        standby
            .execute("SELECT pg_wal_replay_pause()")
            .await
            .expect("pause");
        for _ in 0..600 {
            let state: String = sqlx::query_scalar("SELECT pg_get_wal_replay_pause_state()")
                .fetch_one(&mut standby)
                .await
                .expect("pause state");
            if state == "paused" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("replay never paused");
    }

    /// Waits until the standby has received WAL it has not replayed (replay paused).
    pub async fn wait_until_behind(&self) {
        let mut standby = self.connect_standby().await;
        for _ in 0..600 {
            let behind: bool =
                sqlx::query_scalar("SELECT pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()")
                    .fetch_one(&mut standby)
                    .await
                    .expect("standby lsns");
            if behind {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the standby never received WAL beyond its replay");
    }

    async fn connect_standby(&self) -> PgConnection {
        PgConnection::connect_with(&self.standby())
            .await
            .expect("standby connection")
    }

    /// Stops the standby (fast shutdown) and waits for it to be gone.
    pub fn stop_standby(&self) {
        self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "30"]);
    }

    /// Stops the primary (fast shutdown).
    pub fn stop_primary(&self) {
        self.primary.stop();
    }

    fn base_backup(&self) {
        let port = self.primary.port().to_string();
        let pgdata = self.standby_pgdata();
        let pgdata = pgdata.to_str().expect("utf8");
        let mut command = self.command("pg_basebackup");
        command
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                pgdata,
            ])
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"])
            .env("PGPASSWORD", &self.password);
        run(command, "pg_basebackup");
    }

    fn start_standby(&self) {
        let log = self.standby_dir.join("standby.log");
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories='' \
             -c hot_standby=on -c fsync=off -c max_connections=200",
            self.standby_port
        );
        let log_arg = log.to_str().expect("utf8").to_owned();
        let pgdata = self.standby_pgdata();
        let mut command = self.command("pg_ctl");
        command
            .args(["-D", pgdata.to_str().expect("utf8")])
            .args(["start", "-w", "-t", "60", "-l", &log_arg, "-o", &options]);
        let output = command.output().expect("pg_ctl start");
        assert!(
            output.status.success(),
            "the standby did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn standby_pgdata(&self) -> PathBuf {
        self.standby_dir.join("pgdata")
    }

    fn pg_ctl(&self, args: &[&str]) {
        let pgdata = self.standby_pgdata();
        let mut command = self.command("pg_ctl");
        command
            .args(["-D", pgdata.to_str().expect("utf8")])
            .args(args);
        run(command, "pg_ctl");
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(Path::new(BIN).join(program));
        if let Some(parent) = self.standby_dir.parent() {
            command.current_dir(parent);
        }
        if let Some(user) = &self.run_as {
            command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        command
    }
}

impl Drop for Replicated {
    fn drop(&mut self) {
        let pgdata = self.standby_pgdata();
        let mut command = self.command("pg_ctl");
        command.args([
            "-D",
            pgdata.to_str().unwrap_or_default(),
            "stop",
            "-m",
            "immediate",
        ]);
        let _ = command.output();
        self.primary.stop();
        if let Some(dir) = self.standby_dir.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn run(mut command: Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("{what}: {err}"));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port()
}
