//! The deadlines of one connection (API.md, Limits and deadlines): a
//! request's header section must arrive within the header timeout of its
//! first byte (or of the connection's opening), and between requests a
//! kept-alive connection may sit idle for the longer idle timeout.
//!
//! Written by hand because hyper has a single timer for both, started
//! whenever it waits for a header section: with it, a kept-alive connection
//! was closed as idle after the short header timeout. This clock tells the
//! two apart by watching the connection's bytes and its requests. It also
//! closes a connection whose client stops reading an answer for the idle
//! timeout, which would otherwise hold its socket (and a connection slot)
//! for ever.

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

/// Where a connection is, and since when its client has not taken what the
/// server writes (`None`: it has).
#[derive(Debug, Clone, Copy)]
struct State {
    phase: Phase,
    stalled_until: Option<Instant>,
}

impl State {
    /// The deadline the connection is under, if any.
    fn deadline(&self) -> Option<Instant> {
        let phase = match self.phase {
            Phase::Head { until } | Phase::Idle { until } => Some(until),
            Phase::Serving => None,
        };
        match (phase, self.stalled_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The phase one connection is in; the connection is closed once its
/// deadline passes.
pub struct ConnectionClock {
    state: watch::Sender<State>,
    header_timeout: Duration,
    idle_timeout: Duration,
}

impl ConnectionClock {
    /// A clock for a connection just opened: its first header section is
    /// awaited from now.
    pub fn start(header_timeout: Duration, idle_timeout: Duration) -> Arc<Self> {
        let until = Instant::now() + header_timeout;
        Arc::new(Self {
            state: watch::Sender::new(State {
                phase: Phase::Head { until },
                stalled_until: None,
            }),
            header_timeout,
            idle_timeout,
        })
    }

    /// Resolves once the deadline of the phase the connection is in passes.
    pub async fn expired(&self) {
        let mut state = self.state.subscribe();
        loop {
            let deadline = state.borrow_and_update().deadline();
            let changed = state.changed();
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
        if matches!(self.state.borrow().phase, Phase::Idle { .. }) {
            let until = Instant::now() + self.header_timeout;
            self.set_phase(Phase::Head { until });
        }
    }

    /// A header section arrived in full: the request is being served.
    pub fn request_started(&self) {
        self.set_phase(Phase::Serving);
    }

    /// The response was sent (or abandoned): the connection is idle.
    fn response_finished(&self) {
        let until = Instant::now() + self.idle_timeout;
        self.set_phase(Phase::Idle { until });
    }

    /// A write could not go out: the client is not reading. From the first
    /// such write on, it has the idle timeout to take something.
    fn write_blocked(&self) {
        if self.state.borrow().stalled_until.is_none() {
            let until = Instant::now() + self.idle_timeout;
            self.state
                .send_modify(|state| state.stalled_until = Some(until));
        }
    }

    /// A write went out: the client is reading. After the response's body
    /// is done, hyper may still be writing its last bytes: the idle time
    /// counts from the last of them.
    fn write_went_out(&self) {
        let state = *self.state.borrow();
        let idle = matches!(state.phase, Phase::Idle { .. });
        if state.stalled_until.is_some() || idle {
            let until = Instant::now() + self.idle_timeout;
            self.state.send_modify(|state| {
                state.stalled_until = None;
                if idle {
                    state.phase = Phase::Idle { until };
                }
            });
        }
    }

    fn set_phase(&self, phase: Phase) {
        self.state.send_modify(|state| state.phase = phase);
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

/// A socket whose reads tell a [`ConnectionClock`] that bytes arrived, and
/// whose writes whether the client takes them.
pub struct ClockedIo<T> {
    io: T,
    clock: Arc<ConnectionClock>,
}

impl<T> ClockedIo<T> {
    /// Tells the clock whether a write went out, and passes its outcome on.
    fn note(&self, written: Poll<std::io::Result<usize>>) -> Poll<std::io::Result<usize>> {
        match written {
            Poll::Pending => self.clock.write_blocked(),
            Poll::Ready(_) => self.clock.write_went_out(),
        }
        written
    }
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
        let written = Pin::new(&mut self.io).poll_write(cx, buf);
        self.note(written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.note(written)
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
