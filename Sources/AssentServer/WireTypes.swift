import AssentCore
import AssentStore
import Foundation

// Request and response bodies of the JSON API. They are the contract
// described by Resources/openapi.json; change both together.

// MARK: Requests

struct CreateTopicBody: StrictBody {
    static let allowedKeys: Set<String> = ["key", "title", "description", "category", "requiresDoubleOptIn", "consentLifetimeDays",
                                           "repermissionDaysBefore", "notice"]
    var key: String
    var title: String
    var description: String?
    var category: String?
    var requiresDoubleOptIn: Bool?
    var consentLifetimeDays: Int?
    var repermissionDaysBefore: Int?
    var notice: String
}

struct PatchTopicBody: StrictBody {
    static let allowedKeys: Set<String> = ["title", "description", "category", "requiresDoubleOptIn", "consentLifetimeDays", "repermissionDaysBefore"]
    var title: String?
    var description: String?
    var category: String?
    var requiresDoubleOptIn: Bool?
    var consentLifetimeDays: Patch<Int>
    var repermissionDaysBefore: Patch<Int>

    enum CodingKeys: String, CodingKey {
        case title, description, category, requiresDoubleOptIn, consentLifetimeDays, repermissionDaysBefore
    }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        title = try c.decodeIfPresent(String.self, forKey: .title)
        description = try c.decodeIfPresent(String.self, forKey: .description)
        category = try c.decodeIfPresent(String.self, forKey: .category)
        requiresDoubleOptIn = try c.decodeIfPresent(Bool.self, forKey: .requiresDoubleOptIn)
        consentLifetimeDays = try c.decodePatch(Int.self, forKey: .consentLifetimeDays)
        repermissionDaysBefore = try c.decodePatch(Int.self, forKey: .repermissionDaysBefore)
    }
}

struct NewNoticeBody: StrictBody {
    static let allowedKeys: Set<String> = ["text"]
    var text: String
}

struct CreateContactBody: StrictBody {
    static let allowedKeys: Set<String> = ["email", "name", "externalId", "locale", "freshConsent"]
    var email: String
    var name: String?
    var externalId: String?
    var locale: String?
    /// For an address on the suppression list (an erased person): the evidence of their fresh consent.
    var freshConsent: String?
}

struct PatchContactBody: StrictBody {
    static let allowedKeys: Set<String> = ["email", "name", "externalId", "locale"]
    var email: String?
    var name: Patch<String>
    var externalId: Patch<String>
    var locale: Patch<String>

    enum CodingKeys: String, CodingKey {
        case email, name, externalId, locale
    }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        email = try c.decodeIfPresent(String.self, forKey: .email)
        name = try c.decodePatch(String.self, forKey: .name)
        externalId = try c.decodePatch(String.self, forKey: .externalId)
        locale = try c.decodePatch(String.self, forKey: .locale)
    }
}

struct EvidenceBody: StrictBody {
    static let allowedKeys: Set<String> = ["ip", "userAgent", "note", "formId", "formVersion"]
    var ip: String?
    var userAgent: String?
    var note: String?
    var formId: String?
    var formVersion: Int?
}

struct PreferenceItemBody: StrictBody {
    static let allowedKeys: Set<String> = ["topic", "granted", "noticeVersion"]
    var topic: String
    var granted: Bool
    var noticeVersion: Int?
}

struct SetPreferencesBody: StrictBody {
    static let allowedKeys: Set<String> = ["source", "channel", "occurredAt", "evidence", "batchId", "preferences"]
    var source: String
    var channel: String?
    var occurredAt: Date?
    var evidence: Strict<EvidenceBody>?
    var batchId: String?
    var preferences: [Strict<PreferenceItemBody>]
}

struct CreateKeyBody: StrictBody {
    static let allowedKeys: Set<String> = ["name", "scope"]
    var name: String
    var scope: String
}

// MARK: Responses

struct NoticeJSON: Encodable {
    var topic: String
    var version: Int
    var text: String
    var createdAt: Date

    init(_ n: Notice) {
        topic = n.topicKey
        version = n.version
        text = n.text
        createdAt = n.createdAt
    }
}

struct TopicJSON: Encodable {
    var key: String
    var title: String
    var description: String
    var category: String
    var status: String
    var requiresDoubleOptIn: Bool
    var consentLifetimeDays: Int?
    var repermissionDaysBefore: Int?
    var currentNoticeVersion: Int
    var notice: NoticeJSON?
    var createdAt: Date
    var updatedAt: Date

    init(_ t: Topic, notice: Notice? = nil) {
        key = t.key
        title = t.title
        description = t.description
        category = t.category
        status = t.status.rawValue
        requiresDoubleOptIn = t.requiresDoubleOptIn
        consentLifetimeDays = t.consentLifetimeDays
        repermissionDaysBefore = t.repermissionDaysBefore
        currentNoticeVersion = t.currentNoticeVersion
        self.notice = notice.map(NoticeJSON.init)
        createdAt = t.createdAt
        updatedAt = t.updatedAt
    }

