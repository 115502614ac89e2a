import AssentCore
import Crypto
import Foundation

/// One topic's part of a change request.
public struct TopicChange: Sendable, Equatable {
    public var topicKey: String
    public var intent: ConsentIntent
    /// The notice version the person was shown; nil = the topic's current one.
    public var noticeVersion: Int?

    public init(topicKey: String, intent: ConsentIntent, noticeVersion: Int? = nil) {
        self.topicKey = topicKey
        self.intent = intent
        self.noticeVersion = noticeVersion
    }
}

/// Everything needed to record changes for one contact, from any source.
public struct ChangeRequest: Sendable {
    public var contactID: UUID
    public var changes: [TopicChange]
    public var source: ConsentSource
    public var channel: StaffChannel?
    public var actor: Actor
    /// When the person said it; nil = now. May be in the past (verbal
    /// instructions keyed in later), never in the future.
    public var occurredAt: Date?
    public var evidence: Evidence
    public var batchID: String?
    /// The JSON path prefix naming `changes` in error messages.
    public var changesField: String
    /// Ask for email confirmation of every opt-in from a confirming source
    /// (a form set to double opt-in), not only for topics that require it.
    public var requireConfirmation = false

    public init(
        contactID: UUID, changes: [TopicChange], source: ConsentSource, channel: StaffChannel? = nil,
        actor: Actor, occurredAt: Date? = nil, evidence: Evidence = Evidence(), batchID: String? = nil,
        changesField: String = "preferences", requireConfirmation: Bool = false
    ) {
        self.contactID = contactID
        self.changes = changes
        self.source = source
        self.channel = channel
        self.actor = actor
        self.occurredAt = occurredAt
        self.evidence = evidence
        self.batchID = batchID
        self.changesField = changesField
        self.requireConfirmation = requireConfirmation
    }
}

/// What `recordChange` did: the events it appended and the topics it left alone, with why.
public struct ChangeResult: Sendable {
    public struct Unchanged: Sendable, Equatable {
        public var topicKey: String
        public var state: PreferenceState
        public var reason: String

        public init(topicKey: String, state: PreferenceState, reason: String) {
            self.topicKey = topicKey
            self.state = state
            self.reason = reason
        }
    }

    public var contactID: UUID
    public var events: [ConsentEvent]
    public var unchanged: [Unchanged]
    public var preferences: [Preference]
    /// When a confirmation email was queued: every topic it asks to confirm.
    public var confirmationRequestedFor: [String] = []
}

/// An event with its evidence opened for reading.
public struct TimelineEntry: Sendable {
    public var event: ConsentEvent
    /// nil when none was recorded or when the contact's key was shredded.
    public var personal: PersonalEvidence?
    /// True when evidence exists but its key is gone (erased contact).
    public var evidenceShredded: Bool
}

/// The answer to "may I send topic T to this email?".
public struct CheckResult: Sendable, Equatable {
    public enum Reason: String, Sendable {
        case granted
        case none
        case pending
        case withdrawn
        case expired
        case unknown
        case retired
        /// The address belonged to someone who was erased.
        case suppressed
    }

    public var allowed: Bool
    public var reason: Reason
    public var contactID: UUID?
    public var since: Date?
    public var expiresAt: Date?

    public init(allowed: Bool, reason: Reason, contactID: UUID? = nil, since: Date? = nil, expiresAt: Date? = nil) {
        self.allowed = allowed
        self.reason = reason
        self.contactID = contactID
        self.since = since
        self.expiresAt = expiresAt
    }
}

public struct VerifyReport: Sendable {
    public var contacts: Int
    public var events: Int
    public var breaks: [ChainBreak]
    public var isIntact: Bool { breaks.isEmpty }
}

/// One verification of every chain, as recorded for operators (`/metrics`).
public struct VerifyRun: Sendable, Equatable {
    public var finishedAt: Date
    public var seconds: Double
    public var contacts: Int
    public var events: Int
    /// Contacts whose chain, head or projection did not verify.
    public var breaks: Int
    /// Who ran it: `assent verify` or the server's schedule.
    public var origin: String

    public init(finishedAt: Date, seconds: Double, contacts: Int, events: Int, breaks: Int, origin: String) {
        self.finishedAt = finishedAt
        self.seconds = seconds
        self.contacts = contacts
        self.events = events
        self.breaks = breaks
        self.origin = origin
    }
}

/// The outbox payload of a double opt-in email.
public struct ConfirmationEmail: Codable, Sendable, Equatable {
    public static let kind = "email.confirmation"
    public var contactID: UUID
    public var to: String
    public var name: String?
    public var locale: String?
    /// The link's secret; scrubbed from the outbox once sent.
    public var token: String
    public var topics: [String]
    public var expiresAt: Date

    public init(contactID: UUID, to: String, name: String?, locale: String?, token: String, topics: [String], expiresAt: Date) {
        self.contactID = contactID
        self.to = to
        self.name = name
        self.locale = locale
        self.token = token
        self.topics = topics
        self.expiresAt = expiresAt
    }

}

/// An outbox email whose payload holds a link's secret: sealed with the
/// master key while queued, and kept without the secret once sent.
public protocol LinkEmail: Codable, Sendable {
    var token: String { get set }
}

extension LinkEmail {
    /// Opens an outbox item's sealed payload.
    public static func open(_ item: OutboxItem, masterKey: MasterKey) throws -> Self {
        try JSONDecoder.iso.decode(Self.self, from: masterKey.open(item.payload, context: item.id))
    }

    /// The payload to keep once sent: the same facts without the link's secret.
    public func scrubbed(masterKey: MasterKey, itemID: UUID) throws -> Data {
        var copy = self
        copy.token = "[sent]"
        return try masterKey.seal(JSONEncoder.sortedISO.encode(copy), context: itemID)
    }
}

extension ConfirmationEmail: LinkEmail {}

/// The outbox payload of a receipt email: the events whose signed receipts to send.
public struct ReceiptEmail: Codable, Sendable, Equatable {
    public static let kind = "email.receipt"
    public var contactID: UUID
    public var to: String
    public var name: String?
    public var locale: String?
    public var eventIDs: [UUID]

    public init(contactID: UUID, to: String, name: String?, locale: String?, eventIDs: [UUID]) {
        self.contactID = contactID
        self.to = to
        self.name = name
        self.locale = locale
        self.eventIDs = eventIDs
    }

    public static func open(_ item: OutboxItem, masterKey: MasterKey) throws -> ReceiptEmail {
        try JSONDecoder.iso.decode(ReceiptEmail.self, from: masterKey.open(item.payload, context: item.id))
    }
}

