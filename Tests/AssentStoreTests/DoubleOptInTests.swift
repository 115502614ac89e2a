import AssentCore
import AssentStore
import AssentTestSupport
import Foundation
import Testing

/// Double opt-in in the one write path, and the outbox that carries its emails.
@Suite struct DoubleOptInTests {
    func ledgerWithDOITopics(_ kind: StoreKind, clock: TestClock? = nil) async throws -> (Ledger, Contact) {
        let ledger = try await kind.makeLedger(now: { clock?.now ?? Date() })
        for key in ["events", "news"] {
            _ = try await ledger.createTopic(Topic(key: key, title: key.capitalized, requiresDoubleOptIn: true, createdAt: Date()), noticeText: "About \(key).")
        }
        let contact = try await ledger.createContact(email: EmailAddress("ann@example.com"), name: "Ann", externalID: nil, locale: "de")
        return (ledger, contact)
    }

    func formOptIn(_ ledger: Ledger, _ contact: Contact, _ topics: [String]) async throws -> ChangeResult {
        try await ledger.recordChange(ChangeRequest(contactID: contact.id, changes: topics.map { TopicChange(topicKey: $0, intent: .optIn) },
                                                    source: .form, actor: .apiKey("k"),
                                                    evidence: Evidence(formID: "signup", personal: PersonalEvidence(ipAddress: "203.0.113.1"))))
    }

    /// The confirmation emails queued so far, oldest first, opened with the master key.
    func queuedEmails(_ ledger: Ledger) async throws -> [ConfirmationEmail] {
        try await ledger.store.outboxItems(status: nil, limit: 100).reversed().map { item in
            #expect(item.kind == ConfirmationEmail.kind)
            return try ConfirmationEmail.open(item, masterKey: ledger.masterKey)
        }
    }

    @Test(arguments: StoreKind.available)
    func formOptInIsPendingAndQueuesOneEmailForAllTopics(_ kind: StoreKind) async throws {
        let (ledger, contact) = try await ledgerWithDOITopics(kind)
        let result = try await formOptIn(ledger, contact, ["events", "news"])
        #expect(result.events.map(\.action) == [.requested, .requested])
        #expect(result.events.allSatisfy { $0.toState == .pending })
        #expect(result.confirmationRequestedFor == ["events", "news"])
        #expect(try await ledger.check(email: contact.email, topicKey: "events") == CheckResult(allowed: false, reason: .pending, contactID: contact.id, since: result.events[0].occurredAt))
        let emails = try await queuedEmails(ledger)
        #expect(emails.count == 1)
        let email = try #require(emails.first)
        #expect(email.to == "ann@example.com" && email.topics == ["events", "news"] && email.locale == "de")
        // Only the hash of the link's secret is stored.
        let token = try #require(try await ledger.store.confirmationToken(hash: ConfirmationToken.hash(email.token)))
        #expect(token.hash != Data(email.token.utf8) && token.topics == ["events", "news"])
        #expect(try await ledger.store.confirmationToken(hash: Data(email.token.utf8)) == nil)
    }

    @Test(arguments: StoreKind.available)
    func staffAndAPIOptInsAreGrantedDirectly(_ kind: StoreKind) async throws {
        let (ledger, contact) = try await ledgerWithDOITopics(kind)
        let staff = try await ledger.recordChange(ChangeRequest(contactID: contact.id, changes: [.init(topicKey: "events", intent: .optIn)], source: .staff,
                                                                channel: .phone, actor: .staff("agent"), evidence: Evidence(personal: .init(note: "said yes"))))
        #expect(staff.events.first?.toState == .granted)
        let api = try await optIn(ledger, contact, ["news"])
        #expect(api.events.first?.toState == .granted)
        #expect(try await ledger.store.outboxItems(status: nil, limit: 10).isEmpty)
    }

    @Test(arguments: StoreKind.available)
    func clickingTheLinkConfirmsWithTheClicksEvidence(_ kind: StoreKind) async throws {
        let (ledger, contact) = try await ledgerWithDOITopics(kind)
        _ = try await formOptIn(ledger, contact, ["events", "news"])
        let email = try #require(try await queuedEmails(ledger).first)
        let (status, result) = try await ledger.confirm(token: email.token, ipAddress: "198.51.100.7", userAgent: "Mail client")
        guard case .valid = status else { Issue.record("expected a valid link, got \(status)"); return }
        let events = try #require(result?.events)
        #expect(events.map(\.action) == [.confirmed, .confirmed])
        #expect(events.allSatisfy { $0.source == .emailLink && $0.fromState == .pending && $0.toState == .granted && $0.actor.kind == .subject })
        let timeline = try await ledger.timeline(contactID: contact.id, beforeSeq: nil, limit: 10)
        #expect(timeline.first?.personal == PersonalEvidence(ipAddress: "198.51.100.7", userAgent: "Mail client"))
        #expect(try await ledger.check(email: contact.email, topicKey: "news").allowed)
        // Single use: a second click changes nothing.
        let (again, none) = try await ledger.confirm(token: email.token, ipAddress: nil, userAgent: nil)
        #expect(again == .used && none == nil)
        #expect(try await ledger.store.events(contactID: contact.id, beforeSeq: nil, limit: 10).count == 4)
        #expect(try await ledger.verify().isIntact)
    }

