//! The io_uring driver's command side: what each core command submits.

use std::os::fd::OwnedFd;

use super::io_slot::{CloseStep, Life, Recv};
use super::{AcceptState, AfterAccept, UringDriver, BGID};
use crate::driver::{Command, SendBuf};
use crate::op;
use crate::user_data::{Op, UserData};

impl UringDriver {
    /// Applies one command of the core.
    pub(super) fn apply_one(&mut self, cmd: Command) {
        match cmd {
            Command::Open { slot, fd } => self.open(slot, fd),
            Command::Connect { slot, fd, addr } => self.connect(slot, fd, &addr),
            Command::Send { slot, send } => self.send(slot, send),
            Command::ShutdownWrite { slot } => {
                let io = &self.slots[slot as usize];
                if let Some(fd) = &io.fd {
                    let _ = crate::sys::shutdown_write(std::os::fd::AsFd::as_fd(fd));
                }
            }
            Command::Close { slot } => self.close(slot),
            Command::PauseRecv { slot } => self.pause_recv(slot),
            Command::ResumeRecv { slot } => self.resume_recv(slot),
            Command::StopAccepting => self.stop_accepting(AfterAccept::Drain),
        }
    }

    fn open(&mut self, slot: u32, fd: OwnedFd) {
        let io = self.slots.open(slot);
        io.open(fd);
        io.recv = Recv::Armed;
        let entry = op::recv::multishot(
            io.raw_fd(),
            BGID,
            UserData::new(Op::Recv, slot, io.generation),
        );
        // SAFETY: a multishot receive points to nothing; buffers come from the buffer ring.
        unsafe { self.push(&entry) };
    }

    fn connect(&mut self, slot: u32, fd: OwnedFd, sockaddr: &socket2::SockAddr) {
        let io = self.slots.open(slot);
        io.open(fd);
        io.recv = Recv::Idle;
        io.connecting = true;
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
            io.raw_fd(),
            (&io.addr as *const libc::sockaddr_storage).cast(),
            len,
            UserData::new(Op::Connect, slot, io.generation),
        );
        // SAFETY: the address lives in the slot, which does not move and is not reused before
        // the connect completes.
        unsafe { self.push(&entry) };
    }

    fn send(&mut self, slot: u32, mut send: Box<SendBuf>) {
        let io = &mut self.slots[slot as usize];
        debug_assert!(io.life == Life::Open && io.send.is_none() && send.len() > 0);
        if io.life != Life::Open {
            return; // Dropped: the kernel never saw it.
        }
        let ud = UserData::new(Op::Send, slot, io.generation);
        let entry = match send.iovecs() {
            [one] => {
                let len = one.iov_len.min(u32::MAX as usize) as u32;
                op::send::send(io.raw_fd(), one.iov_base as *const u8, len, ud)
            }
            _ => op::send::sendmsg(io.raw_fd(), send.msghdr(), ud),
        };
        io.send = Some(send);
        // SAFETY: the bytes, iovecs and msghdr live in the boxed SendBuf, which the slot now
        // holds until the send's completion (and leaks, rather than frees, if the driver is
        // torn down before it); boxing keeps their addresses fixed.
        unsafe { self.push(&entry) };
    }

    pub(super) fn close(&mut self, slot: u32) {
        let io = &mut self.slots[slot as usize];
        let generation = io.generation;
        let entry = match io.request_close() {
            CloseStep::Nothing => return,
            CloseStep::Cancel => {
                op::cancel::all_on_fd(io.raw_fd(), UserData::new(Op::Cancel, slot, generation))
            }
            CloseStep::Close => op::close::close(
                io.take_fd_for_close(),
                UserData::new(Op::Close, slot, generation),
            ),
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

    pub(super) fn stop_accepting(&mut self, then: AfterAccept) {
        match (self.accept, then) {
            (AcceptState::Armed, _) => {
                let entry = op::cancel::by_user_data(
                    UserData::engine(Op::Accept),
                    UserData::engine(Op::AcceptCancel),
                );
                // SAFETY: a cancel points to nothing.
                unsafe { self.push(&entry) };
                self.accept = AcceptState::Cancelling(then);
            }
            (AcceptState::Idle | AcceptState::RetryAt(_), AfterAccept::Drain) => {
                self.accept = AcceptState::Drain
            }
            (
                AcceptState::Idle | AcceptState::RetryAt(_) | AcceptState::Drain,
                AfterAccept::Leave,
            ) => self.leave_listener(),
            // Abandoned while a stop waits for the accept's end: leave rather than drain.
            (AcceptState::Cancelling(_), AfterAccept::Leave) => {
                self.accept = AcceptState::Cancelling(AfterAccept::Leave)
            }
            (AcceptState::Cancelling(_) | AcceptState::Drain | AcceptState::Closed, _) => {}
        }
    }
}
