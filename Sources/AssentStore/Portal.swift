import AssentCore
import Crypto
import Foundation

/// Everything stored about one person, as they (or staff answering an access
/// request) download it. Issue-7 territory grows it; the portal uses it now.
public struct PersonalDataExport: Codable, Sendable {
    public struct ContactPart: Codable, Sendable {
        public var id: String
        public var email: String
        public var name: String?
        public var externalId: String?
        public var locale: String?
        public var createdAt: Date
        public var updatedAt: Date
    }

    public struct PreferencePart: Codable, Sendable {
        public var topic: String
        public var title: String
        public var state: String
        public var since: Date
        public var expiresAt: Date?
    }

    public struct EventPart: Codable, Sendable {
        public struct Evidence: Codable, Sendable {
            public var ip: String?
            public var userAgent: String?
            public var note: String?
        }

        public var id: String
        public var seq: Int64
        public var topic: String
        public var action: String
        public var from: String
        public var to: String
        public var source: String
        public var channel: String?
        public var actorKind: String
        public var actorId: String?
        public var occurredAt: Date
        public var recordedAt: Date
        public var expiresAt: Date?
        public var noticeVersion: Int?
        public var formId: String?
        public var formVersion: Int?
        public var batchId: String?
        public var evidence: Evidence?
        public var evidenceShredded: Bool
        public var hash: String
    }

    public struct NoticePart: Codable, Sendable {
        public var topic: String
        public var version: Int
        public var text: String
        public var publishedAt: Date
    }

    public struct FormPart: Codable, Sendable {
        public var id: String
        public var version: Int
        public var title: String
    }

    public struct RequestPart: Codable, Sendable {
        public var id: String
        public var kind: String
        public var status: String
        public var channel: String
        public var note: String?
        public var createdAt: Date
        public var dueAt: Date
    }

    public struct ReceiptPart: Codable, Sendable {
        public var eventId: String
        /// The signed consent receipt (compact JWS), as `GET /api/v1/receipts/{id}` returns it.
        public var jws: String
    }

    public struct EmailPart: Codable, Sendable {
        public var kind: String
        public var status: String
        public var queuedAt: Date
        public var sentAt: Date?
    }

    /// A message about the person to another system (a webhook): the recipient, what, when.
    public struct DisclosurePart: Codable, Sendable {
        public var recipient: String
        public var event: String
        public var status: String
        public var queuedAt: Date
        public var deliveredAt: Date?
    }

    public var generatedAt: Date
    public var contact: ContactPart
    public var preferences: [PreferencePart]
    /// Oldest first, with the personal evidence opened.
    public var events: [EventPart]
    /// The exact texts the person was shown, for every notice version their events name.
    public var notices: [NoticePart]
    public var forms: [FormPart]
    public var requests: [RequestPart]
    /// Signed receipts of every grant, confirmation and withdrawal.
    public var receipts: [ReceiptPart]
    /// Emails sent or queued to the person (what, when; not their links).
    public var emails: [EmailPart]
    /// Messages about the person sent or queued to other systems by webhook (recipients, Art. 15(1)(c)).
    public var disclosures: [DisclosurePart]
    /// Set when the person was erased: what remains is the events' skeleton.
    public var erasedAt: Date?
}

extension Ledger {
    /// How long a portal sign-in link works.
    public static let portalLinkLifetime: TimeInterval = 15 * 60
    /// How long a portal session lasts from sign-in.
    public static let portalSessionLifetime: TimeInterval = 60 * 60
    /// Sign-in emails one contact can be sent per hour; more requests are ignored quietly.
    public static let portalLinksPerHour = 5

    public enum PortalLinkState: Sendable, Equatable {
        case valid(PortalLinkRecord)
        case used
        case expired
        case unknown
    }