extension ConfirmationToken {
    public static func hash(_ token: String) -> Data { APIKey.hash(secret: token) }

    /// What the link can do at `now`.
    public func status(at now: Date) -> Ledger.LinkStatus {
        if supersededAt != nil { return .superseded }
        if isUsedUp { return .used }
        if expiresAt <= now { return .expired }
        return .valid(self)
    }
}

extension JSONEncoder {
    static let sortedISO: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .millisecondsSince1970
        return encoder
    }()
}

extension JSONDecoder {
    static let iso: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .millisecondsSince1970
        return decoder
    }()
}

/// Injectable clock and identifier source, so tests fix time and ids.
public struct LedgerEnvironment: Sendable {
    public var now: @Sendable () -> Date
    public var newID: @Sendable () -> UUID

    public init(now: @escaping @Sendable () -> Date = { Date() }, newID: @escaping @Sendable () -> UUID = { UUID.timeOrdered() }) {
        self.now = now
        self.newID = newID
    }

    public static let live = LedgerEnvironment()
}

/// The application service over a store: topics, contacts, and the one write
/// path for consent. The HTTP API, the CLI and (later) forms and imports all
/// change preferences through `recordChange` and nothing else.
public struct Ledger: Sendable {
    public let store: any LedgerStore
    public let masterKey: MasterKey
    public let environment: LedgerEnvironment
    /// How many times a write is rebuilt when another writer moved the same contact's head.
    public var maxAttempts = 64
    /// How far in the future `occurredAt` may be, for clock skew between systems.
    public var allowedClockSkew: TimeInterval = 300
    /// How long a double opt-in link stays valid.
    public var confirmationLifetime: TimeInterval = 7 * 86_400
    /// Sources whose opt-ins need email confirmation when the topic asks for
    /// it; staff, API and import entries record `granted` with their evidence.
    /// The preference centre is among them because its link lives on in old
    /// newsletters that may have been forwarded. The portal is not: its
    /// sign-in link works once, for minutes, and proves the inbox (its
    /// evidence note says when that link was sent).
    public var confirmationSources: Set<ConsentSource> = [.form, .preferenceCentre]
    /// A re-request for topics already pending sends the confirmation email
    /// again only when the last one is at least this old, so nobody can flood
    /// an inbox by posting a form over and over.
    public var confirmationResendInterval: TimeInterval = 3_600
    /// Hashes staff passwords (bcrypt, set by the server and the CLI).
    public var passwordHasher: PasswordHasher = .unavailable
    /// Which changes send the person their signed receipt by email. By
    /// default a double opt-in confirmation; add `granted` (staff, API) and
    /// `withdrawn` to send receipts for those too.
    public var receiptEmailActions: Set<ConsentAction> = [.confirmed]

    /// Enabled webhook endpoints, shared by copies of this ledger.
    let webhookCache = WebhookEndpointCache()
    /// Topics for the send-time checks, and API keys for every request (see `ShortLivedCache`).
    let topicCache = ShortLivedCache<String, Topic>()
    /// Every topic, retired ones included, for showing a preference grid.
    let topicListCache = ShortLivedCache<Bool, [Topic]>()
    public let apiKeyCache = ShortLivedCache<String, APIKey>()
    /// Receipt signatures made before (deterministic, so never stale: see `SignatureMemo`).
    let receiptSignatures = SignatureMemo()
    /// Whole receipt tokens made before (keyed by the receipt itself: see `ReceiptTokenMemo`).
    let receiptTokens = ReceiptTokenMemo()
    /// Told of the events of every committed change (the server's metrics); shared by copies of this ledger.
    public let observers = LedgerObservers()

    /// Keys derived from the master key once (HKDF on every use was a twentieth of an import's time).
    /// The suppression list's key is kept as an HMAC already keyed with it, copied for each address
    /// (keying one per address, two SHA-256 blocks of key padding, was a tenth of an import's checking
    /// pass). Its hash states are copied on write, so copies never share what they hash.
    let suppressionMAC: HMAC<SHA256>
    let linkSigner: ContactLink.Signer

    public init(store: any LedgerStore, masterKey: MasterKey, environment: LedgerEnvironment = .live) {
        self.store = store
        self.masterKey = masterKey
        self.environment = environment
        self.suppressionMAC = HMAC<SHA256>(key: masterKey.derivedKey(purpose: "suppression/v1"))
        self.linkSigner = ContactLink.Signer(key: masterKey.derivedKey(purpose: Self.linkKeyPurpose))
    }

    var now: Date { environment.now().truncatedToMilliseconds }

    // MARK: Topics

    public func createTopic(_ topic: Topic, noticeText: String) async throws -> Topic {
        var topic = topic
        let at = now
        topic.createdAt = at
        topic.updatedAt = at
        topic.currentNoticeVersion = 1
        topic.status = .active
        try validateAll([{ try topic.validate() }, { try Notice.validateText(noticeText) }])
        do {
            try await store.insertTopic(topic, notice: Notice(topicKey: topic.key, version: 1, text: noticeText, createdAt: at))
            topicCache.invalidate(topic.key)
            topicListCache.invalidateAll()
        } catch StoreError.duplicate {
            throw DomainError.conflict(field: "key", message: "a topic with key '\(topic.key)' already exists")
        }
        return topic
    }

    public func existingTopic(_ key: String, field: String = "topic") async throws -> Topic {
        guard let topic = try await store.topic(key: key) else { throw DomainError.notFound(what: "topic", id: key) }
        return topic
    }

    /// Applies `edit` to the topic's mutable fields; the key, status and notice are not editable here.
    public func updateTopic(key: String, _ edit: (inout Topic) -> Void) async throws -> Topic {
        let existing = try await existingTopic(key)
        var topic = existing
        edit(&topic)
        topic.key = existing.key
        topic.status = existing.status
        topic.currentNoticeVersion = existing.currentNoticeVersion
        topic.createdAt = existing.createdAt
        try topic.validate()
        if topic == existing { return existing }
        topic.updatedAt = now
        try await store.updateTopic(topic)
        topicCache.invalidate(topic.key)
        topicListCache.invalidateAll()
        return topic
    }

    /// Retires a topic: its history stays, it refuses new opt-ins, and it no longer allows sending.
    public func retireTopic(key: String) async throws -> Topic {
        var topic = try await existingTopic(key)
        guard topic.status != .retired else { return topic }
        topic.status = .retired
        topic.updatedAt = now
        try await store.updateTopic(topic)
        topicCache.invalidate(topic.key)
        topicListCache.invalidateAll()
        return topic
    }

