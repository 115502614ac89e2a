import AssentCore
import Foundation

/// Errors every store reports the same way.
public enum StoreError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The contact's chain head moved since it was read (optimistic concurrency).
    case concurrentModification(contactID: UUID)
    /// A unique value is already taken.
    case duplicate(field: String, value: String)
    case notFound(what: String, id: String)
    /// The database cannot be reached; the text says where and why.
    case unavailable(String)

    public var description: String {
        switch self {
        case .concurrentModification(let id): "contact \(id) changed concurrently"
        case .duplicate(let field, let value): "\(field) '\(value)' is already in use"
        case .notFound(let what, let id): "\(what) '\(id)' not found"
        case .unavailable(let why): why
        }
    }
}

/// One atomic append to a contact's ledger: the events, the projection rows
/// they produce, and the new chain head, written together or not at all.
public struct LedgerCommit: Sendable {
    public var contactID: UUID
    /// The head the events were built on; the store refuses the commit if it moved.
    public var expectedHead: ChainHead
    public var events: [ConsentEvent]
    public var preferences: [Preference]
    /// Work to enqueue with the events (emails).
    public var outbox: [OutboxItem]
    /// A new confirmation link; the contact's other open links are superseded.
    public var issueToken: ConfirmationToken?
    /// Topics confirmed through an existing link (by its hash).
    public var consumeToken: (hash: Data, topics: [String])?
    /// Webhook messages about these events, enqueued with them.
    public var webhooks: [WebhookDelivery] = []

    public init(contactID: UUID, expectedHead: ChainHead, events: [ConsentEvent], preferences: [Preference],
                outbox: [OutboxItem] = [], issueToken: ConfirmationToken? = nil, consumeToken: (hash: Data, topics: [String])? = nil) {
        self.contactID = contactID
        self.expectedHead = expectedHead
        self.events = events
        self.preferences = preferences
        self.outbox = outbox
        self.issueToken = issueToken
        self.consumeToken = consumeToken
    }

    /// Whether it grants or asks for consent on someone's behalf (not the
    /// person's own act): refused once they objected to direct marketing.
    public var optsInForSomeoneElse: Bool {
        events.contains { [.granted, .requested].contains($0.action) && $0.actor.kind != .subject }
    }

    public var newHead: ChainHead {
        guard let last = events.last else { return expectedHead }
        return ChainHead(contactID: contactID, seq: last.seq, hash: last.hash)
    }
}

/// A contact to insert with its wrapped key and the messages announcing it.
public struct NewContact: Sendable {
    public var contact: Contact
    public var wrappedKey: Data
    public var webhooks: [WebhookDelivery]
    /// The secret its preference-centre and unsubscribe links are signed with, made with the
    /// contact (so that exporting an audience never has to write one per row).
    public var linkSecret: Data?

    public init(contact: Contact, wrappedKey: Data, webhooks: [WebhookDelivery], linkSecret: Data? = nil) {
        self.contact = contact
        self.wrappedKey = wrappedKey
        self.webhooks = webhooks
        self.linkSecret = linkSecret
    }
}

/// A contact with what a write needs about it, read in one go for a batch.
public struct ContactSnapshot: Sendable {
    public var contact: Contact
    public var state: LedgerState
    /// nil once erased.
    public var wrappedKey: Data?

    public init(contact: Contact, state: LedgerState, wrappedKey: Data?) {
        self.contact = contact
        self.state = state
        self.wrappedKey = wrappedKey
    }
}

/// A contact's head and current preferences, read together.
public struct LedgerState: Sendable {
    public var head: ChainHead
    public var preferences: [String: Preference]

    public init(head: ChainHead, preferences: [String: Preference]) {
        self.head = head
        self.preferences = preferences
    }
}

/// The answer to "may I send topic T to this email?" as stored.
public struct CheckRow: Sendable {
    public var contactID: UUID
    public var preference: Preference?

    public init(contactID: UUID, preference: Preference?) {
        self.contactID = contactID
        self.preference = preference
    }
}

/// What a stored idempotency key says about a new request carrying it.
public enum IdempotencyBegin: Equatable, Sendable {
    /// First time: go ahead, then call `completeIdempotency` or `abandonIdempotency`.
    case started
    /// Seen and finished: send this stored response again.
    case replay(StoredResponse)
    /// Another request with this key is still running.
    case inProgress
    /// The key was used for a different request.
    case mismatch
}

public struct StoredResponse: Equatable, Sendable {
    public var status: Int
    public var contentType: String
    public var body: Data