    @Test(arguments: StoreKind.available)
    func topicsCanBeConfirmedOneByOne(_ kind: StoreKind) async throws {
        let (ledger, contact) = try await ledgerWithDOITopics(kind)
        _ = try await formOptIn(ledger, contact, ["events", "news"])
        let email = try #require(try await queuedEmails(ledger).first)
        let (_, first) = try await ledger.confirm(token: email.token, topics: ["news"], ipAddress: nil, userAgent: nil)
        #expect(first?.events.map(\.topicKey) == ["news"])
        #expect(try await ledger.check(email: contact.email, topicKey: "events").reason == .pending)
        guard case .valid(let record) = try await ledger.linkStatus(token: email.token) else { Issue.record("link should still be valid"); return }
        #expect(record.remainingTopics == ["events"])
        await #expect(throws: DomainError.self) { _ = try await ledger.confirm(token: email.token, topics: ["news"], ipAddress: nil, userAgent: nil) }
        let (_, second) = try await ledger.confirm(token: email.token, topics: ["events"], ipAddress: nil, userAgent: nil)
        #expect(second?.events.map(\.topicKey) == ["events"])
        #expect(try await ledger.linkStatus(token: email.token) == .used)
    }

    @Test(arguments: StoreKind.available)
    func expiredLinkChangesNothing(_ kind: StoreKind) async throws {
        let clock = TestClock(Date())
        let (ledger, contact) = try await ledgerWithDOITopics(kind, clock: clock)
        _ = try await formOptIn(ledger, contact, ["events"])
        let email = try #require(try await queuedEmails(ledger).first)
        clock.now = clock.now.addingTimeInterval(7 * 86_400 + 1)
        let (status, result) = try await ledger.confirm(token: email.token, ipAddress: nil, userAgent: nil)
        #expect(status == .expired && result == nil)
        #expect(try await ledger.check(email: contact.email, topicKey: "events").reason == .pending)
        #expect(try await ledger.linkStatus(token: "not-a-token") == .unknown)
    }

    @Test(arguments: StoreKind.available)
    func aNewRequestResendsAndInvalidatesOlderLinks(_ kind: StoreKind) async throws {
        let (ledger, contact) = try await ledgerWithDOITopics(kind)
        _ = try await formOptIn(ledger, contact, ["events"])
        let again = try await formOptIn(ledger, contact, ["events", "news"])
        #expect(again.events.map(\.topicKey) == ["news"], "events was already pending")
        #expect(again.unchanged.map(\.reason) == ["already pending confirmation"])
        let emails = try await queuedEmails(ledger)
        #expect(emails.count == 2)
        // Both were queued in the same millisecond, so tell them apart by content.
        let older = try #require(emails.first { $0.topics == ["events"] })
        let newer = try #require(emails.first { $0.topics == ["events", "news"] }, "the new link covers every pending topic")
        #expect(try await ledger.linkStatus(token: older.token) == .superseded)
        let (old, _) = try await ledger.confirm(token: older.token, ipAddress: nil, userAgent: nil)
        #expect(old == .superseded)
        #expect(try await ledger.check(email: contact.email, topicKey: "events").reason == .pending)
        let (new, result) = try await ledger.confirm(token: newer.token, ipAddress: nil, userAgent: nil)
        guard case .valid = new else { Issue.record("new link should work"); return }
        #expect(result?.events.count == 2)
    }

    @Test(arguments: StoreKind.available)
    func aWithdrawalBeforeTheClickIsNotOverriddenByIt(_ kind: StoreKind) async throws {
        let (ledger, contact) = try await ledgerWithDOITopics(kind)
        _ = try await formOptIn(ledger, contact, ["events"])
        let email = try #require(try await queuedEmails(ledger).first)
        _ = try await optOut(ledger, contact, ["events"])
        let (_, result) = try await ledger.confirm(token: email.token, ipAddress: nil, userAgent: nil)
        #expect(result?.events.isEmpty == true)
        #expect(result?.unchanged.first?.reason == "no longer pending (withdrawn)")
        #expect(try await ledger.check(email: contact.email, topicKey: "events").reason == .withdrawn)
    }

    @Test(arguments: StoreKind.available)
    func changingTheEmailInvalidatesLinksSentToTheOldAddress(_ kind: StoreKind) async throws {
        let (ledger, contact) = try await ledgerWithDOITopics(kind)
        _ = try await formOptIn(ledger, contact, ["events"])
        let email = try #require(try await queuedEmails(ledger).first)
        _ = try await ledger.updateContact(id: contact.id) { $0.email = try! EmailAddress("new@example.com") }
        let (status, result) = try await ledger.confirm(token: email.token, ipAddress: nil, userAgent: nil)
        #expect(status == .superseded && result == nil)
        #expect(try await ledger.check(email: EmailAddress("new@example.com"), topicKey: "events").reason == .pending)
    }

