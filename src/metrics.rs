//! Prometheus metrics: requests by route and status with latency histograms,
//! events appended, store errors, and each managed subscription's progress.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The labels of a request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route template (`/streams/{stream}`), never the raw path.
    pub route: String,
    /// The HTTP method: a standard one or `other`, so no client can add series.
    pub method: &'static str,
    /// The status code answered.
    pub status: String,
}

/// The label of a subscription's series. Only admins create subscriptions,
/// and a deleted one's series go with it, so clients cannot add series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubscriptionLabels {
    /// The subscription's name.
    pub subscription: String,
}

/// A subscription's progress, as scraped.
pub struct SubscriptionGauges {
    /// Its name.
    pub name: String,
    /// Source events after its position.
    pub lag: i64,
    /// Leases held.
    pub in_flight: i64,
    /// Events parked.
    pub parked: i64,
}

/// Every metric Cairn exports, in one registry owned by the app.
pub struct Metrics {
    registry: Registry,
    /// Request latency (and, through its count, requests) by route and status.
    pub requests: Family<RequestLabels, Histogram>,
    /// Events written (retries excluded).
    pub events_appended: Counter,
    /// Requests that failed because of the store.
    pub store_errors: Counter,
    /// Feeds that fell behind the live buffer and went back to the store.
    pub feed_fallbacks: Counter,
    /// Live feeds open now (set when scraped).
    pub feeds_open: Gauge,
    /// HTTP connections open now.
    pub connections_open: Gauge,
    /// The store's pooled connections, open and idle (set when scraped).
    pub store_connections: Gauge,
    /// Those of them idle.
    pub store_connections_idle: Gauge,
    /// Events delivered by each subscription (redeliveries included).
    subscription_deliveries: Family<SubscriptionLabels, Counter>,
    /// Deliveries that failed: retried or parked by a consumer, or refused
    /// by a push receiver.
    subscription_failures: Family<SubscriptionLabels, Counter>,
    /// Each subscription's lag (set when scraped).
    subscription_lag: Family<SubscriptionLabels, Gauge>,
    /// Each subscription's leases held (set when scraped).
    subscription_in_flight: Family<SubscriptionLabels, Gauge>,
    /// Each subscription's parked events (set when scraped).
    subscription_parked: Family<SubscriptionLabels, Gauge>,
}

/// A request method as a label: one of the standard methods, else `other`.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "CONNECT" => "CONNECT",
        _ => "other",
    }
}

/// Latency buckets from 0.25 ms to about 8 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cairn");
        let requests = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let events_appended = Counter::default();
        let store_errors = Counter::default();
        let feed_fallbacks = Counter::default();
        let feeds_open = Gauge::default();
        let connections_open = Gauge::default();
        let store_connections = Gauge::default();
        let store_connections_idle = Gauge::default();
        let subscription_deliveries = Family::<SubscriptionLabels, Counter>::default();
        let subscription_failures = Family::<SubscriptionLabels, Counter>::default();
        let subscription_lag = Family::<SubscriptionLabels, Gauge>::default();
        let subscription_in_flight = Family::<SubscriptionLabels, Gauge>::default();
        let subscription_parked = Family::<SubscriptionLabels, Gauge>::default();
        registry.register(
            "subscription_deliveries",
            "Events delivered by a managed subscription, redeliveries included",
            subscription_deliveries.clone(),
        );
        registry.register(
            "subscription_failures",
            "Deliveries retried or parked by a consumer, or refused by a push receiver",
            subscription_failures.clone(),
        );
        registry.register(
            "subscription_lag",
            "Source events after a subscription's position",
            subscription_lag.clone(),
        );
        registry.register(
            "subscription_in_flight",
            "A subscription's leases held",
            subscription_in_flight.clone(),
        );
        registry.register(
            "subscription_parked",
            "A subscription's parked events",
            subscription_parked.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route, method and status",
            requests.clone(),
        );
        registry.register("events_appended", "Events written", events_appended.clone());
        registry.register(
            "store_errors",
            "Requests that failed because of the store",
            store_errors.clone(),
        );
        registry.register(
            "feed_fallbacks",
            "Feeds that fell behind the live buffer and read the store again",
            feed_fallbacks.clone(),
        );
        registry.register("feeds_open", "Live feeds open", feeds_open.clone());
        registry.register(
            "connections_open",
            "HTTP connections open",
            connections_open.clone(),
        );
        registry.register(
            "store_connections",
            "The store's pooled database connections",
            store_connections.clone(),
        );
        registry.register(
            "store_connections_idle",
            "The store's pooled database connections not in use",
            store_connections_idle.clone(),
        );
        Metrics {
            registry,
            requests,
            events_appended,
            store_errors,
            feed_fallbacks,
            feeds_open,
            connections_open,
            store_connections,
            store_connections_idle,
            subscription_deliveries,
            subscription_failures,
            subscription_lag,
            subscription_in_flight,
            subscription_parked,
        }
    }

    /// Counts `count` deliveries of a subscription.
    pub fn delivered(&self, subscription: &str, count: u64) {
        self.subscription_deliveries
            .get_or_create(&labels(subscription))
            .inc_by(count);
    }

    /// Counts `count` failed deliveries of a subscription.
    pub fn failed(&self, subscription: &str, count: u64) {
        self.subscription_failures
            .get_or_create(&labels(subscription))
            .inc_by(count);
    }

    /// Sets the subscriptions' gauges to what was just read, dropping those
    /// of subscriptions that no longer exist.
    pub fn observe_subscriptions(&self, subscriptions: &[SubscriptionGauges]) {
        for family in [
            &self.subscription_lag,
            &self.subscription_in_flight,
            &self.subscription_parked,
        ] {
            family.clear();
        }
        for s in subscriptions {
            let labels = labels(&s.name);
            self.subscription_lag.get_or_create(&labels).set(s.lag);
            self.subscription_in_flight
                .get_or_create(&labels)
                .set(s.in_flight);
            self.subscription_parked
                .get_or_create(&labels)
                .set(s.parked);
        }
    }

    /// Drops a deleted subscription's series.
    pub fn forget_subscription(&self, subscription: &str) {
        let labels = labels(subscription);
        self.subscription_deliveries.remove(&labels);
        self.subscription_failures.remove(&labels);
        self.subscription_lag.remove(&labels);
        self.subscription_in_flight.remove(&labels);
        self.subscription_parked.remove(&labels);
    }

    /// The metrics in the OpenMetrics text format (served as
    /// [`Metrics::CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

impl Metrics {
    /// The media type of [`Metrics::render`]'s text.
    pub const CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The labels of a subscription's series.
fn labels(subscription: &str) -> SubscriptionLabels {
    SubscriptionLabels {
        subscription: subscription.to_owned(),
    }
}
