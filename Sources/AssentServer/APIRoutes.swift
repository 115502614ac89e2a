import AssentCore
import AssentStore
import Crypto
import Foundation
import Hummingbird

/// One entry of the route table. The table is the single list of what the
/// server answers: it registers the handlers, and a test holds the OpenAPI
/// document to it (every route documented, every documented route served).
struct APIRoute: Sendable {
    var method: HTTPRequest.Method
    /// In OpenAPI form, e.g. `/api/v1/topics/{key}`.
    var path: String
    /// nil: no API key needed.
    var scope: APIScope?
    /// Whether `Idempotency-Key` replay applies. Off where the response holds
    /// a secret that must never be stored (a new API key's token).
    var replayable = true
    var handler: @Sendable (Request, AssentRequestContext) async throws -> APIResponse
}

/// The JSON API's handlers over a `Ledger`.
struct API: Sendable {
    let ledger: Ledger
    let openAPIDocument: Data
    var issuer: ReceiptIssuer = .unconfigured
    var site = SiteConfiguration()
    /// Renders a form's embeddable HTML (the pages' templates).
    var embed: @Sendable (Form) async throws -> String = { _ in throw APIError(.notImplemented, detail: "form pages are not configured") }
    /// Renders a personal-data export as a printable page.
    var exportPage: @Sendable (PersonalDataExport) async throws -> String = { _ in throw APIError(.notImplemented, detail: "pages are not configured") }

    var routes: [APIRoute] {
        [
            APIRoute(method: .get, path: "/healthz", scope: nil) { _, _ in try APIResponse(json: HealthJSON(status: "ok")) },
            APIRoute(method: .get, path: "/readyz", scope: nil) { _, _ in try await readiness() },
            APIRoute(method: .get, path: "/api/v1/openapi.json", scope: nil) { _, _ in
                APIResponse(status: .ok, body: openAPIDocument, contentType: "application/json")
            },
            APIRoute(method: .get, path: "/api/v1/topics", scope: .read) { r, _ in try await listTopics(r) },
            APIRoute(method: .post, path: "/api/v1/topics", scope: .admin) { r, c in try await createTopic(r, c) },
            APIRoute(method: .get, path: "/api/v1/topics/{key}", scope: .read) { _, c in try await getTopic(c) },
            APIRoute(method: .patch, path: "/api/v1/topics/{key}", scope: .admin) { r, c in try await patchTopic(r, c) },
            APIRoute(method: .delete, path: "/api/v1/topics/{key}", scope: .admin) { _, c in try await retireTopic(c) },
            APIRoute(method: .get, path: "/api/v1/topics/{key}/notices", scope: .read) { _, c in try await listNotices(c) },
            APIRoute(method: .post, path: "/api/v1/topics/{key}/notices", scope: .admin) { r, c in try await publishNotice(r, c) },
            APIRoute(method: .get, path: "/api/v1/topics/{key}/notices/{version}", scope: .read) { _, c in try await getNotice(c) },
            APIRoute(method: .get, path: "/api/v1/contacts", scope: .read) { r, _ in try await listContacts(r) },
            APIRoute(method: .post, path: "/api/v1/contacts", scope: .write) { r, c in try await createContact(r, c) },
            APIRoute(method: .get, path: "/api/v1/contacts/{id}", scope: .read) { _, c in try await getContact(c) },
            APIRoute(method: .patch, path: "/api/v1/contacts/{id}", scope: .write) { r, c in try await patchContact(r, c) },
            APIRoute(method: .get, path: "/api/v1/contacts/{id}/preferences", scope: .read) { _, c in try await getPreferences(c) },
            APIRoute(method: .put, path: "/api/v1/contacts/{id}/preferences", scope: .write) { r, c in try await setPreferences(r, c) },
            APIRoute(method: .get, path: "/api/v1/contacts/{id}/timeline", scope: .read) { r, c in try await timeline(r, c) },
            APIRoute(method: .get, path: "/api/v1/check", scope: .read) { r, _ in try await check(r) },
            APIRoute(method: .get, path: "/api/v1/receipts/{id}", scope: .read) { _, c in try await receipt(c) },
            APIRoute(method: .get, path: "/.well-known/jwks.json", scope: nil) { _, _ in try await jwks() },
            APIRoute(method: .get, path: "/api/v1/keys", scope: .admin) { _, _ in try await listKeys() },
            APIRoute(method: .post, path: "/api/v1/keys", scope: .admin, replayable: false) { r, c in try await createKey(r, c) },
            APIRoute(method: .delete, path: "/api/v1/keys/{id}", scope: .admin) { _, c in try await revokeKey(c) },
        ] + formRoutes + rightsRoutes + audienceRoutes + segmentRoutes + webhookRoutes + reportRoutes + exportRoutes
    }

