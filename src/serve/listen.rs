//! Accepting connections under the connection limit, and the timeouts every
//! connection lives under.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

use super::{MAX_CONNECTIONS, RESERVED_FILES, Shared, http, resp};

/// How long accepting pauses when the process is out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    Resp,
    Http,
}

impl Protocol {
    fn index(self) -> usize {
        match self {
            Protocol::Resp => 0,
            Protocol::Http => 1,
        }
    }
}

/// [`MAX_CONNECTIONS`], lowered to fit the open-file limit. Raises the soft
/// open-file limit to the hard one first.
pub(crate) fn connection_limit() -> usize {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                if lim.rlim_cur < lim.rlim_max {
                    let raised = libc::rlimit {
                        rlim_cur: lim.rlim_max,
                        rlim_max: lim.rlim_max,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                        lim.rlim_cur = lim.rlim_max;
                    }
                }
                let files = usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX);
                return MAX_CONNECTIONS.min(files.saturating_sub(RESERVED_FILES).max(1));
            }
        }
    }
    MAX_CONNECTIONS
}

/// Connections open now, against the limit.
pub(crate) struct Slots {
    open: AtomicUsize,
    max: usize,
}

impl Slots {
    pub fn new(max: usize) -> Slots {
        Slots {
            open: AtomicUsize::new(0),
            max,
        }
    }

    fn take(self: &Arc<Self>) -> Option<Slot> {
        let mut n = self.open.load(Ordering::Relaxed);
        loop {
            if n >= self.max {
                return None;
            }
            match self
                .open
                .compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some(Slot(self.clone())),
                Err(now) => n = now,
            }
        }
    }
}

/// One connection's place under the limit, given back when dropped.
pub(crate) struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accepts connections forever, one task each.
pub(crate) async fn accept(
    listener: TcpListener,
    slots: Arc<Slots>,
    shared: Arc<Shared>,
    protocol: Protocol,
) {
    loop {
        let (mut stream, _peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors or a connection reset before it
                // was accepted: wait a little rather than spin.
                if !matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                ) {
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                continue;
            }
        };
        let Some(slot) = slots.take() else {
            shared.metrics.refused();
            tokio::spawn(async move {
                let refusal: &[u8] = match protocol {
                    Protocol::Resp => b"-ERR max number of clients reached\r\n",
                    Protocol::Http => {
                        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    }
                };
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), stream.write_all(refusal)).await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            shared.metrics.connection(protocol.index(), true);
            match protocol {
                Protocol::Resp => resp::serve(stream, &shared).await,
                Protocol::Http => http::serve(stream, shared.clone()).await,
            }
            shared.metrics.connection(protocol.index(), false);
            drop(slot);
        });
    }
}

/// After a fatal protocol error, input is read and dropped for at most this
/// long before the connection closes, so that the client reads the error
/// instead of a reset (closing with unread input resets the connection).
pub(crate) const LINGER_TIME: Duration = Duration::from_secs(2);
/// ... and at most this many bytes of it.
pub(crate) const LINGER_BYTES: usize = 4 << 20;

/// Shuts down writing (the client sees the end of the replies), then reads
/// and drops what the client still sends, until it closes or
/// [`LINGER_TIME`] or [`LINGER_BYTES`] is reached.
pub(crate) async fn linger(stream: &mut TcpStream) {
    use tokio::io::AsyncReadExt;
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 16 << 10];
    let mut dropped = 0;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while dropped < LINGER_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => dropped += n,
            }
        }
    })
    .await;
}

/// A stream whose reads fail with `TimedOut` after `idle` without a byte,
/// and whose writes fail the same way after `write` without progress.
pub(crate) struct Deadlines {
    inner: TcpStream,
    idle: Duration,
    write: Duration,
    read_timer: Pin<Box<Sleep>>,
    read_armed: bool,
    write_timer: Pin<Box<Sleep>>,
    write_armed: bool,
    pub timed_out: bool,
}

impl Deadlines {
    pub fn new(inner: TcpStream, idle: Duration, write: Duration) -> Deadlines {
        Deadlines {
            inner,
            idle,
            write,
            read_timer: Box::pin(tokio::time::sleep(idle)),
            read_armed: false,
            write_timer: Box::pin(tokio::time::sleep(write)),
            write_armed: false,
            timed_out: false,
        }
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_string())
}

impl AsyncRead for Deadlines {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.read_armed = false;
                Poll::Ready(r)
            }
            Poll::Pending => {
                if !this.read_armed {
                    this.read_armed = true;
                    let at = Instant::now() + this.idle;
                    this.read_timer.as_mut().reset(at);
                }
                if this.read_timer.as_mut().poll(cx).is_ready() {
                    this.timed_out = true;
                    return Poll::Ready(Err(timed_out("no request within the idle timeout")));
                }
                Poll::Pending
            }
        }
    }
}

impl Deadlines {
    /// A write that is still pending arms the write deadline (once), and
    /// fails when it passes; a write that went through disarms it.
    fn write_deadline(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match r {
            Poll::Ready(r) => {
                self.write_armed = false;
                Poll::Ready(r)
            }
            Poll::Pending => {
                if !self.write_armed {
                    self.write_armed = true;
                    let at = Instant::now() + self.write;
                    self.write_timer.as_mut().reset(at);
                }
                if self.write_timer.as_mut().poll(cx).is_ready() {
                    self.timed_out = true;
                    return Poll::Ready(Err(timed_out("the client did not take its reply")));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for Deadlines {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.write_deadline(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.write_deadline(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