    /// Publishes a new notice version; earlier versions stay readable.
    public func publishNotice(topicKey: String, text: String) async throws -> Notice {
        try Notice.validateText(text, field: "text")
        _ = try await existingTopic(topicKey)
        if let current = try await store.notices(topicKey: topicKey).last, current.text == text {
            return current
        }
        let notice = try await store.appendNotice(topicKey: topicKey, text: text, at: now)
        // Changes read the topic (its current notice version) through the cache.
        topicCache.invalidate(topicKey)
        topicListCache.invalidateAll()
        return notice
    }

    // MARK: Contacts

    /// Adds a contact. An address on the suppression list (an erased person)
    /// is refused unless the person is signing up themselves (`bySubject`) or
    /// the caller states the evidence of their fresh consent, which is audited.
    public func createContact(email: EmailAddress, name: String?, externalID: String?, locale: String?,
                              bySubject: Bool = false, freshConsent: String? = nil, actor: String? = nil) async throws -> Contact {
        if !bySubject, let suppressed = try await store.suppression(emailHash: suppressionHash(email)) {
            let evidence = freshConsent?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            guard !evidence.isEmpty else {
                throw DomainError.conflict(field: "email", message: "this address was erased on \(suppressed.erasedAt.isoDay) and is suppressed; "
                                           + "add it again only with evidence of the person's fresh consent (freshConsent)")
            }
            try TextCheck.check(evidence, field: "freshConsent", max: Limits.noteLength, allowNewlines: true)
        }
        let at = now
        let contact = Contact(id: environment.newID(), email: email, name: name, externalID: externalID, locale: locale, createdAt: at)
        try contact.validate()
        let wrapped = try masterKey.wrap(.generate(), contactID: contact.id)
        do {
            let webhooks = try await webhookDeliveries(.contactCreated, contact: contact, at: at, data: [
                "contact": WebhookPayload.contact(contact), "name": contact.name ?? NSNull(), "locale": contact.locale ?? NSNull(),
                "createdAt": WebhookPayload.iso(at),
            ])
            try await store.insertContact(NewContact(contact: contact, wrappedKey: wrapped, webhooks: webhooks, linkSecret: Self.randomSecret()))
        } catch StoreError.duplicate(let field, let value) {
            throw DomainError.conflict(field: field, message: "a contact with \(field) '\(value)' already exists")
        }
        if let freshConsent, !bySubject, try await store.suppression(emailHash: suppressionHash(email)) != nil {
            try await audit(nil, "suppression_override", actorEmail: actor ?? "command line", target: "contact:\(contact.id.uuidString.lowercased())",
                            detail: "fresh consent: " + freshConsent)
        }
        return contact
    }

    /// Adds many contacts in one transaction (an import's group commit). The
    /// caller has checked suppression. If any address or external id is taken
    /// meanwhile, each is added on its own instead; results are in order,
    /// each new contact with its (empty) ledger state and wrapped key.
    public func createContacts(_ items: [(email: EmailAddress, name: String?, externalID: String?, locale: String?)]) async throws
        -> [Result<ContactSnapshot, any Error>] {
        let at = now
        var prepared: [NewContact] = []
        var results: [Result<ContactSnapshot, any Error>?] = Array(repeating: nil, count: items.count)
        var indices: [Int] = []
        for (i, item) in items.enumerated() {
            do {
                let contact = Contact(id: environment.newID(), email: item.email, name: item.name, externalID: item.externalID, locale: item.locale, createdAt: at)
                try contact.validate()
                let webhooks = try await webhookDeliveries(.contactCreated, contact: contact, at: at, data: [
                    "contact": WebhookPayload.contact(contact), "name": contact.name ?? NSNull(), "locale": contact.locale ?? NSNull(),
                    "createdAt": WebhookPayload.iso(at),
                ])
                prepared.append(NewContact(contact: contact, wrappedKey: try masterKey.wrap(.generate(), contactID: contact.id), webhooks: webhooks,
                                           linkSecret: Self.randomSecret()))
                indices.append(i)
            } catch {
                results[i] = .failure(error)
            }
        }
        do {
            try await store.insertContacts(prepared)
            for (n, i) in indices.enumerated() {
                let c = prepared[n].contact
                results[i] = .success(ContactSnapshot(contact: c, state: LedgerState(head: .empty(c.id), preferences: [:]), wrappedKey: prepared[n].wrappedKey))
            }
        } catch StoreError.duplicate {
            for i in indices {
                let item = items[i]
                do {
                    let c = try await createContact(email: item.email, name: item.name, externalID: item.externalID, locale: item.locale, bySubject: true)
                    results[i] = .success(ContactSnapshot(contact: c, state: try await store.ledgerState(contactID: c.id),
                                                          wrappedKey: try await store.wrappedKey(contactID: c.id)))
                } catch {
                    results[i] = .failure(error)
                }
            }
        }
        return results.map { $0! }
    }

    public func existingContact(_ id: UUID) async throws -> Contact {
        guard let contact = try await store.contact(id: id) else { throw DomainError.notFound(what: "contact", id: id.uuidString.lowercased()) }
        return contact
    }

    public func updateContact(id: UUID, _ edit: (inout Contact) -> Void) async throws -> Contact {
        let existing = try await existingContact(id)
        var contact = existing
        edit(&contact)
        contact.id = existing.id
        contact.createdAt = existing.createdAt
        try contact.validate()
        if contact == existing { return existing }
        contact.updatedAt = now
        do {
            try await store.updateContact(contact)
        } catch StoreError.duplicate(let field, let value) {
            throw DomainError.conflict(field: field, message: "a contact with \(field) '\(value)' already exists")
        }
        // Links sent to the old address must not prove ownership of the new one.
        if contact.email != existing.email {
            try await store.supersedeConfirmationTokens(contactID: contact.id, at: contact.updatedAt)
        }
        return contact
    }

    // MARK: The one write path

    /// Validates, reads the contact's current state, lets the state machine
    /// decide each topic, builds the chained events and commits them with the
    /// projection in one transaction. If another writer moved the contact's
    /// chain head meanwhile, it starts again from the read; nothing is lost or
    /// reordered. A request whose every topic is unchanged records nothing.
    public func recordChange(_ request: ChangeRequest) async throws -> ChangeResult {
        // The first attempt decides from one read of the contact, its key and its state together; a retry reads afresh.
        guard let snapshot = try await store.contactSnapshot(id: request.contactID) else {
            throw DomainError.notFound(what: "contact", id: request.contactID.uuidString.lowercased())
        }
        return try await writeWithRetry(request.contactID, first: snapshot.state, try await decider(request, preloaded: (snapshot, nil)))
    }