    public init(status: Int, contentType: String, body: Data) {
        self.status = status
        self.contentType = contentType
        self.body = body
    }
}

/// Storage for the ledger. Every backend implements the whole protocol with the
/// same semantics; the conformance suite in the tests holds them to it.
public protocol LedgerStore: Sendable {
    /// Creates or upgrades the schema (numbered migrations). Idempotent.
    func migrate() async throws
    /// Migrations applied so far, oldest first.
    func appliedMigrations() async throws -> [String]
    /// Brings the query planner's statistics up to date after a bulk load (an import).
    /// Stores without a planner that needs it do nothing (the default).
    func refreshStatistics() async throws
    /// Cheap round trip used by `/readyz`.
    func ping() async throws

    // MARK: Topics
    /// Inserts a topic with its first notice version. Throws `duplicate(field: "key")`.
    func insertTopic(_ topic: Topic, notice: Notice) async throws
    /// Replaces a topic's mutable fields (not its notice version).
    func updateTopic(_ topic: Topic) async throws
    func topic(key: String) async throws -> Topic?
    func topics(includeRetired: Bool) async throws -> [Topic]
    /// Appends the next notice version and makes it the topic's current one, atomically.
    func appendNotice(topicKey: String, text: String, at: Date) async throws -> Notice
    func notices(topicKey: String) async throws -> [Notice]
    func notice(topicKey: String, version: Int) async throws -> Notice?

    // MARK: Contacts
    /// Inserts a contact with its wrapped evidence key, its link secret and the webhook
    /// messages announcing it, in one transaction. Throws `duplicate(field: "email" | "externalId")`.
    func insertContact(_ new: NewContact) async throws
    /// Several contacts in one transaction: all or none (`duplicate` names the first clash).
    func insertContacts(_ contacts: [NewContact]) async throws
    func updateContact(_ contact: Contact) async throws
    func contact(id: UUID) async throws -> Contact?
    func contact(email: EmailAddress) async throws -> Contact?
    func contact(externalID: String) async throws -> Contact?
    /// Contacts whose email or name contains `text` (any case), or whose
    /// external id is `text`; ordered by email.
    func searchContacts(_ text: String, limit: Int) async throws -> [Contact]
    /// Contacts ordered by id, after the given id (cursor pagination).
    func contacts(after: UUID?, limit: Int) async throws -> [Contact]
    func wrappedKey(contactID: UUID) async throws -> Data?
    /// Any one stored contact key, to check at start-up that the master key fits the database.
    func sampleWrappedKey() async throws -> (contactID: UUID, wrappedKey: Data)?

    // MARK: Ledger
    func ledgerState(contactID: UUID) async throws -> LedgerState
    /// For a batch (an import chunk): the contacts with these emails, each with
    /// its ledger state and wrapped key, read together.
    func contactSnapshots(emails: [EmailAddress]) async throws -> [ContactSnapshot]
    /// One contact with its ledger state and wrapped key, read together (a
    /// single change's first attempt); nil if there is no such contact.
    func contactSnapshot(id: UUID) async throws -> ContactSnapshot?
    /// The contacts with these external ids.
    func contacts(externalIDs: [String]) async throws -> [Contact]
    /// Appends events, upserts projection rows and moves the head in one
    /// transaction; throws `concurrentModification` if the head moved.
    func commit(_ commit: LedgerCommit) async throws
    /// Several commits (for different contacts) in one transaction: all or
    /// none; `concurrentModification` if any head moved.
    func commit(batch: [LedgerCommit]) async throws
    /// Several commits in one transaction (group commit), each standing or
    /// failing on its own: the result holds each one's error, nil if written.
    /// Throws when the transaction itself fails (then none was written).
    func commit(group: [LedgerCommit]) async throws -> [(any Error)?]
    func preferences(contactID: UUID) async throws -> [Preference]
    /// Events newest first, with `seq < beforeSeq` when given.
    func events(contactID: UUID, beforeSeq: Int64?, limit: Int) async throws -> [ConsentEvent]
    /// Every event, a page at a time, ordered by contact id (as text) then
    /// seq, after the given position (an export's cursor).
    func eventsPage(after: (contactID: UUID, seq: Int64)?, limit: Int) async throws -> [ConsentEvent]
    /// Every preference row, ordered by contact id (as text) then topic, after the given position.
    func preferencesPage(after: (contactID: UUID, topicKey: String)?, limit: Int) async throws -> [Preference]
    /// Many checks at once (the batch check): the rows found, by email.
    func checkRows(emails: [EmailAddress], topicKey: String) async throws -> [String: CheckRow]
    /// How many `checkRows` reads a batch check runs at once (its addresses are split into as
    /// many runs); by default one per core, at most four.
    var batchCheckReads: Int { get }
    /// Which of these keyed email hashes are on the suppression list.
    func suppressedHashes(_ hashes: [Data]) async throws -> Set<Data>
    /// One page of an audience, in contact-id order after `after`: contacts
    /// (not erased) with a live grant (granted, not expired at `now`) on at
    /// least one of `topics`, each with those grants. At most `limit` contacts.
    func audiencePage(topics: [String], now: Date, after: UUID?, limit: Int) async throws -> [AudienceMember]
    /// Grants whose lifetime ended by `now` and whose expiry is not recorded yet, oldest first.
    func dueExpiries(now: Date, limit: Int) async throws -> [Preference]
    /// One indexed lookup for the send-time check; nil when no contact has this email.
    func checkRow(email: EmailAddress, topicKey: String) async throws -> CheckRow?
    /// Streams every contact's chain (events in order, head, projection),
    /// one contact at a time, without loading the whole ledger.
    func scanChains(_ body: @Sendable (ChainSnapshot) throws -> Void) async throws