    // MARK: Health

    /// 200 when the database answers within three seconds. A PostgreSQL pool whose server is down
    /// would hold the query until a connection comes back; a probe needs its answer now.
    func readiness() async throws -> APIResponse {
        let store = ledger.store
        let answered = await firstOf(seconds: 3) { try await store.ping() }
        switch answered {
        case .some(.success): return try APIResponse(json: HealthJSON(status: "ready"))
        case .some(.failure): throw APIError(.serviceUnavailable, detail: "the database is not reachable")
        case .none: throw APIError(.serviceUnavailable, detail: "the database did not answer within 3 seconds")
        }
    }

    // MARK: Topics

    func listTopics(_ request: Request) async throws -> APIResponse {
        let includeRetired = try Query(request).bool("includeRetired") ?? false
        let topics = try await ledger.store.topics(includeRetired: includeRetired)
        return try APIResponse(json: ListJSON(items: topics.map { TopicJSON($0) }))
    }

    func createTopic(_ request: Request, _ context: AssentRequestContext) async throws -> APIResponse {
        var request = request
        let body = try await request.decodeJSON(CreateTopicBody.self, context: context)
        let topic = try await ledger.createTopic(
            Topic(key: body.key, title: body.title, description: body.description ?? "", category: body.category ?? "general",
                  requiresDoubleOptIn: body.requiresDoubleOptIn ?? true, consentLifetimeDays: body.consentLifetimeDays,
                  repermissionDaysBefore: body.repermissionDaysBefore, createdAt: Date()),
            noticeText: body.notice)
        let notice = try await ledger.store.notice(topicKey: topic.key, version: 1)
        var response = try APIResponse(status: .created, json: TopicJSON(topic, notice: notice))
        response.headers[.location] = "/api/v1/topics/\(topic.key)"
        return response
    }

    func topicKey(_ context: AssentRequestContext) throws -> String {
        let key = try context.parameters.require("key")
        try Topic.validateKey(key, field: "key")
        return key
    }

    func getTopic(_ context: AssentRequestContext) async throws -> APIResponse {
        let topic = try await ledger.existingTopic(topicKey(context))
        let notice = try await ledger.store.notice(topicKey: topic.key, version: topic.currentNoticeVersion)
        return try APIResponse(json: TopicJSON(topic, notice: notice))
    }

    func patchTopic(_ request: Request, _ context: AssentRequestContext) async throws -> APIResponse {
        var request = request
        let key = try topicKey(context)
        let body = try await request.decodeJSON(PatchTopicBody.self, context: context)
        let topic = try await ledger.updateTopic(key: key) { topic in
            if let title = body.title { topic.title = title }
            if let description = body.description { topic.description = description }
            if let category = body.category { topic.category = category }
            if let flag = body.requiresDoubleOptIn { topic.requiresDoubleOptIn = flag }
            body.consentLifetimeDays.apply(to: &topic.consentLifetimeDays)
            body.repermissionDaysBefore.apply(to: &topic.repermissionDaysBefore)
            // Clearing the lifetime clears the re-permission window that depended on it.
            if case .set(nil) = body.consentLifetimeDays, case .absent = body.repermissionDaysBefore { topic.repermissionDaysBefore = nil }
        }
        return try APIResponse(json: TopicJSON(topic))
    }