    /// Emails a single-use sign-in link if the address belongs to a contact.
    /// The caller answers the same either way, so nobody can find out who is registered.
    public func requestPortalLink(email text: String) async throws {
        let email = try EmailAddress(text)
        guard let contact = try await store.contact(email: email) else { return }
        let at = now
        guard try await store.portalLinkCount(contactID: contact.id, since: at.addingTimeInterval(-3_600)) < Self.portalLinksPerHour else { return }
        let token = Self.randomSecret().base64URL
        let id = environment.newID()
        let expiresAt = at.addingTimeInterval(Self.portalLinkLifetime)
        let payload = PortalLinkEmail(contactID: contact.id, to: contact.email.value, name: contact.name, locale: contact.locale,
                                      token: token, expiresAt: expiresAt)
        let item = OutboxItem(id: id, contactID: contact.id, kind: PortalLinkEmail.kind,
                              payload: try masterKey.seal(JSONEncoder.sortedISO.encode(payload), context: id), nextAttemptAt: at, createdAt: at)
        try await store.issuePortalLink(PortalLinkRecord(hash: APIKey.hash(secret: token), contactID: contact.id, createdAt: at, expiresAt: expiresAt),
                                        email: item)
    }

    public func portalLinkState(token: String) async throws -> PortalLinkState {
        guard token.count <= 100, let link = try await store.portalLink(hash: APIKey.hash(secret: token)) else { return .unknown }
        if link.usedAt != nil { return .used }
        if link.expiresAt <= now { return .expired }
        return .valid(link)
    }

    /// Uses a sign-in link (once) and opens a session; the returned secret goes in the cookie.
    public func signIn(token: String) async throws -> (secret: String, session: PortalSession)? {
        guard token.count <= 100, let contactID = try await store.consumePortalLink(hash: APIKey.hash(secret: token), at: now) else { return nil }
        let secret = Self.randomSecret().base64URL
        let at = now
        let session = PortalSession(hash: APIKey.hash(secret: secret), contactID: contactID, createdAt: at,
                                    expiresAt: at.addingTimeInterval(Self.portalSessionLifetime))
        try await store.insertPortalSession(session)
        return (secret, session)
    }

    /// The session and person behind a cookie's secret, while it lasts.
    public func portalSession(secret: String) async throws -> (session: PortalSession, contact: Contact)? {
        guard secret.count <= 100, let session = try await store.portalSession(hash: APIKey.hash(secret: secret)) else { return nil }
        guard session.expiresAt > now else {
            try await store.deletePortalSession(hash: session.hash)
            return nil
        }
        guard let contact = try await store.contact(id: session.contactID) else { return nil }
        return (session, contact)
    }

    public func signOut(secret: String) async throws {
        try await store.deletePortalSession(hash: APIKey.hash(secret: secret))
    }

    /// The anti-forgery token of a session's forms: derived from its secret, so nothing more is stored.
    public func csrfToken(sessionSecret: String) -> String {
        Data(HMAC<SHA256>.authenticationCode(for: Data(sessionSecret.utf8), using: masterKey.derivedKey(purpose: "portal-csrf/v1"))).base64URL
    }

    public func checkCSRF(_ given: String?, sessionSecret: String) -> Bool {
        guard let given else { return false }
        let expected = Data(csrfToken(sessionSecret: sessionSecret).utf8)
        let actual = Data(given.utf8)
        return actual.constantTimeEquals(expected)
    }

