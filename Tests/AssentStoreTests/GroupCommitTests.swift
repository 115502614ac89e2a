import AssentCore
import AssentPostgres
import AssentSQLite
import AssentStore
import AssentTestSupport
import Foundation
import GRDB
import Testing

@Suite struct GroupCommitTests {
    /// A grant of `topic` built on `head`, as the ledger would build it.
    private func grant(_ contact: Contact, _ topic: String, on head: ChainHead) -> LedgerCommit {
        let at = Date()
        let event = ConsentEvent(id: UUID(), contactID: contact.id, seq: head.seq + 1, topicKey: topic, action: .granted, fromState: .none,
                                 toState: .granted, source: .api, channel: nil, actor: .apiKey("k"), occurredAt: at, recordedAt: at,
                                 expiresAt: nil, noticeVersion: 1, formID: nil, formVersion: nil, batchID: nil, sealedEvidence: nil,
                                 prevHash: head.hash).sealed()
        let preference = Preference(contactID: contact.id, topicKey: topic, state: .granted, since: at, expiresAt: nil, seq: event.seq)
        return LedgerCommit(contactID: contact.id, expectedHead: head, events: [event], preferences: [preference])
    }

    /// In one group, a commit whose head moved fails alone: the others in
    /// the same transaction are written, and its contact is untouched.
    @Test(arguments: StoreKind.available)
    func aRefusedCommitFailsAloneInItsGroup(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        var contacts: [Contact] = []
        for name in ["ann", "bob", "cy"] {
            contacts.append(try await ledger.createContact(email: EmailAddress("\(name)@example.com"), name: nil, externalID: nil, locale: nil))
        }
        let staleHead = try await ledger.store.ledgerState(contactID: contacts[1].id).head
        _ = try await optIn(ledger, contacts[1], ["news"])
        let group = [
            grant(contacts[0], "events", on: .empty(contacts[0].id)),
            grant(contacts[1], "events", on: staleHead),
            grant(contacts[2], "events", on: .empty(contacts[2].id)),
        ]
        let errors = try await ledger.store.commit(group: group)
        #expect(errors.count == 3)
        #expect(errors[0] == nil && errors[2] == nil)
        #expect((errors[1] as? StoreError) == .concurrentModification(contactID: contacts[1].id))
        for contact in [contacts[0], contacts[2]] {
            #expect(try await ledger.store.preferences(contactID: contact.id).map(\.topicKey) == ["events"])
        }
        #expect(try await ledger.store.preferences(contactID: contacts[1].id).map(\.topicKey) == ["news"], "the refused grant left no trace")
        #expect(try await ledger.store.events(contactID: contacts[1].id, beforeSeq: nil, limit: 10).count == 1)
        // Two commits for one contact on the same head: the first wins, the second is refused.
        let head = try await ledger.store.ledgerState(contactID: contacts[0].id).head
        let twice = try await ledger.store.commit(group: [grant(contacts[0], "news", on: head), grant(contacts[0], "hr-training", on: head)])
        #expect(twice[0] == nil)
        #expect((twice[1] as? StoreError) == .concurrentModification(contactID: contacts[0].id))
        #expect(try await ledger.store.preferences(contactID: contacts[0].id).map(\.topicKey) == ["events", "news"])
        #expect(try await ledger.verify().isIntact)
    }

    /// Many concurrent changes for different contacts through the ledger:
    /// every acknowledged one is there, and the chains verify.
    @Test(arguments: StoreKind.available)
    func concurrentChangesForManyContactsAreAllWritten(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        var contacts: [Contact] = []
        for n in 0..<48 {
            contacts.append(try await ledger.createContact(email: EmailAddress("p\(n)@example.com"), name: nil, externalID: nil, locale: nil))
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (n, contact) in contacts.enumerated() {
                group.addTask {
                    _ = try await optIn(ledger, contact, [["events", "news", "hr-training"][n % 3]])
                    _ = try await optIn(ledger, contact, ["events", "news"])
                }
            }
            try await group.waitForAll()
        }
        for (n, contact) in contacts.enumerated() {
            let granted = Set(try await ledger.store.preferences(contactID: contact.id).filter { $0.state == .granted }.map(\.topicKey))
            #expect(granted == Set(["events", "news", ["events", "news", "hr-training"][n % 3]]))
        }
        #expect(try await ledger.verify().isIntact)
    }

    final class Gate: @unchecked Sendable {
        private let lock = NSLock()
        private var groups: [[UUID]] = []
        private var waiter: CheckedContinuation<Void, Never>?
        private var open = false

        func record(_ ids: [UUID]) { lock.withLock { groups.append(ids) } }
        var recorded: [[UUID]] { lock.withLock { groups } }

