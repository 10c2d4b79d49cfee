//! Unix domain stream sockets: the address type, and the one listening socket every core
//! accepts on.
//!
//! SO_REUSEPORT does not spread Unix connections (the kernel has no reuseport group for
//! AF_UNIX), so a Unix server binds one socket and gives each core a duplicate of its
//! descriptor. Each core's driver arms its own accept on it (a single-shot accept on io_uring,
//! an `EPOLLEXCLUSIVE` registration on epoll); the kernel queues each connection once and
//! wakes the first waiting acceptor for it. A multishot accept (or a fixed epoll
//! registration) would keep its place at the head of the socket's wait queue and take nearly
//! every connection on an idle server, so each core re-queues its waiter after accepting, and
//! the cores take turns (100 sequential connections over 2 cores: 50/50 on both drivers in
//! 10 runs but one 51/49, `tests/unix.rs`). Handing connections out from one accepting core would put a cross-core
//! hop on every accept, and one listener per core is impossible here; the shared socket keeps
//! "a connection lives on the core that accepted it". The spread is the wake-up order, not a
//! hash: a busy core still takes what it is woken for.
//!
//! The invariant a reader must keep: a path a live server listens on is never taken over.
//! A file at the path is replaced only if it is a socket nobody accepts on (connect says
//! ECONNREFUSED); a file that is not a socket is never removed; and the file is removed on
//! stop only if it is still the one this server bound (same device and inode).

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::error::ServerError;

/// Where a Unix domain stream socket lives: a filesystem path, or (Linux) a name in the
/// abstract namespace, which needs no file and vanishes with its last socket.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum UnixAddr {
    /// A socket file at this path.
    Path(PathBuf),
    /// An abstract name (without the leading NUL byte the kernel sees).
    Abstract(Vec<u8>),
}

impl UnixAddr {
    /// `path`, or the abstract name after a leading `@` (the convention of `ss`, systemd and
    /// socat): `UnixAddr::new("@app")` is the abstract name `app`.
    pub fn new(path: impl AsRef<Path>) -> UnixAddr {
        let bytes = path.as_ref().as_os_str().as_bytes();
        match bytes.strip_prefix(b"@") {
            Some(name) => UnixAddr::Abstract(name.to_vec()),
            None => UnixAddr::Path(path.as_ref().to_path_buf()),
        }
    }

    /// The socket file's path (`None` for an abstract name).
    pub fn as_path(&self) -> Option<&Path> {
        match self {
            UnixAddr::Path(p) => Some(p),
            UnixAddr::Abstract(_) => None,
        }
    }

    /// The address a Unix `SockAddr` names (`None` for another family or an unnamed socket).
    #[cfg(test)]
    pub(crate) fn from_sock_addr(addr: &SockAddr) -> Option<UnixAddr> {
        if let Some(path) = addr.as_pathname() {
            return Some(UnixAddr::Path(path.to_path_buf()));
        }
        addr.as_abstract_namespace()
            .map(|name| UnixAddr::Abstract(name.to_vec()))
    }

    /// The kernel's form of the address.
    pub(crate) fn sock_addr(&self) -> io::Result<SockAddr> {
        match self {
            UnixAddr::Path(p) => SockAddr::unix(p),
            UnixAddr::Abstract(name) => {
                let mut bytes = vec![0u8];
                bytes.extend_from_slice(name);
                SockAddr::unix(OsStr::from_bytes(&bytes))
            }
        }
    }
}

impl fmt::Display for UnixAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnixAddr::Path(p) => write!(f, "{}", p.display()),
            UnixAddr::Abstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
        }
    }
}

/// The socket file a server bound; dropping it removes the file if it is still ours (same
/// device and inode: a file another process put there since is left alone), then releases the
/// lock held on `<path>.lock` since before the bind.
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
    /// The lock (`flock`) on `<path>.lock`, held for the server's life: another ringwire
    /// server starting on the path waits for nothing and fails at once, so it can never take
    /// a file this one is binding (a bound socket answers ECONNREFUSED until it listens).
    _lock: std::fs::File,
}