    /// Records a request for staff to handle, due one month after it was
    /// received (`receivedAt`, default now; a letter may be keyed in later);
    /// an open request of the same kind is returned instead of a second one.
    public func recordSubjectRequest(contactID: UUID, kind: SubjectRequest.Kind, channel: String, note: String?, receivedAt: Date? = nil,
                                     identityNote: String? = nil, actor: StaffUser? = nil, ipAddress: String? = nil) async throws -> SubjectRequest {
        _ = try await existingContact(contactID)
        let note = note?.trimmingCharacters(in: .whitespacesAndNewlines)
        let identity = identityNote?.trimmingCharacters(in: .whitespacesAndNewlines)
        var problems: [ValidationError] = []
        for (field, text) in [("note", note), ("identityNote", identity)] {
            if let text, !text.isEmpty {
                do { try TextCheck.check(text, field: field, max: Limits.noteLength, allowNewlines: true) } catch let DomainError.invalid(e) { problems += e }
            }
        }
        let at = now
        let received = (receivedAt ?? at).truncatedToMilliseconds
        if received.timeIntervalSince(at) > allowedClockSkew { problems.append(.init(field: "receivedAt", "must not be in the future")) }
        if received.timeIntervalSince1970 < 946_684_800 { problems.append(.init(field: "receivedAt", "must be after 2000-01-01")) }
        if !problems.isEmpty { throw DomainError.invalid(problems) }
        if let open = try await store.subjectRequests(contactID: contactID, status: .open, limit: 100).first(where: { $0.kind == kind }) {
            return open
        }
        var request = SubjectRequest(id: environment.newID(), contactID: contactID, kind: kind, channel: channel,
                                     note: (note?.isEmpty ?? true) ? nil : note, createdAt: received, dueAt: SubjectRequest.dueDate(after: received))
        request.identityNote = (identity?.isEmpty ?? true) ? nil : identity
        request.handler = actor?.email.value
        do {
            let contact = try await existingContact(contactID)
            let webhooks = try await webhookDeliveries(.dsrRequestCreated, contact: contact, at: now, data: [
                "requestId": request.id.uuidString.lowercased(), "contact": WebhookPayload.contact(contact), "kind": request.kind.rawValue,
                "channel": request.channel, "receivedAt": WebhookPayload.iso(request.createdAt), "dueAt": WebhookPayload.iso(request.dueAt),
            ])
            try await store.insertSubjectRequest(request, webhooks: webhooks)
        } catch StoreError.duplicate {
            // A second click at the same moment: the first one's request stands.
            if let open = try await store.subjectRequests(contactID: contactID, status: .open, limit: 100).first(where: { $0.kind == kind }) { return open }
            throw DomainError.conflict(field: "kind", message: "an open \(kind.rawValue) request already exists")
        }
        if let actor {
            try await audit(actor, "request_record", target: "contact:\(contactID.uuidString.lowercased())", detail: "\(kind.rawValue) via \(channel)", ipAddress: ipAddress)
        }
        return request
    }

    public func existingSubjectRequest(_ id: UUID) async throws -> SubjectRequest {
        guard let request = try await store.subjectRequest(id: id) else { throw DomainError.notFound(what: "request", id: id.uuidString.lowercased()) }
        return request
    }

    /// Extends the deadline to three months after receipt (Art. 12(3)), with the reason recorded. Once.
    public func extendSubjectRequest(_ id: UUID, reason: String, actor: StaffUser?, ipAddress: String? = nil) async throws -> SubjectRequest {
        var request = try await existingSubjectRequest(id)
        let reason = reason.trimmingCharacters(in: .whitespacesAndNewlines)
        if reason.isEmpty { throw DomainError.invalid(field: "reason", "is required: why the request needs more time (complexity, number of requests)") }
        try TextCheck.check(reason, field: "reason", max: Limits.noteLength, allowNewlines: true)
        guard request.status == .open else { throw DomainError.conflict(field: "status", message: "the request is closed") }
        guard request.extensionReason == nil else { throw DomainError.conflict(field: "reason", message: "the deadline was already extended") }
        request.dueAt = SubjectRequest.dueDate(after: request.createdAt, months: 3)
        request.extensionReason = reason
        request.handler = actor?.email.value ?? request.handler
        try await store.updateSubjectRequest(request)
        try await audit(actor, "request_extend", target: "request:\(id.uuidString.lowercased())", detail: reason, ipAddress: ipAddress)
        return request
    }

    /// Closes a request with what was done (e.g. "export sent by email", "erased").
    public func completeSubjectRequest(_ id: UUID, outcome: String, actor: StaffUser?, ipAddress: String? = nil) async throws -> SubjectRequest {
        var request = try await existingSubjectRequest(id)
        let outcome = outcome.trimmingCharacters(in: .whitespacesAndNewlines)
        if outcome.isEmpty { throw DomainError.invalid(field: "outcome", "is required: what was done") }
        try TextCheck.check(outcome, field: "outcome", max: 1_000, allowNewlines: true)
        guard request.status == .open else { return request }
        request.status = .closed
        request.closedAt = now
        request.outcome = outcome
        request.handler = actor?.email.value ?? request.handler
        try await store.updateSubjectRequest(request)
        try await audit(actor, "request_complete", target: "request:\(id.uuidString.lowercased())", detail: outcome, ipAddress: ipAddress)
        return request
    }