    /// Many changes, for different contacts, committed together in one
    /// transaction (group commit: one disk flush for the lot). Each is decided
    /// exactly as `recordChange` decides it; if any contact changed meanwhile,
    /// every change of the batch is recorded on its own instead. Results are
    /// in the order of the requests.
    public func recordChanges(_ requests: [ChangeRequest], snapshots: [UUID: ContactSnapshot] = [:]) async throws -> [Result<ChangeResult, any Error>] {
        precondition(Set(requests.map(\.contactID)).count == requests.count, "one request per contact in a batch")
        var results: [Result<ChangeResult, any Error>?] = Array(repeating: nil, count: requests.count)
        var commits: [(index: Int, commit: LedgerCommit, result: ChangeResult)] = []
        // Read once for the whole batch: the topics, and (when the caller has them) each contact with its state and key.
        let topics = Dictionary(uniqueKeysWithValues: try await store.topics(includeRetired: true).map { ($0.key, $0) })
        for (i, request) in requests.enumerated() {
            do {
                let snapshot = snapshots[request.contactID]
                let decide = try await decider(request, preloaded: (snapshot, topics))
                let state: LedgerState = if let snapshot { snapshot.state } else { try await store.ledgerState(contactID: request.contactID) }
                var plan = try await decide(state)
                plan.webhooks = try await webhookDeliveries(for: plan.events, contactID: request.contactID)
                let result = ChangeResult(contactID: request.contactID, events: plan.events, unchanged: plan.unchanged,
                                          preferences: plan.preferences(after: state).values.sorted { $0.topicKey < $1.topicKey },
                                          confirmationRequestedFor: plan.confirmationTopics)
                if plan.isEmpty {
                    results[i] = .success(result)
                } else {
                    var commit = LedgerCommit(contactID: request.contactID, expectedHead: state.head, events: plan.events,
                                              preferences: plan.changedPreferences, outbox: plan.outbox, issueToken: plan.issueToken, consumeToken: plan.consumeToken)
                    commit.webhooks = plan.webhooks
                    commits.append((i, commit, result))
                }
            } catch {
                results[i] = .failure(error)
            }
        }
        do {
            try await store.commit(batch: commits.map(\.commit))
            for c in commits { results[c.index] = .success(c.result) }
            observers.notify(commits.flatMap(\.commit.events))
        } catch StoreError.concurrentModification {
            for c in commits {
                do { results[c.index] = .success(try await recordChange(requests[c.index])) } catch { results[c.index] = .failure(error) }
            }
        }
        return results.map { $0! }
    }

    /// Checks a request and returns how to decide it from a contact's state
    /// (run again on every retry, so that it sees what changed meanwhile).
    private func decider(_ request: ChangeRequest, preloaded: (snapshot: ContactSnapshot?, topics: [String: Topic]?)? = nil)
        async throws -> (LedgerState) async throws -> Plan {
        let at = now
        let occurredAt = (request.occurredAt ?? at).truncatedToMilliseconds
        try validate(request, occurredAt: occurredAt, now: at)
        let target: Contact
        if let known = preloaded?.snapshot?.contact { target = known } else { target = try await existingContact(request.contactID) }
        if target.isErased { throw DomainError.gone(what: "contact", id: target.id.uuidString.lowercased()) }
        let contactKey: ContactKey
        if let snapshot = preloaded?.snapshot {
            guard let wrapped = snapshot.wrappedKey else {
                throw DomainError.invalid(field: "contact", "this contact has been erased; its preferences cannot change")
            }
            contactKey = try masterKey.unwrap(wrapped, contactID: request.contactID)
        } else {
            contactKey = try await self.contactKey(request.contactID)
        }
        let original = request

        return { state in
            // Read the contact and topics on every attempt, so that a retry
            // sees a topic retired or an email changed in the meantime (a
            // batch decides once, from what it read for the whole batch;
            // topics come through the one-second cache, see resolveTopics).
            // The contact read with the state, unless this is a retry on a state read since.
            let contact: Contact
            if let snapshot = preloaded?.snapshot, snapshot.state.head == state.head { contact = snapshot.contact } else {
                contact = try await existingContact(original.contactID)
            }
            if contact.isErased { throw DomainError.gone(what: "contact", id: contact.id.uuidString.lowercased()) }
            // After an objection to direct marketing only the person may opt in again.
            if let objected = contact.objectedAt, original.actor.kind != .subject,
               original.changes.contains(where: { $0.intent == .optIn || $0.intent == .request }) {
                throw DomainError.invalid(field: original.changesField, "the person objected to all direct marketing on \(objected.isoDay); "
                                          + "only their own opt-in (a form, the portal, the preference centre) can change that")
            }
            let topics = try await resolveTopics(original, known: preloaded?.topics ?? nil)
            // An opt-in from a source that cannot prove inbox ownership becomes a
            // request that the person confirms by email (double opt-in).
            var request = original
            for i in request.changes.indices where request.changes[i].intent == .optIn {
                let needed = topics[request.changes[i].topicKey]?.requiresDoubleOptIn == true || request.requireConfirmation
                if needed && confirmationSources.contains(request.source) {
                    request.changes[i].intent = .request
                }
            }
            let asked = Set(request.changes.filter { $0.intent == .request }.map(\.topicKey))
            var decided = try plan(request, topics: topics, state: state, occurredAt: occurredAt, recordedAt: at, key: contactKey)
            // Every pending topic of the contact goes into one new link, which
            // replaces older ones: a re-request re-sends and invalidates.
            let pending = decided.preferences(after: state).values.filter { $0.state == .pending }.map(\.topicKey).sorted()
            var resend = true
            if decided.events.isEmpty, let last = try await store.latestConfirmationToken(contactID: contact.id),
               last.supersededAt == nil, at.timeIntervalSince(last.createdAt) < confirmationResendInterval, Set(last.topics).isSuperset(of: pending) {
                resend = false // the person already has a recent link for all of these
            }
            if resend && !asked.isEmpty && !Set(pending).isDisjoint(with: asked) {
                let (token, item) = try confirmationRequest(contact: contact, topics: pending, at: at)
                decided.issueToken = token.record
                decided.outbox.append(item)
                decided.confirmationTopics = pending
            }
            if let item = try receiptEmail(for: decided.events, contact: contact, at: at) {
                decided.outbox.append(item)
            }
            return decided
        }
    }

    /// An outbox item that emails the person the receipts of those of `events`
    /// whose action is in `receiptEmailActions`; nil when there are none.
    private func receiptEmail(for events: [ConsentEvent], contact: Contact, at: Date) throws -> OutboxItem? {
        let chosen = events.filter { receiptEmailActions.contains($0.action) }
        guard !chosen.isEmpty else { return nil }
        let receipt = ReceiptEmail(contactID: contact.id, to: contact.email.value, name: contact.name, locale: contact.locale, eventIDs: chosen.map(\.id))
        let itemID = environment.newID()
        return OutboxItem(id: itemID, contactID: contact.id, kind: ReceiptEmail.kind,
                          payload: try masterKey.seal(JSONEncoder.sortedISO.encode(receipt), context: itemID), nextAttemptAt: at, createdAt: at)
    }

