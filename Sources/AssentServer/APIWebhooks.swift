import AssentCore
import AssentStore
import Foundation
import Hummingbird

struct CreateWebhookBody: StrictBody {
    static let allowedKeys: Set<String> = ["url", "description", "events", "topics", "sources", "allowPrivateNetwork"]
    var url: String
    var description: String?
    var events: [String]
    var topics: [String]?
    var sources: [String]?
    var allowPrivateNetwork: Bool?
}

/// Only the fields given change.
struct PatchWebhookBody: StrictBody {
    static let allowedKeys: Set<String> = ["url", "description", "events", "topics", "sources", "enabled", "allowPrivateNetwork"]
    var url: String?
    var description: String?
    var events: [String]?
    var topics: [String]?
    var sources: [String]?
    var enabled: Bool?
    var allowPrivateNetwork: Bool?
}

struct ReplayBody: StrictBody {
    static let allowedKeys: Set<String> = ["since"]
    var since: Date
}

/// Any JSON value, to hand a stored payload back as it is.
enum JSONValue: Codable, Sendable {
    case null, bool(Bool), number(Double), string(String), array([JSONValue]), object([String: JSONValue])

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let n = try? c.decode(Double.self) { self = .number(n) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .number(let n): if n == n.rounded(), abs(n) < 1e15 { try c.encode(Int64(n)) } else { try c.encode(n) }
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }
}

struct WebhookJSON: Encodable {
    var id: String
    var url: String
    var description: String
    var events: [String]
    var topics: [String]
    var sources: [String]
    var enabled: Bool
    var allowPrivateNetwork: Bool
    var createdBy: String
    var createdAt: Date
    var updatedAt: Date
    /// Only when created or rotated: shown once.
    var secret: String?

    init(_ e: WebhookEndpoint, secret: String? = nil) {
        id = e.id
        url = e.url
        description = e.description
        events = e.events.map(\.rawValue)
        topics = e.topics
        sources = e.sources.map(\.rawValue)
        enabled = e.enabled
        allowPrivateNetwork = e.allowPrivateNetwork
        createdBy = e.createdBy
        createdAt = e.createdAt
        updatedAt = e.updatedAt
        self.secret = secret
    }
}

struct WebhookAttemptJSON: Encodable {
    var number: Int
    var at: Date
    var statusCode: Int?
    var latencyMs: Int
    var response: String?
    var error: String?

    init(_ a: WebhookAttempt) {
        number = a.number
        at = a.at
        statusCode = a.statusCode
        latencyMs = a.latencyMilliseconds
        response = a.response
        error = a.error
    }

    enum CodingKeys: String, CodingKey { case number, at, statusCode, latencyMs, response, error }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(number, forKey: .number)
        try c.encode(at, forKey: .at)
        try c.encode(statusCode, forKey: .statusCode)
        try c.encode(latencyMs, forKey: .latencyMs)
        try c.encode(response, forKey: .response)
        try c.encode(error, forKey: .error)
    }
}

struct WebhookDeliveryJSON: Encodable {
    var id: String
    var webhookId: String
    var eventType: String
    var contactId: String?
    var status: String
    var attempts: Int
    var nextAttemptAt: Date?
    var createdAt: Date
    var deliveredAt: Date?
    var lastStatusCode: Int?
    var lastError: String?
    var payload: JSONValue?
    var attemptLog: [WebhookAttemptJSON]?

    init(_ d: WebhookDelivery, attempts log: [WebhookAttempt]? = nil) {
        id = d.id.uuidString.lowercased()
        webhookId = d.endpointID
        eventType = d.eventType.rawValue
        contactId = d.contactID?.uuidString.lowercased()
        status = d.status.rawValue
        attempts = d.attempts
        nextAttemptAt = d.status == .pending ? d.nextAttemptAt : nil
        createdAt = d.createdAt
        deliveredAt = d.deliveredAt
        lastStatusCode = d.lastStatusCode
        lastError = d.lastError
        if let log {
            payload = try? JSONDecoder().decode(JSONValue.self, from: d.payload)
            attemptLog = log.map(WebhookAttemptJSON.init)
        }
    }

    enum CodingKeys: String, CodingKey {
        case id, webhookId, eventType, contactId, status, attempts, nextAttemptAt, createdAt, deliveredAt, lastStatusCode, lastError, payload
        case attemptLog = "attemptLog"
    }

    // Absent optionals are null; the payload and attempt log only on a single delivery.
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(webhookId, forKey: .webhookId)
        try c.encode(eventType, forKey: .eventType)
        try c.encode(contactId, forKey: .contactId)
        try c.encode(status, forKey: .status)
        try c.encode(attempts, forKey: .attempts)
        try c.encode(nextAttemptAt, forKey: .nextAttemptAt)
        try c.encode(createdAt, forKey: .createdAt)
        try c.encode(deliveredAt, forKey: .deliveredAt)
        try c.encode(lastStatusCode, forKey: .lastStatusCode)
        try c.encode(lastError, forKey: .lastError)
        if let attemptLog {
            try c.encode(payload ?? .null, forKey: .payload)
            try c.encode(attemptLog, forKey: .attemptLog)
        }
    }
}

