//! What a client connection's bytes travel on: plain TCP, which can move between the
//! serving threads between two requests (its socket re-registered with the other
//! thread's reactor), or TLS over TCP, which stays on the thread that accepted it (its
//! session state lives there; moving it would mean moving the session too, and TLS
//! connections are few and long-lived enough not to need it).

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A client connection's stream on the fast path.
pub(super) trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Whether the connection can move to another serving thread.
    const MOVABLE: bool;

    /// The socket, released by this thread's reactor to move to another thread (`None`
    /// when the stream cannot move).
    fn into_movable(self) -> Option<std::io::Result<std::net::TcpStream>>;
}

impl Transport for TcpStream {
    const MOVABLE: bool = true;

    fn into_movable(self) -> Option<std::io::Result<std::net::TcpStream>> {
        Some(self.into_std())
    }
}

impl Transport for TlsStream<TcpStream> {
    const MOVABLE: bool = false;

    fn into_movable(self) -> Option<std::io::Result<std::net::TcpStream>> {
        None
    }
}
