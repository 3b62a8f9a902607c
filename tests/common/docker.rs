//! A private Docker daemon for tests: its own data-root, exec-root, socket
//! and containerd under one short temp directory, `registry-mirrors`
//! settable (and reloadable with SIGHUP), stopped by PID and cleaned up on
//! drop. Nothing here touches a system daemon.

use super::{require, run, signal, wait_timeout};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Dockerd {
    child: Option<Child>,
    root: PathBuf,
    cli: PathBuf,
}

impl Dockerd {
    /// Starts dockerd with `registry-mirrors` set to `mirrors`.
    pub fn start(mirrors: &[String]) -> Dockerd {
        let dockerd = require("dockerd");
        // The exec-root must stay short: containerd's socket paths live under it.
        let root = PathBuf::from(run(Command::new("mktemp").args(["-d", "/tmp/wd.XXXXXX"])).trim());
        write_daemon_json(&root, mirrors);
        let log = std::fs::File::create(root.join("dockerd.log")).unwrap();
        let child = Command::new(dockerd)
            .args([
                "--storage-driver=vfs",
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
            ])
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("x"))
            .arg("--pidfile")
            .arg(root.join("d.pid"))
            .arg("--host")
            .arg(format!("unix://{}", root.join("d.sock").display()))
            .arg("--config-file")
            .arg(root.join("daemon.json"))
            // Docker falls back to Docker Hub when a mirror fails: send any
            // such attempt to a closed loopback port, never to the internet.
            .env("HTTP_PROXY", "http://127.0.0.1:9")
            .env("HTTPS_PROXY", "http://127.0.0.1:9")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn dockerd");
        let cli = if Path::new("/usr/bin/docker").exists() {
            PathBuf::from("/usr/bin/docker")
        } else {
            require("docker")
        };
        let mut d = Dockerd {
            child: Some(child),
            root,
            cli,
        };
        let start = Instant::now();
        loop {
            if let Some(status) = d.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("dockerd exited with {status}: {}", d.log());
            }
            let ok = d
                .cmd()
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            if ok.success() {
                return d;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "dockerd did not start: {}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A `docker` command talking to this daemon, with its own client
    /// config (where `docker login` keeps credentials).
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.cli);
        c.env("DOCKER_CONFIG", self.root.join("cli"))
            .arg("-H")
            .arg(format!("unix://{}", self.root.join("d.sock").display()));
        c
    }

    /// Runs `docker ARGS` with `stdin`, returning (success, stdout+stderr).
    pub fn try_docker(&self, args: &[&str], stdin: &str) -> (bool, String) {
        use std::io::Write;
        let mut child = self
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Runs `docker ARGS`, panicking with the output (and daemon log) on failure.
    pub fn docker(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "docker {args:?} failed:\n{}\n{}\n--- dockerd log ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Changes `registry-mirrors` and reloads the daemon (SIGHUP).
    pub fn set_mirrors(&self, mirrors: &[String]) {
        write_daemon_json(&self.root, mirrors);
        signal(self.child.as_ref().unwrap().id(), "HUP");
        std::thread::sleep(Duration::from_millis(500));
    }

    /// The socket of the containerd this dockerd started (for `ctr`).
    pub fn containerd_socket(&self) -> PathBuf {
        self.root.join("x/containerd/containerd.sock")
    }

    /// A scratch directory that is removed with the daemon.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.root.join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("dockerd.log")).unwrap_or_default()
    }

    /// Puts busybox on the registry at `registry` as
    /// `library/busybox:latest` (an upstream, pushed straight to), keeping
    /// no local copy, so the next pull must fetch it.
    pub fn seed_busybox_at(&self, registry: &str) {
        let direct = format!("{registry}/library/busybox:latest");
        self.import_busybox(&direct);
        self.docker(&["push", &direct]);
        self.docker(&["rmi", &direct]);
    }

    /// Imports a busybox-static root filesystem as image `reference`.
    pub fn import_busybox(&self, reference: &str) {
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox-static is not installed");
        let rootfs = self.root.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "echo", "cat", "ls", "sleep"] {
            let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
        }
        let script = format!(
            "tar -C '{}' -cf - . | '{}' -H 'unix://{}' import -c 'CMD [\"/bin/sh\"]' - '{reference}'",
            rootfs.display(),
            self.cli.display(),
            self.root.join("d.sock").display()
        );
        run(Command::new("sh").arg("-c").arg(script));
    }
}

fn write_daemon_json(root: &Path, mirrors: &[String]) {
    let json = serde_json::json!({
        "registry-mirrors": mirrors,
        // Keeps dockerd from writing /etc/docker/key.json.
        "deprecated-key-path": root.join("key.json"),
    });
    std::fs::write(root.join("daemon.json"), json.to_string()).unwrap();
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                wait_timeout(&mut child, Duration::from_secs(30))
            }));
        }
        // Unmount anything left under our root (deepest first), then remove it.
        let root = self.root.display().to_string();
        if let Ok(mounts) = std::fs::read_to_string("/proc/mounts") {
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|p| p.starts_with(&root))
                .collect();
            points.sort_by(|a, b| b.cmp(a));
            for p in points {
                let _ = Command::new("umount").arg(p).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
