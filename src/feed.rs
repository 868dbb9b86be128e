//! Live feeds: history from the store, then live events as they commit, with
//! no gap and no duplicate at the switch or later.
//!
//! One *tailer* task per process follows the global log in the store and
//! publishes each page it reads, as an `Arc`ed batch, on one bounded
//! broadcast channel. It wakes when [`Store::changes`] signals (a commit here,
//! or a notification from another instance) and, because a notification can be
//! lost, every [`POLL_INTERVAL`] as well. Each feed is a stream, polled by its
//! connection, that filters the shared batches for its subject: no task and no
//! queue per subscriber, so an idle feed costs little more than its socket.
//!
//! The handover argument. A feed subscribes to the broadcast *before* it reads
//! history. Every event the tailer publishes after that moment reaches the
//! feed's receiver; every event published before it had committed before it,
//! so the history read, which starts later, sees it. Hence no gap. Events seen
//! both ways are recognised by position: the feed keeps `next`, the position
//! after the last event it has sent, and drops anything below it. This rests
//! on the store's ordering guarantee (no event becomes visible behind one
//! already seen), so positions only grow along the log the tailer publishes.
//! A feed that falls behind the broadcast buffer (its consumer is slow) loses
//! its place in the buffer, not events: it subscribes afresh and reads the
//! store from `next` again, by the same argument.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use futures::{Stream, StreamExt, stream};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, watch};
use tokio::time::MissedTickBehavior;

use crate::names;
use crate::store::{
    Direction, EventQuery, Filter, GlobalQuery, QueryItem, RecordedEvent, Scope, SharedStore,
    StoreError, StreamQuery,
};

/// How often the tailer reads the store even without a wake-up.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Events read per page, in catch-up and by the tailer.
const PAGE: i64 = 1000;

/// What a feed follows.
#[derive(Debug, Clone)]
pub enum Subject {
    /// One stream; positions are stream positions.
    Stream(String),
    /// A category or the whole log, filtered; positions are global positions.
    Global(Scope, Filter),
    /// The events matching a query of tags and types; positions are global
    /// positions.
    Query(Vec<QueryItem>),
}

impl Subject {
    /// The position of an event in this feed's numbering.
    pub fn position_of(&self, event: &RecordedEvent) -> i64 {
        match self {
            Subject::Stream(_) => event.position,
            Subject::Global(..) | Subject::Query(_) => event.global_position,
        }
    }

    /// Whether an event belongs in this feed (the same rules the stores apply).
    fn matches(&self, event: &RecordedEvent) -> bool {
        let (scope, filter) = match self {
            Subject::Stream(stream) => return &event.stream == stream,
            Subject::Query(items) => {
                return items
                    .iter()
                    .any(|item| item.matches(&event.event_type, &event.tags));
            }
            Subject::Global(scope, filter) => (scope, filter),
        };
        let in_scope = match scope {
            Scope::All => true,
            Scope::Category(category) => names::category(&event.stream) == category,
            Scope::Correlation(id) => event.correlation_id.as_ref() == Some(id),
        };
        in_scope
            && (filter.types.is_empty() || filter.types.contains(&event.event_type))
            && filter
                .correlation_id
                .as_ref()
                .is_none_or(|id| event.correlation_id.as_ref() == Some(id))
            && filter.consumer_group.is_none_or(|(member, size)| {
                (names::cardinal_hash(&event.stream) % size).abs() == member
            })
    }
}

/// An event on its way to feeds, shared by all of them, with its wire form
/// made once: a live event goes to every feed open, and rendering it once
/// per feed was most of the work of a fan-out.
#[derive(Debug)]
pub struct SharedEvent {
    event: RecordedEvent,
    rendered: OnceLock<String>,
}

impl SharedEvent {
    /// Wraps an event read from the store.
    fn new(event: RecordedEvent) -> Arc<Self> {
        Arc::new(SharedEvent {
            event,
            rendered: OnceLock::new(),
        })
    }

    /// The event.
    pub fn event(&self) -> &RecordedEvent {
        &self.event
    }

    /// Its wire form: `render`'s answer, from the first feed that asks.
    pub fn rendered(&self, render: impl FnOnce(&RecordedEvent) -> String) -> &str {
        self.rendered.get_or_init(|| render(&self.event))
    }
}

/// A page of the log, as the tailer publishes it. Its events are dropped
/// once the live buffer holds more bytes than allowed (see [`LiveWindow`]);
/// a feed that receives it after that reads the store instead.
struct LiveBatch {
    events: RwLock<Option<Arc<[Arc<SharedEvent>]>>>,
}