struct CountJSON: Encodable { var count: Int }

extension API {
    var webhookRoutes: [APIRoute] {
        [
            APIRoute(method: .get, path: "/api/v1/webhooks", scope: .admin) { _, _ in try await listWebhooks() },
            // The response holds the signing secret, which is never stored in the clear: not replayable.
            APIRoute(method: .post, path: "/api/v1/webhooks", scope: .admin, replayable: false) { r, c in try await createWebhook(r, c) },
            APIRoute(method: .get, path: "/api/v1/webhooks/{id}", scope: .admin) { _, c in try await getWebhook(c) },
            APIRoute(method: .patch, path: "/api/v1/webhooks/{id}", scope: .admin) { r, c in try await patchWebhook(r, c) },
            APIRoute(method: .delete, path: "/api/v1/webhooks/{id}", scope: .admin) { _, c in try await deleteWebhook(c) },
            APIRoute(method: .post, path: "/api/v1/webhooks/{id}/secret", scope: .admin, replayable: false) { _, c in try await rotateWebhookSecret(c) },
            APIRoute(method: .get, path: "/api/v1/webhooks/{id}/deliveries", scope: .admin) { r, c in try await listDeliveries(r, c) },
            APIRoute(method: .get, path: "/api/v1/webhooks/{id}/deliveries/{delivery}", scope: .admin) { _, c in try await getDelivery(c) },
            APIRoute(method: .post, path: "/api/v1/webhooks/{id}/deliveries/{delivery}/retry", scope: .admin) { _, c in try await retryDelivery(c) },
            APIRoute(method: .post, path: "/api/v1/webhooks/{id}/retry", scope: .admin) { _, c in try await retryFailed(c) },
            APIRoute(method: .post, path: "/api/v1/webhooks/{id}/replay", scope: .admin) { r, c in try await replay(r, c) },
        ]
    }

    var actorLabel: @Sendable (AssentRequestContext) -> String { { "API key \($0.apiKey?.id ?? "?")" } }

    static func events(_ texts: [String]) throws -> [WebhookEventType] {
        var problems: [ValidationError] = []
        let events = texts.enumerated().compactMap { i, text -> WebhookEventType? in
            guard let event = WebhookEventType(rawValue: text) else {
                problems.append(.init(field: "events[\(i)]", "unknown event '\(text.prefix(40))'; one of \(WebhookEventType.allCases.map(\.rawValue).joined(separator: ", "))"))
                return nil
            }
            return event
        }
        if !problems.isEmpty { throw APIError.invalid(problems) }
        return Array(Set(events)).sorted { $0.rawValue < $1.rawValue }
    }

    static func sources(_ texts: [String]) throws -> [ConsentSource] {
        var problems: [ValidationError] = []
        let sources = texts.enumerated().compactMap { i, text -> ConsentSource? in
            guard let source = ConsentSource(rawValue: text) else {
                problems.append(.init(field: "sources[\(i)]", "unknown source '\(text.prefix(40))'; one of \(ConsentSource.allCases.map(\.rawValue).joined(separator: ", "))"))
                return nil
            }
            return source
        }
        if !problems.isEmpty { throw APIError.invalid(problems) }
        return sources
    }

    func listWebhooks() async throws -> APIResponse {
        try APIResponse(json: ListJSON(items: try await ledger.store.webhookEndpoints().map { WebhookJSON($0) }))
    }

    func createWebhook(_ request: Request, _ context: AssentRequestContext) async throws -> APIResponse {
        var request = request
        let body = try await request.decodeJSON(CreateWebhookBody.self, context: context)
        let (endpoint, secret) = try await ledger.createWebhook(
            url: body.url, description: body.description ?? "", events: try Self.events(body.events), topics: body.topics ?? [],
            sources: try Self.sources(body.sources ?? []), allowPrivateNetwork: body.allowPrivateNetwork ?? false, createdBy: actorLabel(context))
        try await ledger.audit(nil, "webhook_create", actorEmail: actorLabel(context), target: "webhook:\(endpoint.id)", detail: endpoint.url,
                               ipAddress: context.remoteIP)
        var response = try APIResponse(status: .created, json: WebhookJSON(endpoint, secret: secret))
        response.headers[.location] = "/api/v1/webhooks/\(endpoint.id)"
        return response
    }

    func webhook(_ context: AssentRequestContext) async throws -> WebhookEndpoint {
        try await ledger.existingWebhook(try context.parameters.require("id"))
    }

    func getWebhook(_ context: AssentRequestContext) async throws -> APIResponse {
        try APIResponse(json: WebhookJSON(try await webhook(context)))
    }

