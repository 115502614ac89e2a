import AssentCore
import AssentStore
import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle

/// Delivers webhook messages: claims due deliveries, posts each with the
/// Standard Webhooks headers (`webhook-id`, `webhook-timestamp`,
/// `webhook-signature`), logs every attempt, and retries failures with
/// exponential backoff and jitter for about a day before marking them
/// `failed`. Runs in every `assent serve`; several instances share the work
/// (claims are exclusive and leased), and one contact's messages to one
/// endpoint go out in order (a later one waits while an earlier one is retried).
public struct WebhookWorker: Service {
    let ledger: Ledger
    let client: HTTPClient
    let logger: Logger
    public var pollInterval: Duration = .seconds(1)
    public var batchSize = 10
    /// Per attempt, connection and answer together.
    public var timeout: TimeAmount = .seconds(10)
    /// Multiplies the retry delays (tests shrink a day of retries to seconds).
    public var backoffScale: Double = 1

    /// One client for the process (like `HTTPClient.shared`, with this worker's configuration); never shut down.
    public static let sharedClient = HTTPClient(eventLoopGroupProvider: .singleton, configuration: clientConfiguration)

    public init(ledger: Ledger, client: HTTPClient = WebhookWorker.sharedClient, logger: Logger = Logger(label: "assent.webhooks")) {
        self.ledger = ledger
        self.client = client
        self.logger = logger
    }

    /// No redirects (a redirect could lead to an address the policy refuses), short timeouts.
    public static var clientConfiguration: HTTPClient.Configuration {
        var configuration = HTTPClient.Configuration(redirectConfiguration: .disallow, timeout: .init(connect: .seconds(5), read: .seconds(10)))
        configuration.decompression = .disabled
        return configuration
    }

    /// Attempts the deliveries due now; returns how many it attempted.
    @discardableResult
    public func runOnce() async throws -> Int {
        let claimed = try await ledger.store.claimWebhookDeliveries(now: ledger.environment.now(), limit: batchSize, lease: WebhookDelivery.claimLease)
        await withTaskGroup(of: Void.self) { group in
            for delivery in claimed { group.addTask { await deliver(delivery) } }
        }
        return claimed.count
    }

    func deliver(_ delivery: WebhookDelivery) async {
        do {
            guard let endpoint = try await ledger.store.webhookEndpoint(id: delivery.endpointID) else { return } // deleted meanwhile
            let attempt = try await send(delivery, to: endpoint)
            let outcome: WebhookOutcome
            if attempt.succeeded {
                outcome = .delivered
            } else if let delay = WebhookDelivery.retryDelay(afterAttempt: delivery.attempts) {
                // ±20 % jitter, so that a receiver coming back is not hit by every retry at once.
                outcome = .retry(at: attempt.at.addingTimeInterval(delay * backoffScale * Double.random(in: 0.8...1.2)))
            } else {
                outcome = .failed
            }
            // Once delivered (or given up), a contact.erased message keeps no address in the log.
            let finished: Bool = if case .retry = outcome { false } else { true }
            let scrubbed = finished && delivery.eventType == .contactErased ? Self.withoutEmail(delivery.payload) : nil
            try await ledger.store.recordWebhookAttempt(attempt, outcome: outcome, payload: scrubbed)
            switch outcome {
            case .delivered: logger.debug("delivered \(delivery.eventType.rawValue) \(delivery.id) to \(endpoint.id)")
            case .retry(let at): logger.info("webhook \(delivery.id) to \(endpoint.id) attempt \(delivery.attempts) failed (\(attempt.statusCode.map(String.init) ?? attempt.error ?? "?")); next at \(at)")
            case .failed: logger.warning("webhook \(delivery.id) to \(endpoint.id) failed for good after \(delivery.attempts) attempts")
            }
        } catch {
            // The lease runs out and the delivery is claimed again.
            logger.error("could not process webhook \(delivery.id): \(error)")
        }
    }