    /// Everything stored about a contact, evidence opened, in one document.
    public func exportPersonalData(contactID: UUID, issuer: ReceiptIssuer = .unconfigured) async throws -> PersonalDataExport {
        let contact = try await existingContact(contactID)
        // The reads that do not depend on each other go at once: on PostgreSQL each is a round
        // trip, and one after another they were a fifth of a 1,000-event export's time.
        async let topicsRead = store.topics(includeRetired: true)
        async let outboxRead = store.outboxItems(contactID: contactID)
        async let endpointsRead = store.webhookEndpoints()
        async let deliveriesRead = store.webhookDeliveries(WebhookDeliveryQuery(contactID: contactID, limit: 100_000))
        async let preferencesRead = store.preferences(contactID: contactID)
        var entries: [TimelineEntry] = []
        var before: Int64?
        // The whole document is built in memory anyway, so pages are large (each costs reads).
        let pageSize = 10_000
        while true {
            let page = try await timeline(contactID: contactID, beforeSeq: before, limit: pageSize)
            entries += page
            guard page.count == pageSize, let last = page.last else { break }
            before = last.event.seq
        }
        entries.reverse()
        var titles: [String: String] = [:]
        for topic in try await topicsRead { titles[topic.key] = topic.title }
        var notices: [NoticePartKey: PersonalDataExport.NoticePart] = [:]
        var forms: [String: PersonalDataExport.FormPart] = [:]
        for entry in entries {
            let e = entry.event
            if let v = e.noticeVersion, notices[NoticePartKey(topic: e.topicKey, version: v)] == nil,
               let notice = try await store.notice(topicKey: e.topicKey, version: v) {
                notices[NoticePartKey(topic: e.topicKey, version: v)] = .init(topic: e.topicKey, version: v, text: notice.text, publishedAt: notice.createdAt)
            }
            if let id = e.formID, let v = e.formVersion, forms["\(id)#\(v)"] == nil, let form = try await store.form(id: id, version: v) {
                forms["\(id)#\(v)"] = .init(id: id, version: v, title: form.definition.title)
            }
        }
        let at = now
        let receipts = try await self.receipts(for: entries.map(\.event), contact: contact, issuer: issuer).map {
            PersonalDataExport.ReceiptPart(eventId: $0.eventID.lowercasedString, jws: $0.jws)
        }
        let emails = try await outboxRead.map {
            PersonalDataExport.EmailPart(kind: $0.kind, status: $0.status.rawValue, queuedAt: $0.createdAt, sentAt: $0.sentAt)
        }
        var recipients: [String: String] = [:]
        // The recipient's address without path or query (those may hold the receiver's own tokens).
        for endpoint in try await endpointsRead {
            let components = URLComponents(string: endpoint.url)
            recipients[endpoint.id] = components.map { "\($0.scheme ?? "https")://\($0.host ?? "?")" + ($0.port.map { ":\($0)" } ?? "") } ?? endpoint.id
        }
        let disclosures = try await deliveriesRead.reversed().map {
            PersonalDataExport.DisclosurePart(recipient: recipients[$0.endpointID] ?? $0.endpointID, event: $0.eventType.rawValue,
                                              status: $0.status.rawValue, queuedAt: $0.createdAt, deliveredAt: $0.deliveredAt)
        }
        return PersonalDataExport(
            generatedAt: at,
            contact: .init(id: contact.id.uuidString.lowercased(), email: contact.email.value, name: contact.name, externalId: contact.externalID, locale: contact.locale,
                           createdAt: contact.createdAt, updatedAt: contact.updatedAt),
            preferences: try await preferencesRead.sorted { $0.topicKey < $1.topicKey }.map {
                .init(topic: $0.topicKey, title: titles[$0.topicKey] ?? $0.topicKey, state: $0.effectiveState(at: at).rawValue, since: $0.since,
                      expiresAt: $0.expiresAt)
            },
            events: entries.map { entry in
                let e = entry.event
                return .init(id: e.id.lowercasedString, seq: e.seq, topic: e.topicKey, action: e.action.rawValue, from: e.fromState.rawValue, to: e.toState.rawValue,
                             source: e.source.rawValue, channel: e.channel?.rawValue, actorKind: e.actor.kind.rawValue, actorId: e.actor.id,
                             occurredAt: e.occurredAt, recordedAt: e.recordedAt, expiresAt: e.expiresAt, noticeVersion: e.noticeVersion,
                             formId: e.formID, formVersion: e.formVersion, batchId: e.batchID,
                             evidence: entry.personal.map { .init(ip: $0.ipAddress, userAgent: $0.userAgent, note: $0.note) },
                             evidenceShredded: entry.evidenceShredded, hash: e.hash.hexString)
            },
            notices: notices.values.sorted { ($0.topic, $0.version) < ($1.topic, $1.version) },
            forms: forms.values.sorted { ($0.id, $0.version) < ($1.id, $1.version) },
            requests: try await store.subjectRequests(contactID: contactID, status: nil, limit: 1_000).map {
                .init(id: $0.id.uuidString.lowercased(), kind: $0.kind.rawValue, status: $0.status.rawValue, channel: $0.channel, note: $0.note,
                      createdAt: $0.createdAt, dueAt: $0.dueAt)
            },
            receipts: receipts, emails: emails, disclosures: disclosures, erasedAt: contact.erasedAt)
    }
}