        func wait() async {
            await withCheckedContinuation { c in
                let now = lock.withLock { () -> Bool in
                    if open { return true }
                    waiter = c
                    return false
                }
                if now { c.resume() }
            }
        }

        func release() {
            let w = lock.withLock { () -> CheckedContinuation<Void, Never>? in
                open = true
                defer { waiter = nil }
                return waiter
            }
            w?.resume()
        }
    }

    /// Commits that arrive while one is being written go together in the
    /// next transaction; each caller gets its own result; a failed
    /// transaction fails all of its commits and no other.
    @Test func commitsArrivingDuringAWriteShareTheNextTransaction() async throws {
        let committer = GroupCommitter(maxGroup: 8)
        let gate = Gate()
        let writer: GroupCommitter.Writer = { commits in
            let ids = commits.map(\.contactID)
            gate.record(ids)
            if gate.recorded.count == 1 { await gate.wait() }
            if gate.recorded.count == 3 { throw StoreError.unavailable("disk full") }
            return commits.map { $0.events.isEmpty ? StoreError.notFound(what: "event", id: "") : nil }
        }
        func commit(_ id: UUID, events: Bool = true) -> LedgerCommit {
            let event = ConsentEvent(id: UUID(), contactID: id, seq: 1, topicKey: "t", action: .granted, fromState: .none, toState: .granted,
                                     source: .api, channel: nil, actor: .apiKey("k"), occurredAt: Date(), recordedAt: Date(), expiresAt: nil,
                                     noticeVersion: 1, formID: nil, formVersion: nil, batchID: nil, sealedEvidence: nil,
                                     prevHash: ChainHead.empty(id).hash).sealed()
            return LedgerCommit(contactID: id, expectedHead: .empty(id), events: events ? [event] : [], preferences: [])
        }
        let first = UUID()
        let leader = Task { try await committer.commit(commit(first), writer: writer) }
        while gate.recorded.isEmpty { await Task.yield() }
        // Ten more arrive while the first is being written: eight form the next group, two the one after.
        let ids = (0..<10).map { _ in UUID() }
        var followers: [Task<Bool, Never>] = []
        for (n, id) in ids.enumerated() {
            followers.append(Task { () -> Bool in
                do {
                    try await committer.commit(commit(id, events: n != 3), writer: writer)
                    return true
                } catch {
                    return false
                }
            })
            while committer.pendingCount < n + 1 { await Task.yield() }
        }
        gate.release()
        try await leader.value
        var outcomes: [Bool] = []
        for f in followers { outcomes.append(await f.value) }
        let groups = gate.recorded
        #expect(groups.count == 3)
        #expect(groups[0] == [first])
        #expect(groups[1].count == 8 && groups[2].count == 2)
        #expect(groups[1] + groups[2] == ids, "in order of arrival")
        // In the second group only the commit the writer refused failed; the third group's transaction failed.
        #expect(outcomes == [true, true, true, false, true, true, true, true, false, false])
        #expect(committer.statistics.transactions == 3 && committer.statistics.commits == 11)
    }
}

/// A batch writes a contact's first preferences and chain head by plain insert on PostgreSQL (see
/// `PostgresStore.write`): should a row be there already, against the invariant, the batch's
/// changes are written again one by one, by upsert, and none is lost.
@Suite struct FirstWriteFallbackTests {
    @Test(arguments: StoreKind.databases)
    func aStrayPreferenceRowDoesNotLoseABatchedChange(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        let ann = try await ledger.createContact(email: EmailAddress("ann@example.com"), name: nil, externalID: nil, locale: nil)
        let bob = try await ledger.createContact(email: EmailAddress("bob@example.com"), name: nil, externalID: nil, locale: nil)
        let stray = "INSERT INTO preferences (contact_id, topic_key, state, since, expires_at, seq) VALUES ('\(ann.id.uuidString.lowercased())', 'news', 'withdrawn', 0, NULL, 0)"
        if let sqlite = ledger.store as? SQLiteStore {
            try await sqlite.pool.write { db in try db.execute(sql: stray) }
        } else if let postgres = ledger.store as? PostgresStore {
            _ = try await postgres.strings(stray)
        }
        let requests = [ann, bob].map { contact in
            ChangeRequest(contactID: contact.id, changes: [TopicChange(topicKey: "news", intent: .optIn)], source: .api, actor: .apiKey("test"))
        }
        for result in try await ledger.recordChanges(requests) { _ = try result.get() }
        for contact in [ann, bob] {
            let preferences = try await ledger.store.preferences(contactID: contact.id)
            #expect(preferences.map(\.topicKey) == ["news"] && preferences.first?.state == .granted && preferences.first?.seq == 1)
            #expect(try await ledger.check(email: contact.email, topicKey: "news").allowed)
        }
        #expect(try await ledger.verify().isIntact)
    }
}
