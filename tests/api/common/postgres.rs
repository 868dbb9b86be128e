//! A fresh, empty Postgres database for each integration test.
//!
//! A server is found once per test process, in this order:
//! 1. `TEST_DATABASE_URL`: an admin URL (a database where `CREATE DATABASE` may run);
//! 2. `postgres://postgres@127.0.0.1:5432/postgres`, if it accepts a connection within ~2 s;
//! 3. a throwaway cluster started from the local `initdb`/`postgres` binaries, watched by a
//!    small `sh` watchdog that stops it and deletes its directory once the test process is gone.
//!
//! If none is available, [`fresh_database`] returns `None` so the test can skip itself,
//! unless `CAIRN_REQUIRE_POSTGRES=1`, in which case it panics.
//!
//! Only the admin URL is cached (tests run on many threads, each with its own tokio
//! runtime), so every call opens its own short-lived connection.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::{Connection, Executor, PgConnection};
use tokio::sync::OnceCell;

/// The server tried when `TEST_DATABASE_URL` is not set.
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The admin URL of the server found for this process, or `Err(why none was found)`.
static ADMIN_URL: OnceCell<Result<String, String>> = OnceCell::const_new();

/// A fresh database for one test; dropped (DROP DATABASE ... WITH (FORCE)) when this value is dropped.
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// The connection URL of the fresh database (postgres://...).
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop may run inside a runtime, so never block this thread's runtime: use a new thread.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropper = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let drop_db = async {
                    let mut conn = PgConnection::connect(&admin_url).await?;
                    let sql = format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
                    conn.execute(sql.as_str()).await?;
                    conn.close().await
                };
                let _ = tokio::time::timeout(Duration::from_secs(30), drop_db).await;
            });
        });
        let _ = dropper.join();
    }
}

/// Creates a fresh database, or returns None (after printing one clear line to stderr saying Postgres tests are skipped and what to install: the Debian package `postgresql`) when no Postgres can be found and CAIRN_REQUIRE_POSTGRES is not set to 1; with CAIRN_REQUIRE_POSTGRES=1 that case panics with the same message instead.
pub async fn fresh_database() -> Option<TestDatabase> {
    let admin_url = match ADMIN_URL.get_or_init(find_server).await {
        Ok(url) => url.clone(),
        Err(why) => {
            let message = format!(
                "Postgres tests skipped: {why}; install the Debian package `postgresql` \
                 (or set TEST_DATABASE_URL to an admin URL)"
            );
            if std::env::var("CAIRN_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!("{message}");
            }
            eprintln!("{message}");
            return None;
        }
    };

    let name = format!("cairn_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to Postgres admin URL {admin_url}: {e}"));
    conn.execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name} failed: {e}"));
    let _ = conn.close().await;

    let url = with_database(&admin_url, &name);
    Some(TestDatabase {
        admin_url,
        name,
        url,
    })
}

/// Replaces the database (path) component of a `postgres://` URL, keeping any query string.
fn with_database(url: &str, database: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[authority_start..];
    let path_start = authority_start + rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let path_end = url[path_start..]
        .find(['?', '#'])
        .map_or(url.len(), |i| path_start + i);
    format!("{}/{database}{}", &url[..path_start], &url[path_end..])
}

/// Finds a server (see the module docs) and returns its admin URL, or why there is none.
async fn find_server() -> Result<String, String> {
    if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
        return Ok(url);
    }
    if accepts_connections(DEFAULT_URL, Duration::from_secs(2)).await {
        return Ok(DEFAULT_URL.to_owned());
    }
    let Some(bin_dir) = find_binaries() else {
        return Err(format!(
            "no server at {DEFAULT_URL} and no `initdb`/`postgres` binaries \
             in PATH or /usr/lib/postgresql/*/bin"
        ));
    };
    start_throwaway_cluster(&bin_dir).await.map_err(|e| {
        format!(
            "no server at {DEFAULT_URL} and starting a throwaway cluster from {} failed: {e:#}",
            bin_dir.display()
        )
    })
}

/// Whether `url` accepts a connection within `timeout`.
async fn accepts_connections(url: &str, timeout: Duration) -> bool {
    match tokio::time::timeout(timeout, PgConnection::connect(url)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            true
        }
        _ => false,
    }
}

/// The first directory in PATH, then in /usr/lib/postgresql/*/bin (highest version first),
/// that holds both `initdb` and `postgres`.
fn find_binaries() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    dirs.extend(versions.into_iter().map(|(_, dir)| dir));
    dirs.into_iter()
        .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
}

/// Starts a throwaway cluster on a free 127.0.0.1 port and returns its admin URL.
async fn start_throwaway_cluster(bin_dir: &Path) -> anyhow::Result<String> {
    // Removed on early errors; handed over to the watchdog once postgres is started.
    let temp_dir = tempfile::Builder::new().prefix("cairn-pg-").tempdir()?;
    // Postgres refuses to run as root: run it as the `postgres` user instead.
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
    let as_postgres = if is_root {
        let status = Command::new("chown")
            .args(["postgres:", "--"])
            .arg(temp_dir.path())
            .status()?;
        if !status.success() {
            bail!(
                "chown postgres {} failed ({status})",
                temp_dir.path().display()
            );
        }
        "runuser -u postgres -- "
    } else {
        ""
    };
    let data = temp_dir.path().join("data");

    let mut initdb = tokio::process::Command::new("sh");
    initdb
        .arg("-c")
        .arg(format!(
            r#"{as_postgres}"$0" -D "$1" -A trust -U postgres -E UTF8 --locale=C --no-sync"#
        ))
        .arg(bin_dir.join("initdb"))
        .arg(&data);
    let out = initdb.output().await.context("running initdb")?;
    if !out.status.success() {
        bail!(
            "initdb failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    let dir = temp_dir.keep();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    // $0 postgres binary, $1 cluster dir, $2 port, $3 test process id.
    let watchdog = format!(
        r#"{as_postgres}"$0" -D "$1/data" -k "$1" -h 127.0.0.1 -p "$2" -c fsync=off >"$1/log" 2>&1 &
pg=$!
while kill -0 "$3" 2>/dev/null && kill -0 "$pg" 2>/dev/null; do sleep 1; done
kill -INT "$(head -n 1 "$1/data/postmaster.pid" 2>/dev/null)" 2>/dev/null
wait "$pg"
cat "$1/log" >&2
rm -rf "$1""#
    );
    let mut child = {
        use std::os::unix::process::CommandExt;
        Command::new("sh")
            .arg("-c")
            .arg(watchdog)
            .arg(bin_dir.join("postgres"))
            .arg(&dir)
            .arg(port.to_string())
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()) // the log, if postgres exits early
            .process_group(0) // so a Ctrl-C aimed at the tests does not skip the cleanup
            .spawn()
            .context("starting the watchdog shell")?
    };

    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    for _ in 0..300 {
        if accepts_connections(&url, Duration::from_secs(1)).await {
            return Ok(url);
        }
        if child.try_wait()?.is_some() {
            let mut log = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut stderr, &mut log);
            }
            bail!("postgres exited early: {}", log.trim());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("postgres did not accept connections on port {port} within 30 s")
}