    enum CodingKeys: String, CodingKey {
        case key, title, description, category, status, requiresDoubleOptIn, consentLifetimeDays, repermissionDaysBefore, currentNoticeVersion, notice
        case createdAt, updatedAt
    }

    // Absent optionals are written as null so every field is always present.
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(key, forKey: .key)
        try c.encode(title, forKey: .title)
        try c.encode(description, forKey: .description)
        try c.encode(category, forKey: .category)
        try c.encode(status, forKey: .status)
        try c.encode(requiresDoubleOptIn, forKey: .requiresDoubleOptIn)
        try c.encode(consentLifetimeDays, forKey: .consentLifetimeDays)
        try c.encode(repermissionDaysBefore, forKey: .repermissionDaysBefore)
        try c.encode(currentNoticeVersion, forKey: .currentNoticeVersion)
        if let notice { try c.encode(notice, forKey: .notice) }
        try c.encode(createdAt, forKey: .createdAt)
        try c.encode(updatedAt, forKey: .updatedAt)
    }
}

struct ContactJSON: Encodable {
    var id: String
    var email: String
    var name: String?
    var externalId: String?
    var locale: String?
    var createdAt: Date
    var updatedAt: Date
    var erasedAt: Date?
    var objectedAt: Date?

    init(_ c: Contact) {
        id = c.id.uuidString.lowercased()
        email = c.email.value
        name = c.name
        externalId = c.externalID
        locale = c.locale
        createdAt = c.createdAt
        updatedAt = c.updatedAt
        erasedAt = c.erasedAt
        objectedAt = c.objectedAt
    }

    enum CodingKeys: String, CodingKey { case id, email, name, externalId, locale, createdAt, updatedAt, erasedAt, objectedAt }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(email, forKey: .email)
        try c.encode(name, forKey: .name)
        try c.encode(externalId, forKey: .externalId)
        try c.encode(locale, forKey: .locale)
        try c.encode(createdAt, forKey: .createdAt)
        try c.encode(updatedAt, forKey: .updatedAt)
        try c.encode(erasedAt, forKey: .erasedAt)
        try c.encode(objectedAt, forKey: .objectedAt)
    }
}

struct PreferenceJSON: Encodable {
    var topic: String
    var title: String
    var category: String
    var state: String
    /// The Yes/No a CRM field would show: true only for a live grant.
    var mayEmail: Bool
    var since: Date?
    var expiresAt: Date?

    enum CodingKeys: String, CodingKey { case topic, title, category, state, mayEmail, since, expiresAt }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(topic, forKey: .topic)
        try c.encode(title, forKey: .title)
        try c.encode(category, forKey: .category)
        try c.encode(state, forKey: .state)
        try c.encode(mayEmail, forKey: .mayEmail)
        try c.encode(since, forKey: .since)
        try c.encode(expiresAt, forKey: .expiresAt)
    }
}

struct EventJSON: Encodable {
    struct ActorJSON: Encodable {
        var kind: String
        var id: String?
        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: AnyKey.self)
            try c.encode(kind, forKey: AnyKey(stringValue: "kind"))
            try c.encode(id, forKey: AnyKey(stringValue: "id"))
        }
    }

    struct EvidenceJSON: Encodable {
        var ip: String?
        var userAgent: String?
        var note: String?
        var formId: String?
        var formVersion: Int?
        var shredded: Bool
        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: AnyKey.self)
            try c.encode(ip, forKey: AnyKey(stringValue: "ip"))
            try c.encode(userAgent, forKey: AnyKey(stringValue: "userAgent"))
            try c.encode(note, forKey: AnyKey(stringValue: "note"))
            try c.encode(formId, forKey: AnyKey(stringValue: "formId"))
            try c.encode(formVersion, forKey: AnyKey(stringValue: "formVersion"))
            try c.encode(shredded, forKey: AnyKey(stringValue: "shredded"))
        }
    }

    var id: String
    var contactId: String
    var seq: Int64
    var topic: String
    var action: String
    var from: String
    var to: String
    var source: String
    var channel: String?
    var actor: ActorJSON
    var occurredAt: Date
    var recordedAt: Date
    var expiresAt: Date?
    var noticeVersion: Int?
    var batchId: String?
    var evidence: EvidenceJSON
    var hash: String
    var prevHash: String

    init(_ e: ConsentEvent, personal: PersonalEvidence?, shredded: Bool) {
        id = e.id.uuidString.lowercased()
        contactId = e.contactID.uuidString.lowercased()
        seq = e.seq
        topic = e.topicKey
        action = e.action.rawValue
        from = e.fromState.rawValue
        to = e.toState.rawValue
        source = e.source.rawValue
        channel = e.channel?.rawValue
        actor = ActorJSON(kind: e.actor.kind.rawValue, id: e.actor.id)
        occurredAt = e.occurredAt
        recordedAt = e.recordedAt
        expiresAt = e.expiresAt
        noticeVersion = e.noticeVersion
        batchId = e.batchID
        evidence = EvidenceJSON(ip: personal?.ipAddress, userAgent: personal?.userAgent, note: personal?.note,
                                formId: e.formID, formVersion: e.formVersion, shredded: shredded)
        hash = e.hash.hexString
        prevHash = e.prevHash.hexString
    }

    enum CodingKeys: String, CodingKey {
        case id, contactId, seq, topic, action, from, to, source, channel, actor, occurredAt, recordedAt, expiresAt, noticeVersion, batchId, evidence, hash, prevHash
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(contactId, forKey: .contactId)
        try c.encode(seq, forKey: .seq)
        try c.encode(topic, forKey: .topic)
        try c.encode(action, forKey: .action)
        try c.encode(from, forKey: .from)
        try c.encode(to, forKey: .to)
        try c.encode(source, forKey: .source)
        try c.encode(channel, forKey: .channel)
        try c.encode(actor, forKey: .actor)
        try c.encode(occurredAt, forKey: .occurredAt)
        try c.encode(recordedAt, forKey: .recordedAt)
        try c.encode(expiresAt, forKey: .expiresAt)
        try c.encode(noticeVersion, forKey: .noticeVersion)
        try c.encode(batchId, forKey: .batchId)
        try c.encode(evidence, forKey: .evidence)
        try c.encode(hash, forKey: .hash)
        try c.encode(prevHash, forKey: .prevHash)
    }
}

