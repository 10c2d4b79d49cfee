//! Kernel TLS: after a session's handshake, its traffic keys go to the kernel (the `tls` TCP
//! upper layer protocol) and the ring's receives and sends carry plaintext; the kernel does the
//! record layer.
//!
//! The handover is only sound at a moment when no record is split between the two: nothing
//! rustls sealed still waits for the wire (the kernel would encrypt it again), and nothing the
//! peer sent is in user space undecrypted (the kernel decrypts only what is still in the
//! socket). So a session is handed over at the end of a loop turn (every completion of the turn
//! handled) where its sealed queue is empty, no send is in flight, and rustls holds no part of a
//! record; and only on drivers that copy nothing from the socket between turns: epoll (reads
//! happen in the driver's event handling) and io_uring with DEFER_TASKRUN (the kernel runs a
//! receive's copy only inside our wait). A TLS 1.3 server's tickets go out first, by rustls.
//!
//! TLS 1.2 with AES-GCM is not handed over: rustls builds that suite's explicit nonces as the
//! fixed part XOR the record sequence, the kernel as a counter from the first one, and the
//! kernel's would repeat nonces rustls already used under the same key. TLS 1.3 (every suite)
//! and ChaCha20-Poly1305 (both versions) derive nonces the same way on both sides. A cipher
//! the kernel refuses (an older kernel, a missing crypto module) is found at start, by setting
//! keys on a loopback socket, rather than by losing a session to it.
//!
//! What the kernel does not do for us, and what this means: a control record from the peer (an
//! alert such as close_notify, a KeyUpdate, a ticket) makes a receive fail with EIO, read here
//! as the peer's end; a close sends no close_notify. Only server sessions are handed over (a
//! client receives tickets after its handshake).
//!
//! Linux's ABI (include/uapi/linux/tls.h) is spelled out here: libc does not name it.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use rustls::{ConnectionTrafficSecrets, ProtocolVersion};

use crate::sys::cvt;

const SOL_TLS: libc::c_int = 282;
const TLS_TX: libc::c_int = 1;
const TLS_RX: libc::c_int = 2;
const TLS_1_2_VERSION: u16 = 0x0303;
const TLS_1_3_VERSION: u16 = 0x0304;
const TLS_CIPHER_AES_GCM_128: u16 = 51;
const TLS_CIPHER_AES_GCM_256: u16 = 52;
const TLS_CIPHER_CHACHA20_POLY1305: u16 = 54;

/// `struct tls_crypto_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    version: u16,
    cipher_type: u16,
}

/// `struct tls12_crypto_info_aes_gcm_128`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct AesGcm128 {
    info: Header,
    iv: [u8; 8],
    key: [u8; 16],
    salt: [u8; 4],
    rec_seq: [u8; 8],
}

/// `struct tls12_crypto_info_aes_gcm_256`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct AesGcm256 {
    info: Header,
    iv: [u8; 8],
    key: [u8; 32],
    salt: [u8; 4],
    rec_seq: [u8; 8],
}

/// `struct tls12_crypto_info_chacha20_poly1305`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Chacha20Poly1305 {
    info: Header,
    iv: [u8; 12],
    key: [u8; 32],
    rec_seq: [u8; 8],
}

/// One direction's keys as the kernel takes them (`setsockopt(SOL_TLS, TLS_TX | TLS_RX)`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum CryptoInfo {
    AesGcm128(AesGcm128),
    AesGcm256(AesGcm256),
    Chacha20Poly1305(Chacha20Poly1305),
}

