//! Request bodies sent without copying them: kept in one sealed memfd, mapped read-only, and
//! handed to the socket with `sendfile`.
//!
//! A large body sent with `write` costs the client a copy of every byte into the socket's buffers
//! on each request: for the 602 KB ImageNet tensor that copy took 38% of the client's core at 10
//! users (see `bench/TRANSPORT.md`). With `sendfile` the socket takes references to the memfd's
//! pages instead, and the only copy left is the one the server makes as it reads.
//!
//! hyper still frames every request: the bodies it is given are slices of the mapping, and
//! [`BodyStream`] (the connection's I/O) recognises a buffer that lies inside the mapping and sends
//! it with `sendfile` from the same offset of the memfd; everything else (heads, other bodies)
//! goes out as hyper wrote it. The memfd is sealed against writes before it is mapped, so the pages
//! a socket still holds can never change under it.

use std::ffi::CStr;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use super::Body;

/// Bodies larger than this in total stay where they are (an image set can be most of the run's
/// memory, and a second copy of it would not fit).
pub const MAX_SEALED_BYTES: usize = 256 << 20;

/// A body larger than this stays where it is and is copied on each send. Such a body outgrows the
/// receive window a loopback server's socket settles at (about 900 KB against nginx), so it leaves in
/// several window rounds, and `sendfile` queueing it 64 KB at a time races the transmissions the
/// server's ACKs start on the server's CPU: the reordering cuts the window. Measured with one
/// connection and the 1.6 MB LitServe JSON body: 0.63x the rate of `writev` (see
/// `bench/TRANSPORT.md`); the 602 KB Triton tensor gains with one connection as with ten.
pub const MAX_SEALED_BODY: usize = 1 << 20;

/// The sealed memfd and its read-only mapping: the owner of every body slice made from it.
pub struct Sealed {
    memfd: OwnedFd,
    base: *const u8,
    len: usize,
}

// SAFETY: the mapping is read-only and sealed against writes for its whole life; sharing and
// sending a pointer to immutable memory between threads is sound.
unsafe impl Send for Sealed {}
// SAFETY: as above.
unsafe impl Sync for Sealed {}

impl Drop for Sealed {
    fn drop(&mut self) {
        // SAFETY: `base` and `len` are exactly what mmap returned; no slice outlives the last
        // `Arc<Sealed>` (each `Bytes` slice holds one).
        unsafe { libc::munmap(self.base.cast_mut().cast(), self.len) };
    }
}

/// One body's range of the mapping (offset, length), keeping the mapping alive.
struct SealedSlice(Arc<Sealed>, usize, usize);

impl AsRef<[u8]> for SealedSlice {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `seal` made the range inside the mapping, which lives as long as `self.0`.
        unsafe { std::slice::from_raw_parts(self.0.base.add(self.1), self.2) }
    }
}

impl Sealed {
    /// Where `buf` starts in the memfd, when it lies wholly inside the mapping.
    fn offset_of(&self, buf: &[u8]) -> Option<usize> {
        let start = (buf.as_ptr() as usize).checked_sub(self.base as usize)?;
        (!buf.is_empty() && start + buf.len() <= self.len).then_some(start)
    }
}

/// Moves `bodies` of up to [`MAX_SEALED_BODY`] bytes into a sealed memfd: each one's bytes become a
/// slice of its mapping. Returns the memfd, or `None` (bodies untouched) when there is nothing to
/// move, when they are over [`MAX_SEALED_BYTES`] in all, or when this kernel cannot make one.
pub fn seal(bodies: &mut [Body]) -> Option<Arc<Sealed>> {
    let mut moved: Vec<&mut Body> = bodies
        .iter_mut()
        .filter(|b| (1..=MAX_SEALED_BODY).contains(&b.bytes.len()))
        .collect();
    let total: usize = moved.iter().map(|b| b.bytes.len()).sum();
    if total == 0 || total > MAX_SEALED_BYTES {
        return None;
    }
    let sealed = Arc::new(sealed_copy(moved.iter().map(|b| &b.bytes[..]), total).ok()?);
    let mut offset = 0;
    for body in &mut moved {
        let len = body.bytes.len();
        body.bytes = Bytes::from_owner(SealedSlice(Arc::clone(&sealed), offset, len));
        offset += len;
    }
    Some(sealed)
}

