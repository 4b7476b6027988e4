//! The operator's port, bounded: at most [`MAX_CONNECTIONS`] at once (the
//! rest wait in the kernel's backlog), and a connection that sends nothing
//! for [`IDLE`] is closed. A flood of slow or idle connections costs a
//! fixed amount of memory, and frees its places by itself.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 256;

/// How long a connection may send nothing before it is closed.
pub const IDLE: Duration = Duration::from_secs(30);

/// A TCP listener that hands out bounded connections.
pub struct Bounded {
    inner: TcpListener,
    places: Arc<Semaphore>,
    idle: Duration,
}

impl Bounded {
    pub fn new(inner: TcpListener, max: usize, idle: Duration) -> Self {
        Bounded {
            inner,
            places: Arc::new(Semaphore::new(max)),
            idle,
        }
    }
}

impl axum::serve::Listener for Bounded {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        // The semaphore is never closed: a place always comes.
        let place = loop {
            if let Ok(place) = Arc::clone(&self.places).acquire_owned().await {
                break place;
            }
        };
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let connection = Connection {
            stream,
            _place: place,
            idle: self.idle,
            deadline: Box::pin(tokio::time::sleep(self.idle)),
        };
        (connection, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// One connection: holds its place until dropped; reading fails once it
/// has sent nothing for its idle time.
pub struct Connection {
    stream: TcpStream,
    _place: OwnedSemaphorePermit,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                let next = Instant::now() + this.idle;
                this.deadline.as_mut().reset(next);
                Poll::Ready(result)
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle too long",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn connections_past_the_bound_wait_and_idle_ones_are_closed() {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let mut listener = Bounded::new(inner, 2, Duration::from_millis(300));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counting = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let (mut connection, _) = axum::serve::Listener::accept(&mut listener).await;
                counting.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut byte = [0u8; 1];
                    // Reads until the peer is idle too long, then drops.
                    while matches!(connection.read(&mut byte).await, Ok(1)) {}
                });
            }
        });
        let mut idle = Vec::new();
        for _ in 0..3 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "the third waits"
        );
        // A connection that keeps talking stays; idle ones are closed and
        // their places go to the one waiting.
        idle[0].write_all(b"x").await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
        let mut rest = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(2), idle[1].read(&mut rest)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    }
}