impl CryptoInfo {
    /// The kernel's form of one direction's secrets, its next record sequence number `seq`;
    /// `None` for a version or cipher the kernel does not take.
    pub(crate) fn new(
        version: ProtocolVersion,
        seq: u64,
        secrets: &ConnectionTrafficSecrets,
    ) -> Option<CryptoInfo> {
        let version = match version {
            ProtocolVersion::TLSv1_2 => TLS_1_2_VERSION,
            ProtocolVersion::TLSv1_3 => TLS_1_3_VERSION,
            _ => return None,
        };
        let rec_seq = seq.to_be_bytes();
        let gcm = matches!(
            secrets,
            ConnectionTrafficSecrets::Aes128Gcm { .. } | ConnectionTrafficSecrets::Aes256Gcm { .. }
        );
        if gcm && version == TLS_1_2_VERSION {
            // Nonces would repeat (see the module's docs).
            return None;
        }
        // TLS 1.3 AES-GCM's 12-byte nonce base is the kernel's 4-byte salt and 8-byte iv.
        Some(match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => {
                let (salt, rest) = iv.as_ref().split_at(4);
                CryptoInfo::AesGcm128(AesGcm128 {
                    info: Header {
                        version,
                        cipher_type: TLS_CIPHER_AES_GCM_128,
                    },
                    iv: rest.try_into().ok()?,
                    key: key.as_ref().try_into().ok()?,
                    salt: salt.try_into().ok()?,
                    rec_seq,
                })
            }
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => {
                let (salt, rest) = iv.as_ref().split_at(4);
                CryptoInfo::AesGcm256(AesGcm256 {
                    info: Header {
                        version,
                        cipher_type: TLS_CIPHER_AES_GCM_256,
                    },
                    iv: rest.try_into().ok()?,
                    key: key.as_ref().try_into().ok()?,
                    salt: salt.try_into().ok()?,
                    rec_seq,
                })
            }
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                CryptoInfo::Chacha20Poly1305(Chacha20Poly1305 {
                    info: Header {
                        version,
                        cipher_type: TLS_CIPHER_CHACHA20_POLY1305,
                    },
                    iv: iv.as_ref().try_into().ok()?,
                    key: key.as_ref().try_into().ok()?,
                    rec_seq,
                })
            }
            _ => return None,
        })
    }

    /// The bytes `setsockopt` hands the kernel.
    fn as_bytes(&self) -> &[u8] {
        let (ptr, len): (*const u8, usize) = match self {
            CryptoInfo::AesGcm128(c) => ((c as *const AesGcm128).cast(), size_of::<AesGcm128>()),
            CryptoInfo::AesGcm256(c) => ((c as *const AesGcm256).cast(), size_of::<AesGcm256>()),
            CryptoInfo::Chacha20Poly1305(c) => (
                (c as *const Chacha20Poly1305).cast(),
                size_of::<Chacha20Poly1305>(),
            ),
        };
        // SAFETY: the structs are repr(C) of u16s and byte arrays with no padding (the sizes
        // are checked against the kernel's in the tests), borrowed for the slice's lifetime.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

/// The (version, cipher) pairs handed over, in the kernel's numbers: TLS 1.3 with each of its
/// suites, TLS 1.2 with ChaCha20-Poly1305 (not with AES-GCM: see the module's docs).
const PAIRS: [(u16, u16); 4] = [
    (TLS_1_3_VERSION, TLS_CIPHER_AES_GCM_128),
    (TLS_1_3_VERSION, TLS_CIPHER_AES_GCM_256),
    (TLS_1_3_VERSION, TLS_CIPHER_CHACHA20_POLY1305),
    (TLS_1_2_VERSION, TLS_CIPHER_CHACHA20_POLY1305),
];

/// Whether rustls's negotiated `version` and `suite` are handed over: one of [`PAIRS`], and
/// one this kernel took keys for when probed.
pub(crate) fn supported(version: ProtocolVersion, suite: rustls::CipherSuite) -> bool {
    use rustls::CipherSuite as S;
    let version = match version {
        ProtocolVersion::TLSv1_2 => TLS_1_2_VERSION,
        ProtocolVersion::TLSv1_3 => TLS_1_3_VERSION,
        _ => return false,
    };
    let cipher = match suite {
        S::TLS13_AES_128_GCM_SHA256 => TLS_CIPHER_AES_GCM_128,
        S::TLS13_AES_256_GCM_SHA384 => TLS_CIPHER_AES_GCM_256,
        S::TLS13_CHACHA20_POLY1305_SHA256
        | S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        | S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => TLS_CIPHER_CHACHA20_POLY1305,
        _ => return false,
    };
    let Some(i) = PAIRS.iter().position(|&p| p == (version, cipher)) else {
        return false;
    };
    #[cfg(test)]
    if ASSUME_TAKEN.get() {
        return true;
    }
    kernel_takes()[i]
}

#[cfg(test)]
thread_local! {
    /// Tests of a refused handover: every pair counts as taken, whatever the probe found.
    pub(crate) static ASSUME_TAKEN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Which of [`PAIRS`] the kernel takes keys for in both directions, probed once per process on
/// loopback sockets (all `false` where it has no `tls` ULP). A server with kernel TLS on probes
/// at its start, off its cores' loops.
pub(crate) fn kernel_takes() -> &'static [bool; PAIRS.len()] {
    static TAKES: std::sync::OnceLock<[bool; PAIRS.len()]> = std::sync::OnceLock::new();
    TAKES.get_or_init(|| {
        if crate::probe::kernel_tls().is_err() {
            return [false; PAIRS.len()];
        }
        PAIRS.map(|(version, cipher)| {
            let info = dummy(version, cipher);
            let takes = || -> io::Result<()> {
                let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
                let client = std::net::TcpStream::connect(listener.local_addr()?)?;
                let _server = listener.accept()?;
                let fd = std::os::fd::AsFd::as_fd(&client);
                crate::sys::set_tcp_ulp(fd, "tls")?;
                set_keys(fd, false, &info)?;
                set_keys(fd, true, &info)
            };
            takes().is_ok()
        })
    })
}

/// Keys of zeros for `version` and `cipher`, for the probe.
fn dummy(version: u16, cipher: u16) -> CryptoInfo {
    let info = Header {
        version,
        cipher_type: cipher,
    };
    match cipher {
        TLS_CIPHER_AES_GCM_128 => CryptoInfo::AesGcm128(AesGcm128 {
            info,
            iv: [0; 8],
            key: [0; 16],
            salt: [0; 4],
            rec_seq: [0; 8],
        }),
        TLS_CIPHER_AES_GCM_256 => CryptoInfo::AesGcm256(AesGcm256 {
            info,
            iv: [0; 8],
            key: [0; 32],
            salt: [0; 4],
            rec_seq: [0; 8],
        }),
        _ => CryptoInfo::Chacha20Poly1305(Chacha20Poly1305 {
            info,
            iv: [0; 12],
            key: [0; 32],
            rec_seq: [0; 8],
        }),
    }
}

/// Gives the kernel one direction's keys (after `set_tcp_ulp(fd, "tls")`).
pub(crate) fn set_keys(fd: BorrowedFd<'_>, rx: bool, info: &CryptoInfo) -> io::Result<()> {
    let bytes = info.as_bytes();
    // SAFETY: `fd` is open for the borrow; the kernel reads `bytes` during the call only.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            SOL_TLS,
            if rx { TLS_RX } else { TLS_TX },
            bytes.as_ptr().cast(),
            bytes.len() as libc::socklen_t,
        )
    })
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::cipher::{AeadKey, Iv};

    #[test]
    fn layouts_are_the_kernels() {
        // sizeof in include/uapi/linux/tls.h (x86_64 and every Linux ABI: no padding).
        assert_eq!(size_of::<AesGcm128>(), 40);
        assert_eq!(size_of::<AesGcm256>(), 56);
        assert_eq!(size_of::<Chacha20Poly1305>(), 56);
    }

    #[test]
    fn aes_gcm_splits_the_nonce_into_salt_and_iv() {
        let key = AeadKey::from([7u8; 32]);
        let iv = Iv::new([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let secrets = ConnectionTrafficSecrets::Aes256Gcm { key, iv };
        let info = CryptoInfo::new(ProtocolVersion::TLSv1_3, 0x0102, &secrets).unwrap();
        let bytes = info.as_bytes();
        assert_eq!(
            &bytes[0..4],
            &[0x04, 0x03, 52, 0],
            "version 0x0304 and cipher 52, LE"
        );
        assert_eq!(
            &bytes[4..12],
            &[5, 6, 7, 8, 9, 10, 11, 12],
            "iv: the nonce's last 8"
        );
        assert_eq!(&bytes[12..44], &[7u8; 32], "key");
        assert_eq!(&bytes[44..48], &[1, 2, 3, 4], "salt: the nonce's first 4");
        assert_eq!(
            &bytes[48..56],
            &[0, 0, 0, 0, 0, 0, 1, 2],
            "sequence, big-endian"
        );
    }

    #[test]
    fn chacha_takes_the_whole_nonce_and_old_versions_are_refused() {
        let secrets = ConnectionTrafficSecrets::Chacha20Poly1305 {
            key: AeadKey::from([9u8; 32]),
            iv: Iv::new([3u8; 12]),
        };
        let info = CryptoInfo::new(ProtocolVersion::TLSv1_2, 1, &secrets).unwrap();
        let bytes = info.as_bytes();
        assert_eq!(&bytes[0..4], &[0x03, 0x03, 54, 0]);
        assert_eq!(&bytes[4..16], &[3u8; 12]);
        assert_eq!(&bytes[48..56], &1u64.to_be_bytes());
        assert!(CryptoInfo::new(ProtocolVersion::TLSv1_1, 1, &secrets).is_none());
    }

    #[test]
    fn tls12_aes_gcm_is_never_handed_over() {
        // Its nonces would repeat under the kernel (see the module's docs).
        let secrets = ConnectionTrafficSecrets::Aes256Gcm {
            key: AeadKey::from([7u8; 32]),
            iv: Iv::new([1u8; 12]),
        };
        assert!(CryptoInfo::new(ProtocolVersion::TLSv1_2, 5, &secrets).is_none());
        assert!(!supported(
            ProtocolVersion::TLSv1_2,
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        ));
    }

    #[test]
    fn keys_on_a_socket_without_the_ulp_are_refused() {
        // Without the tls ULP attached (or in the kernel at all), SOL_TLS options fail: the
        // handover attaches the ULP first and keeps rustls where that fails.
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let secrets = ConnectionTrafficSecrets::Aes256Gcm {
            key: AeadKey::from([0u8; 32]),
            iv: Iv::new([0u8; 12]),
        };
        let info = CryptoInfo::new(ProtocolVersion::TLSv1_3, 0, &secrets).unwrap();
        let fd = std::os::fd::AsFd::as_fd(&client);
        assert!(set_keys(fd, false, &info).is_err());
    }
}
