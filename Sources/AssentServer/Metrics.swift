import AssentCore
import AssentStore
import Foundation
import Hummingbird
import Prometheus
import Synchronization

/// The server's metrics in Prometheus' text format at `/metrics`: requests
/// and their latency per route, the outbox's backlog, consent changes per
/// source, and the latest verification of the hash chains. One registry per application (not swift-metrics' process-wide
/// factory), so that every test can build its own.
public final class ServerMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    private let store: any LedgerStore
    private let pending: Gauge
    private let oldestAge: Gauge
    static let latencyBuckets: [Duration] = [.milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
                                             .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
                                             .milliseconds(2_500), .seconds(5), .seconds(10)]

    public init(store: any LedgerStore) {
        self.store = store
        pending = registry.makeGauge(descriptor: .init(namespace: "assent", metricName: "outbox_pending", unitName: "",
                                                       helpText: "Emails waiting to be sent"), labels: [])
        oldestAge = registry.makeGauge(descriptor: .init(namespace: "assent", metricName: "outbox_oldest_pending_age", unitName: "seconds",
                                                         helpText: "How long the oldest waiting email has waited (0 when none waits)"), labels: [])
    }

    /// One answered request. `route` is the route's pattern (`/api/v1/contacts/{id}`), never the
    /// path itself, so that ids do not make a series each.
    func recordRequest(method: String, route: String, status: Int, duration: Duration) {
        let key = RequestSeriesKey(method: method, route: route, statusClass: status / 100)
        // The registry's look-up (descriptor, label arrays, its lock) was 3% of a consent check's CPU;
        // the series of a route are found once and kept.
        let series = requestSeries.withLock { $0[key] } ?? {
            let labels = [("method", method), ("route", route)]
            let made = (registry.makeCounter(descriptor: .init(namespace: "assent", metricName: "http_requests", unitName: "total",
                                                               helpText: "HTTP requests answered, by route and status class"),
                                             labels: labels + [("status", "\(key.statusClass)xx")]),
                        registry.makeDurationHistogram(descriptor: .init(namespace: "assent", metricName: "http_request_duration", unitName: "seconds",
                                                                         helpText: "Time to answer an HTTP request, by route"),
                                                       labels: labels, buckets: Self.latencyBuckets))
            requestSeries.withLock { $0[key] = made }
            return made
        }()
        series.0.increment()
        series.1.record(duration)
    }

    private struct RequestSeriesKey: Hashable {
        let method: String
        let route: String
        let statusClass: Int
    }

    /// The request counter and latency histogram of each method, route and status class answered so far.
    private let requestSeries = Mutex<[RequestSeriesKey: (Counter, DurationHistogram)]>([:])

    /// Committed consent events, by source and action.
    func recordConsent(_ events: [ConsentEvent]) {
        for event in events {
            registry.makeCounter(descriptor: .init(namespace: "assent", metricName: "consent_changes", unitName: "total",
                                                   helpText: "Consent events recorded, by source and action"),
                                 labels: [("source", event.source.rawValue), ("action", event.action.rawValue)]).increment()
        }
    }

    /// The text exposition, with the outbox and the latest verification read now.
    func render(now: Date = Date()) async throws -> String {
        let backlog = try await store.outboxBacklog()
        pending.set(Double(backlog.pending))
        oldestAge.set(backlog.oldestCreatedAt.map { max(0, now.timeIntervalSince($0)) } ?? 0)
        // Absent until the first verification (by `assent verify` or the server's schedule).
        if let run = try await store.lastVerifyRun() {
            func gauge(_ name: String, _ unit: String, _ help: String, _ value: Double) {
                registry.makeGauge(descriptor: .init(namespace: "assent", metricName: name, unitName: unit, helpText: help), labels: []).set(value)
            }
            gauge("verify_ok", "", "1 when the latest verification found every hash chain intact, else 0", run.breaks == 0 ? 1 : 0)
            gauge("verify_last_run_timestamp", "seconds", "When the latest verification of every hash chain finished (Unix time)",
                  run.finishedAt.timeIntervalSince1970)
            gauge("verify_broken_chains", "", "Contacts whose chain, head or projection failed the latest verification", Double(run.breaks))
            gauge("verify_events", "", "Events the latest verification read", Double(run.events))
            gauge("verify_duration", "seconds", "How long the latest verification took", run.seconds)
        }
        return registry.emitToString()
    }
}

/// Times every request to a route and counts it by route and status
/// (outermost, so it sees the status the problem middleware chose). A path
/// that matches no route never reaches router middleware, so is not counted.
struct MetricsMiddleware: RouterMiddleware {
    typealias Context = AssentRequestContext
    let metrics: ServerMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        do {
            let response = try await next(request, context)
            metrics.recordRequest(method: request.method.rawValue, route: context.endpointPath ?? "unknown", status: response.status.code,
                                  duration: ContinuousClock.now - started)
            return response
        } catch {
            let status = (error as? any HTTPResponseError)?.status.code ?? 500
            metrics.recordRequest(method: request.method.rawValue, route: context.endpointPath ?? "unknown", status: status,
                                  duration: ContinuousClock.now - started)
            throw error
        }
    }
}
