//! Request bodies: read under the route's size limit, the body deadline and
//! the listener's shared memory budget (`server.max_inflight_body`).
//!
//! Owns the accounting of request-body memory across every connection.
//! Invariants: the bytes of a body buffer (its capacity, including the room
//! kept in front of it for the queue-mode header) are reserved in the
//! [`BodyBudget`] before they are allocated, and stay reserved until the
//! request's [`Reservation`] is dropped, when its answer is ready; a request
//! whose share cannot be reserved within [`BUDGET_WAIT`] is refused
//! `503 overloaded` (with `Retry-After`) and the rest of its body is not
//! read. The body is copied once, from hyper's frames into its buffer; in
//! queue mode the stored request's header is written into the room in front
//! of it, so encoding does not copy the body again. In passthrough a body
//! that hyper hands over whole in one frame (the usual webhook, announced by
//! `Content-Length`) is not copied at all: that frame is forwarded.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper::body::Incoming;
use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// How long a request waits for its share of the budget before `503`.
pub const BUDGET_WAIT: Duration = Duration::from_secs(1);

/// Granularity of the budget.
const UNIT: usize = 1024;

/// A body without `Content-Length` starts with a buffer of this size and
/// doubles it (reserving each growth) up to the route's limit.
const FIRST_CHUNKED_BUFFER: usize = 16 * 1024;

/// The request-body memory shared by every connection of a listener.
#[derive(Clone)]
pub struct BodyBudget {
    sem: Arc<Semaphore>,
    units: usize,
    gauge: IntGauge,
}

/// Budget held by one request; given back when dropped.
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
    units: usize,
    gauge: IntGauge,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.gauge.sub((self.units * UNIT) as i64);
    }
}

impl BodyBudget {
    /// A budget of `bytes` (rounded up to whole KiB). `gauge` follows the
    /// bytes reserved.
    pub fn new(bytes: u64, gauge: IntGauge) -> Self {
        let units = usize::try_from(bytes.div_ceil(UNIT as u64))
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        BodyBudget {
            sem: Arc::new(Semaphore::new(units)),
            units,
            gauge,
        }
    }

    /// An empty reservation, grown with [`BodyBudget::grow`].
    pub fn reservation(&self) -> Reservation {
        Reservation {
            permit: None,
            units: 0,
            gauge: self.gauge.clone(),
        }
    }

    /// Grows `r` to cover `bytes` in all, waiting at most [`BUDGET_WAIT`].
    pub async fn grow(&self, r: &mut Reservation, bytes: usize) -> Result<(), ApiError> {
        // A body as large as the whole budget (`max_body` may equal it)
        // takes all of it: what it holds beyond is its header room.
        let want = bytes.div_ceil(UNIT).min(self.units);
        if want <= r.units {
            return Ok(());
        }
        let more = want - r.units;
        let n = u32::try_from(more).map_err(|_| ApiError::Overloaded)?;
        let permit = match self.sem.clone().try_acquire_many_owned(n) {
            Ok(p) => p,
            Err(_) => {
                match tokio::time::timeout(BUDGET_WAIT, self.sem.clone().acquire_many_owned(n))
                    .await
                {
                    Ok(Ok(p)) => p,
                    _ => return Err(ApiError::Overloaded),
                }
            }
        };
        match &mut r.permit {
            Some(p) => p.merge(permit),
            None => r.permit = Some(permit),
        }
        r.units = want;
        self.gauge.add((more * UNIT) as i64);
        Ok(())
    }

    /// Gives back what `r` holds beyond `bytes`.
    pub fn shrink(&self, r: &mut Reservation, bytes: usize) {
        let want = bytes.div_ceil(UNIT);
        if want >= r.units {
            return;
        }
        if let Some(extra) = r.permit.as_mut().and_then(|p| p.split(r.units - want)) {
            self.gauge.sub(((r.units - want) * UNIT) as i64);
            r.units = want;
            drop(extra);
        }
    }
}

/// A request body in one buffer: our own, with `headroom` spare bytes in
/// front of it, or (without headroom) the one frame hyper handed over.
pub struct BodyBuf {
    repr: Repr,
}