    func patchWebhook(_ request: Request, _ context: AssentRequestContext) async throws -> APIResponse {
        var request = request
        let id = try await webhook(context).id
        let body = try await request.decodeJSON(PatchWebhookBody.self, context: context)
        let events = try body.events.map(Self.events), sources = try body.sources.map(Self.sources)
        let endpoint = try await ledger.updateWebhook(id: id) { e in
            if let url = body.url { e.url = url }
            if let description = body.description { e.description = description }
            if let events { e.events = events }
            if let topics = body.topics { e.topics = topics }
            if let sources { e.sources = sources }
            if let enabled = body.enabled { e.enabled = enabled }
            if let allow = body.allowPrivateNetwork { e.allowPrivateNetwork = allow }
        }
        try await ledger.audit(nil, "webhook_update", actorEmail: actorLabel(context), target: "webhook:\(id)", ipAddress: context.remoteIP)
        return try APIResponse(json: WebhookJSON(endpoint))
    }

    func deleteWebhook(_ context: AssentRequestContext) async throws -> APIResponse {
        let endpoint = try await webhook(context)
        try await ledger.deleteWebhook(id: endpoint.id)
        try await ledger.audit(nil, "webhook_delete", actorEmail: actorLabel(context), target: "webhook:\(endpoint.id)", ipAddress: context.remoteIP)
        return try APIResponse(json: WebhookJSON(endpoint))
    }

    func rotateWebhookSecret(_ context: AssentRequestContext) async throws -> APIResponse {
        let id = try await webhook(context).id
        let secret = try await ledger.rotateWebhookSecret(id: id)
        try await ledger.audit(nil, "webhook_secret", actorEmail: actorLabel(context), target: "webhook:\(id)", ipAddress: context.remoteIP)
        return try APIResponse(json: WebhookJSON(try await ledger.existingWebhook(id), secret: secret))
    }

    func listDeliveries(_ request: Request, _ context: AssentRequestContext) async throws -> APIResponse {
        let endpoint = try await webhook(context)
        let q = try Query(request)
        let status = try q.string("status").map { text in
            guard let status = WebhookDelivery.Status(rawValue: text) else { throw APIError.badRequest(field: "status", "must be pending, delivered or failed") }
            return status
        }
        let since = try q.date("since")
        let items = try await ledger.store.webhookDeliveries(WebhookDeliveryQuery(endpointID: endpoint.id, status: status, since: since,
                                                                                  limit: try q.limit(default: 50, max: 200)))
        return try APIResponse(json: ListJSON(items: items.map { WebhookDeliveryJSON($0) }))
    }

    func delivery(_ context: AssentRequestContext) async throws -> WebhookDelivery {
        let endpoint = try await webhook(context)
        let text = try context.parameters.require("delivery")
        guard let id = UUID(uuidString: text) else { throw APIError.badRequest(field: "delivery", "'\(text.prefix(40))' is not a delivery id") }
        guard let delivery = try await ledger.store.webhookDelivery(id: id), delivery.endpointID == endpoint.id else {
            throw APIError(.notFound, detail: "delivery '\(text)' not found")
        }
        return delivery
    }

    func getDelivery(_ context: AssentRequestContext) async throws -> APIResponse {
        let d = try await delivery(context)
        return try APIResponse(json: WebhookDeliveryJSON(d, attempts: try await ledger.store.webhookAttempts(deliveryID: d.id)))
    }

    func retryDelivery(_ context: AssentRequestContext) async throws -> APIResponse {
        let d = try await delivery(context)
        guard d.status == .failed else { throw APIError(.conflict, detail: "only a failed delivery is retried; this one is \(d.status.rawValue)") }
        _ = try await ledger.store.retryWebhookDeliveries(ids: [d.id], endpointID: d.endpointID, now: ledger.environment.now())
        try await ledger.audit(nil, "webhook_retry", actorEmail: actorLabel(context), target: "webhook:\(d.endpointID)", detail: d.id.uuidString.lowercased(),
                               ipAddress: context.remoteIP)
        let fresh = try await ledger.store.webhookDelivery(id: d.id) ?? d
        return try APIResponse(json: WebhookDeliveryJSON(fresh, attempts: try await ledger.store.webhookAttempts(deliveryID: d.id)))
    }

    func retryFailed(_ context: AssentRequestContext) async throws -> APIResponse {
        let endpoint = try await webhook(context)
        let count = try await ledger.store.retryWebhookDeliveries(ids: nil, endpointID: endpoint.id, now: ledger.environment.now())
        try await ledger.audit(nil, "webhook_retry", actorEmail: actorLabel(context), target: "webhook:\(endpoint.id)", detail: "\(count) failed",
                               ipAddress: context.remoteIP)
        return try APIResponse(json: CountJSON(count: count))
    }

    func replay(_ request: Request, _ context: AssentRequestContext) async throws -> APIResponse {
        var request = request
        let endpoint = try await webhook(context)
        let body = try await request.decodeJSON(ReplayBody.self, context: context)
        let count = try await ledger.replayWebhooks(endpointID: endpoint.id, since: body.since)
        try await ledger.audit(nil, "webhook_replay", actorEmail: actorLabel(context), target: "webhook:\(endpoint.id)",
                               detail: "\(count) since \(WireDate.format(body.since))", ipAddress: context.remoteIP)
        return try APIResponse(json: CountJSON(count: count))
    }
}
