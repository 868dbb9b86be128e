//! The deadlines of one connection (API.md, Limits and deadlines): a
//! request's header section must arrive within the header timeout of its
//! first byte (or of the connection's opening), and between requests a
//! kept-alive connection may sit idle for the longer idle timeout.
//!
//! Written by hand because hyper has a single timer for both, started
//! whenever it waits for a header section: with it, a kept-alive connection
//! was closed as idle after the short header timeout. This clock tells the
//! two apart by watching the connection's bytes and its requests.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

/// Where a connection is between its requests, and the deadline that holds
/// there.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// A header section is awaited: it must be complete by `until`.
    Head { until: Instant },
    /// A request is being served: the request deadline applies, not this
    /// clock's (and a feed may last as long as its client reads).
    Serving,
    /// The last response was sent; nothing has arrived since `until` minus
    /// the idle timeout.
    Idle { until: Instant },
}

/// The phase one connection is in; the connection is closed once its
/// deadline passes.
pub struct ConnectionClock {
    phase: watch::Sender<Phase>,
    header_timeout: Duration,
    idle_timeout: Duration,
}

impl ConnectionClock {
    /// A clock for a connection just opened: its first header section is
    /// awaited from now.
    pub fn start(header_timeout: Duration, idle_timeout: Duration) -> Arc<Self> {
        let until = Instant::now() + header_timeout;
        Arc::new(Self {
            phase: watch::Sender::new(Phase::Head { until }),
            header_timeout,
            idle_timeout,
        })
    }

    /// Resolves once the deadline of the phase the connection is in passes.
    pub async fn expired(&self) {
        let mut phase = self.phase.subscribe();
        loop {
            let deadline = match *phase.borrow_and_update() {
                Phase::Head { until } | Phase::Idle { until } => Some(until),
                Phase::Serving => None,
            };
            let changed = phase.changed();
            match deadline {
                Some(until) => tokio::select! {
                    () = tokio::time::sleep_until(until) => return,
                    _ = changed => {}
                },
                // The sender lives as long as `self`: `changed` cannot fail.
                None => _ = changed.await,
            }
        }
    }

    /// Bytes arrived: on an idle connection they begin a header section.
    fn bytes_arrived(&self) {
        if matches!(*self.phase.borrow(), Phase::Idle { .. }) {
            let until = Instant::now() + self.header_timeout;
            self.phase.send_replace(Phase::Head { until });
        }
    }

    /// A header section arrived in full: the request is being served.
    pub fn request_started(&self) {
        self.phase.send_replace(Phase::Serving);
    }

    /// The response was sent (or abandoned): the connection is idle.
    fn response_finished(&self) {
        let until = Instant::now() + self.idle_timeout;
        self.phase.send_replace(Phase::Idle { until });
    }

    /// Wraps a connection's socket so that the clock sees its bytes arrive.
    pub fn watch_io<T>(self: &Arc<Self>, io: T) -> ClockedIo<T> {
        ClockedIo {
            io,
            clock: self.clone(),
        }
    }

    /// Wraps a response's body so that the clock learns when it is done.
    pub fn watch_body(self: &Arc<Self>, body: Body) -> ClockedBody {
        ClockedBody {
            body,
            clock: self.clone(),
        }
    }
}

/// A socket whose reads tell a [`ConnectionClock`] that bytes arrived.
pub struct ClockedIo<T> {
    io: T,
    clock: Arc<ConnectionClock>,
}

impl<T: AsyncRead + Unpin> AsyncRead for ClockedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.clock.bytes_arrived();
        }
        read
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClockedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A response body that tells a [`ConnectionClock`] when hyper is done with
/// it (sent in full, or dropped with the connection).
pub struct ClockedBody {
    body: Body,
    clock: Arc<ConnectionClock>,
}

impl Drop for ClockedBody {
    fn drop(&mut self) {
        self.clock.response_finished();
    }
}

impl http_body::Body for ClockedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
