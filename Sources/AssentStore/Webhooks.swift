import AssentCore
import Crypto
import Foundation

/// What a webhook can be told about.
public enum WebhookEventType: String, Sendable, CaseIterable, Codable {
    /// A consent event was recorded (any source, any action).
    case consentChanged = "consent.changed"
    case contactCreated = "contact.created"
    /// A contact was erased: delete them downstream too.
    case contactErased = "contact.erased"
    /// A data-subject request was registered (portal, console, API).
    case dsrRequestCreated = "dsr.request.created"
}

/// A receiver of signed webhooks: where, which events, and its signing secret.
public struct WebhookEndpoint: Sendable, Equatable {
    public var id: String
    public var url: String
    public var description: String
    public var events: [WebhookEventType]
    /// For `consent.changed`: only these topics (empty: every topic).
    public var topics: [String]
    /// For `consent.changed`: only these sources (empty: every source).
    public var sources: [ConsentSource]
    public var enabled: Bool
    /// Allows a URL that resolves to a loopback, link-local or private
    /// address. Off by default (server-side request forgery); an admin turns it on.
    public var allowPrivateNetwork: Bool
    /// The signing secret, sealed with the master key.
    public var sealedSecret: Data
    public var createdBy: String
    public var createdAt: Date
    public var updatedAt: Date

    public init(id: String, url: String, description: String = "", events: [WebhookEventType], topics: [String] = [], sources: [ConsentSource] = [],
                enabled: Bool = true, allowPrivateNetwork: Bool = false, sealedSecret: Data, createdBy: String, createdAt: Date, updatedAt: Date? = nil) {
        self.id = id
        self.url = url
        self.description = description
        self.events = events
        self.topics = topics
        self.sources = sources
        self.enabled = enabled
        self.allowPrivateNetwork = allowPrivateNetwork
        self.sealedSecret = sealedSecret
        self.createdBy = createdBy
        self.createdAt = createdAt
        self.updatedAt = updatedAt ?? createdAt
    }

    /// Whether this endpoint wants a consent event. A disabled endpoint still
    /// gets its messages queued: they wait until it is enabled again.
    public func wants(_ event: ConsentEvent) -> Bool {
        events.contains(.consentChanged) && (topics.isEmpty || topics.contains(event.topicKey))
            && (sources.isEmpty || sources.contains(event.source))
    }

    public func wants(_ type: WebhookEventType) -> Bool { events.contains(type) }
}

/// One message to one endpoint, with its delivery state. The body is fixed
/// when it is enqueued (in the same transaction as what it reports); each
/// attempt signs it afresh with the attempt's timestamp.
public struct WebhookDelivery: Sendable, Equatable {
    public enum Status: String, Sendable, CaseIterable, Codable {
        /// Waiting for its next attempt.
        case pending
        /// A 2xx answer was received.
        case delivered
        /// Every retry failed; `assent webhooks retry` sends it again.
        case failed
    }

    /// Sent as `webhook-id`: the same on every attempt, so receivers can drop duplicates.
    public var id: UUID
    public var endpointID: String
    public var eventType: WebhookEventType
    /// Deliveries for one contact reach an endpoint in the order they were made.
    public var contactID: UUID?
    /// The JSON body, exactly as sent.
    public var payload: Data
    public var status: Status
    public var attempts: Int
    public var nextAttemptAt: Date
    public var createdAt: Date
    public var deliveredAt: Date?
    public var lastStatusCode: Int?
    public var lastError: String?

    public init(id: UUID, endpointID: String, eventType: WebhookEventType, contactID: UUID?, payload: Data, status: Status = .pending,
                attempts: Int = 0, nextAttemptAt: Date, createdAt: Date, deliveredAt: Date? = nil, lastStatusCode: Int? = nil, lastError: String? = nil) {
        self.id = id
        self.endpointID = endpointID
        self.eventType = eventType
        self.contactID = contactID
        self.payload = payload
        self.status = status
        self.attempts = attempts
        self.nextAttemptAt = nextAttemptAt
        self.createdAt = createdAt
        self.deliveredAt = deliveredAt
        self.lastStatusCode = lastStatusCode
        self.lastError = lastError
    }