private struct NoticePartKey: Hashable {
    var topic: String
    var version: Int
}

extension ReceiptIssuer {
    /// Placeholders for tests and for servers not told who they are.
    public static let unconfigured = ReceiptIssuer(
        controller: .init(piiController: "Assent", contact: "Assent", address: "", email: "no-reply@assent.localhost", phone: "", piiControllerUrl: nil),
        jurisdiction: "EU", policyURL: "about:blank")
}

extension PersonalDataExport {
    /// The export as JSON: the bytes the API's encoder (sorted keys, unescaped slashes, nil
    /// optionals left out, times as RFC 3339 with milliseconds) writes, written directly. A
    /// person with 1,000 events is over a megabyte of JSON, and JSONEncoder took 20 ms of it;
    /// a test holds the two equal.
    public var json: Data { Data(jsonBytes()) }

    /// The bytes of `json`, with a newline after them when asked (the API's answer), in one
    /// buffer reserved for them all: the answer had been grown from empty (the reservation was
    /// lost to a copy on write) and copied three times, a tenth of an export's CPU in page faults.
    public func jsonBytes(newline: Bool = false) -> [UInt8] {
        let w = JSONOut(capacity: events.count * 1_000 + receipts.count * 2_000 + 16_384)
        w.object {
            w.field("contact") {
                w.object {
                    w.field("createdAt", contact.createdAt)
                    w.field("email", contact.email)
                    w.field("externalId", contact.externalId)
                    w.field("id", contact.id)
                    w.field("locale", contact.locale)
                    w.field("name", contact.name)
                    w.field("updatedAt", contact.updatedAt)
                }
            }
            w.field("disclosures") {
                w.array(disclosures) { d in
                    w.object {
                        w.field("deliveredAt", d.deliveredAt)
                        w.field("event", d.event)
                        w.field("queuedAt", d.queuedAt)
                        w.field("recipient", d.recipient)
                        w.field("status", d.status)
                    }
                }
            }
            w.field("emails") {
                w.array(emails) { e in
                    w.object {
                        w.field("kind", e.kind)
                        w.field("queuedAt", e.queuedAt)
                        w.field("sentAt", e.sentAt)
                        w.field("status", e.status)
                    }
                }
            }
            w.field("erasedAt", erasedAt)
            w.field("events") {
                w.array(events) { e in
                    w.object {
                        w.field("action", e.action)
                        w.field("actorId", e.actorId)
                        w.field("actorKind", e.actorKind)
                        w.field("batchId", e.batchId)
                        w.field("channel", e.channel)
                        if let evidence = e.evidence {
                            w.field("evidence") {
                                w.object {
                                    w.field("ip", evidence.ip)
                                    w.field("note", evidence.note)
                                    w.field("userAgent", evidence.userAgent)
                                }
                            }
                        }
                        w.field("evidenceShredded", e.evidenceShredded)
                        w.field("expiresAt", e.expiresAt)
                        w.field("formId", e.formId)
                        w.field("formVersion", e.formVersion.map(Int64.init))
                        w.field("from", e.from)
                        w.field("hash", e.hash)
                        w.field("id", e.id)
                        w.field("noticeVersion", e.noticeVersion.map(Int64.init))
                        w.field("occurredAt", e.occurredAt)
                        w.field("recordedAt", e.recordedAt)
                        w.field("seq", e.seq)
                        w.field("source", e.source)
                        w.field("to", e.to)
                        w.field("topic", e.topic)
                    }
                }
            }
            w.field("forms") {
                w.array(forms) { f in
                    w.object {
                        w.field("id", f.id)
                        w.field("title", f.title)
                        w.field("version", Int64(f.version))
                    }
                }
            }
            w.field("generatedAt", generatedAt)
            w.field("notices") {
                w.array(notices) { n in
                    w.object {
                        w.field("publishedAt", n.publishedAt)
                        w.field("text", n.text)
                        w.field("topic", n.topic)
                        w.field("version", Int64(n.version))
                    }
                }
            }
            w.field("preferences") {
                w.array(preferences) { p in
                    w.object {
                        w.field("expiresAt", p.expiresAt)
                        w.field("since", p.since)
                        w.field("state", p.state)
                        w.field("title", p.title)
                        w.field("topic", p.topic)
                    }
                }
            }
            w.field("receipts") {
                w.array(receipts) { r in
                    w.object {
                        w.field("eventId", r.eventId)
                        w.field("jws", unescaped: r.jws)
                    }
                }
            }
            w.field("requests") {
                w.array(requests) { r in
                    w.object {
                        w.field("channel", r.channel)
                        w.field("createdAt", r.createdAt)
                        w.field("dueAt", r.dueAt)
                        w.field("id", r.id)
                        w.field("kind", r.kind)
                        w.field("note", r.note)
                        w.field("status", r.status)
                    }
                }
            }
        }
        if newline { w.out.append(UInt8(ascii: "\n")) }
        return w.out
    }
}