/// Takes the exclusive lock on `<path>.lock` (created if missing, and left in place: removing
/// it would let two starters lock two different files). Fails with
/// [`ServerError::UnixAddrInUse`] if another server holds it.
fn lock(p: &Path, path: &str) -> Result<std::fs::File, ServerError> {
    let mut name = p.as_os_str().to_owned();
    name.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&name)
        .map_err(|source| ServerError::UnixBind {
            path: path.to_owned(),
            source,
        })?;
    match crate::sys::try_lock_exclusive(file.as_fd()) {
        Ok(true) => Ok(file),
        Ok(false) => Err(ServerError::UnixAddrInUse {
            path: path.to_owned(),
        }),
        Err(source) => Err(ServerError::UnixBind {
            path: path.to_owned(),
            source,
        }),
    }
}

impl SocketFile {
    /// Sets the socket file's mode, never following a symlink: whoever can write to the
    /// directory could swap the file for a link between the bind and the chmod, and a chmod of
    /// the path would then change the mode of whatever the link names (with a privileged
    /// server's rights). The path's last component is opened with `O_PATH | O_NOFOLLOW`
    /// (a link is opened as itself, not followed), checked to be the socket this server bound
    /// (a socket with the device and inode recorded after the bind), and changed through
    /// `/proc/self/fd`, which reaches exactly the inode held open.
    ///
    /// The alternatives do not hold: `fchmod` on the socket's descriptor changes the socket's
    /// own inode, not the file's; Linux's `fchmodat` has no `AT_SYMLINK_NOFOLLOW` before
    /// `fchmodat2` (6.6); a umask around the bind is process-wide (other threads' files
    /// would get it) and cannot grant bits. Without `/proc` the mode is refused, not set
    /// unsafely.
    fn set_mode(&self, mode: u32) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
            .open(&self.path)?;
        let meta = file.metadata()?;
        if !meta.file_type().is_socket() || meta.dev() != self.dev || meta.ino() != self.ino {
            return Err(io::Error::other(
                "the socket file was replaced before its mode was set",
            ));
        }
        let held = format!("/proc/self/fd/{}", file.as_raw_fd());
        std::fs::set_permissions(held, std::fs::Permissions::from_mode(mode))
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino);
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                log::warn!("ringwire: cannot remove {}: {e}", self.path.display());
            }
        }
    }
}

/// Binds and listens on `addr` (a file's mode set to `mode` where given), and returns one
/// duplicate of the listening descriptor per core, with the socket file to remove on stop.
pub(crate) fn bind_all(
    addr: &UnixAddr,
    mode: Option<u32>,
    backlog: i32,
    cores: usize,
) -> Result<(Vec<OwnedFd>, Option<SocketFile>), ServerError> {
    let path = addr.to_string();
    let err = |source| ServerError::UnixBind {
        path: path.clone(),
        source,
    };
    let sock_addr = addr.sock_addr().map_err(err)?;
    // Held from before the bind to the server's end: the probe, the bind and the listen below
    // are one step for every other ringwire server on this path.
    let lock = match addr {
        UnixAddr::Path(p) => Some(lock(p, &path)?),
        UnixAddr::Abstract(_) => None,
    };
    let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None).map_err(err)?;
    match socket.bind(&sock_addr) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => match addr {
            UnixAddr::Abstract(_) => return Err(ServerError::UnixAddrInUse { path }),
            UnixAddr::Path(p) => {
                replace_stale(p, &sock_addr, &path)?;
                socket
                    .bind(&sock_addr)
                    .map_err(|e| match e.raw_os_error() {
                        // Another server took the path between our check and our bind.
                        Some(libc::EADDRINUSE) => ServerError::UnixAddrInUse { path: path.clone() },
                        _ => err(e),
                    })?;
            }
        },
        Err(e) => return Err(err(e)),
    }
    let file = match (addr, lock) {
        (UnixAddr::Path(p), Some(lock)) => {
            let meta = std::fs::symlink_metadata(p).map_err(err)?;
            if !meta.file_type().is_socket() {
                // Replaced between our bind and this look: not ours to record (or remove).
                return Err(err(io::Error::other(
                    "the socket file was replaced as it was bound",
                )));
            }
            Some(SocketFile {
                path: p.clone(),
                dev: meta.dev(),
                ino: meta.ino(),
                _lock: lock,
            })
        }
        _ => None,
    };
    // Listen at once (`file` removes the socket file if this fails): a bound socket refuses
    // connects until it listens, which a starter that does not take the lock could read as a
    // dead server's file.
    socket.listen(backlog).map_err(err)?;
    if let (Some(mode), Some(file)) = (mode, &file) {
        file.set_mode(mode).map_err(err)?;
    }
    let first = OwnedFd::from(socket);
    let mut fds = Vec::with_capacity(cores);
    for _ in 1..cores {
        fds.push(first.try_clone().map_err(err)?);
    }
    fds.insert(0, first);
    Ok((fds, file))
}