    func retireTopic(_ context: AssentRequestContext) async throws -> APIResponse {
        try APIResponse(json: TopicJSON(try await ledger.retireTopic(key: topicKey(context))))
    }

    func listNotices(_ context: AssentRequestContext) async throws -> APIResponse {
        let topic = try await ledger.existingTopic(topicKey(context))
        return try APIResponse(json: ListJSON(items: try await ledger.store.notices(topicKey: topic.key).map(NoticeJSON.init)))
    }

    func publishNotice(_ request: Request, _ context: AssentRequestContext) async throws -> APIResponse {
        var request = request
        let key = try topicKey(context)
        let body = try await request.decodeJSON(NewNoticeBody.self, context: context)
        let notice = try await ledger.publishNotice(topicKey: key, text: body.text)
        var response = try APIResponse(status: .created, json: NoticeJSON(notice))
        response.headers[.location] = "/api/v1/topics/\(key)/notices/\(notice.version)"
        return response
    }

    func getNotice(_ context: AssentRequestContext) async throws -> APIResponse {
        let key = try topicKey(context)
        guard let version = Int(try context.parameters.require("version")), version >= 1 else {
            throw APIError.badRequest(field: "version", "must be a positive integer")
        }
        guard let notice = try await ledger.store.notice(topicKey: key, version: version) else {
            throw APIError(.notFound, detail: "topic '\(key)' has no notice version \(version)")
        }
        return try APIResponse(json: NoticeJSON(notice))
    }

    // MARK: Contacts

    func contactID(_ context: AssentRequestContext) throws -> UUID {
        let text = try context.parameters.require("id")
        guard let id = UUID(uuidString: text) else { throw APIError.badRequest(field: "id", "'\(text.prefix(64))' is not a UUID") }
        return id
    }

    func listContacts(_ request: Request) async throws -> APIResponse {
        let query = try Query(request)
        if let emailText = query.string("email") {
            let email = try EmailAddress(emailText)
            let found = try await ledger.store.contact(email: email)
            return try APIResponse(json: PageJSON(items: found.map { [ContactJSON($0)] } ?? [], nextCursor: nil))
        }
        if let external = query.string("externalId") {
            let found = try await ledger.store.contact(externalID: external)
            return try APIResponse(json: PageJSON(items: found.map { [ContactJSON($0)] } ?? [], nextCursor: nil))
        }
        let limit = try query.limit()
        let after = try query.cursor().map { text in
            guard let id = UUID(uuidString: text) else { throw APIError.badRequest(field: "cursor", "is not a cursor this API returned") }
            return id
        }
        let contacts = try await ledger.store.contacts(after: after, limit: limit + 1)
        let page = Array(contacts.prefix(limit))
        let next = contacts.count > limit ? page.last.map { Cursor.encode($0.id.uuidString.lowercased()) } : nil
        return try APIResponse(json: PageJSON(items: page.map(ContactJSON.init), nextCursor: next))
    }

    func createContact(_ request: Request, _ context: AssentRequestContext) async throws -> APIResponse {
        var request = request
        let body = try await request.decodeJSON(CreateContactBody.self, context: context)
        let contact = try await ledger.createContact(email: EmailAddress(body.email), name: body.name, externalID: body.externalId, locale: body.locale,
                                                     freshConsent: body.freshConsent, actor: "API key \(context.apiKey?.id ?? "?")")
        var response = try APIResponse(status: .created, json: ContactJSON(contact))
        response.headers[.location] = "/api/v1/contacts/\(contact.id.uuidString.lowercased())"
        return response
    }

    func getContact(_ context: AssentRequestContext) async throws -> APIResponse {
        try APIResponse(json: ContactJSON(try await ledger.existingContact(contactID(context))))
    }