impl LiveBatch {
    /// The events, unless they were dropped.
    fn events(&self) -> Option<Arc<[Arc<SharedEvent>]>> {
        self.events
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Drops the events, freeing them once no feed holds them.
    fn drop_events(&self) {
        self.events
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

/// The batches the broadcast may still hand out, newest last, with their
/// sizes: it keeps their events within a byte budget, so the live buffer is
/// bounded in bytes as well as in batches.
struct LiveWindow {
    batches: VecDeque<(Arc<LiveBatch>, usize)>,
    bytes: usize,
    /// Batches the broadcast keeps.
    max_batches: usize,
    /// Bytes of events the window keeps (the newest batch always).
    max_bytes: usize,
}

impl LiveWindow {
    /// Records a batch just sent; drops the events of the oldest ones past
    /// either budget.
    fn push(&mut self, batch: Arc<LiveBatch>, bytes: usize) {
        self.batches.push_back((batch, bytes));
        self.bytes += bytes;
        while self.batches.len() > self.max_batches
            || (self.bytes > self.max_bytes && self.batches.len() > 1)
        {
            let Some((oldest, bytes)) = self.batches.pop_front() else {
                break;
            };
            oldest.drop_events();
            self.bytes -= bytes;
        }
    }

    /// Drops the events of every batch: after an erasure, a feed behind
    /// reads the store again, which no longer holds what was erased.
    fn forget(&mut self) {
        for (batch, _) in self.batches.drain(..) {
            batch.drop_events();
        }
        self.bytes = 0;
    }
}

/// What a feed sends to its connection.
#[derive(Debug)]
pub enum FeedItem {
    /// An event, in order.
    Event(Arc<SharedEvent>),
    /// History is exhausted; live events follow. Carries the position to resume from.
    CaughtUp(i64),
}

/// Refused: the configured number of feeds is open.
#[derive(Debug, thiserror::Error)]
#[error("{0} feeds are open, the most allowed; retry later")]
pub struct TooManyFeeds(pub usize);

/// Ends every feed when closed: graceful shutdown.
pub struct FeedShutdown(watch::Sender<bool>);

impl FeedShutdown {
    /// Ends every open feed; their clients reconnect with `Last-Event-ID`.
    pub fn close(&self) {
        self.0.send_replace(true);
    }
}

/// How many feeds, and how much they may hold.
#[derive(Debug, Clone, Copy)]
pub struct FeedLimits {
    /// Most feeds open at once.
    pub max_feeds: usize,
    /// Batches the broadcast keeps before a slow feed loses its place.
    pub live_buffer: usize,
    /// Bytes of events those batches keep, at most (the newest batch always).
    pub live_buffer_bytes: usize,
    /// The byte budget of each page read from the store, by a feed's
    /// catch-up and by the tailer.
    pub page_bytes: usize,
}

/// The live side of the store: the tailer's broadcast and the open feeds.
pub struct Feeds {
    store: SharedStore,
    live: broadcast::Sender<Arc<LiveBatch>>,
    /// What the broadcast may still hand out (the tailer's, shared).
    window: Arc<Mutex<LiveWindow>>,
    permits: Arc<Semaphore>,
    max_feeds: usize,
    /// The byte budget of each page read from the store.
    page_bytes: usize,
    shutdown: watch::Receiver<bool>,
    /// Feeds that fell behind the live buffer and went back to the store.
    fallbacks: Counter,
}

impl Feeds {
    /// Starts the tailer from the current end of the log; at most
    /// `max_feeds` feeds may be open at once, and the broadcast keeps
    /// `live_buffer` batches before a slow feed loses its place. The tailer
    /// must know where the log ends before any feed opens: were it to find out
    /// later, events committed in between would never be published.
    pub async fn start(
        store: SharedStore,
        limits: FeedLimits,
        fallbacks: Counter,
    ) -> Result<(Arc<Feeds>, FeedShutdown), StoreError> {
        let from = store.head().await? + 1;
        let (live, _) = broadcast::channel(limits.live_buffer.max(1));
        let (closing, shutdown) = watch::channel(false);
        let window = Arc::new(Mutex::new(LiveWindow {
            batches: VecDeque::new(),
            bytes: 0,
            max_batches: limits.live_buffer.max(1),
            max_bytes: limits.live_buffer_bytes,
        }));
        let tailer = Tailer {
            store: store.clone(),
            live: live.clone(),
            page_bytes: limits.page_bytes,
            window: window.clone(),
        };
        tokio::spawn(tailer.run(shutdown.clone(), from));
        let feeds = Feeds {
            store,
            live,
            window,
            permits: Arc::new(Semaphore::new(limits.max_feeds)),
            max_feeds: limits.max_feeds,
            page_bytes: limits.page_bytes,
            shutdown,
            fallbacks,
        };
        Ok((Arc::new(feeds), FeedShutdown(closing)))
    }

    /// Called after this process erased events: feeds behind the live
    /// buffer read the store again rather than the erased events it held.
    pub fn erased(&self) {
        self.window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .forget();
    }

    /// How many feeds are open.
    pub fn open_count(&self) -> usize {
        self.max_feeds - self.permits.available_permits()
    }

    /// The position right after the subject's last event (`position=end`).
    pub async fn end_position(&self, subject: &Subject) -> Result<i64, StoreError> {
        Ok(match subject {
            Subject::Stream(stream) => self.store.stream_version(stream).await? + 1,
            Subject::Global(..) | Subject::Query(_) => self.store.head().await? + 1,
        })
    }

    /// Opens a feed from position `next` (inclusive). It ends when the
    /// server shuts down or the store fails; dropping it closes the feed.
    pub fn open(
        self: &Arc<Self>,
        subject: Subject,
        next: i64,
    ) -> Result<impl Stream<Item = FeedItem> + Send + 'static, TooManyFeeds> {
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| TooManyFeeds(self.max_feeds))?;
        // Marked changed, so that a stream feed looks for its tombstone once
        // it has caught up: the stream may have been deleted before it opened.
        let mut deletions = self.store.deletions();
        deletions.mark_changed();
        let feed = Feed {
            deletions,
            live: self.live.subscribe(),
            feeds: self.clone(),
            subject,
            next,
            phase: Phase::CatchingUp { first: true },
            pending: VecDeque::new(),
            _permit: permit,
        };
        let items = stream::unfold(feed, |mut feed| async move {
            match feed.next_item().await {
                Ok(item) => item.map(|item| (item, feed)),
                Err(error) => {
                    tracing::warn!(%error, "a feed ended: the store failed");
                    None
                }
            }
        });
        Ok(items.take_until(closing(self.shutdown.clone())))
    }
}

/// Where a feed is in the handover argument of this module.
enum Phase {
    /// Reading the store from `next`; `first` until the first `caught-up`.
    CatchingUp { first: bool },
    /// Filtering the tailer's batches.
    Live,
}

/// One open feed's state. It subscribes to the broadcast *before* it reads
/// history, as the handover argument requires.
struct Feed {
    feeds: Arc<Feeds>,
    live: broadcast::Receiver<Arc<LiveBatch>>,
    /// Stream deletions (see [`crate::store::Retention::deletions`]).
    deletions: watch::Receiver<u64>,
    subject: Subject,
    /// The position after the last event queued.
    next: i64,
    phase: Phase,
    /// Items read but not yet taken by the connection.
    pending: VecDeque<FeedItem>,
    _permit: OwnedSemaphorePermit,
}

impl Feed {
    /// The next item: catch-up, then live, per the handover argument; none
    /// once the tailer is gone.
    async fn next_item(&mut self) -> Result<Option<FeedItem>, StoreError> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Ok(Some(item));
            }
            match self.phase {
                Phase::CatchingUp { first } => {
                    if self.read_page().await? {
                        self.phase = Phase::Live;
                        if first {
                            self.pending.push_back(FeedItem::CaughtUp(self.next));
                        }
                    }
                }
                Phase::Live => {
                    let of_a_stream = matches!(self.subject, Subject::Stream(_));
                    tokio::select! {
                        received = self.live.recv() => match received {
                            Ok(batch) => match batch.events() {
                                Some(events) => self.queue_live(&events),
                                // Dropped for the byte budget (or after an
                                // erasure): this feed is behind, as after
                                // `Lagged`, and takes a fresh place first.
                                None => self.fall_back(),
                            },
                            Err(RecvError::Lagged(_)) => self.fall_back(),
                            Err(RecvError::Closed) => return Ok(None),
                        },
                        Ok(()) = self.deletions.changed(), if of_a_stream => {
                            if self.stream_deleted().await? {
                                return Ok(None);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Whether this feed's stream was deleted: then the feed ends.
    async fn stream_deleted(&self) -> Result<bool, StoreError> {
        match &self.subject {
            Subject::Stream(stream) => Ok(self.feeds.store.tombstone(stream).await?.is_some()),
            Subject::Global(..) | Subject::Query(_) => Ok(false),
        }
    }

    /// Leaves the live buffer for the store: a fresh place in the broadcast,
    /// taken *before* history is read again, by the handover argument.
    fn fall_back(&mut self) {
        self.feeds.fallbacks.inc();
        self.live = self.feeds.live.subscribe();
        self.phase = Phase::CatchingUp { first: false };
    }

    /// Queues the batch's events of this subject not sent yet.
    fn queue_live(&mut self, batch: &[Arc<SharedEvent>]) {
        for shared in batch.iter().filter(|e| self.subject.matches(e.event())) {
            let position = self.subject.position_of(shared.event());
            if position >= self.next {
                self.pending.push_back(FeedItem::Event(shared.clone()));
                self.next = position + 1;
            }
        }
    }

    /// Queues one page of the subject's events from `next`; true when the
    /// store has no more.
    async fn read_page(&mut self) -> Result<bool, StoreError> {
        let store = &self.feeds.store;
        let (events, next_position, end) = match &self.subject {
            Subject::Stream(stream) => {
                let query = StreamQuery {
                    stream: stream.clone(),
                    position: Some(self.next),
                    limit: PAGE,
                    max_bytes: self.feeds.page_bytes,
                    direction: Direction::Forward,
                    until_version: None,
                    as_of: None,
                    from_snapshot: false,
                };
                let page = store.read_stream(&query).await?;
                (page.events, page.next_position, page.end)
            }
            Subject::Global(scope, filter) => {
                let query = GlobalQuery {
                    scope: scope.clone(),
                    position: self.next,
                    limit: PAGE,
                    max_bytes: self.feeds.page_bytes,
                    filter: filter.clone(),
                };
                let page = store.read_global(&query).await?;
                (page.events, page.next_position, page.end)
            }
            Subject::Query(items) => {
                let query = EventQuery {
                    items: items.clone(),
                    position: Some(self.next),
                    limit: PAGE,
                    direction: Direction::Forward,
                    max_bytes: self.feeds.page_bytes,
                };
                let page = store.read_query(&query).await?;
                (page.events, page.next_position, page.end)
            }
        };
        let events = events.into_iter().map(SharedEvent::new);
        self.pending.extend(events.map(FeedItem::Event));
        self.next = next_position;
        Ok(end)
    }
}

/// The one task that follows the global log and publishes it to every feed.
struct Tailer {
    store: SharedStore,
    live: broadcast::Sender<Arc<LiveBatch>>,
    /// The byte budget of each page it reads.
    page_bytes: usize,
    /// What the broadcast may still hand out.
    window: Arc<Mutex<LiveWindow>>,
}

impl Tailer {
    /// Follows the global log from `position` and publishes it, page by page, to
    /// every feed.
    async fn run(mut self, shutdown: watch::Receiver<bool>, mut position: i64) {
        let mut changes = self.store.changes();
        // An interval, not a sleep made anew each time round: under a steady
        // stream of commits a fresh sleep would never run out, and the poll is
        // what moves an idle tailer on (see `advance`).
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut polled = true;
        loop {
            match self.advance(position, polled).await {
                Ok(next) => position = next,
                Err(error) => tracing::warn!(%error, "the feed tailer cannot read the store"),
            }
            polled = tokio::select! {
                _ = changes.changed() => false,
                _ = poll.tick() => true,
                () = closing(shutdown.clone()) => return,
            };
        }
    }

    /// Publishes every event from `position` on; returns where to continue.
    ///
    /// With no feed open, reading every commit back from the store would only be
    /// thrown away, and so would reading the head at every commit (a query per
    /// batch beside the writer's, under load): at each poll the tailer learns
    /// where the log ends instead, and continues from there. The head is read
    /// *before* the feeds are counted: a feed that subscribes after the count
    /// reads its history after that, so it sees every event up to the head, and
    /// the tailer publishes every one after. Between polls `position` only
    /// falls behind the head, which is safe: a feed that subscribes then gets
    /// some events both from its history and from the tailer, and drops the
    /// repeats. If a feed subscribed before the count, the tailer publishes from
    /// `position` as usual.
    async fn advance(&mut self, position: i64, polled: bool) -> Result<i64, StoreError> {
        if self.live.receiver_count() == 0 {
            if !polled {
                return Ok(position);
            }
            let after_head = self.store.head().await? + 1;
            if self.live.receiver_count() == 0 {
                return Ok(after_head);
            }
        }
        self.publish_from(position).await
    }

    /// Publishes every event from `position` on, page by page.
    async fn publish_from(&mut self, mut position: i64) -> Result<i64, StoreError> {
        loop {
            let query = GlobalQuery {
                scope: Scope::All,
                position,
                limit: PAGE,
                max_bytes: self.page_bytes,
                filter: Filter::default(),
            };
            let page = self.store.read_global(&query).await?;
            if !page.events.is_empty() {
                let bytes = page
                    .events
                    .iter()
                    .map(RecordedEvent::approximate_size)
                    .sum();
                let events = page.events.into_iter().map(SharedEvent::new).collect();
                let batch = Arc::new(LiveBatch {
                    events: RwLock::new(Some(events)),
                });
                // No receivers is fine: nobody is listening yet.
                let _ = self.live.send(batch.clone());
                self.window
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(batch, bytes);
            }
            position = page.next_position;
            if page.end {
                return Ok(position);
            }
        }
    }
}

/// Resolves when feeds are shut down; never, if the shutdown handle is dropped.
async fn closing(mut shutdown: watch::Receiver<bool>) {
    if shutdown.wait_for(|closing| *closing).await.is_err() {
        std::future::pending::<()>().await;
    }
}