    // MARK: Double opt-in and outbox
    func confirmationToken(hash: Data) async throws -> ConfirmationToken?
    /// The contact's most recently issued confirmation link, if any.
    func latestConfirmationToken(contactID: UUID) async throws -> ConfirmationToken?
    /// Invalidates every open confirmation link of a contact (its email changed).
    func supersedeConfirmationTokens(contactID: UUID, at: Date) async throws
    /// Claims up to `limit` due pending items for `lease` seconds and counts an
    /// attempt on each. Concurrent workers (other processes too) never get the same item.
    func claimOutbox(now: Date, limit: Int, lease: TimeInterval) async throws -> [OutboxItem]
    /// Marks a pending item sent and replaces its payload (secrets scrubbed).
    func completeOutbox(id: UUID, at: Date, payload: Data) async throws
    /// Records a failed attempt of a pending item: pending again at `retryAt`, or dead when nil.
    func failOutbox(id: UUID, error: String, retryAt: Date?) async throws
    /// Items newest first, optionally of one status.
    func outboxItems(status: OutboxItem.Status?, limit: Int) async throws -> [OutboxItem]
    /// How many items wait to be sent, and when the oldest of them was queued (for monitoring).
    func outboxBacklog() async throws -> (pending: Int, oldestCreatedAt: Date?)
    /// Records a verification of every chain (kept: a history of runs).
    func recordVerifyRun(_ run: VerifyRun) async throws
    /// The latest recorded verification, nil before the first.
    func lastVerifyRun() async throws -> VerifyRun?
    /// One contact's items, oldest first (for their data export).
    func outboxItems(contactID: UUID) async throws -> [OutboxItem]
    /// Makes dead items (one, or all when nil) pending again, due now; returns how many.
    func retryOutbox(id: UUID?, now: Date) async throws -> Int

    // MARK: Receipts
    /// Signing keys, oldest first (the oldest signs; all are published).
    func signingKeys() async throws -> [SigningKeyRecord]
    func insertSigningKey(_ key: SigningKeyRecord) async throws
    func event(id: UUID) async throws -> ConsentEvent?

    // MARK: Forms
    /// Inserts a form with its first version. Throws `duplicate(field: "id")`.
    func insertForm(_ form: Form) async throws
    /// Saves `form` as its form's next version (`version` = current + 1) and
    /// makes it current, atomically. Throws `duplicate(field: "version")` when
    /// another save took that version first, `notFound` for an unknown form.
    func appendFormVersion(_ form: Form) async throws
    func setFormStatus(id: String, status: Form.Status, at: Date) async throws
    /// The current version of a form.
    func form(id: String) async throws -> Form?
    /// One saved version of a form (with the form's current status).
    func form(id: String, version: Int) async throws -> Form?
    /// Current versions, ordered by id.
    func forms(includeRetired: Bool) async throws -> [Form]

    // MARK: Contact links
    /// The secret that signs a contact's preference-centre and unsubscribe links; nil before first use.
    func linkSecret(contactID: UUID) async throws -> Data?
    /// The link secrets of many contacts (an audience page), each made by `make` when it
    /// has none yet (one read, and one transaction only when some were missing).
    /// Contacts that no longer exist or were erased get no new secret.
    func ensureLinkSecrets(_ ids: [UUID], at: Date, make: @Sendable () -> Data) async throws -> [UUID: Data]
    /// Stores `candidate` unless the contact already has a secret, and returns the stored one
    /// (two instances making a first link at once agree on one secret).
    func ensureLinkSecret(contactID: UUID, candidate: Data, at: Date) async throws -> Data
    /// Replaces the secret: every link made with the old one stops working.
    func replaceLinkSecret(contactID: UUID, secret: Data, at: Date) async throws