    /// The most one attempt may take, lookup and reading the answer included:
    /// well inside the claim lease, so that no other worker takes the delivery meanwhile.
    public var attemptDeadline: Duration = .seconds(20)

    /// One signed POST; never throws for the receiver's faults (they are the attempt's result).
    func send(_ delivery: WebhookDelivery, to endpoint: WebhookEndpoint) async throws -> WebhookAttempt {
        let started = ledger.environment.now()
        let clock = ContinuousClock.now
        @Sendable func result(_ status: Int?, _ body: String?, _ error: String?) -> WebhookAttempt {
            let elapsed = ContinuousClock.now - clock
            return WebhookAttempt(deliveryID: delivery.id, number: delivery.attempts, at: started, statusCode: status,
                                  latencyMilliseconds: Int(elapsed.components.seconds * 1_000 + elapsed.components.attoseconds / 1_000_000_000_000_000),
                                  response: body, error: error)
        }
        let deadline = attemptDeadline
        return try await withThrowingTaskGroup(of: WebhookAttempt?.self) { group in
            group.addTask { try await attempt(delivery, to: endpoint, result: result) }
            group.addTask {
                try await Task.sleep(for: deadline)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let attempt = first else {
                return result(nil, nil, "no complete answer within \(deadline)")
            }
            return attempt
        }
    }

    private func attempt(_ delivery: WebhookDelivery, to endpoint: WebhookEndpoint,
                         result: @Sendable (Int?, String?, String?) -> WebhookAttempt) async throws -> WebhookAttempt {
        let started = ledger.environment.now()
        // Checked on every attempt: DNS may have changed since the endpoint was saved.
        if let refusal = await WebhookAddressPolicy.refusal(url: endpoint.url, allowPrivateNetwork: endpoint.allowPrivateNetwork) {
            return result(nil, nil, "refused: \(refusal)")
        }
        let secret = try ledger.webhookSecret(endpoint)
        let id = delivery.id.uuidString.lowercased()
        let timestamp = Int(started.timeIntervalSince1970)
        guard let signature = WebhookSignature.sign(id: id, timestamp: timestamp, body: delivery.payload, secret: secret) else {
            return result(nil, nil, "the endpoint's secret is unreadable")
        }
        var request = HTTPClientRequest(url: endpoint.url)
        request.method = .POST
        request.headers.add(name: "content-type", value: "application/json")
        request.headers.add(name: "user-agent", value: "Assent-Webhooks/1")
        request.headers.add(name: "webhook-id", value: id)
        request.headers.add(name: "webhook-timestamp", value: String(timestamp))
        request.headers.add(name: "webhook-signature", value: signature)
        request.body = .bytes(ByteBuffer(bytes: delivery.payload))
        do {
            let response = try await client.execute(request, timeout: timeout)
            var text = Data()
            for try await chunk in response.body {
                text.append(contentsOf: chunk.readableBytesView.prefix(1_000 - text.count))
                if text.count >= 1_000 { break }
            }
            return result(Int(response.status.code), String(decoding: text, as: UTF8.self), nil)
        } catch {
            return result(nil, nil, String(describing: error))
        }
    }

    static func withoutEmail(_ payload: Data) -> Data? {
        guard var body = try? JSONSerialization.jsonObject(with: payload) as? [String: Any], var data = body["data"] as? [String: Any],
              var contact = data["contact"] as? [String: Any] else { return nil }
        contact["email"] = NSNull()
        data["contact"] = contact
        body["data"] = data
        return try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys, .withoutEscapingSlashes])
    }

    public func run() async throws {
        try await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                let processed: Int
                do {
                    processed = try await runOnce()
                } catch {
                    if Task.isCancelled { // the server is stopping: not a failure
                        logger.debug("webhook poll stopped as the server stopped: \(error)")
                        break
                    }
                    logger.error("webhook poll failed: \(error)")
                    processed = 0
                }
                if processed == 0 { try? await Task.sleep(for: pollInterval) }
            }
        }
    }
}