enum Repr {
    Owned { buf: Vec<u8>, headroom: usize },
    Frame(Bytes),
}

impl BodyBuf {
    pub fn bytes(&self) -> &[u8] {
        match &self.repr {
            Repr::Owned { buf, headroom } => &buf[*headroom..],
            Repr::Frame(b) => b,
        }
    }

    /// The body alone, without copying it.
    pub fn into_body(self) -> Bytes {
        match self.repr {
            Repr::Owned { buf, headroom } => Bytes::from(buf).slice(headroom..),
            Repr::Frame(b) => b,
        }
    }

    /// `head` followed by the body. Without copying the body when `head`
    /// fits in the headroom (the caller sized it so); by copying otherwise.
    pub fn into_prefixed(self, head: &[u8]) -> Bytes {
        match self.repr {
            Repr::Owned { mut buf, headroom } if head.len() <= headroom => {
                let start = headroom - head.len();
                buf[start..headroom].copy_from_slice(head);
                Bytes::from(buf).slice(start..)
            }
            repr => {
                let body = BodyBuf { repr };
                let mut out = Vec::with_capacity(head.len() + body.bytes().len());
                out.extend_from_slice(head);
                out.extend_from_slice(body.bytes());
                Bytes::from(out)
            }
        }
    }
}

/// Reads the whole body into a [`BodyBuf`], refusing it as soon as it
/// exceeds `limit` bytes (`413`) or cannot get its share of `budget`
/// (`503 overloaded`). `announced` is the `Content-Length` (already
/// checked against `limit`). How long it may take is the caller's to
/// bound (`408`: the handler arms the body's deadline on its connection).
pub async fn read(
    mut body: Incoming,
    announced: Option<u64>,
    limit: u64,
    headroom: usize,
    budget: &BodyBudget,
    reservation: &mut Reservation,
) -> Result<BodyBuf, ApiError> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let first = match announced {
        // Within `limit`, which the caller checked.
        Some(n) => n as usize,
        None => FIRST_CHUNKED_BUFFER.min(limit),
    };
    budget.grow(reservation, headroom + first).await?;
    // Without headroom (passthrough), a body whose announced length came
    // in one frame is kept as that frame (a slice of hyper's read buffer,
    // within the `announced` bytes reserved above): no copy. hyper ends a
    // `Content-Length` body at that length, and refuses a shorter one.
    let mut pending = None;
    if headroom == 0 && announced.is_some_and(|n| n > 0) {
        if let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| ApiError::BadRequest("body could not be read"))?;
            if let Ok(data) = frame.into_data() {
                if Some(data.len() as u64) == announced && body.is_end_stream() {
                    return Ok(BodyBuf {
                        repr: Repr::Frame(data),
                    });
                }
                pending = Some(data);
            }
        }
    }
    let mut buf = Vec::with_capacity(headroom + first);
    buf.resize(headroom, 0);
    loop {
        let data = match pending.take() {
            Some(data) => data,
            None => match body.frame().await {
                None => break,
                Some(frame) => {
                    let frame =
                        frame.map_err(|_| ApiError::BadRequest("body could not be read"))?;
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers carry nothing we keep
                    };
                    data
                }
            },
        };
        let len = buf.len() - headroom + data.len();
        if len > limit {
            return Err(ApiError::PayloadTooLarge);
        }
        if headroom + len > buf.capacity() {
            // Only without Content-Length (hyper stops at the announced
            // length): double, within the limit, reserving first.
            let cap = (2 * (buf.capacity() - headroom)).max(len).min(limit);
            // The old buffer lives until the copy into the new one is done.
            budget
                .grow(reservation, buf.capacity() + headroom + cap)
                .await?;
            buf.reserve_exact(headroom + cap - buf.len());
            // Back to what the grown buffer holds alone.
            budget.shrink(reservation, headroom + buf.capacity());
        }
        buf.extend_from_slice(&data);
    }
    Ok(BodyBuf {
        repr: Repr::Owned { buf, headroom },
    })
}
