//! Handing a connection to hyper and axum for the rest of its life, starting with the
//! bytes the fast path already read ([`Rewind`]), under the same connection limits
//! (`shardline_service::conn::serve_connection`: timeouts, head size and count, its
//! slot under `--max-connections`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use bytes::{Buf as _, Bytes, BytesMut};
use hyper_util::server::graceful::Watcher;
use shardline_service::conn::{ConnSlot, HyperConn, serve_connection};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// A connection the fast path hands over: what hyper serves it with, and what it
/// already holds.
pub(super) struct Handed<S> {
    pub(super) hyper: HyperConn,
    pub(super) app: Router,
    /// Its place under `--max-connections`.
    pub(super) slot: ConnSlot,
    /// Held until it ends: graceful shutdown waits for it.
    pub(super) watcher: Watcher,
    pub(super) stream: S,
    /// The bytes already read.
    pub(super) read: BytesMut,
    /// When the request in `read` began.
    pub(super) since: Instant,
}

/// Serves the rest of a connection with hyper and axum, starting with the bytes already
/// read.
pub(super) async fn to_hyper<S>(handed: Handed<S>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Handed {
        hyper,
        app,
        slot,
        watcher,
        stream,
        read,
        since,
    } = handed;
    let io = Rewind {
        read: read.freeze(),
        stream,
    };
    serve_connection(&hyper, io, app, Some(slot), since, watcher).await;
}

/// A connection whose first bytes were already read: they are read again first.
struct Rewind<S> {
    read: Bytes,
    stream: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read.is_empty() {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        }
        let n = this.read.len().min(buf.remaining());
        buf.put_slice(&this.read[..n]);
        this.read.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