    /// Seconds before attempt n + 1 (n = attempts so far), about a day in
    /// all: 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, 4 h, 8 h, 8 h; nil = give up.
    public static func retryDelay(afterAttempt attempt: Int) -> TimeInterval? {
        let delays: [TimeInterval] = [30, 120, 600, 1_800, 3_600, 7_200, 14_400, 28_800, 28_800]
        guard attempt >= 1, attempt <= delays.count else { return nil }
        return delays[attempt - 1]
    }

    /// How long a claimed delivery is held by one worker: longer than any
    /// attempt may take (20 s), short enough that a crashed worker's claims
    /// are soon taken over by another instance or the restarted one.
    public static let claimLease: TimeInterval = 30
}

/// One attempt to deliver, as the delivery log shows it.
public struct WebhookAttempt: Sendable, Equatable {
    public var deliveryID: UUID
    public var number: Int
    public var at: Date
    /// nil when no HTTP answer came (refused, timed out, blocked address).
    public var statusCode: Int?
    public var latencyMilliseconds: Int
    /// The start of the answer's body (at most 1,000 characters).
    public var response: String?
    public var error: String?

    public init(deliveryID: UUID, number: Int, at: Date, statusCode: Int?, latencyMilliseconds: Int, response: String?, error: String?) {
        self.deliveryID = deliveryID
        self.number = number
        self.at = at
        self.statusCode = statusCode
        self.latencyMilliseconds = latencyMilliseconds
        self.response = response.map { String($0.prefix(1_000)) }
        self.error = error.map { String($0.prefix(1_000)) }
    }

    public var succeeded: Bool { statusCode.map { (200..<300).contains($0) } ?? false }
}

/// Which deliveries to list.
public struct WebhookDeliveryQuery: Sendable, Equatable {
    public var endpointID: String?
    public var status: WebhookDelivery.Status?
    public var contactID: UUID?
    /// Made at or after.
    public var since: Date?
    public var limit: Int

    public init(endpointID: String? = nil, status: WebhookDelivery.Status? = nil, contactID: UUID? = nil, since: Date? = nil, limit: Int = 100) {
        self.endpointID = endpointID
        self.status = status
        self.contactID = contactID
        self.since = since
        self.limit = limit
    }
}

/// What became of an attempt, recorded with it in one transaction.
public enum WebhookOutcome: Sendable, Equatable {
    case delivered
    case retry(at: Date)
    case failed
}

/// Standard Webhooks signing (https://www.standardwebhooks.com): the secret
/// is `whsec_` + base64 of its bytes; the signature is
/// `v1,` + base64(HMAC-SHA256(secret, "<id>.<timestamp>.<body>")).
public enum WebhookSignature {
    public static let prefix = "whsec_"

    public static func newSecret() -> String {
        prefix + SecureRandom.bytes(32).base64EncodedString()
    }

    public static func key(_ secret: String) -> Data? {
        guard secret.hasPrefix(prefix) else { return nil }
        return Data(base64Encoded: String(secret.dropFirst(prefix.count)))
    }

    public static func sign(id: String, timestamp: Int, body: Data, secret: String) -> String? {
        guard let key = key(secret) else { return nil }
        var mac = HMAC<SHA256>(key: SymmetricKey(data: key))
        mac.update(data: Data("\(id).\(timestamp).".utf8))
        mac.update(data: body)
        return "v1," + Data(mac.finalize()).base64EncodedString()
    }
}

/// The JSON a webhook carries: `{"type", "timestamp", "data"}`.
enum WebhookPayload {
    static func encode(type: WebhookEventType, at: Date, data: [String: Any]) throws -> Data {
        let object: [String: Any] = ["type": type.rawValue, "timestamp": iso(at), "data": data]
        return try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
    }

    static func iso(_ date: Date) -> String {
        UTCTime.rfc3339(date)
    }