fn check(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// A memfd holding `parts` one after another, sealed and mapped read-only.
fn sealed_copy<'a>(parts: impl Iterator<Item = &'a [u8]>, total: usize) -> io::Result<Sealed> {
    const NAME: &CStr = c"locust-inference-bodies";
    // SAFETY: NAME is a valid C string; the new descriptor is owned at once.
    let memfd = unsafe {
        OwnedFd::from_raw_fd(check(libc::memfd_create(
            NAME.as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        ))?)
    };
    let file = std::fs::File::from(memfd);
    file.set_len(total as u64)?;
    let mut written = 0u64;
    for part in parts {
        std::os::unix::fs::FileExt::write_all_at(&file, part, written)?;
        written += part.len() as u64;
    }
    let memfd = OwnedFd::from(file);
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on a descriptor we own.
    check(unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, seals) })?;
    // SAFETY: a fresh read-only shared mapping of the whole memfd; checked against MAP_FAILED.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            total,
            libc::PROT_READ,
            libc::MAP_SHARED,
            memfd.as_raw_fd(),
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(Sealed {
        memfd,
        base: base.cast(),
        len: total,
    })
}

/// A connection's socket as hyper sees it: buffers inside the sealed mapping go out with
/// `sendfile`, everything else with the socket's own writes.
pub struct BodyStream {
    stream: TcpStream,
    sealed: Option<Arc<Sealed>>,
}

/// At most this many bytes of a body wait unsent in the socket (`TCP_NOTSENT_LOWAT`) when bodies
/// go out with `sendfile`. Without a limit the whole body is queued at once, faster than the
/// server's window opens; the rest then leaves from the softirq that handles the server's ACK, on
/// the server's CPU, and on loopback those segments overtake the ones still queued on the client's
/// CPU. The reordering sets off SACK recovery and halves the rate for seconds at a time (see
/// `bench/TRANSPORT.md`). 16 to 64 KiB all measured alike; 128 KiB did not help.
const UNSENT_LIMIT: libc::c_int = 32 << 10;

