import AssentCore
import AssentStore
import AssentTestSupport
import Foundation
import Testing

/// The storage conformance suite: written once, run against every backend.
@Suite struct ConformanceTests {
    @Test(arguments: StoreKind.available)
    func newContactReadsNoForEveryTopic(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        let contact = try await ledger.createContact(email: EmailAddress("ann@example.com"), name: "Ann", externalID: nil, locale: nil)
        #expect(try await ledger.store.preferences(contactID: contact.id).isEmpty)
        for topic in ["events", "news", "hr-training"] {
            let check = try await ledger.check(email: EmailAddress("ANN@example.com"), topicKey: topic)
            #expect(check == CheckResult(allowed: false, reason: .none, contactID: contact.id))
        }
        #expect(try await ledger.store.events(contactID: contact.id, beforeSeq: nil, limit: 10).isEmpty)
    }

    @Test(arguments: StoreKind.available)
    func topicKeysAndContactEmailsAreUnique(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        await #expect(throws: DomainError.conflict(field: "key", message: "a topic with key 'events' already exists")) {
            _ = try await ledger.createTopic(Topic(key: "events", title: "Again", createdAt: Date()), noticeText: "x")
        }
        _ = try await ledger.createContact(email: EmailAddress("ann@example.com"), name: nil, externalID: "crm-1", locale: nil)
        await #expect(throws: DomainError.self) {
            _ = try await ledger.createContact(email: EmailAddress("Ann@Example.com"), name: nil, externalID: nil, locale: nil)
        }
        do {
            _ = try await ledger.createContact(email: EmailAddress("bob@example.com"), name: nil, externalID: "crm-1", locale: nil)
            Issue.record("duplicate external id accepted")
        } catch let DomainError.conflict(field, _) {
            #expect(field == "externalId")
        }
        #expect(try await ledger.store.contact(email: EmailAddress("bob@example.com")) == nil)
    }

    @Test(arguments: StoreKind.available)
    func noticesAreVersionedAndOldVersionsStayReadable(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        let v2 = try await ledger.publishNotice(topicKey: "events", text: "New wording, v2.")
        #expect(v2.version == 2)
        #expect(try await ledger.store.topic(key: "events")?.currentNoticeVersion == 2)
        #expect(try await ledger.store.notice(topicKey: "events", version: 1)?.text == "We will email you about Events.")
        #expect(try await ledger.store.notices(topicKey: "events").map(\.version) == [1, 2])
        // Publishing the same text again is not a new version.
        #expect(try await ledger.publishNotice(topicKey: "events", text: "New wording, v2.").version == 2)
    }

    @Test(arguments: StoreKind.available)
    func optInRecordsAnAttributedEventAndTheProjection(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        let contact = try await ledger.createContact(email: EmailAddress("ann@example.com"), name: nil, externalID: nil, locale: nil)
        let spokeAt = Date().addingTimeInterval(-3_600).truncatedToMilliseconds
        let result = try await ledger.recordChange(ChangeRequest(
            contactID: contact.id, changes: [TopicChange(topicKey: "hr-training", intent: .optIn)], source: .staff, channel: .phone,
            actor: .staff("agent-7"), occurredAt: spokeAt,
            evidence: Evidence(personal: PersonalEvidence(note: "Asked for HR course news on the phone"))))
        #expect(result.events.count == 1)
        let event = try #require(result.events.first)
        #expect(event.seq == 1 && event.fromState == .none && event.toState == .granted && event.action == .granted)
        #expect(event.source == .staff && event.channel == .phone && event.actor == .staff("agent-7"))
        #expect(event.occurredAt == spokeAt && event.recordedAt >= spokeAt)
        #expect(event.noticeVersion == 1)

        let stored = try await ledger.timeline(contactID: contact.id, beforeSeq: nil, limit: 10)
        #expect(stored.map(\.event) == [event])
        #expect(stored.first?.personal?.note == "Asked for HR course news on the phone")
        let check = try await ledger.check(email: EmailAddress("ann@example.com"), topicKey: "hr-training")
        #expect(check.allowed && check.reason == .granted && check.since == spokeAt)
    }

    @Test(arguments: StoreKind.available)
    func sameValueRecordsNothingAndSaysSo(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        let contact = try await ledger.createContact(email: EmailAddress("ann@example.com"), name: nil, externalID: nil, locale: nil)
        _ = try await optIn(ledger, contact, ["events"])
        let again = try await optIn(ledger, contact, ["events"])
        #expect(again.events.isEmpty)
        #expect(again.unchanged == [.init(topicKey: "events", state: .granted, reason: "already granted")])
        let neverAsked = try await optOut(ledger, contact, ["news"])
        #expect(neverAsked.events.isEmpty)
        #expect(try await ledger.store.events(contactID: contact.id, beforeSeq: nil, limit: 10).count == 1)
    }

    /// A verbal opt-in keyed in late never overrides a newer withdrawal.
    @Test(arguments: StoreKind.available)
    func anOlderChangeNeverOverridesANewerOne(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        let contact = try await ledger.createContact(email: EmailAddress("ann@example.com"), name: nil, externalID: nil, locale: nil)
        _ = try await optIn(ledger, contact, ["events"])
        _ = try await optOut(ledger, contact, ["events"])
        let late = try await ledger.recordChange(ChangeRequest(
            contactID: contact.id, changes: [.init(topicKey: "events", intent: .optIn)], source: .staff, channel: .phone, actor: .staff("agent"),
            occurredAt: Date().addingTimeInterval(-86_400), evidence: Evidence(personal: .init(note: "said yes yesterday"))))
        #expect(late.events.isEmpty)
        #expect(late.unchanged.first?.reason.hasPrefix("a newer change (withdrawn since") == true)
        #expect(try await ledger.check(email: contact.email, topicKey: "events").reason == .withdrawn)
    }

    @Test(arguments: StoreKind.available)
    func withdrawalStopsSendingAndTimelineIsNewestFirst(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        let contact = try await ledger.createContact(email: EmailAddress("ann@example.com"), name: nil, externalID: nil, locale: nil)
        _ = try await optIn(ledger, contact, ["events", "news"])
        _ = try await optOut(ledger, contact, ["events"])
        #expect(try await ledger.check(email: contact.email, topicKey: "events").reason == .withdrawn)
        #expect(try await ledger.check(email: contact.email, topicKey: "news").allowed)
        let timeline = try await ledger.timeline(contactID: contact.id, beforeSeq: nil, limit: 10).map(\.event)
        #expect(timeline.map(\.seq) == [3, 2, 1])
        #expect(timeline.first?.action == .withdrawn && timeline.first?.fromState == .granted)
        let page2 = try await ledger.store.events(contactID: contact.id, beforeSeq: 2, limit: 10)
        #expect(page2.map(\.seq) == [1])
    }

    @Test(arguments: StoreKind.available)
    func badInputChangesNothing(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        let contact = try await ledger.createContact(email: EmailAddress("ann@example.com"), name: nil, externalID: nil, locale: nil)
        // One unknown topic among good ones: the whole request is refused.
        do {
            _ = try await optIn(ledger, contact, ["events", "evnts"])
            Issue.record("unknown topic accepted")
        } catch let DomainError.invalid(errors) {
            #expect(errors == [ValidationError(field: "preferences[1].topic", "unknown topic 'evnts'")])
        }
        // A staff entry without a note.
        do {
            _ = try await optIn(ledger, contact, ["events"], source: .staff, channel: .phone)
            Issue.record("staff entry without note accepted")
        } catch let DomainError.invalid(errors) {
            #expect(errors.map(\.field) == ["evidence.note"])
        }
        // In the future.
        await #expect(throws: DomainError.self) {
            _ = try await ledger.recordChange(ChangeRequest(contactID: contact.id, changes: [.init(topicKey: "events", intent: .optIn)],
                                                            source: .api, actor: .apiKey("k"), occurredAt: Date().addingTimeInterval(86_400)))
        }
        // Claiming to be the system.
        await #expect(throws: DomainError.self) {
            _ = try await ledger.recordChange(ChangeRequest(contactID: contact.id, changes: [.init(topicKey: "events", intent: .optIn)],
                                                            source: .system, actor: .apiKey("k")))
        }
        // A notice version that does not exist.
        await #expect(throws: DomainError.self) {
            _ = try await ledger.recordChange(ChangeRequest(contactID: contact.id, changes: [.init(topicKey: "events", intent: .optIn, noticeVersion: 9)],
                                                            source: .api, actor: .apiKey("k")))
        }
        #expect(try await ledger.store.events(contactID: contact.id, beforeSeq: nil, limit: 10).isEmpty)
        #expect(try await ledger.store.preferences(contactID: contact.id).isEmpty)
    }

    @Test(arguments: StoreKind.available)
    func retiredTopicKeepsHistoryAndRefusesNewOptIns(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        let ann = try await ledger.createContact(email: EmailAddress("ann@example.com"), name: nil, externalID: nil, locale: nil)
        let bob = try await ledger.createContact(email: EmailAddress("bob@example.com"), name: nil, externalID: nil, locale: nil)
        _ = try await optIn(ledger, ann, ["events"])
        _ = try await ledger.retireTopic(key: "events")
        await #expect(throws: DomainError.self) { _ = try await optIn(ledger, bob, ["events"]) }
        #expect(try await ledger.check(email: ann.email, topicKey: "events").reason == .retired)
        #expect(try await ledger.timeline(contactID: ann.id, beforeSeq: nil, limit: 10).count == 1)
        #expect(try await optOut(ledger, ann, ["events"]).events.count == 1)
        #expect(try await ledger.store.topics(includeRetired: false).map(\.key).contains("events") == false)
        #expect(try await ledger.store.topics(includeRetired: true).map(\.key).contains("events"))
    }

    @Test(arguments: StoreKind.available)
    func consentLifetimeSetsExpiry(_ kind: StoreKind) async throws {
        let clock = TestClock(Date(timeIntervalSince1970: 1_800_000_000))
        let ledger = try await kind.makeLedger(now: { clock.now })
        _ = try await ledger.createTopic(Topic(key: "offers", title: "Offers", consentLifetimeDays: 30, createdAt: Date()), noticeText: "Offers.")
        let contact = try await ledger.createContact(email: EmailAddress("ann@example.com"), name: nil, externalID: nil, locale: nil)
        let event = try #require(try await optIn(ledger, contact, ["offers"]).events.first)
        #expect(event.expiresAt == clock.now.addingTimeInterval(30 * 86_400))
        #expect(try await ledger.check(email: contact.email, topicKey: "offers").allowed)
        clock.now = clock.now.addingTimeInterval(31 * 86_400)
        #expect(try await ledger.check(email: contact.email, topicKey: "offers").reason == .expired)
        // Opting in again after expiry is a change.
        #expect(try await optIn(ledger, contact, ["offers"]).events.first?.fromState == .expired)
        #expect(try await ledger.verify().isIntact)
    }

    @Test(arguments: StoreKind.available)
    func commitRefusesAMovedHead(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        let contact = try await ledger.createContact(email: EmailAddress("ann@example.com"), name: nil, externalID: nil, locale: nil)
        let stale = try await ledger.store.ledgerState(contactID: contact.id)
        _ = try await optIn(ledger, contact, ["events"])
        let event = ConsentEvent(id: UUID(), contactID: contact.id, seq: 1, topicKey: "news", action: .granted, fromState: .none, toState: .granted,
                                 source: .api, channel: nil, actor: .apiKey("k"), occurredAt: Date(), recordedAt: Date(), expiresAt: nil,
                                 noticeVersion: 1, formID: nil, formVersion: nil, batchID: nil, sealedEvidence: nil, prevHash: stale.head.hash).sealed()
        await #expect(throws: StoreError.concurrentModification(contactID: contact.id)) {
            try await ledger.store.commit(LedgerCommit(contactID: contact.id, expectedHead: stale.head, events: [event], preferences: []))
        }
        #expect(try await ledger.store.events(contactID: contact.id, beforeSeq: nil, limit: 10).count == 1)
    }

    /// Every column a change and a new contact write, set and unset, reads back as written: through one
    /// commit and through a batch (the SQLite store binds these rows through SQLite's C API itself).
    @Test(arguments: StoreKind.available)
    func everyWrittenFieldReadsBackAsWritten(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        let full = try await ledger.createContact(email: EmailAddress("ann@example.com"), name: "Ann Ó'Neill", externalID: "crm-7", locale: "ga")
        let bare = try await ledger.createContact(email: EmailAddress("bob@example.com"), name: nil, externalID: nil, locale: nil)
        var secrets: [Data] = []
        for contact in [full, bare] {
            let snapshot = try #require(try await ledger.store.contactSnapshot(id: contact.id))
            #expect(snapshot.contact == contact)
            // The wrapped key opens under the master key, bound to this contact; the link secret is there, whole.
            _ = try ledger.masterKey.unwrap(try #require(snapshot.wrappedKey), contactID: contact.id)
            secrets.append(try #require(try await ledger.store.linkSecret(contactID: contact.id)))
        }
        #expect(secrets.allSatisfy { $0.count == 32 } && secrets[0] != secrets[1])
        let at = Date().addingTimeInterval(-60).truncatedToMilliseconds
        func events(_ contact: Contact) -> [ConsentEvent] {
            let first = ConsentEvent(id: UUID.timeOrdered(), contactID: contact.id, seq: 1, topicKey: "news", action: .granted, fromState: .none,
                                     toState: .granted, source: .staff, channel: .inPerson, actor: .staff("desk@example.com"), occurredAt: at,
                                     recordedAt: at.addingTimeInterval(1), expiresAt: at.addingTimeInterval(86_400), noticeVersion: 1,
                                     formID: "signup", formVersion: 3, batchID: "import-1", sealedEvidence: Data([0, 1, 2, 255]),
                                     prevHash: ChainHead.empty(contact.id).hash).sealed()
            let second = ConsentEvent(id: UUID.timeOrdered(), contactID: contact.id, seq: 2, topicKey: "events", action: .withdrawn, fromState: .none,
                                      toState: .withdrawn, source: .api, channel: nil, actor: .system, occurredAt: at, recordedAt: at,
                                      expiresAt: nil, noticeVersion: nil, formID: nil, formVersion: nil, batchID: nil, sealedEvidence: nil,
                                      prevHash: first.hash).sealed()
            return [first, second]
        }
        func preferences(_ contact: Contact) -> [Preference] {
            [Preference(contactID: contact.id, topicKey: "events", state: .withdrawn, since: at, expiresAt: nil, seq: 2),
             Preference(contactID: contact.id, topicKey: "news", state: .granted, since: at, expiresAt: at.addingTimeInterval(86_400), seq: 1)]
        }
        let one = (events(full), preferences(full)), batch = (events(bare), preferences(bare))
        try await ledger.store.commit(LedgerCommit(contactID: full.id, expectedHead: .empty(full.id), events: one.0, preferences: one.1))
        try await ledger.store.commit(batch: [LedgerCommit(contactID: bare.id, expectedHead: .empty(bare.id), events: batch.0, preferences: batch.1)])
        for (contact, written) in [(full, one), (bare, batch)] {
            #expect(try await ledger.store.events(contactID: contact.id, beforeSeq: nil, limit: 10).reversed() == written.0)
            #expect(try await ledger.store.preferences(contactID: contact.id) == written.1)
            let state = try await ledger.store.ledgerState(contactID: contact.id)
            #expect(state.head.seq == 2 && state.head.hash == written.0[1].hash)
        }
        #expect(try await ledger.verify().isIntact)
    }

    /// Many writers on one contact at once: nothing lost, nothing reordered,
    /// the projection equals a replay and the chain verifies.
    @Test(arguments: StoreKind.available)
    func concurrentWritersOnOneContactLoseNothing(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        let contact = try await ledger.createContact(email: EmailAddress("ann@example.com"), name: nil, externalID: nil, locale: nil)
        let topics = ["events", "news", "hr-training"]
        let recorded = try await withThrowingTaskGroup(of: Int.self) { group in
            for task in 0..<24 {
                group.addTask {
                    var count = 0
                    for step in 0..<10 {
                        let topic = topics[(task + step) % topics.count]
                        let result = (task + step).isMultiple(of: 2) ? try await optIn(ledger, contact, [topic]) : try await optOut(ledger, contact, [topic])
                        count += result.events.count
                    }
                    return count
                }
            }
            return try await group.reduce(0, +)
        }
        let events = try await ledger.store.events(contactID: contact.id, beforeSeq: nil, limit: 10_000).reversed()
        #expect(events.count == recorded)
        #expect(events.map(\.seq) == Array(1...Int64(recorded)))
        let replayed = Projection.replay(events)
        let projected = try await ledger.store.preferences(contactID: contact.id)
        #expect(projected.count == replayed.count)
        for p in projected { #expect(replayed[p.topicKey] == p) }
        #expect(try await ledger.verify().isIntact)
        #expect(recorded > 3)
    }

    @Test(arguments: StoreKind.available)
    func idempotencyKeysReplayAndRefuseMismatches(_ kind: StoreKind) async throws {
        let store = try await kind.makeStore()
        let now = Date()
        let hash = Data([1, 2, 3])
        #expect(try await store.beginIdempotency(scope: "k1", key: "abc", requestHash: hash, now: now) == .started)
        #expect(try await store.beginIdempotency(scope: "k1", key: "abc", requestHash: hash, now: now) == .inProgress)
        let response = StoredResponse(status: 201, contentType: "application/json", body: Data("{}".utf8))
        try await store.completeIdempotency(scope: "k1", key: "abc", response: response)
        #expect(try await store.beginIdempotency(scope: "k1", key: "abc", requestHash: hash, now: now) == .replay(response))
        #expect(try await store.beginIdempotency(scope: "k1", key: "abc", requestHash: Data([9]), now: now) == .mismatch)
        // Another key's namespace is separate.
        #expect(try await store.beginIdempotency(scope: "k2", key: "abc", requestHash: Data([9]), now: now) == .started)
        // An abandoned (failed) request frees its key.
        try await store.abandonIdempotency(scope: "k2", key: "abc")
        #expect(try await store.beginIdempotency(scope: "k2", key: "abc", requestHash: Data([7]), now: now) == .started)
        // Past retention the key is forgotten.
        #expect(try await store.beginIdempotency(scope: "k1", key: "abc", requestHash: Data([9]), now: now.addingTimeInterval(2 * 86_400)) == .started)
    }

    @Test(arguments: StoreKind.available)
    func apiKeysAreStoredHashedAndRevocable(_ kind: StoreKind) async throws {
        let store = try await kind.makeStore()
        let (key, token) = APIKey.generate(name: "crm sync", scope: .write, now: Date().truncatedToMilliseconds)
        try await store.insertAPIKey(key)
        let parsed = try #require(APIKey.parse(token: token))
        let stored = try #require(try await store.apiKey(id: parsed.id))
        #expect(stored == key)
        #expect(stored.matches(secret: parsed.secret))
        #expect(!stored.matches(secret: parsed.secret + "x"))
        #expect(stored.secretHash != Data(parsed.secret.utf8))
        #expect(try await store.revokeAPIKey(id: key.id, at: Date()))
        #expect(try await store.revokeAPIKey(id: key.id, at: Date()) == false)
        #expect(try await store.apiKey(id: key.id)?.isActive == false)
    }

    @Test(arguments: StoreKind.available)
    func contactsPageInIdOrder(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        for i in 0..<5 {
            _ = try await ledger.createContact(email: EmailAddress("p\(i)@example.com"), name: nil, externalID: nil, locale: nil)
        }
        let first = try await ledger.store.contacts(after: nil, limit: 3)
        let rest = try await ledger.store.contacts(after: first.last?.id, limit: 3)
        #expect(first.count == 3 && rest.count == 2)
        #expect(Set((first + rest).map(\.email.value)).count == 5)
    }
}

