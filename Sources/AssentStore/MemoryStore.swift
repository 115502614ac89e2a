import AssentCore
import Foundation

/// A store in process memory: for tests and for trying things out. It keeps
/// the same rules as the database stores (the conformance suite checks).
public actor MemoryStore: LedgerStore {
    private var topicsByKey: [String: Topic] = [:]
    private var verifyRuns: [VerifyRun] = []
    private var noticesByTopic: [String: [Notice]] = [:]
    private var contactsByID: [UUID: Contact] = [:]
    private var keysByContact: [UUID: Data] = [:]
    private var eventsByContact: [UUID: [ConsentEvent]] = [:]
    private var heads: [UUID: ChainHead] = [:]
    private var preferencesByContact: [UUID: [String: Preference]] = [:]
    private var apiKeysByID: [String: APIKey] = [:]
    private var outbox: [UUID: OutboxItem] = [:]
    private var claimedUntil: [UUID: Date] = [:]
    private var tokens: [Data: ConfirmationToken] = [:]
    private var idempotency: [String: (hash: Data, response: StoredResponse?, at: Date)] = [:]
    private var formVersions: [String: [Form]] = [:]
    private var formStatus: [String: Form.Status] = [:]
    private var linkSecrets: [UUID: Data] = [:]
    private var portalLinks: [Data: PortalLinkRecord] = [:]
    private var portalSessions: [Data: PortalSession] = [:]
    private var requests: [UUID: SubjectRequest] = [:]
    private var suppressions: [Data: Suppression] = [:]
    private var staff: [UUID: StaffUser] = [:]
    private var staffSessions: [Data: StaffSession] = [:]
    private var audit: [AuditEntry] = []
    private var segmentsByID: [String: Segment] = [:]
    private var segmentSizesByID: [String: [String: SegmentSize]] = [:]
    private var repermissions: [String: RepermissionRequest] = [:]
    private var endpoints: [String: WebhookEndpoint] = [:]
    private var deliveries: [UUID: (ordinal: Int, delivery: WebhookDelivery)] = [:]
    private var attempts: [UUID: [WebhookAttempt]] = [:]
    private var nextOrdinal = 1

    public init() {}

    public func migrate() async throws {}
    public func appliedMigrations() async throws -> [String] { [] }
    public func ping() async throws {}

    // MARK: Topics

    public func insertTopic(_ topic: Topic, notice: Notice) async throws {
        guard topicsByKey[topic.key] == nil else { throw StoreError.duplicate(field: "key", value: topic.key) }
        topicsByKey[topic.key] = topic
        noticesByTopic[topic.key] = [notice]
    }

    public func updateTopic(_ topic: Topic) async throws {
        guard topicsByKey[topic.key] != nil else { throw StoreError.notFound(what: "topic", id: topic.key) }
        topicsByKey[topic.key] = topic
    }

    public func topic(key: String) async throws -> Topic? { topicsByKey[key] }

    public func topics(includeRetired: Bool) async throws -> [Topic] {
        topicsByKey.values.filter { includeRetired || $0.isActive }.sorted { ($0.category, $0.key) < ($1.category, $1.key) }
    }

    public func appendNotice(topicKey: String, text: String, at: Date) async throws -> Notice {
        guard var topic = topicsByKey[topicKey] else { throw StoreError.notFound(what: "topic", id: topicKey) }
        let notice = Notice(topicKey: topicKey, version: (noticesByTopic[topicKey]?.count ?? 0) + 1, text: text, createdAt: at)
        noticesByTopic[topicKey, default: []].append(notice)
        topic.currentNoticeVersion = notice.version
        topic.updatedAt = at
        topicsByKey[topicKey] = topic
        return notice
    }

    public func notices(topicKey: String) async throws -> [Notice] { noticesByTopic[topicKey] ?? [] }

    public func notice(topicKey: String, version: Int) async throws -> Notice? {
        noticesByTopic[topicKey]?.first { $0.version == version }
    }

    // MARK: Contacts

    private func checkUnique(_ contact: Contact) throws {
        for other in contactsByID.values where other.id != contact.id {
            if other.email == contact.email { throw StoreError.duplicate(field: "email", value: contact.email.value) }
            if let ext = contact.externalID, other.externalID == ext { throw StoreError.duplicate(field: "externalId", value: ext) }
        }
    }

    public func insertContacts(_ contacts: [NewContact]) async throws {
        var emails = Set<EmailAddress>()
        for new in contacts {
            guard emails.insert(new.contact.email).inserted else { throw StoreError.duplicate(field: "email", value: new.contact.email.value) }
            try checkUnique(new.contact)
        }
        for new in contacts { try await insertContact(new) }
    }

    public func commit(batch: [LedgerCommit]) async throws {
        for c in batch where (heads[c.contactID] ?? .empty(c.contactID)) != c.expectedHead || contactsByID[c.contactID]?.isErased == true
            || (contactsByID[c.contactID]?.objectedAt != nil && c.optsInForSomeoneElse) {
            throw StoreError.concurrentModification(contactID: c.contactID)
        }
        for c in batch { try await commit(c) }
    }

    public func insertContact(_ new: NewContact) async throws {
        let contact = new.contact
        guard contactsByID[contact.id] == nil else { throw StoreError.duplicate(field: "id", value: contact.id.uuidString) }
        try checkUnique(contact)
        contactsByID[contact.id] = contact
        keysByContact[contact.id] = new.wrappedKey
        if let secret = new.linkSecret { linkSecrets[contact.id] = secret }
        enqueue(new.webhooks)
    }

    public func updateContact(_ contact: Contact) async throws {
        guard contactsByID[contact.id] != nil else { throw StoreError.notFound(what: "contact", id: contact.id.uuidString) }
        try checkUnique(contact)
        contactsByID[contact.id] = contact
    }

    public func contact(id: UUID) async throws -> Contact? { contactsByID[id] }
    public func contact(email: EmailAddress) async throws -> Contact? { contactsByID.values.first { $0.email == email } }
    public func contact(externalID: String) async throws -> Contact? { contactsByID.values.first { $0.externalID == externalID } }

    public func contacts(after: UUID?, limit: Int) async throws -> [Contact] {
        let sorted = contactsByID.values.sorted { $0.id.uuidString.lowercased() < $1.id.uuidString.lowercased() }
        let start = after.map { a in sorted.firstIndex { $0.id.uuidString.lowercased() > a.uuidString.lowercased() } ?? sorted.count } ?? 0
        return Array(sorted[start...].prefix(limit))
    }

    public func wrappedKey(contactID: UUID) async throws -> Data? { keysByContact[contactID] }

    public func eventsPage(after: (contactID: UUID, seq: Int64)?, limit: Int) async throws -> [ConsentEvent] {
        let start = after.map { ($0.contactID.uuidString.lowercased(), $0.seq) }
        return Array(eventsByContact.sorted { $0.key.uuidString.lowercased() < $1.key.uuidString.lowercased() }.lazy
            .flatMap { entry in entry.value.sorted { $0.seq < $1.seq }.map { (entry.key.uuidString.lowercased(), $0) } }
            .filter { start == nil || ($0.0, $0.1.seq) > start! }.map(\.1).prefix(limit))
    }

    public func preferencesPage(after: (contactID: UUID, topicKey: String)?, limit: Int) async throws -> [Preference] {
        let start = after.map { ($0.contactID.uuidString.lowercased(), $0.topicKey) }
        return Array(preferencesByContact.values.flatMap(\.values).map { ($0.contactID.uuidString.lowercased(), $0) }
            .sorted { ($0.0, $0.1.topicKey) < ($1.0, $1.1.topicKey) }
            .filter { start == nil || ($0.0, $0.1.topicKey) > start! }.map(\.1).prefix(limit))
    }

    public func sampleWrappedKey() async throws -> (contactID: UUID, wrappedKey: Data)? {
        keysByContact.first.map { ($0.key, $0.value) }
    }

    // MARK: Ledger

    public func contactSnapshots(emails: [EmailAddress]) async throws -> [ContactSnapshot] {
        let wanted = Set(emails)
        return contactsByID.values.filter { wanted.contains($0.email) && !$0.isErased }.map {
            ContactSnapshot(contact: $0, state: LedgerState(head: heads[$0.id] ?? .empty($0.id), preferences: preferencesByContact[$0.id] ?? [:]),
                            wrappedKey: keysByContact[$0.id])
        }
    }

    public func contactSnapshot(id: UUID) async throws -> ContactSnapshot? {
        contactsByID[id].map {
            ContactSnapshot(contact: $0, state: LedgerState(head: heads[id] ?? .empty(id), preferences: preferencesByContact[id] ?? [:]),
                            wrappedKey: keysByContact[id])
        }
    }

    public func contacts(externalIDs: [String]) async throws -> [Contact] {
        let wanted = Set(externalIDs)
        return contactsByID.values.filter { $0.externalID.map(wanted.contains) ?? false }
    }

    public func ledgerState(contactID: UUID) async throws -> LedgerState {
        LedgerState(head: heads[contactID] ?? .empty(contactID), preferences: preferencesByContact[contactID] ?? [:])
    }

    public func commit(_ commit: LedgerCommit) async throws {
        let current = heads[commit.contactID] ?? .empty(commit.contactID)
        guard current == commit.expectedHead else { throw StoreError.concurrentModification(contactID: commit.contactID) }
        if contactsByID[commit.contactID]?.isErased == true || (contactsByID[commit.contactID]?.objectedAt != nil && commit.optsInForSomeoneElse) {
            throw StoreError.concurrentModification(contactID: commit.contactID)
        }
        if let consume = commit.consumeToken {
            guard var token = tokens[consume.hash] else { throw StoreError.notFound(what: "confirmation link", id: "") }
            // Replaced since it was read: let the caller re-read and see it.
            guard token.supersededAt == nil else { throw StoreError.concurrentModification(contactID: commit.contactID) }
            token.confirmedTopics += consume.topics.filter { !token.confirmedTopics.contains($0) }
            tokens[consume.hash] = token
        }
        eventsByContact[commit.contactID, default: []].append(contentsOf: commit.events)
        enqueue(commit.webhooks)
        for p in commit.preferences { preferencesByContact[commit.contactID, default: [:]][p.topicKey] = p }
        heads[commit.contactID] = commit.newHead
        if let issued = commit.issueToken {
            for (hash, token) in tokens where token.contactID == issued.contactID && token.supersededAt == nil {
                tokens[hash]?.supersededAt = issued.createdAt
            }
            tokens[issued.hash] = issued
        }
        for item in commit.outbox { outbox[item.id] = item }
    }

    // MARK: Double opt-in and outbox

    public func confirmationToken(hash: Data) async throws -> ConfirmationToken? { tokens[hash] }

    public func supersedeConfirmationTokens(contactID: UUID, at: Date) async throws {
        for (hash, token) in tokens where token.contactID == contactID && token.supersededAt == nil { tokens[hash]?.supersededAt = at }
    }

    public func claimOutbox(now: Date, limit: Int, lease: TimeInterval) async throws -> [OutboxItem] {
        let due = outbox.values
            .filter { $0.status == .pending && $0.nextAttemptAt <= now && (claimedUntil[$0.id].map { $0 < now } ?? true) }
            .sorted { ($0.nextAttemptAt, $0.createdAt) < ($1.nextAttemptAt, $1.createdAt) }
            .prefix(limit)
        return due.map { item in
            var claimed = item
            claimed.attempts += 1
            outbox[item.id] = claimed
            claimedUntil[item.id] = now.addingTimeInterval(lease)
            return claimed
        }
    }

    public func completeOutbox(id: UUID, at: Date, payload: Data) async throws {
        guard outbox[id]?.status == .pending else { return }
        outbox[id]?.status = .sent
        outbox[id]?.sentAt = at
        outbox[id]?.payload = payload
        outbox[id]?.lastError = nil
        claimedUntil[id] = nil
    }

    public func failOutbox(id: UUID, error: String, retryAt: Date?) async throws {
        guard outbox[id]?.status == .pending else { return }
        outbox[id]?.lastError = error
        if let retryAt {
            outbox[id]?.nextAttemptAt = retryAt
        } else {
            outbox[id]?.status = .dead
        }
        claimedUntil[id] = nil
    }

    public func recordVerifyRun(_ run: VerifyRun) async throws { verifyRuns.append(run) }

    public func lastVerifyRun() async throws -> VerifyRun? { verifyRuns.last }

    public func outboxBacklog() async throws -> (pending: Int, oldestCreatedAt: Date?) {
        let pending = outbox.values.filter { $0.status == .pending }
        return (pending.count, pending.map(\.createdAt).min())
    }

    public func outboxItems(status: OutboxItem.Status?, limit: Int) async throws -> [OutboxItem] {
        Array(outbox.values.filter { status == nil || $0.status == status }.sorted { ($0.createdAt, $0.id.uuidString) > ($1.createdAt, $1.id.uuidString) }.prefix(limit))
    }

    public func retryOutbox(id: UUID?, now: Date) async throws -> Int {
        var count = 0
        for (key, item) in outbox where item.status == .dead && (id == nil || id == key) {
            outbox[key]?.status = .pending
            outbox[key]?.attempts = 0
            outbox[key]?.nextAttemptAt = now
            count += 1
        }
        return count
    }

    public func preferences(contactID: UUID) async throws -> [Preference] {
        (preferencesByContact[contactID] ?? [:]).values.sorted { $0.topicKey < $1.topicKey }
    }

    public func events(contactID: UUID, beforeSeq: Int64?, limit: Int) async throws -> [ConsentEvent] {
        let all = eventsByContact[contactID] ?? []
        return Array(all.reversed().filter { beforeSeq == nil || $0.seq < beforeSeq! }.prefix(limit))
    }

    public func dueExpiries(now: Date, limit: Int) async throws -> [Preference] {
        Array(preferencesByContact.values.flatMap(\.values).filter { $0.state == .granted && ($0.expiresAt.map { $0 <= now } ?? false) }
            .sorted { ($0.expiresAt!, $0.contactID.uuidString) < ($1.expiresAt!, $1.contactID.uuidString) }.prefix(limit))
    }

    public func checkRows(emails: [EmailAddress], topicKey: String) async throws -> [String: CheckRow] {
        var rows: [String: CheckRow] = [:]
        for email in emails { if let row = try await checkRow(email: email, topicKey: topicKey) { rows[email.value] = row } }
        return rows
    }

    public func suppressedHashes(_ hashes: [Data]) async throws -> Set<Data> { Set(hashes.filter { suppressions[$0] != nil }) }

    public func audiencePage(topics: [String], now: Date, after: UUID?, limit: Int) async throws -> [AudienceMember] {
        let ordered = contactsByID.values.filter { !$0.isErased && (after == nil || $0.id.uuidString.lowercased() > after!.uuidString.lowercased()) }
            .sorted { $0.id.uuidString.lowercased() < $1.id.uuidString.lowercased() }
        var page: [AudienceMember] = []
        for contact in ordered {
            let grants = (preferencesByContact[contact.id] ?? [:]).filter { topics.contains($0.key) && $0.value.effectiveState(at: now) == .granted }
            if !grants.isEmpty { page.append(AudienceMember(contact: contact, grants: grants, linkSecret: linkSecrets[contact.id])) }
            if page.count == limit { break }
        }
        return page
    }

    public func checkRow(email: EmailAddress, topicKey: String) async throws -> CheckRow? {
        guard let contact = contactsByID.values.first(where: { $0.email == email }) else { return nil }
        return CheckRow(contactID: contact.id, preference: preferencesByContact[contact.id]?[topicKey])
    }

    public func scanChains(_ body: @Sendable (ChainSnapshot) throws -> Void) async throws {
        let ids = Set(eventsByContact.keys).union(heads.keys).union(preferencesByContact.keys)
        for id in ids.sorted(by: { $0.uuidString.lowercased() < $1.uuidString.lowercased() }) {
            try body(ChainSnapshot(contactID: id, events: eventsByContact[id] ?? [], head: heads[id],
                                   preferences: Array((preferencesByContact[id] ?? [:]).values)))
        }
    }

    // MARK: Receipts

    private var signing: [SigningKeyRecord] = []

    public func signingKeys() async throws -> [SigningKeyRecord] { signing }

    public func insertSigningKey(_ key: SigningKeyRecord) async throws {
        guard !signing.contains(where: { $0.keyID == key.keyID }) else { throw StoreError.duplicate(field: "keyID", value: key.keyID) }
        signing.append(key)
    }

    public func event(id: UUID) async throws -> ConsentEvent? {
        eventsByContact.values.lazy.flatMap { $0 }.first { $0.id == id }
    }

    public func latestConfirmationToken(contactID: UUID) async throws -> ConfirmationToken? {
        tokens.values.filter { $0.contactID == contactID }.max { ($0.createdAt, $0.hash.base64EncodedString()) < ($1.createdAt, $1.hash.base64EncodedString()) }
    }

    public func searchContacts(_ text: String, limit: Int) async throws -> [Contact] {
        let needle = text.lowercased()
        return Array(contactsByID.values.filter {
            $0.email.value.contains(needle) || ($0.name?.lowercased().contains(needle) ?? false) || $0.externalID == text
        }.sorted { $0.email.value < $1.email.value }.prefix(limit))
    }

    // MARK: Forms

    public func insertForm(_ form: Form) async throws {
        guard formVersions[form.id] == nil else { throw StoreError.duplicate(field: "id", value: form.id) }
        formVersions[form.id] = [form]
        formStatus[form.id] = form.status
    }

    public func appendFormVersion(_ form: Form) async throws {
        guard let versions = formVersions[form.id] else { throw StoreError.notFound(what: "form", id: form.id) }
        guard form.version == versions.count + 1 else { throw StoreError.duplicate(field: "version", value: "\(form.version)") }
        formVersions[form.id, default: []].append(form)
    }

    public func setFormStatus(id: String, status: Form.Status, at: Date) async throws {
        guard formStatus[id] != nil else { throw StoreError.notFound(what: "form", id: id) }
        formStatus[id] = status
    }

    public func form(id: String) async throws -> Form? {
        guard var form = formVersions[id]?.last else { return nil }
        form.status = formStatus[id] ?? .active
        return form
    }

    public func form(id: String, version: Int) async throws -> Form? {
        guard var form = formVersions[id]?.first(where: { $0.version == version }) else { return nil }
        form.status = formStatus[id] ?? .active
        return form
    }

    public func forms(includeRetired: Bool) async throws -> [Form] {
        var result: [Form] = []
        for id in formVersions.keys.sorted() {
            if let form = try await form(id: id), includeRetired || form.isActive { result.append(form) }
        }
        return result
    }

    // MARK: Contact links

    public func linkSecret(contactID: UUID) async throws -> Data? { linkSecrets[contactID] }

    public func ensureLinkSecret(contactID: UUID, candidate: Data, at: Date) async throws -> Data {
        guard contactsByID[contactID] != nil else { throw StoreError.notFound(what: "contact", id: contactID.uuidString) }
        if let existing = linkSecrets[contactID] { return existing }
        linkSecrets[contactID] = candidate
        return candidate
    }

    public func ensureLinkSecrets(_ ids: [UUID], at: Date, make: @Sendable () -> Data) async throws -> [UUID: Data] {
        var out: [UUID: Data] = [:]
        for id in ids where contactsByID[id].map({ !$0.isErased }) == true {
            if linkSecrets[id] == nil { linkSecrets[id] = make() }
            out[id] = linkSecrets[id]
        }
        return out
    }

    public func replaceLinkSecret(contactID: UUID, secret: Data, at: Date) async throws {
        guard contactsByID[contactID] != nil else { throw StoreError.notFound(what: "contact", id: contactID.uuidString) }
        linkSecrets[contactID] = secret
    }

    // MARK: Portal

    public func issuePortalLink(_ link: PortalLinkRecord, email: OutboxItem) async throws {
        guard contactsByID[link.contactID] != nil else { throw StoreError.notFound(what: "contact", id: link.contactID.uuidString) }
        portalLinks[link.hash] = link
        outbox[email.id] = email
    }

    public func portalLink(hash: Data) async throws -> PortalLinkRecord? { portalLinks[hash] }

    public func portalLinkCount(contactID: UUID, since: Date) async throws -> Int {
        portalLinks.values.filter { $0.contactID == contactID && $0.createdAt >= since }.count
    }

    public func consumePortalLink(hash: Data, at: Date) async throws -> UUID? {
        guard var link = portalLinks[hash], link.usedAt == nil, link.expiresAt > at else { return nil }
        link.usedAt = at
        portalLinks[hash] = link
        return link.contactID
    }

    public func insertPortalSession(_ session: PortalSession) async throws { portalSessions[session.hash] = session }
    public func portalSession(hash: Data) async throws -> PortalSession? { portalSessions[hash] }
    public func deletePortalSession(hash: Data) async throws { portalSessions[hash] = nil }

    // MARK: Subject requests

    public func insertSubjectRequest(_ request: SubjectRequest, webhooks: [WebhookDelivery]) async throws {
        guard contactsByID[request.contactID] != nil else { throw StoreError.notFound(what: "contact", id: request.contactID.uuidString) }
        if request.status == .open, requests.values.contains(where: { $0.contactID == request.contactID && $0.kind == request.kind && $0.status == .open }) {
            throw StoreError.duplicate(field: "kind", value: request.kind.rawValue)
        }
        requests[request.id] = request
        enqueue(webhooks)
    }

    public func updateSubjectRequest(_ request: SubjectRequest) async throws {
        guard requests[request.id] != nil else { throw StoreError.notFound(what: "request", id: request.id.uuidString) }
        requests[request.id] = request
    }

    public func subjectRequest(id: UUID) async throws -> SubjectRequest? { requests[id] }

    public func closeSubjectRequest(id: UUID, at: Date, outcome: String) async throws {
        guard requests[id] != nil else { throw StoreError.notFound(what: "request", id: id.uuidString) }
        requests[id]?.status = .closed
        requests[id]?.closedAt = at
        requests[id]?.outcome = outcome
    }

    public func subjectRequests(contactID: UUID?, status: SubjectRequest.Status?, limit: Int) async throws -> [SubjectRequest] {
        Array(requests.values.filter { (contactID == nil || $0.contactID == contactID) && (status == nil || $0.status == status) }
            .sorted { ($0.createdAt, $0.id.uuidString) > ($1.createdAt, $1.id.uuidString) }.prefix(limit))
    }

    // MARK: Erasure and objection

    public func eraseContact(_ e: ContactErasure) async throws {
        guard var contact = contactsByID[e.contactID] else { throw StoreError.notFound(what: "contact", id: e.contactID.uuidString) }
        contact.email = Contact.erasedPlaceholder(contact.id)
        contact.name = nil
        contact.externalID = nil
        contact.locale = nil
        contact.erasedAt = e.at
        contact.updatedAt = e.at
        contactsByID[e.contactID] = contact
        keysByContact[e.contactID] = nil
        outbox = outbox.filter { $0.value.contactID != e.contactID }
        let gone = Set(deliveries.values.filter { $0.delivery.contactID == e.contactID }.map(\.delivery.id))
        deliveries = deliveries.filter { !gone.contains($0.key) }
        attempts = attempts.filter { !gone.contains($0.key) }
        enqueue(e.webhooks)
        tokens = tokens.filter { $0.value.contactID != e.contactID }
        linkSecrets[e.contactID] = nil
        portalLinks = portalLinks.filter { $0.value.contactID != e.contactID }
        portalSessions = portalSessions.filter { $0.value.contactID != e.contactID }
        for (id, request) in requests where request.contactID == e.contactID { requests[id]?.note = nil; requests[id]?.identityNote = nil }
        idempotency = idempotency.filter { !(String(decoding: $0.value.response?.body ?? Data(), as: UTF8.self).contains(e.email)) }
        suppressions[e.emailHash] = Suppression(emailHash: e.emailHash, contactID: e.contactID, erasedAt: e.at, reason: e.reason, erasedBy: e.erasedBy)
    }

    public func suppression(emailHash: Data) async throws -> Suppression? { suppressions[emailHash] }

    public func outboxItems(contactID: UUID) async throws -> [OutboxItem] {
        outbox.values.filter { $0.contactID == contactID }.sorted { ($0.createdAt, $0.id.uuidString) < ($1.createdAt, $1.id.uuidString) }
    }

    public func setContactObjection(contactID: UUID, at: Date?) async throws {
        guard contactsByID[contactID] != nil else { throw StoreError.notFound(what: "contact", id: contactID.uuidString) }
        contactsByID[contactID]?.objectedAt = at
    }

    // MARK: Staff

    public func insertStaffUser(_ user: StaffUser) async throws {
        guard !staff.values.contains(where: { $0.email == user.email }) else { throw StoreError.duplicate(field: "email", value: user.email.value) }
        staff[user.id] = user
    }

    public func recordStaffSignInFailure(userID: UUID, lockAfter: Int, lockUntil: Date) async throws -> Date? {
        guard var user = staff[userID] else { return nil }
        user.failedSignIns += 1
        var locked: Date?
        if user.failedSignIns >= lockAfter {
            user.failedSignIns = 0
            user.lockedUntil = lockUntil
            locked = lockUntil
        }
        staff[userID] = user
        return locked
    }

    public func recordStaffSignInSuccess(userID: UUID, passwordHash: String) async throws -> Bool {
        guard var user = staff[userID], user.isActive, user.passwordHash == passwordHash else { return false }
        user.failedSignIns = 0
        user.lockedUntil = nil
        staff[userID] = user
        return true
    }

    public func setStaffPassword(userID: UUID, expected: String?, newHash: String, mustChange: Bool) async throws -> Bool {
        guard var user = staff[userID], expected == nil || user.passwordHash == expected else { return false }
        user.passwordHash = newHash
        user.mustChangePassword = mustChange
        user.failedSignIns = 0
        user.lockedUntil = nil
        staff[userID] = user
        return true
    }

    public func disableStaffUser(userID: UUID, at: Date) async throws {
        guard staff[userID] != nil else { throw StoreError.notFound(what: "staff user", id: userID.uuidString) }
        if staff[userID]?.disabledAt == nil { staff[userID]?.disabledAt = at }
    }

    public func staffUser(id: UUID) async throws -> StaffUser? { staff[id] }
    public func staffUser(email: EmailAddress) async throws -> StaffUser? { staff.values.first { $0.email == email } }
    public func staffUsers() async throws -> [StaffUser] { staff.values.sorted { $0.email.value < $1.email.value } }
    public func insertStaffSession(_ session: StaffSession) async throws { staffSessions[session.hash] = session }
    public func staffSession(hash: Data) async throws -> StaffSession? { staffSessions[hash] }
    public func extendStaffSession(hash: Data, expiresAt: Date) async throws { staffSessions[hash]?.expiresAt = expiresAt }
    public func deleteStaffSession(hash: Data) async throws { staffSessions[hash] = nil }
    public func deleteStaffSessions(userID: UUID) async throws { staffSessions = staffSessions.filter { $0.value.userID != userID } }

    public func appendAudit(_ entry: AuditEntry) async throws { audit.append(entry) }

    public func auditEntries(_ q: AuditQuery) async throws -> [AuditEntry] {
        Array(audit.filter { e in
            (q.actorID == nil || e.actorID == q.actorID) && (q.action == nil || e.action == q.action) && (q.target == nil || e.target == q.target)
                && (q.since.map { e.at >= $0 } ?? true) && (q.until.map { e.at < $0 } ?? true)
        }.sorted { ($0.at, $0.id.uuidString) > ($1.at, $1.id.uuidString) }.prefix(q.limit))
    }

    // MARK: API keys

    public func insertAPIKey(_ key: APIKey) async throws {
        guard apiKeysByID[key.id] == nil else { throw StoreError.duplicate(field: "id", value: key.id) }
        apiKeysByID[key.id] = key
    }

    public func apiKey(id: String) async throws -> APIKey? { apiKeysByID[id] }

    public func apiKeys() async throws -> [APIKey] { apiKeysByID.values.sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) } }

    public func revokeAPIKey(id: String, at: Date) async throws -> Bool {
        guard var key = apiKeysByID[id], key.revokedAt == nil else { return false }
        key.revokedAt = at
        apiKeysByID[id] = key
        return true
    }

    // MARK: Idempotency

    public func beginIdempotency(scope: String, key: String, requestHash: Data, now: Date) async throws -> IdempotencyBegin {
        let k = scope + "\u{0}" + key
        if let existing = idempotency[k] {
            let stale = existing.response == nil && now.timeIntervalSince(existing.at) > IdempotencyPolicy.inProgressTimeout
            let expired = now.timeIntervalSince(existing.at) > IdempotencyPolicy.retention
            if !stale && !expired {
                guard existing.hash == requestHash else { return .mismatch }
                return existing.response.map { .replay($0) } ?? .inProgress
            }
        }
        idempotency[k] = (requestHash, nil, now)
        return .started
    }

    public func completeIdempotency(scope: String, key: String, response: StoredResponse) async throws {
        let k = scope + "\u{0}" + key
        if let existing = idempotency[k] { idempotency[k] = (existing.hash, response, existing.at) }
    }

    public func abandonIdempotency(scope: String, key: String) async throws {
        idempotency[scope + "\u{0}" + key] = nil
    }

    // MARK: Segments

    public func insertSegment(_ segment: Segment) async throws {
        guard segmentsByID[segment.id] == nil else { throw StoreError.duplicate(field: "id", value: segment.id) }
        segmentsByID[segment.id] = segment
    }

    public func updateSegment(_ segment: Segment) async throws {
        guard let old = segmentsByID[segment.id] else { throw StoreError.notFound(what: "segment", id: segment.id) }
        var updated = segment
        updated.createdAt = old.createdAt
        updated.createdBy = old.createdBy
        segmentsByID[segment.id] = updated
    }

    public func deleteSegment(id: String) async throws -> Bool {
        segmentSizesByID[id] = nil
        return segmentsByID.removeValue(forKey: id) != nil
    }

    public func segment(id: String) async throws -> Segment? { segmentsByID[id] }

    public func segments() async throws -> [Segment] { segmentsByID.values.sorted { $0.id < $1.id } }

    public func recordSegmentSize(_ size: SegmentSize) async throws {
        guard segmentsByID[size.segmentID] != nil else { throw StoreError.notFound(what: "segment", id: size.segmentID) }
        segmentSizesByID[size.segmentID, default: [:]][size.day] = size
    }

    public func segmentSizes(segmentID: String, limit: Int) async throws -> [SegmentSize] {
        Array((segmentSizesByID[segmentID] ?? [:]).values.sorted { $0.day < $1.day }.suffix(limit))
    }

    // MARK: Re-permission

    private static func repermissionKey(_ contactID: UUID, _ topicKey: String, _ expiresAt: Date) -> String {
        "\(contactID)|\(topicKey)|\(expiresAt.millisecondsSince1970)"
    }

    public func dueRepermissions(now: Date, horizon: Date, limit: Int) async throws -> [RepermissionDue] {
        var due: [RepermissionDue] = []
        for (contactID, preferences) in preferencesByContact {
            guard let contact = contactsByID[contactID], !contact.isErased, contact.objectedAt == nil else { continue }
            for p in preferences.values where p.state == .granted {
                guard let expiresAt = p.expiresAt, expiresAt > now, expiresAt <= horizon,
                      let topic = topicsByKey[p.topicKey], topic.isActive, let days = topic.repermissionDaysBefore,
                      expiresAt <= now.addingTimeInterval(TimeInterval(days) * 86_400),
                      repermissions[Self.repermissionKey(contactID, p.topicKey, expiresAt)] == nil else { continue }
                due.append(RepermissionDue(contactID: contactID, topicKey: p.topicKey, expiresAt: expiresAt))
            }
        }
        return Array(due.sorted { ($0.expiresAt, $0.contactID.uuidString, $0.topicKey) < ($1.expiresAt, $1.contactID.uuidString, $1.topicKey) }.prefix(limit))
    }

    public func insertRepermission(_ request: RepermissionRequest, email: OutboxItem) async throws -> Bool {
        guard contactsByID[request.contactID] != nil else { throw StoreError.notFound(what: "contact", id: request.contactID.uuidString) }
        let key = Self.repermissionKey(request.contactID, request.topicKey, request.grantExpiresAt)
        guard repermissions[key] == nil else { return false }
        repermissions[key] = request
        outbox[email.id] = email
        return true
    }

    // MARK: Reports

    public func stateCounts(now: Date) async throws -> [StateCount] {
        var counts: [String: [PreferenceState: Int]] = [:]
        for (id, preferences) in preferencesByContact where contactsByID[id]?.isErased != true {
            for p in preferences.values { counts[p.topicKey, default: [:]][p.effectiveState(at: now), default: 0] += 1 }
        }
        return counts.flatMap { topic, states in states.map { StateCount(topicKey: topic, state: $0.key, count: $0.value) } }
    }

    public func contactCount() async throws -> Int { contactsByID.values.filter { !$0.isErased }.count }

    public func changeCounts(from: Date, to: Date, weekStart: Date) async throws -> [ChangeCount] {
        var counts: [String: ChangeCount] = [:]
        for e in eventsByContact.values.joined() where e.occurredAt >= from && e.occurredAt < to && [.granted, .confirmed, .withdrawn].contains(e.action) {
            let week = Date(millisecondsSince1970: weekStart.millisecondsSince1970 + (e.occurredAt.millisecondsSince1970 - weekStart.millisecondsSince1970) / 604_800_000 * 604_800_000)
            let key = "\(week.millisecondsSince1970)|\(e.source.rawValue)"
            var c = counts[key] ?? ChangeCount(week: week, source: e.source, optIns: 0, optOuts: 0)
            if e.action == .withdrawn { c.optOuts += 1 } else { c.optIns += 1 }
            counts[key] = c
        }
        return counts.values.sorted { ($0.week, $0.source.rawValue) < ($1.week, $1.source.rawValue) }
    }

    public func confirmationOutcomes(from: Date, to: Date) async throws -> [ConfirmationOutcome] {
        var result: [ConfirmationOutcome] = []
        for events in eventsByContact.values {
            for (i, r) in events.enumerated() where r.action == .requested && r.occurredAt >= from && r.occurredAt < to {
                let next = events[(i + 1)...].first { $0.topicKey == r.topicKey }
                result.append(ConfirmationOutcome(topicKey: r.topicKey, requestedAt: r.occurredAt, confirmedAt: next?.action == .confirmed ? next?.occurredAt : nil))
            }
        }
        return result
    }

    public func expiringCounts(now: Date) async throws -> [ExpiringCount] {
        var counts: [String: ExpiringCount] = [:]
        for p in preferencesByContact.values.flatMap(\.values) where p.state == .granted {
            guard let e = p.expiresAt, e > now, e <= now.addingTimeInterval(90 * 86_400) else { continue }
            var c = counts[p.topicKey] ?? ExpiringCount(topicKey: p.topicKey, within30: 0, within60: 0, within90: 0)
            if e <= now.addingTimeInterval(30 * 86_400) { c.within30 += 1 }
            if e <= now.addingTimeInterval(60 * 86_400) { c.within60 += 1 }
            c.within90 += 1
            counts[p.topicKey] = c
        }
        return counts.values.sorted { $0.topicKey < $1.topicKey }
    }

    // MARK: Webhooks

    private func enqueue(_ new: [WebhookDelivery]) {
        for d in new where endpoints[d.endpointID] != nil {
            deliveries[d.id] = (nextOrdinal, d)
            nextOrdinal += 1
        }
    }

    public func insertWebhookEndpoint(_ endpoint: WebhookEndpoint) async throws {
        guard endpoints[endpoint.id] == nil else { throw StoreError.duplicate(field: "id", value: endpoint.id) }
        endpoints[endpoint.id] = endpoint
    }

    public func updateWebhookEndpoint(_ endpoint: WebhookEndpoint) async throws {
        guard let old = endpoints[endpoint.id] else { throw StoreError.notFound(what: "webhook", id: endpoint.id) }
        var updated = endpoint
        updated.createdAt = old.createdAt
        updated.createdBy = old.createdBy
        endpoints[endpoint.id] = updated
    }

    public func deleteWebhookEndpoint(id: String) async throws -> Bool {
        let gone = Set(deliveries.values.filter { $0.delivery.endpointID == id }.map(\.delivery.id))
        deliveries = deliveries.filter { !gone.contains($0.key) }
        attempts = attempts.filter { !gone.contains($0.key) }
        return endpoints.removeValue(forKey: id) != nil
    }

    public func webhookEndpoint(id: String) async throws -> WebhookEndpoint? { endpoints[id] }

    public func webhookEndpoints() async throws -> [WebhookEndpoint] {
        endpoints.values.sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }
    }

    public func insertWebhookDeliveries(_ new: [WebhookDelivery]) async throws {
        for d in new where endpoints[d.endpointID] == nil { throw StoreError.notFound(what: "webhook", id: d.endpointID) }
        enqueue(new)
    }

    public func claimWebhookDeliveries(now: Date, limit: Int, lease: TimeInterval) async throws -> [WebhookDelivery] {
        let pending = deliveries.values.filter { $0.delivery.status == .pending }.sorted { $0.ordinal < $1.ordinal }
        var blocked: Set<String> = []
        var claimed: [WebhookDelivery] = []
        for (_, d) in pending {
            let key = "\(d.endpointID)|\(d.contactID?.uuidString ?? "-")"
            defer { if d.contactID != nil { blocked.insert(key) } }
            guard claimed.count < limit, d.nextAttemptAt <= now, endpoints[d.endpointID]?.enabled == true,
                  d.contactID == nil || !blocked.contains(key) else { continue }
            var updated = d
            updated.attempts += 1
            updated.nextAttemptAt = now.addingTimeInterval(lease)
            deliveries[d.id]?.delivery = updated
            claimed.append(updated)
        }
        return claimed
    }

    public func recordWebhookAttempt(_ attempt: WebhookAttempt, outcome: WebhookOutcome, payload: Data?) async throws {
        // Deleted meanwhile (erasure, endpoint removed), or no longer this worker's claim.
        guard var d = deliveries[attempt.deliveryID]?.delivery, d.status == .pending, d.attempts == attempt.number else { return }
        var logged = attempt
        logged.number = (attempts[attempt.deliveryID]?.count ?? 0) + 1
        attempts[attempt.deliveryID, default: []].append(logged)
        d.lastStatusCode = attempt.statusCode
        d.lastError = attempt.error
        switch outcome {
        case .delivered:
            d.status = .delivered
            d.deliveredAt = attempt.at
        case .retry(let at):
            d.nextAttemptAt = at
        case .failed:
            d.status = .failed
        }
        if let payload { d.payload = payload }
        deliveries[attempt.deliveryID]?.delivery = d
    }

    public func webhookDelivery(id: UUID) async throws -> WebhookDelivery? { deliveries[id]?.delivery }

    public func webhookDeliveries(_ q: WebhookDeliveryQuery) async throws -> [WebhookDelivery] {
        Array(deliveries.values.sorted { $0.ordinal > $1.ordinal }.map(\.delivery).filter { d in
            (q.endpointID == nil || d.endpointID == q.endpointID) && (q.status == nil || d.status == q.status)
                && (q.contactID == nil || d.contactID == q.contactID) && (q.since == nil || d.createdAt >= q.since!)
        }.prefix(q.limit))
    }

    public func webhookAttempts(deliveryID: UUID) async throws -> [WebhookAttempt] { attempts[deliveryID] ?? [] }

    public func retryWebhookDeliveries(ids: [UUID]?, endpointID: String?, now: Date) async throws -> Int {
        var count = 0
        for (id, entry) in deliveries where entry.delivery.status == .failed
            && (ids == nil || ids!.contains(id)) && (endpointID == nil || entry.delivery.endpointID == endpointID) {
            var d = entry.delivery
            d.status = .pending
            d.attempts = 0
            d.nextAttemptAt = now
            deliveries[id]?.delivery = d
            count += 1
        }
        return count
    }
}

/// How long idempotency keys are remembered, shared by every store.
public enum IdempotencyPolicy {
    /// A stored response is replayed for this long (24 h, as most payment APIs do).
    public static let retention: TimeInterval = 24 * 3600
    /// A request that never finished (crash) frees its key after this long.
    public static let inProgressTimeout: TimeInterval = 60
}