    /// Runs read -> decide -> commit, starting again from the read whenever
    /// another writer moved the contact's chain head in between.
    private func writeWithRetry(_ contactID: UUID, first: LedgerState? = nil, _ decide: (LedgerState) async throws -> Plan) async throws -> ChangeResult {
        var attempt = 0
        while true {
            attempt += 1
            let state = if attempt == 1, let first { first } else { try await store.ledgerState(contactID: contactID) }
            var plan = try await decide(state)
            plan.webhooks = try await webhookDeliveries(for: plan.events, contactID: contactID)
            let preferences = plan.preferences(after: state).values.sorted { $0.topicKey < $1.topicKey }
            let result = ChangeResult(contactID: contactID, events: plan.events, unchanged: plan.unchanged, preferences: preferences,
                                      confirmationRequestedFor: plan.confirmationTopics)
            if plan.isEmpty { return result }
            do {
                var commit = LedgerCommit(contactID: contactID, expectedHead: state.head, events: plan.events,
                                          preferences: plan.changedPreferences, outbox: plan.outbox,
                                          issueToken: plan.issueToken, consumeToken: plan.consumeToken)
                commit.webhooks = plan.webhooks
                try await store.commit(commit)
                observers.notify(commit.events)
                return result
            } catch StoreError.concurrentModification {
                if attempt >= maxAttempts { throw DomainError.contention(contactID: contactID) }
                // Back off a little, with jitter, so that competing writers interleave.
                let micros = UInt64.random(in: 0...UInt64(min(attempt, 20) * 500))
                try await Task.sleep(nanoseconds: micros * 1_000)
            }
        }
    }

    private func contactKey(_ contactID: UUID) async throws -> ContactKey {
        guard let wrapped = try await store.wrappedKey(contactID: contactID) else {
            throw DomainError.invalid(field: "contact", "this contact has been erased; its preferences cannot change")
        }
        return try masterKey.unwrap(wrapped, contactID: contactID)
    }

    /// A new confirmation link for `topics` and the email that carries it.
    private func confirmationRequest(contact: Contact, topics: [String], at: Date) throws -> (token: (text: String, record: ConfirmationToken), item: OutboxItem) {
        let text = randomToken(bytes: 32)
        let record = ConfirmationToken(hash: ConfirmationToken.hash(text), contactID: contact.id, topics: topics, createdAt: at,
                                       expiresAt: at.addingTimeInterval(confirmationLifetime))
        let email = ConfirmationEmail(contactID: contact.id, to: contact.email.value, name: contact.name, locale: contact.locale,
                                      token: text, topics: topics, expiresAt: record.expiresAt)
        let id = environment.newID()
        let payload = try masterKey.seal(JSONEncoder.sortedISO.encode(email), context: id)
        let item = OutboxItem(id: id, contactID: contact.id, kind: ConfirmationEmail.kind, payload: payload, nextAttemptAt: at, createdAt: at)
        return ((text, record), item)
    }

    /// What a confirmation link can do now.
    public enum LinkStatus: Sendable, Equatable {
        case valid(ConfirmationToken)
        case unknown
        case expired
        case superseded
        case used
    }

    public func linkStatus(token: String) async throws -> LinkStatus {
        guard let record = try await store.confirmationToken(hash: ConfirmationToken.hash(token)) else { return .unknown }
        return record.status(at: now)
    }

    /// Confirms pending topics through an emailed link (all of its remaining
    /// topics, or the chosen ones), recording `confirmed` with source
    /// `email_link` and the click's evidence. A link that is unknown, expired,
    /// superseded or used up changes nothing and says which.
    public func confirm(token: String, topics chosen: [String]? = nil, ipAddress: String?, userAgent: String?) async throws -> (LinkStatus, ChangeResult?) {
        let hash = ConfirmationToken.hash(token)
        // A click's details are evidence, not input to refuse: keep what is valid.
        let evidence = Evidence(personal: .observed(ipAddress: ipAddress, userAgent: userAgent))
        let status = try await linkStatus(token: token)
        guard case .valid(let record) = status else { return (status, nil) }
        if let chosen {
            let unknown = chosen.filter { !record.remainingTopics.contains($0) }
            if !unknown.isEmpty || chosen.isEmpty {
                throw DomainError.invalid(field: "topics", "choose among the link's remaining topics: \(record.remainingTopics.joined(separator: ", "))")
            }
        }
        let contactKey = try await contactKey(record.contactID)
        let at = now
        var outcome: LinkStatus = status
        let result = try await writeWithRetry(record.contactID) { state in
            // Read the link again on every attempt: a concurrent click may have used it.
            let current = try await linkStatus(token: token)
            guard case .valid(let fresh) = current else {
                outcome = current
                return Plan()
            }
            outcome = current
            let selection = (chosen ?? fresh.remainingTopics).filter { fresh.remainingTopics.contains($0) }
            var topics: [String: Topic] = [:]
            var changes: [TopicChange] = []
            var skipped: [ChangeResult.Unchanged] = []
            for key in selection {
                guard let topic = try await store.topic(key: key) else { continue }
                let state = state.preferences[key]?.effectiveState(at: at) ?? .none
                if state == .pending && topic.isActive {
                    topics[key] = topic
                    changes.append(TopicChange(topicKey: key, intent: .confirm))
                } else {
                    skipped.append(.init(topicKey: key, state: state, reason: topic.isActive ? "no longer pending (\(state.rawValue))" : "topic retired"))
                }
            }
            var decided = Plan()
            if !changes.isEmpty {
                decided = try plan(ChangeRequest(contactID: record.contactID, changes: changes, source: .emailLink, actor: Actor(kind: .subject, id: nil),
                                              evidence: evidence, changesField: "topics"),
                                topics: topics, state: state, occurredAt: at, recordedAt: at, key: contactKey)
            }
            decided.unchanged += skipped
            decided.consumeToken = (hash, selection)
            if let contact = try await store.contact(id: record.contactID), let item = try receiptEmail(for: decided.events, contact: contact, at: at) {
                decided.outbox.append(item)
            }
            return decided
        }
        if case .valid = outcome { return (.valid(record), result) }
        return (outcome, nil)
    }