    // MARK: Portal
    /// Stores a sign-in link and queues its email, in one transaction.
    func issuePortalLink(_ link: PortalLinkRecord, email: OutboxItem) async throws
    func portalLink(hash: Data) async throws -> PortalLinkRecord?
    /// How many sign-in links a contact was sent since `since` (mail-bombing guard).
    func portalLinkCount(contactID: UUID, since: Date) async throws -> Int
    /// Marks an unused, unexpired link used, atomically; the contact it signs
    /// in, or nil when it was used, expired or never existed.
    func consumePortalLink(hash: Data, at: Date) async throws -> UUID?
    func insertPortalSession(_ session: PortalSession) async throws
    func portalSession(hash: Data) async throws -> PortalSession?
    func deletePortalSession(hash: Data) async throws

    // MARK: Subject requests
    /// Inserts a request and the webhook messages announcing it, in one transaction.
    func insertSubjectRequest(_ request: SubjectRequest, webhooks: [WebhookDelivery]) async throws
    func closeSubjectRequest(id: UUID, at: Date, outcome: String) async throws
    /// Saves a request's handling fields: due date, extension, handler, identity note, status, outcome.
    func updateSubjectRequest(_ request: SubjectRequest) async throws
    func subjectRequest(id: UUID) async throws -> SubjectRequest?
    /// Requests newest first, optionally of one contact and one status.
    func subjectRequests(contactID: UUID?, status: SubjectRequest.Status?, limit: Int) async throws -> [SubjectRequest]

    // MARK: Erasure and objection
    /// Erases a contact in one transaction: their personal fields become NULL,
    /// their evidence key is deleted (shredding the evidence in their events),
    /// links, sign-ins, sessions, queued emails and request notes go, stored
    /// API responses containing the email go, and the email's keyed hash joins
    /// the suppression list. Events, the projection and the chain stay. The
    /// contact's webhook messages go too, replaced by `erasure.webhooks`.
    func eraseContact(_ erasure: ContactErasure) async throws
    func suppression(emailHash: Data) async throws -> Suppression?
    /// Records (or, with nil, lifts) an objection to all direct marketing.
    func setContactObjection(contactID: UUID, at: Date?) async throws

    // MARK: Staff
    /// Throws `duplicate(field: "email")`.
    func insertStaffUser(_ user: StaffUser) async throws
    // Targeted, atomic updates only: a sign-in in flight must never write back
    // a stale copy over a disable or a password reset.
    /// Counts a wrong password; when the count reaches `lockAfter` the account
    /// is locked until `lockUntil` and the count starts again. The lock, if set now.
    func recordStaffSignInFailure(userID: UUID, lockAfter: Int, lockUntil: Date) async throws -> Date?
    /// Clears the failure count, only if the account is active and its password
    /// hash is still `passwordHash`; false when either changed meanwhile.
    func recordStaffSignInSuccess(userID: UUID, passwordHash: String) async throws -> Bool
    /// Replaces the password hash (only if it is still `expected`, when given),
    /// clearing failures and any lock; false when it had changed.
    func setStaffPassword(userID: UUID, expected: String?, newHash: String, mustChange: Bool) async throws -> Bool
    func disableStaffUser(userID: UUID, at: Date) async throws
    func staffUser(id: UUID) async throws -> StaffUser?
    func staffUser(email: EmailAddress) async throws -> StaffUser?
    /// Ordered by email.
    func staffUsers() async throws -> [StaffUser]
    func insertStaffSession(_ session: StaffSession) async throws
    func staffSession(hash: Data) async throws -> StaffSession?
    func extendStaffSession(hash: Data, expiresAt: Date) async throws
    func deleteStaffSession(hash: Data) async throws
    /// Signs a user out everywhere (password changed, account disabled).
    func deleteStaffSessions(userID: UUID) async throws

    // MARK: Audit log (append-only)
    func appendAudit(_ entry: AuditEntry) async throws
    /// Newest first.
    func auditEntries(_ query: AuditQuery) async throws -> [AuditEntry]

    // MARK: API keys
    func insertAPIKey(_ key: APIKey) async throws
    func apiKey(id: String) async throws -> APIKey?
    func apiKeys() async throws -> [APIKey]
    /// Marks a key revoked; false when no such active key.
    func revokeAPIKey(id: String, at: Date) async throws -> Bool