/// A JSON object writer for `PersonalDataExport.json`: the caller gives fields in sorted order;
/// a nil optional is left out (as Codable's synthesised `encodeIfPresent` does).
private final class JSONOut {
    var out: [UInt8]
    private var first = [true]

    init(capacity: Int) {
        out = []
        out.reserveCapacity(capacity)
    }

    private func separate() {
        if first[first.count - 1] { first[first.count - 1] = false } else { out.append(UInt8(ascii: ",")) }
    }

    func object(_ body: () -> Void) {
        out.append(UInt8(ascii: "{"))
        first.append(true)
        body()
        first.removeLast()
        out.append(UInt8(ascii: "}"))
    }

    func array<T>(_ items: [T], _ body: (T) -> Void) {
        out.append(UInt8(ascii: "["))
        first.append(true)
        for item in items {
            separate()
            body(item)
        }
        first.removeLast()
        out.append(UInt8(ascii: "]"))
    }

    func field(_ name: StaticString, _ value: () -> Void) {
        separate()
        JSONBytes.appendKey(name, to: &out)
        first.append(true) // the value is written whole by the caller's object or array
        value()
        first.removeLast()
    }

    func field(_ name: StaticString, _ value: String?) {
        guard let value else { return }
        separate()
        JSONBytes.appendKey(name, to: &out)
        JSONBytes.appendString(value, to: &out)
    }

    /// A string known to need no escaping (a JWS: base64url and dots), copied whole.
    func field(_ name: StaticString, unescaped value: String) {
        assert(value.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") })
        separate()
        JSONBytes.appendKey(name, to: &out)
        out.append(UInt8(ascii: "\""))
        out.append(contentsOf: value.utf8)
        out.append(UInt8(ascii: "\""))
    }

    func field(_ name: StaticString, _ value: Date?) {
        guard let value else { return }
        separate()
        JSONBytes.appendKey(name, to: &out)
        out.append(UInt8(ascii: "\""))
        UTCTime.appendRFC3339(&out, millisecondsSince1970: value.millisecondsSince1970)
        out.append(UInt8(ascii: "\""))
    }

    func field(_ name: StaticString, _ value: Int64?) {
        guard let value else { return }
        separate()
        JSONBytes.appendKey(name, to: &out)
        JSONBytes.appendInteger(value, to: &out)
    }

    func field(_ name: StaticString, _ value: Bool) {
        separate()
        JSONBytes.appendKey(name, to: &out)
        JSONBytes.appendBool(value, to: &out)
    }
}