/// Removes the socket file at `p` if no server accepts on it (a dead server's). Fails with
/// [`ServerError::UnixAddrInUse`] if one does, and [`ServerError::UnixNotSocket`] if the file
/// is not a socket (never removed).
fn replace_stale(p: &Path, sock_addr: &SockAddr, path: &str) -> Result<(), ServerError> {
    let err = |source| ServerError::UnixBind {
        path: path.to_owned(),
        source,
    };
    let meta = match std::fs::symlink_metadata(p) {
        Ok(meta) => meta,
        // Gone since the bind failed: bind again.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ServerError::UnixNotSocket {
            path: path.to_owned(),
        });
    }
    let probe = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None).map_err(err)?;
    match probe.connect(sock_addr) {
        // ECONNREFUSED: a socket file nobody listens on, left by a server that died.
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        // Connected, or anything else (a full backlog says EAGAIN): someone is there.
        _ => {
            return Err(ServerError::UnixAddrInUse {
                path: path.to_owned(),
            })
        }
    }
    // Remove it only if it is still the file we probed.
    let same =
        std::fs::symlink_metadata(p).is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino());
    if same {
        log::info!("ringwire: replacing the stale socket file {path}");
        match std::fs::remove_file(p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(err(e)),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory, removed with its contents on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(test: &str) -> Dir {
            let dir =
                std::env::temp_dir().join(format!("rw-unix-mode-{}-{test}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    /// A socket bound at `path`, recorded as `bind_all` records it.
    fn bound(dir: &Dir, path: &Path) -> (std::os::unix::net::UnixListener, SocketFile) {
        let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
        let meta = std::fs::symlink_metadata(path).unwrap();
        let lock = std::fs::File::create(dir.0.join("lock")).unwrap();
        let file = SocketFile {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
            _lock: lock,
        };
        (listener, file)
    }

    #[test]
    fn the_mode_is_set_on_the_socket_file() {
        let dir = Dir::new("plain");
        let path = dir.0.join("s.sock");
        let (_listener, file) = bound(&dir, &path);
        file.set_mode(0o600).unwrap();
        assert_eq!(mode(&path), 0o600);
        file.set_mode(0o660).unwrap();
        assert_eq!(mode(&path), 0o660);
    }

    /// Someone who can write to the directory swaps the socket file for a symlink to a file
    /// of their choosing before the mode is set: the mode is refused, and the link's target
    /// keeps its own (a chmod of the path would have followed the link).
    #[test]
    fn a_symlink_put_in_the_socket_files_place_is_not_followed() {
        let dir = Dir::new("symlink");
        let path = dir.0.join("s.sock");
        let target = dir.0.join("precious");
        std::fs::write(&target, b"x").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (_listener, file) = bound(&dir, &path);
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(file.set_mode(0o666).is_err(), "set the mode through a link");
        assert_eq!(mode(&target), 0o644, "the link's target changed mode");
        // And one swapped for another socket or a hard link is not ours either.
        std::fs::remove_file(&path).unwrap();
        std::fs::hard_link(&target, &path).unwrap();
        assert!(file.set_mode(0o666).is_err(), "set the mode of a hard link");
        assert_eq!(mode(&target), 0o644);
        std::fs::remove_file(&path).unwrap();
        let _other = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let before = mode(&path);
        assert!(file.set_mode(0o666).is_err(), "set another socket's mode");
        assert_eq!(mode(&path), before);
    }
}
