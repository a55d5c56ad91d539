//! File descriptors across the process boundary: fd 3 from lightningd, and
//! client sockets passed back with SCM_RIGHTS.
//!
//! This is the only module with `unsafe`: adopting a raw descriptor as an
//! `OwnedFd` is sound only if nothing else owns it, which each function
//! below argues at its `unsafe` block.
#![allow(unsafe_code)]

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr};

/// The descriptor lightningd gives its hsmd.
pub const MASTER_FD: RawFd = 3;

/// Takes ownership of fd 3, if it is open. Call once, at start-up, before
/// anything else can open a file (and be given number 3).
pub fn take_master_fd() -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    let flags = unsafe { nix::libc::fcntl(MASTER_FD, nix::libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "fd 3 is not open: the broker is meant to be started by lightningd \
             (subdaemon=hsmd:/path/to/sphinx-broker)",
        ));
    }
    // SAFETY: fd 3 is open (checked above) and was inherited from the parent;
    // nothing in this process has adopted it, and this function is called once.
    Ok(unsafe { OwnedFd::from_raw_fd(MASTER_FD) })
}

/// Sends `fd` over the unix socket `sock` as CLN expects: one byte `0xff`
/// with one SCM_RIGHTS descriptor.
pub fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> io::Result<()> {
    let fds = [fd.as_raw_fd()];
    let cmsgs = [ControlMessage::ScmRights(&fds)];
    let sent = sendmsg::<UnixAddr>(
        sock.as_raw_fd(),
        &[IoSlice::new(&[0xff])],
        &cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    if sent != 1 {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "fd not sent"));
    }
    Ok(())
}

/// Receives one descriptor sent by [`send_fd`] (CLN's `fdpass_recv`): exactly
/// one byte `0xff` and exactly one descriptor, or an error.
pub fn recv_fd(sock: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let msg = recvmsg::<UnixAddr>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut received = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            received.extend(fds);
        }
    }
    let bytes = msg.bytes;
    // SAFETY: the kernel just installed these descriptors in this process for
    // this message; nothing else knows their numbers, so each is adopted once.
    let owned: Vec<OwnedFd> = received
        .into_iter()
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    if bytes != 1 || byte[0] != 0xff || owned.len() != 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "expected one 0xff byte and one fd, got {bytes} bytes and {} fds",
                owned.len()
            ),
        ));
    }
    owned
        .into_iter()
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no fd"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_passed_socket_works_on_the_other_side() {
        let (a, b) = UnixStream::pair().expect("pair");
        let (mine, theirs) = UnixStream::pair().expect("pair");
        send_fd(a.as_fd(), theirs.as_fd()).expect("send");
        drop(theirs);
        let got = UnixStream::from(recv_fd(b.as_fd()).expect("recv"));
        (&got).write_all(b"ping").expect("write");
        let mut buf = [0u8; 4];
        (&mine).read_exact(&mut buf).expect("read");
        assert_eq!(&buf, b"ping");
    }

    #[test]
    fn anything_else_is_refused() {
        let (a, b) = UnixStream::pair().expect("pair");
        (&a).write_all(b"\xff").expect("write");
        assert!(recv_fd(b.as_fd()).is_err(), "a byte without an fd");
        let (a, b) = UnixStream::pair().expect("pair");
        drop(a);
        assert!(recv_fd(b.as_fd()).is_err(), "end of stream");
    }
}