    // MARK: Segments
    /// Throws `duplicate(field: "id")`.
    func insertSegment(_ segment: Segment) async throws
    /// Replaces name, description, definition and `updatedAt`; throws `notFound`.
    func updateSegment(_ segment: Segment) async throws
    /// Deletes a segment and its sizes; false when there was none.
    func deleteSegment(id: String) async throws -> Bool
    func segment(id: String) async throws -> Segment?
    /// Ordered by id.
    func segments() async throws -> [Segment]
    /// Records a day's size, replacing one measured earlier that day.
    func recordSegmentSize(_ size: SegmentSize) async throws
    /// The latest `limit` days measured, oldest first.
    func segmentSizes(segmentID: String, limit: Int) async throws -> [SegmentSize]

    // MARK: Re-permission
    /// Live grants expiring after `now` and by `horizon` that are inside their
    /// (active) topic's re-permission window and have no request yet; contacts
    /// erased or objecting are left out. Soonest first.
    func dueRepermissions(now: Date, horizon: Date, limit: Int) async throws -> [RepermissionDue]
    /// Records a grant's request and queues its email in one transaction;
    /// false (and nothing written) when that grant already has one.
    func insertRepermission(_ request: RepermissionRequest, email: OutboxItem) async throws -> Bool

    // MARK: Reports
    /// Preferences per topic and state (a grant lapsed by `now` counts as expired); no `none` rows.
    func stateCounts(now: Date) async throws -> [StateCount]
    /// Contacts not erased.
    func contactCount() async throws -> Int
    /// Opt-ins and opt-outs by week (of 7 days from `weekStart`) and source, for events that occurred in [from, to).
    func changeCounts(from: Date, to: Date, weekStart: Date) async throws -> [ChangeCount]
    /// Each `requested` event that occurred in [from, to), with when the next event on that topic confirmed it (if it did).
    func confirmationOutcomes(from: Date, to: Date) async throws -> [ConfirmationOutcome]
    /// Live grants lapsing after `now` and within 30, 60 and 90 days, per topic (topics with none are left out).
    func expiringCounts(now: Date) async throws -> [ExpiringCount]

    // MARK: Webhooks
    /// Throws `duplicate(field: "id")`.
    func insertWebhookEndpoint(_ endpoint: WebhookEndpoint) async throws
    /// Replaces every field but `id`, `createdBy` and `createdAt`; throws `notFound`.
    func updateWebhookEndpoint(_ endpoint: WebhookEndpoint) async throws
    /// Deletes an endpoint with its deliveries and their attempts; false when there was none.
    func deleteWebhookEndpoint(id: String) async throws -> Bool
    func webhookEndpoint(id: String) async throws -> WebhookEndpoint?
    /// Oldest first.
    func webhookEndpoints() async throws -> [WebhookEndpoint]
    /// Enqueues messages (a replay); one contact's keep their order.
    func insertWebhookDeliveries(_ deliveries: [WebhookDelivery]) async throws
    /// Claims up to `limit` due pending deliveries for `lease` seconds and
    /// counts an attempt on each. A delivery is due only when no earlier
    /// pending delivery of the same contact to the same endpoint remains, so
    /// one contact's messages arrive in order. A disabled endpoint's wait until it is enabled again.
    /// Concurrent workers never get the same one.
    func claimWebhookDeliveries(now: Date, limit: Int, lease: TimeInterval) async throws -> [WebhookDelivery]
    /// Records an attempt and its outcome together; `payload`, when given, replaces the stored body (scrubbed once delivered).
    func recordWebhookAttempt(_ attempt: WebhookAttempt, outcome: WebhookOutcome, payload: Data?) async throws
    func webhookDelivery(id: UUID) async throws -> WebhookDelivery?
    /// Newest first.
    func webhookDeliveries(_ query: WebhookDeliveryQuery) async throws -> [WebhookDelivery]
    /// Oldest first.
    func webhookAttempts(deliveryID: UUID) async throws -> [WebhookAttempt]
    /// Makes failed deliveries (these, or all of an endpoint, or all) pending again, due now, with a fresh count; returns how many.
    func retryWebhookDeliveries(ids: [UUID]?, endpointID: String?, now: Date) async throws -> Int

    // MARK: Idempotency
    func beginIdempotency(scope: String, key: String, requestHash: Data, now: Date) async throws -> IdempotencyBegin
    func completeIdempotency(scope: String, key: String, response: StoredResponse) async throws
    func abandonIdempotency(scope: String, key: String) async throws
}
