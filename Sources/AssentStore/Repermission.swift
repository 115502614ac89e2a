import AssentCore
import Foundation

/// A live grant that will expire within its topic's re-permission window and
/// whose person has not yet been asked to renew it.
public struct RepermissionDue: Sendable, Equatable {
    public var contactID: UUID
    public var topicKey: String
    /// When the grant lapses; with the contact and topic it names the grant.
    public var expiresAt: Date

    public init(contactID: UUID, topicKey: String, expiresAt: Date) {
        self.contactID = contactID
        self.topicKey = topicKey
        self.expiresAt = expiresAt
    }
}

/// The record that one grant's re-permission email was queued (at most one per grant).
public struct RepermissionRequest: Sendable, Equatable {
    public var contactID: UUID
    public var topicKey: String
    public var grantExpiresAt: Date
    public var sentAt: Date
    public var outboxID: UUID

    public init(contactID: UUID, topicKey: String, grantExpiresAt: Date, sentAt: Date, outboxID: UUID) {
        self.contactID = contactID
        self.topicKey = topicKey
        self.grantExpiresAt = grantExpiresAt
        self.sentAt = sentAt
        self.outboxID = outboxID
    }
}

/// The outbox payload of a re-permission email.
public struct RepermissionEmail: Codable, Sendable, Equatable {
    public static let kind = "email.repermission"
    public var contactID: UUID
    public var to: String
    public var name: String?
    public var locale: String?
    public var topicKey: String
    /// The grant this email is about; it is not sent if the grant changed meanwhile.
    public var expiresAt: Date
    /// The renewal link's token (`/r/{token}`); scrubbed once sent.
    public var token: String
    /// The preference-centre link's token (`/p/{token}`); scrubbed once sent.
    public var centreToken: String

    public init(contactID: UUID, to: String, name: String?, locale: String?, topicKey: String, expiresAt: Date, token: String, centreToken: String) {
        self.contactID = contactID
        self.to = to
        self.name = name
        self.locale = locale
        self.topicKey = topicKey
        self.expiresAt = expiresAt
        self.token = token
        self.centreToken = centreToken
    }

    public static func open(_ item: OutboxItem, masterKey: MasterKey) throws -> Self {
        try JSONDecoder.iso.decode(Self.self, from: masterKey.open(item.payload, context: item.id))
    }

    /// Whether this email is still worth sending: the grant it asks about is
    /// unchanged (not renewed, withdrawn or expired meanwhile) and the person
    /// has not objected or been erased.
    public func stillDue(in store: any LedgerStore, masterKey: MasterKey, at now: Date) async throws -> Bool {
        // The address it was written to must still be theirs (a link to an old inbox would
        // let its reader renew), and the link must still work (not rotated).
        guard let contact = try await store.contact(id: contactID), !contact.isErased, contact.objectedAt == nil, contact.email.value == to,
              let topic = try await store.topic(key: topicKey), topic.isActive, topic.repermissionDaysBefore != nil,
              let (link, mac) = ContactLink.parse(token, purpose: .repermission), link.contactID == contactID, link.topicKey == topicKey,
              let secret = try await store.linkSecret(contactID: contactID),
              link.verify(mac: mac, secret: secret, key: masterKey.derivedKey(purpose: Ledger.linkKeyPurpose)) else { return false }
        let preference = try await store.preferences(contactID: contactID).first { $0.topicKey == topicKey }
        return preference?.state == .granted && preference?.expiresAt == expiresAt && expiresAt > now
    }

    /// The payload to keep once sent: the same facts without the links, which act as the person.
    public func scrubbed(masterKey: MasterKey, itemID: UUID) throws -> Data {
        var copy = self
        copy.token = "[sent]"
        copy.centreToken = "[sent]"
        return try masterKey.seal(JSONEncoder.sortedISO.encode(copy), context: itemID)
    }
}

extension Ledger {
    /// Queues a re-permission email for every live grant inside its topic's
    /// window (`repermissionDaysBefore` days before it expires), up to `limit`
    /// at a time; returns how many were queued. Each grant is asked at most
    /// once, whatever the number of instances or restarts: the request and its
    /// email are written together, keyed by the grant. People who objected to
    /// direct marketing or were erased are never asked.
    @discardableResult
    public func queueRepermissions(limit: Int = 200) async throws -> Int {
        let windows = try await store.topics(includeRetired: false).compactMap { topic in
            topic.consentLifetimeDays == nil ? nil : topic.repermissionDaysBefore
        }
        guard let widest = windows.max() else { return 0 }
        let at = now
        var queued = 0
        for due in try await store.dueRepermissions(now: at, horizon: at.addingTimeInterval(TimeInterval(widest) * 86_400), limit: limit) {
            guard let contact = try await store.contact(id: due.contactID), !contact.isErased, contact.objectedAt == nil else { continue }
            let renew = try await linkToken(ContactLink(purpose: .repermission, contactID: contact.id, topicKey: due.topicKey))
            let centre = try await linkToken(ContactLink(purpose: .preferenceCentre, contactID: contact.id))
            let email = RepermissionEmail(contactID: contact.id, to: contact.email.value, name: contact.name, locale: contact.locale,
                                          topicKey: due.topicKey, expiresAt: due.expiresAt, token: renew, centreToken: centre)
            let itemID = environment.newID()
            let item = OutboxItem(id: itemID, contactID: contact.id, kind: RepermissionEmail.kind,
                                  payload: try masterKey.seal(JSONEncoder.sortedISO.encode(email), context: itemID), nextAttemptAt: at, createdAt: at)
            let request = RepermissionRequest(contactID: contact.id, topicKey: due.topicKey, grantExpiresAt: due.expiresAt, sentAt: at, outboxID: itemID)
            if try await store.insertRepermission(request, email: item) { queued += 1 }
        }
        return queued
    }

    /// What a re-permission link shows: the person, the topic and its current notice, and their grant.
    public struct Renewal: Sendable {
        public var contact: Contact
        public var topic: Topic
        public var notice: Notice?
        public var preference: Preference?
    }

    /// Reads a re-permission link; nil when it is not a valid link of this instance.
    public func renewal(token: String) async throws -> Renewal? {
        guard let (link, contact) = try await resolveLink(token, purpose: .repermission), !contact.isErased,
              let key = link.topicKey, let topic = try await store.topic(key: key) else { return nil }
        let notice = try await store.notice(topicKey: key, version: topic.currentNoticeVersion)
        let preference = try await store.preferences(contactID: contact.id).first { $0.topicKey == key }
        return Renewal(contact: contact, topic: topic, notice: notice, preference: preference)
    }

    /// Renews the grant a re-permission link names: a fresh `granted` event
    /// (source `email_link`) with the notice version the page showed, the
    /// person's address and browser as evidence, and a new lifetime.
    public func renew(token: String, noticeVersion: Int?, ipAddress: String?, userAgent: String?) async throws -> (Renewal, ChangeResult)? {
        guard let renewal = try await renewal(token: token) else { return nil }
        let result = try await recordChange(ChangeRequest(
            contactID: renewal.contact.id, changes: [TopicChange(topicKey: renewal.topic.key, intent: .renew, noticeVersion: noticeVersion)],
            source: .emailLink, actor: .subject,
            evidence: Evidence(personal: .observed(ipAddress: ipAddress, userAgent: userAgent, note: "renewed from a re-permission email")),
            changesField: "topics"))
        return (renewal, result)
    }
}
