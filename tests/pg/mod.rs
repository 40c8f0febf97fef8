//! A throwaway PostgreSQL cluster for tests: Debian's server binaries, run as the
//! `postgres` user in a temp dir on a free 127.0.0.1 port, stopped on drop.

use std::path::PathBuf;
use std::process::Command;

use crate::support::{run_ok, TempDir};

/// A running PostgreSQL server owned by one test.
pub struct Postgres {
    _dir: TempDir,
    data: PathBuf,
    bin: PathBuf,
    /// TCP port on 127.0.0.1.
    pub port: u16,
}

fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect(
            "PostgreSQL server is not installed: apt-get install postgresql (scripts/test.sh does)",
        )
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("postgres").exists())
        .collect();
    dirs.sort();
    dirs.pop()
        .expect("no /usr/lib/postgresql/*/bin/postgres: apt-get install postgresql")
}

fn as_postgres(bin: &std::path::Path, tool: &str) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"]).arg(bin.join(tool));
    cmd
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Postgres {
    /// initdb + start; waits until it accepts connections.
    pub fn start(tag: &str) -> Self {
        assert!(
            std::env::var("USER").as_deref() == Ok("root")
                || Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false),
            "the PostgreSQL tests run the server as the postgres user and need root (CI runs as root)"
        );
        let dir = TempDir::new(tag);
        let data = dir.join("pgdata");
        run_ok(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path()),
        );
        run_ok(Command::new("chmod").arg("755").arg(dir.path()));
        let bin = bin_dir();
        run_ok(
            as_postgres(&bin, "initdb")
                .args(["-A", "trust", "-U", "meshedge", "--no-sync", "-D"])
                .arg(&data),
        );
        let port = free_port();
        run_ok(
            as_postgres(&bin, "pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(data.join("server.log"))
                .args(["-w", "-t", "30", "-o"])
                .arg(format!(
                    "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off -c max_connections=100",
                    data.display()
                ))
                .arg("start"),
        );
        Self {
            _dir: dir,
            data,
            bin,
            port,
        }
    }

    /// A libpq connection string with an `application_name`, so a test can find (and
    /// terminate) one replica's connection.
    pub fn url(&self, application_name: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=meshedge dbname=postgres application_name={application_name}",
            self.port
        )
    }

    /// Runs SQL through psql and returns its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        let out = run_ok(
            Command::new("psql")
                .args([
                    "-X",
                    "-A",
                    "-t",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "meshedge",
                    "-d",
                    "postgres",
                    "-p",
                ])
                .arg(self.port.to_string())
                .arg("-c")
                .arg(sql),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Stops the server immediately (like a crash).
    pub fn stop(&self) {
        let _ = as_postgres(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }

    /// Starts it again on the same port.
    pub fn restart(&self) {
        run_ok(
            as_postgres(&self.bin, "pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(self.data.join("server.log"))
                .args(["-w", "-t", "30", "-o"])
                .arg(format!(
                    "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off",
                    self.port,
                    self.data.display()
                ))
                .arg("start"),
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
