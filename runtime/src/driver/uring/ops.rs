//! The io_uring driver's command side: what each core request submits.

use std::net::SocketAddr;
use std::os::fd::RawFd;

use super::io_slot::{CloseStep, Life, Recv};
use super::{AcceptState, UringOps, BGID};
use crate::driver::Ops;
use crate::op;
use crate::user_data::{Op, UserData};

impl Ops for UringOps {
    fn open(&mut self, slot: u32, fd: RawFd) {
        let io = self.slot_for(slot);
        io.open(fd);
        io.recv = Recv::Armed;
        let entry = op::recv::multishot(fd, BGID, UserData::new(Op::Recv, slot, io.generation));
        self.live += 1;
        // SAFETY: a multishot receive points to nothing; buffers come from the buffer ring.
        unsafe { self.push(&entry) };
    }

    fn connect(&mut self, slot: u32, fd: RawFd, addr: SocketAddr) {
        let io = self.slot_for(slot);
        io.open(fd);
        io.recv = Recv::Idle;
        io.connecting = true;
        let sockaddr = socket2::SockAddr::from(addr);
        let len = sockaddr.len();
        // SAFETY: `len` bytes of a SockAddr fit a sockaddr_storage, and both are plain data.
        unsafe {
            std::ptr::copy_nonoverlapping(
                sockaddr.as_ptr().cast::<u8>(),
                (&mut io.addr as *mut libc::sockaddr_storage).cast::<u8>(),
                len as usize,
            )
        };
        let entry = op::connect::connect(
            fd,
            (&io.addr as *const libc::sockaddr_storage).cast(),
            len,
            UserData::new(Op::Connect, slot, io.generation),
        );
        self.live += 1;
        // SAFETY: the address lives in the slot, which does not move and is not reused before
        // the connect completes.
        unsafe { self.push(&entry) };
    }

    unsafe fn send(&mut self, slot: u32, iov: &[libc::iovec]) {
        let io = &mut self.slots[slot as usize];
        debug_assert!(io.life == Life::Open && !io.sending && !iov.is_empty());
        let ud = UserData::new(Op::Send, slot, io.generation);
        let entry = if iov.len() == 1 {
            let len = iov[0].iov_len.min(u32::MAX as usize) as u32;
            op::send::send(io.fd, iov[0].iov_base as *const u8, len, ud)
        } else {
            let n = iov.len().min(io.iov.len());
            io.iov[..n].copy_from_slice(&iov[..n]);
            io.msg.msg_iov = io.iov.as_mut_ptr();
            io.msg.msg_iovlen = n as _;
            op::send::sendmsg(io.fd, &io.msg, ud)
        };
        io.sending = true;
        // SAFETY: the bytes stay valid until the send's completion (this function's contract);
        // the msghdr and iovecs live in the slot, which does not move and is not reused before
        // the send has completed.
        unsafe { self.push(&entry) };
    }

    fn shutdown_write(&mut self, slot: u32) {
        let _ = crate::sys::shutdown_write(self.slots[slot as usize].fd);
    }

    fn close(&mut self, slot: u32) {
        let io = &mut self.slots[slot as usize];
        let generation = io.generation;
        let fd = io.fd;
        let entry = match io.request_close() {
            CloseStep::Nothing => return,
            CloseStep::Cancel => {
                op::cancel::all_on_fd(fd, UserData::new(Op::Cancel, slot, generation))
            }
            CloseStep::Close => op::close::close(fd, UserData::new(Op::Close, slot, generation)),
        };
        // SAFETY: cancels and closes point to nothing.
        unsafe { self.push(&entry) };
    }

    fn pause_recv(&mut self, slot: u32) {
        let io = &mut self.slots[slot as usize];
        io.want_recv = false;
        match io.recv {
            Recv::Armed => {
                // Completions racing the cancel still carry data; they are delivered as usual.
                let target = UserData::new(Op::Recv, slot, io.generation);
                let entry = op::cancel::by_user_data(
                    target,
                    UserData::new(Op::Cancel, slot, io.generation),
                );
                io.recv = Recv::Cancelling;
                io.cancels += 1;
                // SAFETY: a cancel points to nothing.
                unsafe { self.push(&entry) };
            }
            Recv::Starved => io.recv = Recv::Idle,
            Recv::Idle | Recv::Cancelling => {}
        }
    }

    fn resume_recv(&mut self, slot: u32) {
        let io = &mut self.slots[slot as usize];
        io.want_recv = true;
        if io.recv == Recv::Idle && io.life == Life::Open {
            // Re-armed at the start of the next turn. (While a cancel is still in flight the
            // receive's final completion re-arms it.)
            io.recv = Recv::Starved;
            self.starved.push((slot, io.generation));
        }
    }

    fn stop_accepting(&mut self) {
        match self.accept {
            AcceptState::Armed => {
                let entry = op::cancel::by_user_data(
                    UserData::engine(Op::Accept),
                    UserData::engine(Op::AcceptCancel),
                );
                // SAFETY: a cancel points to nothing.
                unsafe { self.push(&entry) };
                self.accept = AcceptState::Cancelling;
            }
            AcceptState::Idle | AcceptState::RetryAt(_) => self.accept = AcceptState::Drain,
            AcceptState::Cancelling | AcceptState::Drain | AcceptState::Closed => {}
        }
    }
}