    private func validate(_ request: ChangeRequest, occurredAt: Date, now: Date) throws {
        var problems: [ValidationError] = []
        if request.changes.isEmpty {
            problems.append(.init(field: request.changesField, "must name at least one topic"))
        }
        var seen: Set<String> = []
        for (i, change) in request.changes.enumerated() where !seen.insert(change.topicKey).inserted {
            problems.append(.init(field: "\(request.changesField)[\(i)].topic", "topic '\(change.topicKey)' appears more than once"))
        }
        if occurredAt.timeIntervalSince(now) > allowedClockSkew {
            problems.append(.init(field: "occurredAt", "must not be in the future"))
        }
        if occurredAt.timeIntervalSince1970 < 946_684_800 {
            problems.append(.init(field: "occurredAt", "must be after 2000-01-01"))
        }
        if request.source == .system && request.actor.kind != .system {
            problems.append(.init(field: "source", "'system' is reserved for changes Assent makes itself"))
        }
        // Assent itself only ever withdraws or expires; a yes comes from a person (found by the state-machine property test).
        if request.source == .system && request.changes.contains(where: { [.optIn, .request, .confirm, .renew].contains($0.intent) }) {
            problems.append(.init(field: "source", "Assent itself never opts anyone in: a yes is recorded from the person's source"))
        }
        if request.changes.contains(where: { $0.intent == .expire }) && request.source != .system {
            problems.append(.init(field: "source", "expiry is recorded by Assent itself (source system)"))
        }
        if request.changes.contains(where: { $0.intent == .renew }) && (request.source != .emailLink || request.actor.kind != .subject) {
            problems.append(.init(field: "source", "a renewal is recorded from the person's own re-permission link only (source email_link)"))
        }
        if request.source == .emailLink && request.actor.kind != .subject {
            problems.append(.init(field: "source", "'email_link' is recorded by Assent's own confirmation links only"))
        }
        do { try request.evidence.validate(source: request.source, channel: request.channel) } catch let DomainError.invalid(e) { problems += e }
        if let batchID = request.batchID {
            do { try TextCheck.check(batchID, field: "batchId", max: 200) } catch let DomainError.invalid(e) { problems += e }
        }
        if !problems.isEmpty { throw DomainError.invalid(problems) }
    }

    private func resolveTopics(_ request: ChangeRequest, known: [String: Topic]? = nil) async throws -> [String: Topic] {
        var topics: [String: Topic] = [:]
        var problems: [ValidationError] = []
        for (i, change) in request.changes.enumerated() {
            let field = "\(request.changesField)[\(i)]"
            // A change that can grant is decided on the topic as it is now (retired or not, double opt-in, lifetime, notice);
            // a withdrawal or an expiry, always honoured, reads it through the checks' one-second cache (PostgreSQL: a query
            // per opt-out, a fifth of its CPU for one, went). What the cache would refuse is read afresh too: a topic created,
            // or a notice version published, a moment ago elsewhere. A fresh read that differs drops the cached one.
            let cached: Topic? = if let known { known[change.topicKey] } else {
                try await topicCache.value(change.topicKey, fetch: { try await store.topic(key: change.topicKey) })
            }
            var found = cached
            if known == nil, change.intent.canGrant || found == nil || (change.noticeVersion ?? 0) > found?.currentNoticeVersion ?? 0 {
                found = try await store.topic(key: change.topicKey)
                if found != cached {
                    topicCache.invalidate(change.topicKey)
                    topicListCache.invalidateAll()
                }
            }
            guard let topic = found else {
                problems.append(.init(field: "\(field).topic", "unknown topic '\(change.topicKey)'"))
                continue
            }
            if let version = change.noticeVersion, !(1...topic.currentNoticeVersion).contains(version) {
                problems.append(.init(field: "\(field).noticeVersion", "topic '\(topic.key)' has notice versions 1...\(topic.currentNoticeVersion), not \(version)"))
            }
            topics[topic.key] = topic
        }
        if !problems.isEmpty { throw DomainError.invalid(problems) }
        return topics
    }

    struct Plan {
        var events: [ConsentEvent] = []
        var changedPreferences: [Preference] = []
        var unchanged: [ChangeResult.Unchanged] = []
        var outbox: [OutboxItem] = []
        var issueToken: ConfirmationToken?
        var consumeToken: (hash: Data, topics: [String])?
        var confirmationTopics: [String] = []
        var webhooks: [WebhookDelivery] = []

        var isEmpty: Bool { events.isEmpty && outbox.isEmpty && issueToken == nil && consumeToken == nil }

        func preferences(after state: LedgerState) -> [String: Preference] {
            var merged = state.preferences
            for p in changedPreferences { merged[p.topicKey] = p }
            return merged
        }
    }

    private func plan(_ request: ChangeRequest, topics: [String: Topic], state: LedgerState, occurredAt: Date,
                      recordedAt: Date, key: ContactKey) throws -> Plan {
        var plan = Plan()
        var head = state.head
        var preferences = state.preferences
        var problems: [ValidationError] = []
        var evidenceBytes: Data? // the evidence encoded once, sealed per event
        for (i, change) in request.changes.enumerated() {
            let topic = topics[change.topicKey]!
            var current = preferences[topic.key]?.effectiveState(at: recordedAt) ?? .none
            if change.intent == .expire {
                // Expiry records what the clock already implies: it looks at the stored state.
                guard let stored = preferences[topic.key], stored.state == .granted, let due = stored.expiresAt, due <= recordedAt else {
                    plan.unchanged.append(.init(topicKey: topic.key, state: current, reason: "no grant due to expire"))
                    continue
                }
                current = .granted
            }
            if change.intent == .renew, current == .granted, let stored = preferences[topic.key] {
                // A second click on the same link (or a mail scanner's) adds nothing.
                if stored.expiresAt == nil || occurredAt.timeIntervalSince(stored.since) < 86_400 {
                    plan.unchanged.append(.init(topicKey: topic.key, state: current,
                                                reason: stored.expiresAt == nil ? "granted without an expiry" : "renewed less than a day ago"))
                    continue
                }
            }
            // A change the person made earlier than the current state's cause
            // (a verbal instruction keyed in late) never overrides a newer one.
            if let since = preferences[topic.key]?.since, occurredAt < since {
                plan.unchanged.append(.init(topicKey: topic.key, state: current,
                                            reason: "a newer change (\(current.rawValue) since \(since.millisecondsSince1970 / 1000)) takes precedence over one made earlier"))
                continue
            }
            let decision: ConsentDecision
            do {
                decision = try ConsentPolicy.decide(current: current, intent: change.intent, topic: topic,
                                                    field: "\(request.changesField)[\(i)].topic")
            } catch let DomainError.invalid(e) {
                problems += e
                continue
            }
            switch decision {
            case .unchanged(let reason):
                plan.unchanged.append(.init(topicKey: topic.key, state: current, reason: reason))
            case .change(let action, let to):
                let expiresAt = to == .granted ? topic.consentLifetimeDays.map { occurredAt.addingTimeInterval(TimeInterval($0) * 86_400) } : nil
                // A yes given so long ago that its lifetime is already over grants nothing (and
                // recording it would make every re-import record it again).
                if let expiresAt, expiresAt <= recordedAt {
                    plan.unchanged.append(.init(topicKey: topic.key, state: current,
                                                reason: "given on \(occurredAt.isoDay), it lapsed on \(expiresAt.isoDay) (the topic's consents last \(topic.consentLifetimeDays ?? 0) days)"))
                    continue
                }
                let id = environment.newID()
                if evidenceBytes == nil && !request.evidence.personal.isEmpty { evidenceBytes = try ContactKey.plaintext(request.evidence.personal) }
                let sealed = try evidenceBytes.map { try key.seal(plaintext: $0, eventID: id, contactID: request.contactID) }
                let event = ConsentEvent(
                    id: id, contactID: request.contactID, seq: head.seq + 1, topicKey: topic.key, action: action,
                    fromState: current, toState: to, source: request.source, channel: request.channel, actor: request.actor,
                    occurredAt: occurredAt, recordedAt: recordedAt, expiresAt: expiresAt,
                    noticeVersion: change.noticeVersion ?? topic.currentNoticeVersion,
                    formID: request.evidence.formID, formVersion: request.evidence.formVersion, batchID: request.batchID,
                    sealedEvidence: sealed, prevHash: head.hash
                ).sealed()
                head = ChainHead(contactID: request.contactID, seq: event.seq, hash: event.hash)
                Projection.apply(event, to: &preferences)
                plan.events.append(event)
                plan.changedPreferences.removeAll { $0.topicKey == topic.key }
                plan.changedPreferences.append(preferences[topic.key]!)
            }
        }
        if !problems.isEmpty { throw DomainError.invalid(problems) }
        return plan
    }

