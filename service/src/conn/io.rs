//! [`Guarded`]: the read and write timeouts of a connection served by hyper, enforced at
//! the I/O level. hyper runs here without a timer (its one header timeout would also be
//! the idle timeout), so the wrapper keeps the connection's [`Phase`] — waiting for a
//! request (idle), reading a head, or serving a request whose body may be read — which
//! the service marks as requests start and are answered, and fails a read that waits
//! past the phase's deadline, or a write the client leaves blocked past
//! `--write-timeout`, with `TimedOut`: hyper then closes the connection.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::{ConnLimits, ConnSlot, Reason};

/// Where a connection is in its request cycle, shared by its I/O and its service.
#[derive(Debug)]
pub struct Phase(Mutex<Reading>);

#[derive(Debug, Clone, Copy)]
enum Reading {
    /// Waiting for the next request since this instant (or the last write).
    Idle(Instant),
    /// A request head began to arrive at this instant.
    Head(Instant),
    /// A request is being served since `since`; `received` body bytes read so far.
    Body { since: Instant, received: u64 },
}

impl Phase {
    /// A connection whose first request head began at `since` (its accept, or its first
    /// byte).
    pub fn new(since: Instant) -> Arc<Self> {
        Arc::new(Self(Mutex::new(Reading::Head(since))))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Reading) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A request's head was read whole: its body (if any) is read from now on.
    pub fn request_started(&self) {
        self.with(|r| {
            *r = Reading::Body {
                since: Instant::now(),
                received: 0,
            }
        });
    }

    /// The request was answered: the connection waits for the next one.
    pub fn answered(&self) {
        self.with(|r| *r = Reading::Idle(Instant::now()));
    }

    fn read(&self, n: usize) {
        self.with(|r| match r {
            Reading::Idle(_) => *r = Reading::Head(Instant::now()),
            Reading::Head(_) => {}
            Reading::Body { received, .. } => *received = received.saturating_add(n as u64),
        });
    }

    fn wrote(&self) {
        self.with(|r| {
            if let Reading::Idle(since) = r {
                *since = Instant::now();
            }
        });
    }

    /// Until when a read may wait, and what it is if it times out.
    fn read_deadline(&self, limits: &ConnLimits) -> (Instant, Reason) {
        match self.with(|r| *r) {
            Reading::Idle(since) => (since + limits.idle_timeout, Reason::IdleTimeout),
            Reading::Head(since) => (since + limits.header_timeout, Reason::HeaderTimeout),
            Reading::Body { since, received } => {
                (since + limits.body_allowance(received), Reason::BodyTimeout)
            }
        }
    }
}

/// One armed deadline (a timer allocated once per connection).
#[derive(Debug, Default)]
struct Timer(Option<Pin<Box<Sleep>>>, bool);

impl Timer {
    /// Polls the timer armed for `deadline`; ready when it has passed.
    fn poll_at(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let sleep = self
            .0
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        self.1 = true;
        sleep.as_mut().poll(cx)
    }

    /// Arms the timer at `now + after` unless it is armed already, and polls it.
    fn poll_after(&mut self, after: std::time::Duration, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = match &self.0 {
            Some(sleep) if self.1 => sleep.deadline(),
            _ => Instant::now() + after,
        };
        self.poll_at(deadline, cx)
    }

    fn disarm(&mut self) {
        self.1 = false;
    }
}

use std::future::Future as _;