    static func contact(_ c: Contact) -> [String: Any] {
        ["id": c.id.uuidString.lowercased(), "email": c.isErased ? NSNull() : c.email.value as Any, "externalId": c.externalID.map { $0 as Any } ?? NSNull()]
    }

    static func consent(_ e: ConsentEvent, contact: Contact) -> [String: Any] {
        var data: [String: Any] = [
            "eventId": e.id.uuidString.lowercased(), "seq": e.seq, "contact": Self.contact(contact), "topic": e.topicKey,
            "action": e.action.rawValue, "from": e.fromState.rawValue, "to": e.toState.rawValue, "source": e.source.rawValue,
            "actor": ["kind": e.actor.kind.rawValue, "id": e.actor.id.map { $0 as Any } ?? NSNull()] as [String: Any],
            "occurredAt": iso(e.occurredAt), "recordedAt": iso(e.recordedAt),
        ]
        data["channel"] = e.channel?.rawValue ?? NSNull()
        data["expiresAt"] = e.expiresAt.map(iso) ?? NSNull()
        data["noticeVersion"] = e.noticeVersion ?? NSNull()
        data["formId"] = e.formID ?? NSNull()
        data["formVersion"] = e.formVersion ?? NSNull()
        data["batchId"] = e.batchID ?? NSNull()
        return data
    }
}

/// The endpoints a ledger fans out to, read at most once a second (another
/// instance's change to an endpoint reaches this one within that second; a
/// message for an endpoint deleted meanwhile is dropped by the store).
final class WebhookEndpointCache: @unchecked Sendable {
    private let lock = NSLock()
    private var endpoints: [WebhookEndpoint] = []
    private var fetchedAt: Date?
    static let maxAge: TimeInterval = 1

    func endpoints(store: any LedgerStore) async throws -> [WebhookEndpoint] {
        let now = Date()
        if let cached: [WebhookEndpoint] = lock.withLock({ fetchedAt.map { now.timeIntervalSince($0) < Self.maxAge } == true ? endpoints : nil }) {
            return cached
        }
        let fresh = try await store.webhookEndpoints()
        lock.withLock {
            endpoints = fresh
            fetchedAt = now
        }
        return fresh
    }

    func invalidate() { lock.withLock { fetchedAt = nil } }
}

extension Ledger {
    /// Deliveries for `type` to every enabled endpoint that wants it (the data is only built when one does).
    func webhookDeliveries(_ type: WebhookEventType, contact: Contact, at: Date, data: @autoclosure () -> [String: Any]) async throws -> [WebhookDelivery] {
        let endpoints = try await webhookCache.endpoints(store: store).filter { $0.wants(type) }
        guard !endpoints.isEmpty else { return [] }
        let payload = try WebhookPayload.encode(type: type, at: at, data: data())
        return endpoints.map { WebhookDelivery(id: environment.newID(), endpointID: $0.id, eventType: type, contactID: contact.id,
                                               payload: payload, nextAttemptAt: at, createdAt: at) }
    }

    /// `consent.changed` deliveries for the events of one commit, in event order.
    func webhookDeliveries(for events: [ConsentEvent], contactID: UUID) async throws -> [WebhookDelivery] {
        guard !events.isEmpty else { return [] }
        let endpoints = try await webhookCache.endpoints(store: store)
        guard !endpoints.isEmpty else { return [] }
        var deliveries: [WebhookDelivery] = []
        var loaded: Contact?
        for event in events {
            let wanting = endpoints.filter { $0.wants(event) }
            guard !wanting.isEmpty else { continue }
            let contact: Contact
            if let loaded { contact = loaded } else { contact = try await existingContact(contactID); loaded = contact }
            let payload = try WebhookPayload.encode(type: .consentChanged, at: event.recordedAt, data: WebhookPayload.consent(event, contact: contact))
            for endpoint in wanting {
                deliveries.append(WebhookDelivery(id: environment.newID(), endpointID: endpoint.id, eventType: .consentChanged, contactID: contact.id,
                                                  payload: payload, nextAttemptAt: event.recordedAt, createdAt: event.recordedAt))
            }
        }
        return deliveries
    }
}
