//! Handing a connection to hyper and axum for the rest of its life, starting with the
//! bytes the fast path already read ([`Rewind`]), and axum's router as hyper's service.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use bytes::{Buf as _, Bytes, BytesMut};
use hyper::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tower::ServiceExt as _;
use tracing::debug;

/// Serves the rest of a connection with hyper (`builder`) and axum (`app`), starting
/// with the bytes already `read`; held open until then by `watcher` (graceful shutdown
/// waits for it).
pub(super) async fn to_hyper(
    app: Router,
    builder: &http1::Builder,
    watcher: Watcher,
    peer: SocketAddr,
    stream: TcpStream,
    read: BytesMut,
) {
    let io = TokioIo::new(Rewind {
        read: read.freeze(),
        stream,
    });
    let connection = builder.serve_connection(io, Axum(app));
    if let Err(e) = watcher.watch(connection).await {
        debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// A connection whose first bytes were already read: they are read again first.
struct Rewind {
    read: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Rewind {
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

impl AsyncWrite for Rewind {
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

/// axum's router as a hyper service.
#[derive(Clone)]
struct Axum(Router);

type AxumFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Axum {
    type Response = Response;
    type Error = Infallible;
    type Future = AxumFuture;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let app = self.0.clone();
        Box::pin(async move { app.oneshot(request.map(Body::new)).await })
    }
}