/// A connection with its timeouts enforced: reads by the [`Phase`]'s deadline, writes by
/// `--write-timeout` of no progress. Holds the connection's slot under the limit.
#[derive(Debug)]
pub struct Guarded<S> {
    inner: S,
    phase: Arc<Phase>,
    limits: ConnLimits,
    slot: Option<ConnSlot>,
    read_timer: Timer,
    write_timer: Timer,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, phase: Arc<Phase>, limits: ConnLimits, slot: Option<ConnSlot>) -> Self {
        Self {
            inner,
            phase,
            limits,
            slot,
            read_timer: Timer::default(),
            write_timer: Timer::default(),
        }
    }

    fn timed_out(&self, reason: Reason) -> io::Error {
        if let Some(slot) = &self.slot {
            slot.gate().closed(reason);
        }
        io::Error::new(io::ErrorKind::TimedOut, reason.label())
    }

    /// The outcome of a write-side poll: a completed poll disarms the timer, no progress
    /// for `--write-timeout` fails. Only bytes written (`wrote`) count as activity for
    /// the idle clock: hyper flushes on every wake-up of the connection, and counting a
    /// flush with nothing to send would let each wake-up — the idle timer's own among
    /// them — push the idle deadline away again.
    fn write_outcome<T>(
        &mut self,
        polled: Poll<io::Result<T>>,
        wrote: impl FnOnce(&T) -> bool,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                self.write_timer.disarm();
                if matches!(&result, Ok(done) if wrote(done)) {
                    self.phase.wrote();
                }
                Poll::Ready(result)
            }
            Poll::Pending => match self.write_timer.poll_after(self.limits.write_timeout, cx) {
                Poll::Ready(()) => Poll::Ready(Err(self.timed_out(Reason::WriteTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.read_timer.disarm();
                let n = buf.filled().len() - before;
                if n > 0 {
                    this.phase.read(n);
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                let (deadline, reason) = this.phase.read_deadline(&this.limits);
                match this.read_timer.poll_at(deadline, cx) {
                    Poll::Ready(()) => Poll::Ready(Err(this.timed_out(reason))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.write_outcome(polled, |n| *n > 0, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.write_outcome(polled, |n| *n > 0, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.write_outcome(polled, |()| false, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.write_outcome(polled, |()| false, cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, duplex};

    use super::*;

    fn limits() -> ConnLimits {
        ConnLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(5),
            body_min_rate: 100,
            write_timeout: Duration::from_secs(3),
            ..ConnLimits::for_tests()
        }
    }

    async fn read_fails_after(phase: Arc<Phase>, after: Duration) {
        let (_client, server) = duplex(64);
        let mut io = Guarded::new(server, phase, limits(), None);
        let started = Instant::now();
        let err = io.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), after);
    }

    #[tokio::test(start_paused = true)]
    async fn each_phase_has_its_read_deadline() {
        let phase = Phase::new(Instant::now());
        read_fails_after(phase.clone(), Duration::from_secs(10)).await;
        phase.answered();
        read_fails_after(phase.clone(), Duration::from_secs(60)).await;
        phase.request_started();
        read_fails_after(phase, Duration::from_secs(5)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_at_the_minimum_rate_is_read_and_a_slower_one_cut_off() {
        let (mut client, server) = duplex(1 << 16);
        let phase = Phase::new(Instant::now());
        phase.request_started();
        let mut io = Guarded::new(server, phase, limits(), None);
        let mut buf = [0u8; 64];
        // 100 bytes a second for 20 s (the timeout is 5 s): never cut off.
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            client.write_all(&[1u8; 100]).await.unwrap();
            let mut got = 0;
            while got < 100 {
                got += io.read(&mut buf).await.unwrap();
            }
        }
        // Then 50 bytes every second: cut off once the allowance runs out.
        let mut cut = false;
        for _ in 0..30 {
            let wait = tokio::time::timeout(Duration::from_secs(1), io.read(&mut buf)).await;
            match wait {
                Ok(Err(e)) => {
                    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
                    cut = true;
                    break;
                }
                Ok(Ok(_)) => {}
                Err(_) => client.write_all(&[1u8; 50]).await.unwrap(),
            }
        }
        assert!(cut, "a body at half the minimum rate was never cut off");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_does_not_read_fails_the_write() {
        let (_client, server) = duplex(16);
        let mut io = Guarded::new(server, Phase::new(Instant::now()), limits(), None);
        let started = Instant::now();
        let err = io.write_all(&[0u8; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    /// hyper flushes whenever the connection's task wakes: an idle connection polled
    /// for reads and flushes over and over still reaches its idle deadline.
    #[tokio::test(start_paused = true)]
    async fn flushes_with_nothing_to_send_do_not_keep_a_connection_idle_for_ever() {
        let (_client, server) = duplex(64);
        let phase = Phase::new(Instant::now());
        phase.answered();
        let mut io = Guarded::new(server, phase, limits(), None);
        let started = Instant::now();
        let err = loop {
            io.flush().await.unwrap();
            match tokio::time::timeout(Duration::from_millis(500), io.read(&mut [0u8; 8])).await {
                Ok(result) => break result.unwrap_err(),
                Err(_) => assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "never timed out"
                ),
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_after_idle_start_the_head_deadline() {
        let (mut client, server) = duplex(64);
        let phase = Phase::new(Instant::now());
        phase.answered();
        let mut io = Guarded::new(server, phase, limits(), None);
        tokio::time::sleep(Duration::from_secs(50)).await;
        client.write_all(b"GET").await.unwrap();
        assert_eq!(io.read(&mut [0u8; 8]).await.unwrap(), 3);
        let started = Instant::now();
        let err = io.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }
}