    // MARK: Receipts

    /// The instance's signing key: the oldest stored one, created on first use.
    /// Instances starting together may each create one; all are published and
    /// the oldest signs, so they agree.
    public func receiptSigner() async throws -> ReceiptSigner {
        if let stored = try await store.signingKeys().first {
            return try ReceiptSigner(keyID: stored.keyID, rawPrivateKey: masterKey.open(stored.sealedPrivateKey, context: Self.signingContext))
        }
        let (keyID, raw) = ReceiptSigner.generate()
        try await store.insertSigningKey(SigningKeyRecord(keyID: keyID, sealedPrivateKey: try masterKey.seal(raw, context: Self.signingContext),
                                                          createdAt: now))
        return try await receiptSigner()
    }

    /// Every published signing key, for the JWK set.
    public func receiptSigners() async throws -> [ReceiptSigner] {
        _ = try await receiptSigner()
        return try await store.signingKeys().map {
            try ReceiptSigner(keyID: $0.keyID, rawPrivateKey: masterKey.open($0.sealedPrivateKey, context: Self.signingContext))
        }
    }

    private static let signingContext = UUID(uuidString: "a55e0700-0000-4000-8000-000000000001")!

    /// The signed consent receipt for a grant, confirmation or withdrawal.
    public func receipt(eventID: UUID, issuer: ReceiptIssuer) async throws -> (receipt: ConsentReceipt, jws: String) {
        guard let event = try await store.event(id: eventID) else { throw DomainError.notFound(what: "receipt", id: eventID.uuidString.lowercased()) }
        guard [.granted, .confirmed, .withdrawn].contains(event.action) else {
            throw DomainError.invalid(field: "id", "event \(eventID.uuidString.lowercased()) records '\(event.action.rawValue)'; receipts are issued for grants, confirmations and withdrawals")
        }
        let contact = try await existingContact(event.contactID)
        if contact.isErased { throw DomainError.gone(what: "receipt", id: eventID.uuidString.lowercased()) }
        let topic = try await existingTopic(event.topicKey)
        let notice = try await event.noticeVersion.asyncFlatMap { try await store.notice(topicKey: topic.key, version: $0) }
        let receipt = ConsentReceipt(event: event, contact: contact, topic: topic, noticeText: notice?.text ?? "", issuer: issuer)
        return (receipt, try await receiptSigner().sign(receipt, tokens: receiptTokens, signatures: receiptSignatures))
    }

    /// The signed receipts of many events of one contact (an access export): the signing key,
    /// the topics and each notice are read once, not once per receipt (1,000 events took 2.5 s).
    /// Events that get no receipt (requests, expiries) are left out; an erased contact has none.
    /// The signatures (Ed25519, a fifth of an export) are made on every core at once, and each only once per process.
    public func receipts(for events: [ConsentEvent], contact: Contact, issuer: ReceiptIssuer) async throws -> [(eventID: UUID, jws: String)] {
        let eligible = events.filter { [.granted, .confirmed, .withdrawn].contains($0.action) && $0.contactID == contact.id }
        guard !eligible.isEmpty, !contact.isErased else { return [] }
        let signer = try await receiptSigner()
        let topics = Dictionary(uniqueKeysWithValues: try await store.topics(includeRetired: true).map { ($0.key, $0) })
        var notices: [String: String] = [:]
        var receipts: [ConsentReceipt] = []
        receipts.reserveCapacity(eligible.count)
        for event in eligible {
            guard let topic = topics[event.topicKey] else { throw DomainError.notFound(what: "topic", id: event.topicKey) }
            var text = ""
            if let version = event.noticeVersion {
                let key = "\(topic.key)#\(version)"
                if let known = notices[key] { text = known } else {
                    text = try await store.notice(topicKey: topic.key, version: version)?.text ?? ""
                    notices[key] = text
                }
            }
            receipts.append(ConsentReceipt(event: event, contact: contact, topic: topic, noticeText: text, issuer: issuer))
        }
        let parts = max(1, min(ProcessInfo.processInfo.activeProcessorCount, receipts.count / 64))
        let size = (receipts.count + parts - 1) / parts
        let signed = try await withThrowingTaskGroup(of: (Int, [String]).self) { group in
            for part in 0..<parts {
                let slice = Array(receipts[min(receipts.count, part * size)..<min(receipts.count, (part + 1) * size)])
                group.addTask { [receiptSignatures, receiptTokens] in
                    (part, try slice.map { try signer.sign($0, tokens: receiptTokens, signatures: receiptSignatures) })
                }
            }
            var byPart = [[String]](repeating: [], count: parts)
            for try await (part, jws) in group { byPart[part] = jws }
            return byPart.flatMap { $0 }
        }
        return zip(eligible, signed).map { ($0.id, $1) }
    }

