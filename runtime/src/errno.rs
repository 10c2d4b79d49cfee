//! The one table of errno values a network service meets: each value's symbolic name and,
//! where one helps, what it usually means. Every message that shows a kernel error (a failed
//! bind, connect, receive or send, an io_uring setup step) formats it here, so a new name or
//! hint lands everywhere at once.

use std::io;

/// One errno value: its name and, where one helps, what it usually means for a network
/// service ("" where the name says it all).
struct Errno {
    code: i32,
    name: &'static str,
    hint: &'static str,
}

const fn e(code: i32, name: &'static str, hint: &'static str) -> Errno {
    Errno { code, name, hint }
}

/// Ordered roughly as a reader meets them: process and file errors, then sockets.
#[rustfmt::skip]
const TABLE: &[Errno] = &[
    e(libc::EPERM, "EPERM", "not permitted"),
    e(libc::ENOENT, "ENOENT", ""),
    e(libc::EINTR, "EINTR", "interrupted by a signal"),
    e(libc::EIO, "EIO", ""),
    e(libc::EBADF, "EBADF", ""),
    e(libc::EAGAIN, "EAGAIN", "would block"),
    e(libc::ENOMEM, "ENOMEM", "out of memory"),
    e(libc::EACCES, "EACCES", "permission denied"),
    e(libc::EFAULT, "EFAULT", ""),
    e(libc::EBUSY, "EBUSY", ""),
    e(libc::EEXIST, "EEXIST", ""),
    e(libc::EINVAL, "EINVAL", "invalid argument"),
    e(libc::ENFILE, "ENFILE", "the system's file table is full"),
    e(libc::EMFILE, "EMFILE", "out of file descriptors: raise `ulimit -n`"),
    e(libc::ENOSPC, "ENOSPC", ""),
    e(libc::EPIPE, "EPIPE", "the peer closed the connection"),
    e(libc::ENOSYS, "ENOSYS", "the kernel lacks this system call"),
    e(libc::ENOTSOCK, "ENOTSOCK", ""),
    e(libc::EMSGSIZE, "EMSGSIZE", ""),
    e(libc::EPROTONOSUPPORT, "EPROTONOSUPPORT", ""),
    e(libc::EOPNOTSUPP, "EOPNOTSUPP", "operation not supported"),
    e(libc::EAFNOSUPPORT, "EAFNOSUPPORT", "address family not supported (IPv6 disabled?)"),
    e(libc::EADDRINUSE, "EADDRINUSE", "address in use: another socket is bound there"),
    e(libc::EADDRNOTAVAIL, "EADDRNOTAVAIL", "no local interface has that address"),
    e(libc::ENETDOWN, "ENETDOWN", "the network is down"),
    e(libc::ENETUNREACH, "ENETUNREACH", "no route to that network"),
    e(libc::ENETRESET, "ENETRESET", ""),
    e(libc::ECONNABORTED, "ECONNABORTED", "the connection was aborted before it was accepted"),
    e(libc::ECONNRESET, "ECONNRESET", "the peer reset the connection"),
    e(libc::ENOBUFS, "ENOBUFS", "out of buffer space"),
    e(libc::EISCONN, "EISCONN", ""),
    e(libc::ENOTCONN, "ENOTCONN", "the socket is not connected"),
    e(libc::ESHUTDOWN, "ESHUTDOWN", ""),
    e(libc::ETIMEDOUT, "ETIMEDOUT", "the peer did not answer in time"),
    e(libc::ECONNREFUSED, "ECONNREFUSED", "nothing listens at that address"),
    e(libc::EHOSTDOWN, "EHOSTDOWN", "the host is down"),
    e(libc::EHOSTUNREACH, "EHOSTUNREACH", "no route to the host"),
    e(libc::EALREADY, "EALREADY", ""),
    e(libc::EINPROGRESS, "EINPROGRESS", ""),
    e(libc::ECANCELED, "ECANCELED", "the operation was cancelled"),
];

fn find(code: i32) -> Option<&'static Errno> {
    TABLE.iter().find(|e| e.code == code)
}