impl BodyStream {
    /// Wraps a connected socket; with `sealed`, bodies in it go out with `sendfile`.
    pub fn new(stream: TcpStream, sealed: Option<Arc<Sealed>>) -> io::Result<Self> {
        if sealed.is_some() {
            // SAFETY: setsockopt on a live socket with a c_int value of the right size.
            check(unsafe {
                libc::setsockopt(
                    stream.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_NOTSENT_LOWAT,
                    std::ptr::from_ref(&UNSENT_LIMIT).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            })?;
        }
        Ok(BodyStream { stream, sealed })
    }

    /// Runs the non-blocking `op` when the socket is writable, waiting for it to be.
    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        op: impl Fn(RawFd) -> isize,
    ) -> Poll<io::Result<usize>> {
        let fd = self.stream.as_raw_fd();
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            let sent = self.stream.try_io(Interest::WRITABLE, || {
                let n = op(fd);
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match sent {
                // EINTR: a signal came in before anything was sent; nothing to undo, so again.
                // (`sendfile` returns it when a signal lands as it moves pages; the socket's own
                // non-blocking writes were not seen to, as they return EAGAIN rather than wait.)
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                sent => return Poll::Ready(sent),
            }
        }
    }
}

/// `sendfile` of `len` bytes of `memfd` from `offset`.
fn send_file(socket: RawFd, memfd: RawFd, offset: usize, len: usize) -> isize {
    let mut offset = offset as libc::off_t;
    // SAFETY: both descriptors are open for the call; the kernel reads only inside the memfd.
    unsafe { libc::sendfile(socket, memfd, &raw mut offset, len) }
}

/// `sendmsg` of `bufs`; `more` holds them back for what follows (a body sent with `sendfile`),
/// so head and body leave in the same segments.
fn send_bufs(socket: RawFd, bufs: &[IoSlice<'_>], more: bool) -> isize {
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = bufs.as_ptr().cast_mut().cast();
    msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize);
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    // SAFETY: IoSlice is ABI-compatible with iovec; the buffers live across the call.
    unsafe { libc::sendmsg(socket, &raw const msg, flags) }
}

impl AsyncWrite for BodyStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let Some(sealed) = &self.sealed else {
            return Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs);
        };
        let bufs = &bufs[bufs.iter().take_while(|b| b.is_empty()).count()..];
        let Some(first) = bufs.first() else {
            return Poll::Ready(Ok(0));
        };
        if let Some(offset) = sealed.offset_of(first) {
            let memfd = sealed.memfd.as_raw_fd();
            return self.poll_send(cx, |socket| send_file(socket, memfd, offset, first.len()));
        }
        let head = bufs
            .iter()
            .position(|b| sealed.offset_of(b).is_some())
            .unwrap_or(bufs.len());
        let more = head < bufs.len();
        self.poll_send(cx, |socket| send_bufs(socket, &bufs[..head], more))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl AsyncRead for BodyStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::TcpListener;

    use tokio::io::AsyncWriteExt;

    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn body(len: usize, seed: u8) -> Body {
        let bytes: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect();
        Body::new(Bytes::from(bytes))
    }

    #[test]
    fn sealing_moves_every_body_into_one_mapping_unchanged() {
        let mut bodies = vec![body(5, 1), body(0, 2), body(70_000, 3)];
        let before: Vec<Bytes> = bodies.iter().map(|b| b.bytes.clone()).collect();
        let sealed = seal(&mut bodies).expect("a memfd");
        assert_eq!(sealed.len, 70_005);
        for (body, original) in bodies.iter().zip(&before) {
            assert_eq!(body.bytes, original);
        }
        assert_eq!(sealed.offset_of(&bodies[0].bytes), Some(0));
        assert_eq!(sealed.offset_of(&bodies[2].bytes[10..]), Some(15));
        assert_eq!(sealed.offset_of(&before[2]), None);
        assert_eq!(sealed.offset_of(&bodies[1].bytes), None); // empty: nothing to send
    }

    #[test]
    fn a_body_over_the_limit_stays_where_it_is() {
        let mut bodies = vec![body(MAX_SEALED_BODY + 1, 1), body(10, 2)];
        let big = bodies[0].bytes.clone();
        let sealed = seal(&mut bodies).expect("the small body is sealed");
        assert_eq!(sealed.len, 10);
        assert_eq!(bodies[0].bytes.as_ptr(), big.as_ptr());
        assert_eq!(sealed.offset_of(&bodies[1].bytes), Some(0));
        let mut only_big = vec![body(MAX_SEALED_BODY + 1, 3)];
        assert!(seal(&mut only_big).is_none());
    }

    #[test]
    fn nothing_is_sealed_when_there_are_no_bytes() {
        let mut bodies = vec![body(0, 0)];
        assert!(seal(&mut bodies).is_none());
    }

    #[test]
    fn the_mapping_cannot_be_written() {
        let mut bodies = vec![body(4096, 7)];
        let sealed = seal(&mut bodies).unwrap();
        // SAFETY: a 4-byte write from a live array to a descriptor we own.
        let written = unsafe { libc::write(sealed.memfd.as_raw_fd(), [0u8; 4].as_ptr().cast(), 4) };
        assert_eq!(written, -1);
        assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::EPERM));
    }

    /// A head, a sealed body and an unsealed one reach a real socket in order and intact, through a
    /// send buffer far smaller than the body, so `sendfile` and `sendmsg` return short counts and
    /// wait for the socket to drain many times.
    #[test]
    fn heads_and_bodies_arrive_whole_through_short_writes() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let mut bodies = vec![body(MAX_SEALED_BODY, 9)];
        let sealed = seal(&mut bodies).unwrap();
        let head = Bytes::from_static(b"POST / HTTP/1.1\r\n\r\n");
        let other = body(100_000, 4).bytes;
        let mut expected = head.to_vec();
        expected.extend_from_slice(&bodies[0].bytes);
        expected.extend_from_slice(&other);
        let total = expected.len();
        // A slow reader: on loopback a reader that keeps up drains the send buffer while a call
        // is still in the kernel, and a few calls move everything (9, on an idle machine).
        let reader = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut got = vec![0u8; total];
            for chunk in got.chunks_mut(16 << 10) {
                std::thread::sleep(std::time::Duration::from_millis(1));
                socket.read_exact(chunk).unwrap();
            }
            got
        });
        let rt = runtime();
        rt.block_on(async {
            let stream = TcpStream::connect(address).await.unwrap();
            let small: libc::c_int = 16 << 10;
            // SAFETY: setsockopt on a live socket with a c_int of the right size.
            unsafe {
                libc::setsockopt(
                    stream.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_SNDBUF,
                    std::ptr::from_ref(&small).cast(),
                    4,
                )
            };
            let mut stream = BodyStream::new(stream, Some(sealed)).unwrap();
            let mut parts = vec![head, bodies[0].bytes.clone(), other];
            let mut calls = 0;
            while parts.iter().any(|p| !p.is_empty()) {
                let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
                let mut n = stream.write_vectored(&slices).await.unwrap();
                calls += 1;
                for part in &mut parts {
                    let step = n.min(part.len());
                    bytes::Buf::advance(part, step);
                    n -= step;
                }
            }
            assert!(calls > 10, "{calls} writes: the send buffer never filled");
        });
        assert!(reader.join().unwrap() == expected);
    }

    extern "C" fn ignore(_: libc::c_int) {}

    /// Signals hitting the sending thread, with a handler installed without `SA_RESTART` (as
    /// Python's are), interrupt `sendfile` (EINTR): the send goes on and every byte arrives. The
    /// reader is slow, so the sends wait and are interrupted again and again.
    #[test]
    fn signals_during_sends_do_not_fail_them() {
        // SAFETY: installs a handler that does nothing (async-signal-safe) for SIGUSR1, which
        // nothing else in this test process uses; an all-zero sigaction is a valid start.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&raw mut action.sa_mask);
            assert_eq!(
                libc::sigaction(libc::SIGUSR1, &raw const action, std::ptr::null_mut()),
                0
            );
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let mut bodies = vec![body(MAX_SEALED_BODY, 11)];
        let sealed = seal(&mut bodies).unwrap();
        let head = Bytes::from_static(b"POST / HTTP/1.1\r\n\r\n");
        let other = body(300_000, 6).bytes;
        let rounds = 4;
        let mut expected = Vec::new();
        for _ in 0..rounds {
            expected.extend_from_slice(&head);
            expected.extend_from_slice(&bodies[0].bytes);
            expected.extend_from_slice(&other);
        }
        let total = expected.len();
        let reader = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut got = vec![0u8; total];
            for chunk in got.chunks_mut(16 << 10) {
                socket.read_exact(chunk).unwrap();
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            got
        });
        // SAFETY: pthread_self has no preconditions.
        let sender = unsafe { libc::pthread_self() };
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = Arc::clone(&done);
        let signaller = std::thread::spawn(move || {
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: the sending thread lives until this thread is joined.
                unsafe { libc::pthread_kill(sender, libc::SIGUSR1) };
                sent += 1;
                std::thread::sleep(std::time::Duration::from_micros(20));
            }
            sent
        });
        let rt = runtime();
        let result = rt.block_on(async {
            let stream = TcpStream::connect(address).await?;
            let mut stream = BodyStream::new(stream, Some(sealed))?;
            for _ in 0..rounds {
                let mut parts = vec![head.clone(), bodies[0].bytes.clone(), other.clone()];
                while parts.iter().any(|p| !p.is_empty()) {
                    let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
                    let mut n = stream.write_vectored(&slices).await?;
                    for part in &mut parts {
                        let step = n.min(part.len());
                        bytes::Buf::advance(part, step);
                        n -= step;
                    }
                }
            }
            io::Result::Ok(())
        });
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let signals = signaller.join().unwrap();
        result.expect("a signal failed the send");
        assert!(signals > 10, "only {signals} signals were sent");
        assert!(reader.join().unwrap() == expected);
    }

    /// A peer that is gone is an error from `sendfile`, not a signal or a hang (which of the two
    /// "gone" errors depends on whether the peer's reset was seen before the write).
    #[test]
    fn a_closed_peer_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let mut bodies = vec![body(MAX_SEALED_BODY, 5)];
        let sealed = seal(&mut bodies).unwrap();
        let rt = runtime();
        let result = rt.block_on(async {
            let stream = TcpStream::connect(address).await.unwrap();
            let (socket, _) = listener.accept().unwrap();
            drop(socket);
            let mut stream = BodyStream::new(stream, Some(sealed)).unwrap();
            for _ in 0..100 {
                stream.write_all(&bodies[0].bytes).await?; // until the reset is seen
            }
            Ok(())
        });
        let error: io::Error = result.expect_err("writes to a closed peer fail");
        assert!(
            matches!(
                error.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ),
            "{error:?}"
        );
    }
}
