//! A proxy connection's socket with its writes of full HTTP/2 frames gathered: h2 writes each
//! DATA frame of a large response with its own `writev` (16 KiB, the frame size Envoy allows)
//! and flushes after each, so a 300 KB route configuration costs twenty trips through the
//! kernel's TCP stack. Here a write of a full frame is copied into a buffer, and the flush that
//! follows it waits — the task is woken at once so that a flush comes back — until a write that
//! is not a full frame (the end of a message), a flush with nothing new since the last one, or
//! [`GATHER_UP_TO`] bytes. Small writes (acknowledgements, endpoint updates) go straight to the
//! socket when nothing is gathered.
//!
//! The buffer is borrowed from a [`BufferPool`] — owned by the listener and shared by its
//! connections — for as long as it holds bytes: almost always within one poll of the
//! connection, as a proxy reads what it is sent. With [`MAX_LENT`] out, frames go to the socket
//! as they come. A thousand proxies syncing at once thus reuse a few buffers instead of each
//! connection allocating its own, which would raise the server's peak memory during the sync
//! and leave the allocator holding about 3 KB more per idle proxy afterwards.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Writes at least this large are full frames (16 KiB of payload): worth gathering.
const FULL_WRITE: usize = 16 * 1024;
/// Most bytes gathered before they are written: the largest segment TCP makes on loopback.
const GATHER_UP_TO: usize = 64 * 1024;

/// Gathering buffers lent out at most at once by one pool; past it, frames are written as they
/// come. Bounds the memory gathering takes when many proxies read slowly (a buffer stays lent
/// while its bytes wait for the socket).
pub const MAX_LENT: usize = 8;

/// The gathering buffers of one listener's connections: at most [`MAX_LENT`] lent at once, and
/// drained ones kept for the next borrower.
#[derive(Debug, Default)]
pub struct BufferPool {
    /// Buffers lent out now.
    lent: AtomicUsize,
    /// Drained buffers kept for the next borrower (at most [`MAX_LENT`]). A plain mutex: held
    /// only to push or pop, never across an await.
    spare: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    pub fn new() -> Arc<BufferPool> {
        Arc::new(BufferPool::default())
    }

    /// An empty buffer with room for [`GATHER_UP_TO`] bytes, unless [`MAX_LENT`] are out.
    fn borrow(&self) -> Option<Vec<u8>> {
        self.lent
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_LENT).then_some(n + 1)
            })
            .ok()?;
        let spare = self.spare.lock().unwrap_or_else(|p| p.into_inner()).pop();
        Some(spare.unwrap_or_else(|| Vec::with_capacity(GATHER_UP_TO)))
    }

    /// Takes back a drained buffer.
    fn give_back(&self, mut buf: Vec<u8>) {
        buf.clear();
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < MAX_LENT {
            spare.push(buf);
        }
        drop(spare);
        self.lent.fetch_sub(1, Ordering::AcqRel);
    }

    /// Buffers lent out now.
    pub fn lent(&self) -> usize {
        self.lent.load(Ordering::Acquire)
    }
}

/// A TCP stream whose full-frame writes are gathered (see the module doc).
pub struct Coalesced {
    io: TcpStream,
    /// Where `buf` is borrowed from while it holds bytes.
    pool: Arc<BufferPool>,
    /// Bytes accepted and not yet written; `written` of them are.
    buf: Vec<u8>,
    written: usize,
    /// The last write was a full frame: a flush now may wait for the next one.
    last_full: bool,
    /// A flush has waited since the last write: the next flush writes.
    waited: bool,
}

impl Coalesced {
    /// Wraps an accepted connection; its gathering buffers come from `pool`.
    pub fn new(io: TcpStream, pool: Arc<BufferPool>) -> Coalesced {
        Coalesced {
            io,
            pool,
            buf: Vec::new(),
            written: 0,
            last_full: false,
            waited: false,
        }
    }

    /// Writes out what is gathered; the buffer goes back to the pool once empty (an idle
    /// connection keeps none).
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.release();
        Poll::Ready(Ok(()))
    }

    /// Gives the buffer back to the pool, if one is borrowed.
    fn release(&mut self) {
        if self.buf.capacity() > 0 {
            self.pool.give_back(std::mem::take(&mut self.buf));
        }
        self.written = 0;
    }
}

impl Drop for Coalesced {
    fn drop(&mut self) {
        // A connection that ends with bytes gathered (it failed, or the proxy left) still
        // returns its buffer, or the pool would stay short of it.
        self.release();
    }
}