    func patchContact(_ request: Request, _ context: AssentRequestContext) async throws -> APIResponse {
        var request = request
        let id = try contactID(context)
        let body = try await request.decodeJSON(PatchContactBody.self, context: context)
        let email = try body.email.map { try EmailAddress($0) }
        let before = try await ledger.existingContact(id)
        if before.isErased { throw DomainError.gone(what: "contact", id: id.uuidString.lowercased()) }
        let contact = try await ledger.updateContact(id: id) { contact in
            if let email { contact.email = email }
            body.name.apply(to: &contact.name)
            body.externalId.apply(to: &contact.externalID)
            body.locale.apply(to: &contact.locale)
        }
        // Rectification (GDPR Art. 16) is audited: which fields, not their values.
        let changed = [("email", before.email != contact.email), ("name", before.name != contact.name),
                       ("externalId", before.externalID != contact.externalID), ("locale", before.locale != contact.locale)].filter(\.1).map(\.0)
        if !changed.isEmpty {
            try await ledger.audit(nil, "contact_rectify", actorEmail: "API key \(context.apiKey?.id ?? "?")", target: "contact:\(id.uuidString.lowercased())",
                                   detail: "changed " + changed.joined(separator: ", "), ipAddress: context.remoteIP)
        }
        return try APIResponse(json: ContactJSON(contact))
    }

    /// Every active topic (a missing row reads `none`), plus retired topics the contact has a state for.
    func preferenceGrid(_ preferences: [Preference]) async throws -> [PreferenceJSON] {
        let byTopic = Dictionary(preferences.map { ($0.topicKey, $0) }, uniquingKeysWith: { a, _ in a })
        let now = Date()
        return try await ledger.displayedTopics().compactMap { topic in
            let p = byTopic[topic.key]
            if !topic.isActive && p == nil { return nil }
            let state = p?.effectiveState(at: now) ?? .none
            return PreferenceJSON(topic: topic.key, title: topic.title, category: topic.category, state: state.rawValue,
                                  mayEmail: topic.isActive && (p?.allowsSending(at: now) ?? false), since: p?.since, expiresAt: p?.expiresAt)
        }
    }

    func getPreferences(_ context: AssentRequestContext) async throws -> APIResponse {
        let contact = try await ledger.existingContact(contactID(context))
        let grid = try await preferenceGrid(ledger.store.preferences(contactID: contact.id))
        return try APIResponse(json: ListJSON(items: grid))
    }