/// The symbolic name of an errno value, or `None` for one not in the table.
pub(crate) fn name(code: i32) -> Option<&'static str> {
    find(code).map(|e| e.name)
}

/// `NAME (code)` for an OS error, with what it usually means where the table says; the
/// error's own text for an error that carries no errno.
pub(crate) fn describe(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => match find(code) {
            Some(e) if e.hint.is_empty() => format!("{} ({code})", e.name),
            Some(e) => format!("{} ({code}, {})", e.name, e.hint),
            None => format!("{err}"),
        },
        None => err.to_string(),
    }
}

/// The likely cause of an io_uring setup step failing with `code`, and what to change.
pub(crate) fn uring_hint(step: &str, code: i32) -> &'static str {
    match code {
        libc::EPERM => {
            "a seccomp profile (Docker, Kubernetes) or kernel.io_uring_disabled=2 forbids \
             io_uring; allow io_uring_setup/enter/register or set the sysctl to 0"
        }
        libc::EACCES => "kernel.io_uring_disabled=1 and this user is not in kernel.io_uring_group",
        libc::ENOSYS => {
            "kernel built without io_uring, or the syscall is filtered; Linux 6.0 or later is \
             needed"
        }
        libc::ENOMEM => {
            "locked-memory limit too low: raise `ulimit -l` (RLIMIT_MEMLOCK), or use fewer or \
             smaller buffers"
        }
        libc::EINVAL if step.contains("buffer ring") => {
            "kernel lacks provided buffer rings (Linux 5.19 or later needed)"
        }
        libc::EINVAL => {
            "kernel too old for the setup flags or operation; Linux 6.0 or later is needed"
        }
        _ => "unexpected failure",
    }
}

/// `NAME` of an io_uring setup failure followed by its hint: `EPERM (hint)`.
pub(crate) fn describe_uring(step: &str, err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => format!(
            "{} ({})",
            name(code).map_or_else(|| format!("errno {code}"), str::to_owned),
            uring_hint(step, code)
        ),
        None => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_failures_have_names_and_hints() {
        for (code, name, hint) in [
            (libc::ECONNREFUSED, "ECONNREFUSED", "nothing listens"),
            (libc::EHOSTUNREACH, "EHOSTUNREACH", "no route to the host"),
            (libc::ENETUNREACH, "ENETUNREACH", "no route to that network"),
            (libc::ETIMEDOUT, "ETIMEDOUT", "did not answer"),
            (libc::EADDRINUSE, "EADDRINUSE", "address in use"),
        ] {
            let text = describe(&io::Error::from_raw_os_error(code));
            assert!(text.starts_with(&format!("{name} ({code}, ")), "{text}");
            assert!(text.contains(hint), "{text}");
        }
    }

    #[test]
    fn every_name_is_unique_and_spelled_as_the_constant() {
        for (i, a) in TABLE.iter().enumerate() {
            assert!(a.name.starts_with('E'), "{}", a.name);
            for b in &TABLE[i + 1..] {
                assert_ne!(a.code, b.code, "{} and {} share a value", a.name, b.name);
                assert_ne!(a.name, b.name);
            }
        }
        assert_eq!(name(libc::ECONNRESET), Some("ECONNRESET"));
        assert_eq!(name(libc::EWOULDBLOCK), Some("EAGAIN"));
    }

    #[test]
    fn unknown_values_and_plain_errors_keep_their_own_text() {
        let unknown = io::Error::from_raw_os_error(4000);
        assert_eq!(describe(&unknown), unknown.to_string());
        assert!(!describe(&unknown).starts_with("errno"));
        assert_eq!(describe(&io::Error::other("plain")), "plain");
    }

    #[test]
    fn uring_hints_name_the_cause() {
        let eperm = describe_uring("ring setup", &io::Error::from_raw_os_error(libc::EPERM));
        assert!(
            eperm.starts_with("EPERM (") && eperm.contains("seccomp"),
            "{eperm}"
        );
        let einval = io::Error::from_raw_os_error(libc::EINVAL);
        assert!(describe_uring("buffer ring registration", &einval).contains("5.19"));
        assert!(describe_uring("ring setup", &einval).contains("too old"));
    }
}