struct UnchangedJSON: Encodable {
    var topic: String
    var state: String
    var reason: String
}

struct ChangeResultJSON: Encodable {
    var contactId: String
    var recorded: [EventJSON]
    var unchanged: [UnchangedJSON]
    var message: String
    var preferences: [PreferenceJSON]
    /// Topics a confirmation email was queued for (double opt-in).
    var confirmationRequestedFor: [String]
}

struct PageJSON<Item: Encodable>: Encodable {
    var items: [Item]
    var nextCursor: String?

    enum CodingKeys: String, CodingKey { case items, nextCursor }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(items, forKey: .items)
        try c.encode(nextCursor, forKey: .nextCursor)
    }
}

struct ListJSON<Item: Encodable>: Encodable {
    var items: [Item]
}

struct CheckJSON: Encodable {
    var email: String
    var topic: String
    var allowed: Bool
    var reason: String
    var contactId: String?
    var since: Date?
    var expiresAt: Date?

    enum CodingKeys: String, CodingKey { case email, topic, allowed, reason, contactId, since, expiresAt }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(email, forKey: .email)
        try c.encode(topic, forKey: .topic)
        try c.encode(allowed, forKey: .allowed)
        try c.encode(reason, forKey: .reason)
        try c.encode(contactId, forKey: .contactId)
        try c.encode(since, forKey: .since)
        try c.encode(expiresAt, forKey: .expiresAt)
    }

    /// The bytes `JSONCoding.encoder` writes for this (sorted keys, a trailing newline), written
    /// directly: the send-time check is the hottest request, and JSONEncoder was a tenth of it.
    /// A test holds the two equal.
    var encoded: Data {
        var out = [UInt8]()
        out.reserveCapacity(224)
        func raw(_ text: StaticString) { text.withUTF8Buffer { out.append(contentsOf: $0) } }
        func date(_ value: Date?) {
            guard let value else { return raw("null") }
            out.append(UInt8(ascii: "\""))
            UTCTime.appendRFC3339(&out, millisecondsSince1970: value.millisecondsSince1970)
            out.append(UInt8(ascii: "\""))
        }
        raw("{\"allowed\":")
        if allowed { raw("true") } else { raw("false") }
        raw(",\"contactId\":")
        if let contactId { JSONBytes.appendString(contactId, to: &out) } else { raw("null") }
        raw(",\"email\":")
        JSONBytes.appendString(email, to: &out)
        raw(",\"expiresAt\":")
        date(expiresAt)
        raw(",\"reason\":")
        JSONBytes.appendString(reason, to: &out)
        raw(",\"since\":")
        date(since)
        raw(",\"topic\":")
        JSONBytes.appendString(topic, to: &out)
        raw("}\n")
        return Data(out)
    }
}

struct KeyJSON: Encodable {
    var id: String
    var name: String
    var scope: String
    var createdAt: Date
    var revokedAt: Date?
    /// Present once, in the response that created the key.
    var token: String?

    init(_ k: APIKey, token: String? = nil) {
        id = k.id
        name = k.name
        scope = k.scope.rawValue
        createdAt = k.createdAt
        revokedAt = k.revokedAt
        self.token = token
    }

    enum CodingKeys: String, CodingKey { case id, name, scope, createdAt, revokedAt, token }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(name, forKey: .name)
        try c.encode(scope, forKey: .scope)
        try c.encode(createdAt, forKey: .createdAt)
        try c.encode(revokedAt, forKey: .revokedAt)
        if let token { try c.encode(token, forKey: .token) }
    }
}

struct HealthJSON: Encodable {
    var status: String
}

struct ReceiptJSON: Encodable {
    var id: String
    var receipt: ConsentReceipt
    /// The receipt signed as a compact JWS (EdDSA); verify with /.well-known/jwks.json.
    var jws: String
}