    func setPreferences(_ request: Request, _ context: AssentRequestContext) async throws -> APIResponse {
        var request = request
        let id = try contactID(context)
        let body = try await request.decodeJSON(SetPreferencesBody.self, context: context)
        guard let source = ConsentSource(rawValue: body.source) else {
            throw APIError.invalid(field: "source", "unknown source '\(body.source.prefix(64))'; expected one of \(ConsentSource.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let channel = try body.channel.map { text in
            guard let channel = StaffChannel(rawValue: text) else {
                throw APIError.invalid(field: "channel", "unknown channel '\(text.prefix(64))'; expected one of \(StaffChannel.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return channel
        }
        var problems: [ValidationError] = []
        for (i, item) in body.preferences.enumerated() {
            do { try Topic.validateKey(item.value.topic, field: "preferences[\(i)].topic") } catch let DomainError.invalid(e) { problems += e }
            if let v = item.value.noticeVersion, v < 1 { problems.append(.init(field: "preferences[\(i)].noticeVersion", "must be 1 or more")) }
        }
        if !problems.isEmpty { throw APIError.invalid(problems) }
        let evidence = body.evidence?.value
        let result = try await ledger.recordChange(ChangeRequest(
            contactID: id,
            changes: body.preferences.map { TopicChange(topicKey: $0.value.topic, intent: $0.value.granted ? .optIn : .optOut, noticeVersion: $0.value.noticeVersion) },
            source: source, channel: channel, actor: .apiKey(context.apiKey?.id ?? "unknown"), occurredAt: body.occurredAt,
            evidence: Evidence(formID: evidence?.formId, formVersion: evidence?.formVersion,
                               personal: PersonalEvidence(ipAddress: evidence?.ip, userAgent: evidence?.userAgent, note: evidence?.note)),
            batchID: body.batchId))
        let personal = PersonalEvidence(ipAddress: evidence?.ip, userAgent: evidence?.userAgent, note: evidence?.note)
        let recorded = result.events.map { EventJSON($0, personal: $0.sealedEvidence == nil ? nil : personal, shredded: false) }
        var message = result.events.isEmpty
            ? "nothing changed: " + result.unchanged.map { "\($0.topicKey) \($0.reason)" }.joined(separator: "; ")
            : "recorded \(result.events.count) change\(result.events.count == 1 ? "" : "s")"
        if !result.confirmationRequestedFor.isEmpty {
            message += "; a confirmation email was queued for " + result.confirmationRequestedFor.joined(separator: ", ")
        }
        let answer = ChangeResultJSON(
            contactId: id.lowercasedString, recorded: recorded,
            unchanged: result.unchanged.map { UnchangedJSON(topic: $0.topicKey, state: $0.state.rawValue, reason: $0.reason) },
            message: message, preferences: try await preferenceGrid(result.preferences),
            confirmationRequestedFor: result.confirmationRequestedFor)
        return APIResponse(status: .ok, body: answer.encoded, contentType: "application/json")
    }

    func timeline(_ request: Request, _ context: AssentRequestContext) async throws -> APIResponse {
        let id = try contactID(context)
        let query = try Query(request)
        let limit = try query.limit()
        let before = try query.cursor().map { text in
            guard let seq = Int64(text), seq > 0 else { throw APIError.badRequest(field: "cursor", "is not a cursor this API returned") }
            return seq
        }
        let entries = try await ledger.timeline(contactID: id, beforeSeq: before, limit: limit + 1)
        let page = Array(entries.prefix(limit))
        let next = entries.count > limit ? page.last.map { Cursor.encode(String($0.event.seq)) } : nil
        return try APIResponse(json: PageJSON(items: page.map { EventJSON($0.event, personal: $0.personal, shredded: $0.evidenceShredded) },
                                              nextCursor: next))
    }

    func check(_ request: Request) async throws -> APIResponse {
        let query = try Query(request)
        guard let emailText = query.string("email") else { throw APIError.badRequest(field: "email", "is required") }
        guard let topicKey = query.string("topic") else { throw APIError.badRequest(field: "topic", "is required") }
        let email = try EmailAddress(emailText)
        try Topic.validateKey(topicKey, field: "topic")
        let result: CheckResult
        do {
            result = try await ledger.check(email: email, topicKey: topicKey)
        } catch DomainError.notFound(what: "topic", _) {
            throw APIError.invalid(field: "topic", "unknown topic '\(topicKey)'")
        }
        let answer = CheckJSON(email: email.value, topic: topicKey, allowed: result.allowed, reason: result.reason.rawValue,
                               contactId: result.contactID?.lowercasedString, since: result.since, expiresAt: result.expiresAt)
        return APIResponse(status: .ok, body: answer.encoded, contentType: "application/json")
    }

    // MARK: Receipts

    func receipt(_ context: AssentRequestContext) async throws -> APIResponse {
        let text = try context.parameters.require("id")
        guard let id = UUID(uuidString: text) else { throw APIError.badRequest(field: "id", "'\(text.prefix(64))' is not a receipt id (an event id)") }
        let (receipt, jws) = try await ledger.receipt(eventID: id, issuer: issuer)
        return try APIResponse(json: ReceiptJSON(id: receipt.consentReceiptID, receipt: receipt, jws: jws))
    }

    func jwks() async throws -> APIResponse {
        var response = try APIResponse(json: ["keys": try await ledger.receiptSigners().map(\.publicJWK)])
        response.contentType = "application/jwk-set+json"
        return response
    }

    // MARK: API keys

    func listKeys() async throws -> APIResponse {
        try APIResponse(json: ListJSON(items: try await ledger.store.apiKeys().map { KeyJSON($0) }))
    }

    func createKey(_ request: Request, _ context: AssentRequestContext) async throws -> APIResponse {
        var request = request
        let body = try await request.decodeJSON(CreateKeyBody.self, context: context)
        try APIKey.validateName(body.name)
        guard let scope = APIScope(rawValue: body.scope) else {
            throw APIError.invalid(field: "scope", "unknown scope '\(body.scope.prefix(32))'; expected read, write or admin")
        }
        let (key, token) = APIKey.generate(name: body.name, scope: scope, now: Date().truncatedToMilliseconds)
        try await ledger.store.insertAPIKey(key)
        try await ledger.audit(nil, "key_create", actorEmail: "API key \(context.apiKey?.id ?? "?")", target: "key:\(key.id)",
                               detail: "\(scope.rawValue): \(body.name)", ipAddress: context.remoteIP)
        return try APIResponse(status: .created, json: KeyJSON(key, token: token))
    }

    func revokeKey(_ context: AssentRequestContext) async throws -> APIResponse {
        let id = try context.parameters.require("id")
        guard let key = try await ledger.store.apiKey(id: id) else { throw APIError(.notFound, detail: "API key '\(id.prefix(64))' not found") }
        if context.apiKey?.id == key.id {
            throw APIError(.conflict, detail: "a key cannot revoke itself; use another admin key")
        }
        defer { ledger.apiKeyCache.invalidate(id) }
        if try await ledger.store.revokeAPIKey(id: id, at: Date().truncatedToMilliseconds) {
            try await ledger.audit(nil, "key_revoke", actorEmail: "API key \(context.apiKey?.id ?? "?")", target: "key:\(id)", ipAddress: context.remoteIP)
        }
        return try APIResponse(json: KeyJSON(try await ledger.store.apiKey(id: id) ?? key))
    }
}

/// Opaque pagination cursors (base64url of an internal position).
enum Cursor {
    static func encode(_ position: String) -> String {
        Data(position.utf8).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func decode(_ cursor: String) -> String? {
        var text = cursor.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while !text.count.isMultiple(of: 4) { text += "=" }
        return Data(base64Encoded: text).flatMap { String(data: $0, encoding: .utf8) }
    }
}

/// Typed access to query parameters with errors that name the parameter.
struct Query {
    let values: [String: String]

    init(_ request: Request) throws {
        var values: [String: String] = [:]
        for (key, value) in request.uri.queryParameters {
            let k = String(key)
            if values[k] != nil { throw APIError.badRequest(field: k, "is given more than once") }
            if value.utf8.contains(0) { throw APIError.badRequest(field: k, "must not contain the NUL character") }
            values[k] = String(value)
        }
        self.values = values
    }

    func string(_ name: String) -> String? {
        guard let v = values[name], !v.isEmpty else { return nil }
        return v
    }

    /// A date (`2026-11-01`, midnight UTC) or an RFC 3339 date-time; 400 naming the parameter otherwise.
    func date(_ name: String) throws -> Date? {
        try string(name).map { text in
            guard let date = WireDate.parse(text) ?? WireDate.parse(text + "T00:00:00Z") else {
                throw APIError.badRequest(field: name, "'\(text.prefix(40))' is not a date such as 2026-11-01 or 2026-11-01T10:00:00Z")
            }
            return date
        }
    }

    func bool(_ name: String) throws -> Bool? {
        guard let v = string(name) else { return nil }
        switch v {
        case "true", "1": return true
        case "false", "0": return false
        default: throw APIError.badRequest(field: name, "must be true or false")
        }
    }

    func limit(default value: Int = 50, max: Int = 200) throws -> Int {
        guard let text = string("limit") else { return value }
        guard let n = Int(text), (1...max).contains(n) else { throw APIError.badRequest(field: "limit", "must be an integer from 1 to \(max)") }
        return n
    }

    func cursor() throws -> String? {
        guard let text = string("cursor") else { return nil }
        guard let position = Cursor.decode(text) else { throw APIError.badRequest(field: "cursor", "is not a cursor this API returned") }
        return position
    }
}