impl AsyncRead for Coalesced {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Coalesced {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if this.buf.len() + total > GATHER_UP_TO {
            ready!(this.poll_drain(cx))?;
        }
        if this.buf.is_empty() {
            // A buffer is borrowed for a full frame only, and only while few are out.
            match (total >= FULL_WRITE).then(|| this.pool.borrow()).flatten() {
                Some(buf) => this.buf = buf,
                None => return Pin::new(&mut this.io).poll_write_vectored(cx, bufs),
            }
        }
        for b in bufs {
            this.buf.extend_from_slice(b);
        }
        this.last_full = total >= FULL_WRITE;
        this.waited = false;
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.buf.is_empty() {
            if this.last_full && !this.waited {
                // More frames of the same message are likely queued behind this one; h2 buffers
                // them in this same poll. The wake guarantees another flush soon if not.
                this.waited = true;
                cx.waker().wake_by_ref();
                return Poll::Ready(Ok(()));
            }
            ready!(this.poll_drain(cx))?;
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

impl Connected for Coalesced {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// The server end wrapped (with buffers from `pool`), and the client end to read what it
    /// wrote.
    async fn pair_in(pool: &Arc<BufferPool>) -> (Coalesced, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (server, _) = accepted.expect("accept");
        (
            Coalesced::new(server, pool.clone()),
            client.expect("connect"),
        )
    }

    /// A connection with a pool of its own.
    async fn pair() -> (Coalesced, TcpStream) {
        pair_in(&BufferPool::new()).await
    }

    fn frame(byte: u8) -> Vec<u8> {
        vec![byte; FULL_WRITE]
    }

    async fn read(client: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut got = vec![0; n];
        client.read_exact(&mut got).await.expect("read");
        got
    }

    #[tokio::test]
    async fn full_frames_wait_for_the_end_of_the_message_and_arrive_in_order() {
        let (mut server, mut client) = pair().await;
        let mut sent = Vec::new();
        for i in 0..3 {
            server.write_all(&frame(i)).await.expect("write");
            server.flush().await.expect("flush");
            sent.extend(frame(i));
        }
        assert_eq!(server.buf.len(), 3 * FULL_WRITE, "gathered, not written");
        server.write_all(b"end").await.expect("write");
        server.flush().await.expect("flush");
        sent.extend(b"end");
        assert!(
            server.buf.is_empty() && server.buf.capacity() == 0,
            "written and released"
        );
        assert_eq!(read(&mut client, sent.len()).await, sent);
    }

    #[tokio::test]
    async fn a_waiting_flush_wakes_its_task_and_the_next_flush_writes() {
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let (mut server, mut client) = pair().await;
        server.write_all(&frame(7)).await.expect("write");
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut server).poll_flush(&mut cx).is_ready());
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "woken so that a flush comes back"
        );
        assert_eq!(server.buf.len(), FULL_WRITE);
        // Nothing new since: this flush writes.
        server.flush().await.expect("flush");
        assert!(server.buf.is_empty());
        assert_eq!(read(&mut client, FULL_WRITE).await, frame(7));
    }

    #[tokio::test]
    async fn buffers_come_back_to_the_pool_and_past_its_bound_frames_go_straight_out() {
        // Hold every buffer the pool lends, then check a connection that gets none writes at
        // once, and that dropped connections give theirs back.
        let pool = BufferPool::new();
        let mut holders = Vec::new();
        for _ in 0..MAX_LENT {
            let (mut server, client) = pair_in(&pool).await;
            server.write_all(&frame(1)).await.expect("write");
            holders.push((server, client));
        }
        let (mut server, mut client) = pair_in(&pool).await;
        server.write_all(&frame(2)).await.expect("write");
        assert!(server.buf.is_empty(), "the pool is out: written at once");
        assert_eq!(read(&mut client, FULL_WRITE).await, frame(2));
        let gathered = holders.iter().filter(|(s, _)| !s.buf.is_empty()).count();
        assert_eq!(gathered, MAX_LENT);
        assert_eq!(pool.lent(), MAX_LENT);
        drop(holders);
        server.write_all(&frame(3)).await.expect("write");
        assert_eq!(
            server.buf.len(),
            FULL_WRITE,
            "buffers are back: gathered again"
        );
        // Another listener's pool is its own: untouched by all of the above.
        let (mut other, _client) = pair().await;
        other.write_all(&frame(4)).await.expect("write");
        assert_eq!(other.buf.len(), FULL_WRITE);
    }

    #[tokio::test]
    async fn gathering_stops_at_the_limit_and_small_writes_pass_straight_through() {
        let (mut server, mut client) = pair().await;
        let frames = GATHER_UP_TO / FULL_WRITE;
        for i in 0..=frames {
            server.write_all(&frame(i as u8)).await.expect("write");
            server.flush().await.expect("flush");
        }
        // The write past the limit wrote out the frames before it.
        assert_eq!(server.buf.len(), FULL_WRITE);
        for i in 0..frames {
            assert_eq!(read(&mut client, FULL_WRITE).await, frame(i as u8));
        }
        server
            .shutdown()
            .await
            .expect("shutdown writes what is left");
        assert_eq!(read(&mut client, FULL_WRITE).await, frame(frames as u8));

        let (mut server, mut client) = pair().await;
        server.write_all(b"ack").await.expect("write");
        assert!(server.buf.is_empty(), "not gathered");
        assert_eq!(read(&mut client, 3).await, b"ack");
    }
}