    @Test(arguments: StoreKind.available)
    func concurrentClicksConfirmOnce(_ kind: StoreKind) async throws {
        let (ledger, contact) = try await ledgerWithDOITopics(kind)
        _ = try await formOptIn(ledger, contact, ["events", "news"])
        let email = try #require(try await queuedEmails(ledger).first)
        let confirmed = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<6 {
                group.addTask { try await ledger.confirm(token: email.token, ipAddress: nil, userAgent: nil).1?.events.count ?? 0 }
            }
            return try await group.reduce(0, +)
        }
        #expect(confirmed == 2)
        #expect(try await ledger.store.events(contactID: contact.id, beforeSeq: nil, limit: 10).count == 4)
    }
}

@Suite struct OutboxTests {
    func enqueue(_ ledger: Ledger, count: Int, at: Date = Date()) async throws -> [UUID] {
        var ids: [UUID] = []
        for i in 0..<count {
            let contact = try await ledger.createContact(email: EmailAddress("p\(i)-\(UUID().uuidString.prefix(6))@example.com"), name: nil, externalID: nil, locale: nil)
            let id = UUID()
            let item = OutboxItem(id: id, contactID: contact.id, kind: "test", payload: Data("\(i)".utf8), nextAttemptAt: at, createdAt: at)
            try await ledger.store.commit(LedgerCommit(contactID: contact.id, expectedHead: .empty(contact.id), events: [], preferences: [], outbox: [item]))
            ids.append(id)
        }
        return ids
    }

    @Test(arguments: StoreKind.available)
    func claimedItemsAreInvisibleUntilTheirLeaseEnds(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        let now = Date().truncatedToMilliseconds
        let ids = try await enqueue(ledger, count: 3, at: now)
        let first = try await ledger.store.claimOutbox(now: now, limit: 2, lease: 60)
        #expect(first.count == 2 && first.allSatisfy { $0.attempts == 1 })
        let second = try await ledger.store.claimOutbox(now: now, limit: 10, lease: 60)
        #expect(second.count == 1)
        #expect(Set((first + second).map(\.id)) == Set(ids))
        #expect(try await ledger.store.claimOutbox(now: now, limit: 10, lease: 60).isEmpty)
        // A worker that died: after the lease, the item is claimable again.
        let later = try await ledger.store.claimOutbox(now: now.addingTimeInterval(61), limit: 10, lease: 60)
        #expect(later.count == 3 && later.allSatisfy { $0.attempts == 2 })
    }

    @Test(arguments: StoreKind.available)
    func failuresRetryThenDieAndCanBeRetriedByHand(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        let now = Date().truncatedToMilliseconds
        let id = try #require(try await enqueue(ledger, count: 1, at: now).first)
        _ = try await ledger.store.claimOutbox(now: now, limit: 1, lease: 60)
        try await ledger.store.failOutbox(id: id, error: "421 try later", retryAt: now.addingTimeInterval(30))
        #expect(try await ledger.store.claimOutbox(now: now.addingTimeInterval(29), limit: 1, lease: 60).isEmpty)
        #expect(try await ledger.store.claimOutbox(now: now.addingTimeInterval(30), limit: 1, lease: 60).first?.attempts == 2)
        try await ledger.store.failOutbox(id: id, error: "550 no such user", retryAt: nil)
        let dead = try await ledger.store.outboxItems(status: .dead, limit: 10)
        #expect(dead.map(\.id) == [id] && dead.first?.lastError == "550 no such user")
        #expect(try await ledger.store.claimOutbox(now: now.addingTimeInterval(3_600), limit: 1, lease: 60).isEmpty)
        #expect(try await ledger.store.retryOutbox(id: nil, now: now) == 1)
        let revived = try await ledger.store.claimOutbox(now: now, limit: 1, lease: 60)
        #expect(revived.first?.id == id && revived.first?.attempts == 1)
        try await ledger.store.completeOutbox(id: id, at: now, payload: Data("scrubbed".utf8))
        let sent = try await ledger.store.outboxItems(status: .sent, limit: 10)
        #expect(sent.first?.payload == Data("scrubbed".utf8) && sent.first?.sentAt == now)
        #expect(try await ledger.store.retryOutbox(id: id, now: now) == 0, "only dead items are retried")
    }

    /// Several workers claiming at once never get the same item.
    @Test(arguments: StoreKind.available)
    func concurrentClaimsAreDisjoint(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        let now = Date().truncatedToMilliseconds
        let ids = try await enqueue(ledger, count: 30, at: now)
        let claimed = try await withThrowingTaskGroup(of: [UUID].self) { group in
            for _ in 0..<5 {
                group.addTask {
                    var mine: [UUID] = []
                    while true {
                        let batch = try await ledger.store.claimOutbox(now: now, limit: 3, lease: 600)
                        if batch.isEmpty { return mine }
                        mine += batch.map(\.id)
                    }
                }
            }
            return try await group.reduce(into: [UUID]()) { $0 += $1 }
        }
        #expect(claimed.count == 30)
        #expect(Set(claimed) == Set(ids))
    }
}