    // MARK: Reads

    public func timeline(contactID: UUID, beforeSeq: Int64?, limit: Int) async throws -> [TimelineEntry] {
        // The three reads at once: on PostgreSQL each is a round trip. A contact that does not
        // exist still fails first (its events and key then read as none).
        async let exists = existingContact(contactID)
        async let eventsRead = store.events(contactID: contactID, beforeSeq: beforeSeq, limit: limit)
        async let wrappedRead = store.wrappedKey(contactID: contactID)
        _ = try await exists
        let events = try await eventsRead
        let key = try await wrappedRead.map { try masterKey.unwrap($0, contactID: contactID) }
        return try events.map { event in
            guard let sealed = event.sealedEvidence else { return TimelineEntry(event: event, personal: nil, evidenceShredded: false) }
            guard let key else { return TimelineEntry(event: event, personal: nil, evidenceShredded: true) }
            return TimelineEntry(event: event, personal: try key.open(sealed, eventID: event.id, contactID: contactID), evidenceShredded: false)
        }
    }

    /// Every topic (retired ones too) as a preference grid shows them: read at most a second ago.
    public func displayedTopics() async throws -> [Topic] {
        try await topicListCache.value(true) { try await store.topics(includeRetired: true) } ?? []
    }

    /// A topic as the send-time checks see it: read at most a second ago.
    func checkedTopic(_ key: String) async throws -> Topic {
        guard let topic = try await topicCache.value(key, fetch: { try await store.topic(key: key) }) else {
            throw DomainError.notFound(what: "topic", id: key)
        }
        return topic
    }

    public func check(email: EmailAddress, topicKey: String) async throws -> CheckResult {
        let topic = try await checkedTopic(topicKey)
        guard let row = try await store.checkRow(email: email, topicKey: topicKey) else {
            let suppressed = try await store.suppression(emailHash: suppressionHash(email)) != nil
            return CheckResult(allowed: false, reason: suppressed ? .suppressed : .unknown)
        }
        return Self.decide(row, topic: topic, at: now)
    }

    /// Recomputes every chain, compares it with its stored head and the
    /// projection, and reports the first break per contact.
    /// The store reads and decodes chains on its thread while others hash and replay them.
    public func verify() async throws -> VerifyReport {
        let tally = VerifyTally()
        let workers = ChainWorkers(tally: tally)
        do {
            try await store.scanChains { chain in workers.add(chain) }
        } catch {
            await workers.finish()
            throw error
        }
        await workers.finish()
        return tally.report
    }

    /// `verify()`, timed and recorded as the latest run (what `/metrics` reports).
    public func verifyAndRecord(origin: String) async throws -> (report: VerifyReport, run: VerifyRun) {
        let started = ContinuousClock.now
        let report = try await verify()
        return (report, try await recordVerification(report, seconds: started.duration(to: .now), origin: origin))
    }

    /// Records a finished verification as the latest run.
    @discardableResult
    public func recordVerification(_ report: VerifyReport, seconds elapsed: Duration, origin: String) async throws -> VerifyRun {
        let run = VerifyRun(finishedAt: now, seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18,
                            contacts: report.contacts, events: report.events, breaks: report.breaks.count, origin: origin)
        try await store.recordVerifyRun(run)
        return run
    }

    private func validateAll(_ checks: [() throws -> Void]) throws {
        var problems: [ValidationError] = []
        for check in checks {
            do { try check() } catch let DomainError.invalid(e) { problems += e }
        }
        if !problems.isEmpty { throw DomainError.invalid(problems) }
    }
}

/// Accumulates a verification run from the workers' batches.
private final class VerifyTally: @unchecked Sendable {
    private let lock = NSLock()
    private var contacts = 0, events = 0
    private var breaks: [(key: String, problem: ChainBreak)] = []

    func add(contacts: Int, events: Int, breaks found: [ChainBreak]) {
        lock.lock()
        defer { lock.unlock() }
        self.contacts += contacts
        self.events += events
        breaks += found.map { ($0.contactID.uuidString.lowercased(), $0) }
    }

    /// Breaks in contact order (the order the stores scan in), whichever worker found them.
    var report: VerifyReport {
        lock.lock()
        defer { lock.unlock() }
        return VerifyReport(contacts: contacts, events: events, breaks: breaks.sorted { $0.key < $1.key }.map(\.problem))
    }
}

/// Verifies batches of chains on other threads while `scanChains` reads the next ones on its own,
/// so reading and hashing use two cores. `add` is called from the scanning thread only (the
/// callback is synchronous); at most two batches wait or run, so memory stays bounded.
private final class ChainWorkers: @unchecked Sendable {
    private let tally: VerifyTally
    private var batch: [ChainSnapshot] = []
    private var batchEvents = 0
    private let slots = DispatchSemaphore(value: 2)
    private let group = DispatchGroup()
    private static let eventsPerBatch = 4_096

    init(tally: VerifyTally) { self.tally = tally }

    func add(_ chain: ChainSnapshot) {
        batch.append(chain)
        batchEvents += chain.events.count
        if batchEvents >= Self.eventsPerBatch { flush() }
    }

    private func flush() {
        guard !batch.isEmpty else { return }
        let chains = batch
        batch = []
        batchEvents = 0
        slots.wait()
        group.enter()
        DispatchQueue.global().async { [tally, slots, group] in
            var events = 0
            var breaks: [ChainBreak] = []
            for chain in chains {
                events += chain.events.count
                if let problem = ChainVerifier.verify(chain) { breaks.append(problem) }
            }
            tally.add(contacts: chains.count, events: events, breaks: breaks)
            slots.signal()
            group.leave()
        }
    }

    /// Verifies what is left and waits for every batch.
    func finish() async {
        flush()
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            group.notify(queue: .global()) { done.resume() }
        }
    }
}

extension Optional {
    func asyncFlatMap<U>(_ transform: (Wrapped) async throws -> U?) async rethrows -> U? {
        guard let value = self else { return nil }
        return try await transform(value)
    }
}

/// Callbacks told of every committed change's events, after the commit.
public final class LedgerObservers: @unchecked Sendable {
    private let lock = NSLock()
    private var observers: [@Sendable ([ConsentEvent]) -> Void] = []

    public init() {}

    public func add(_ observer: @escaping @Sendable ([ConsentEvent]) -> Void) {
        lock.withLock { observers.append(observer) }
    }

    func notify(_ events: [ConsentEvent]) {
        guard !events.isEmpty else { return }
        for observer in lock.withLock({ observers }) { observer(events) }
    }
}
