import AssentCore
import AssentPostgres
@testable import AssentStore
import AssentTestSupport
import Foundation
import Testing

/// Audiences and batch checks against a brute-force oracle on randomised data.
@Suite struct AudienceTests {
    /// A store that reads ranges of contacts at once (PostgreSQL) gives every row once, in order,
    /// as the members path does: with ranges of a page, with ranges longer than a page (contacts
    /// added to a range after its end was read: its next pages read it to its end), over page
    /// ends inside a contact's grants.
    @Test(arguments: StoreKind.available.filter { $0 == .postgres })
    func rangesReadAtOnceGiveEveryRowOnceInOrder(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        let reader = try #require(ledger.store as? any AudienceRangeReader)
        for key in ["events", "news", "offers"] {
            _ = try await ledger.createTopic(Topic(key: key, title: key, requiresDoubleOptIn: false, createdAt: Date()), noticeText: "\(key).")
        }
        for i in 0..<61 {
            let contact = try await ledger.createContact(email: EmailAddress("r\(i)@example.com"), name: nil, externalID: nil, locale: nil)
            let topics = [["news"], ["events", "news", "offers"], [], ["offers", "news"], ["events"]][i % 5]
            for topic in topics {
                _ = try await ledger.recordChange(ChangeRequest(contactID: contact.id, changes: [TopicChange(topicKey: topic, intent: .optIn)],
                                                                source: .api, actor: .apiKey("k")))
            }
        }
        for topics in [["news"], ["events", "news", "offers"]] {
            let query = try await ledger.validate(AudienceQuery(topics: topics))
            var expected: [String] = []
            try await ledger.audience(query, pageSize: 1_000) { members in
                expected += members.map { "\($0.contact.id) \(topics.filter($0.grants.keys.contains).joined(separator: ","))" }
            }
            #expect(expected.count > 20)
            for (pageSize, rangeSize) in [(4, 4), (4, 11), (3, 100), (7, 2)] {
                var got: [String] = []
                try await Ledger.walkRanges(reader, topics: topics, at: Date(), pageSize: pageSize, rangeSize: rangeSize) { page in
                    got += page.rows.map { row in "\(row.id) \(page.grants[row.grants].map { topics[$0.topic] }.joined(separator: ","))" }
                }
                #expect(got == expected, "\(topics), pages of \(pageSize), ranges of \(rangeSize)")
            }
        }
        // A page's handler that fails ends the walk with its error, the reads out waited for; the next walk reads everything.
        struct Stop: Error {}
        var handed = 0
        await #expect(throws: Stop.self) {
            try await Ledger.walkRanges(reader, topics: ["news"], at: Date(), pageSize: 2) { _ in
                handed += 1
                if handed == 3 { throw Stop() }
            }
        }
        #expect(handed == 3)
        var rows = 0
        try await Ledger.walkRanges(reader, topics: ["news"], at: Date(), pageSize: 2) { rows += $0.rows.count }
        #expect(rows == (0..<61).filter { [0, 1, 3].contains($0 % 5) }.count)
    }

    /// A range page's planner settings (hash joins and sorts off) hold for its own transaction
    /// alone: on a pool of one connection, after walks of ranges (one ended by its handler's
    /// error), the connection plans other queries with both back on.
    @Test(arguments: StoreKind.available.filter { $0 == .postgres })
    func rangePagesLeaveTheirConnectionsPlannerAsItWas(_ kind: StoreKind) async throws {
        let store = PostgresStore(location: try await TestPostgres.freshDatabase(), maxConnections: 1)
        defer { store.shutdown() }
        try await store.migrate()
        let ledger = Ledger(store: store, masterKey: .generate(), environment: LedgerEnvironment())
        _ = try await ledger.createTopic(Topic(key: "news", title: "News", requiresDoubleOptIn: false, createdAt: Date()), noticeText: "News.")
        for i in 0..<12 {
            let contact = try await ledger.createContact(email: EmailAddress("p\(i)@example.com"), name: nil, externalID: nil, locale: nil)
            _ = try await ledger.recordChange(ChangeRequest(contactID: contact.id, changes: [TopicChange(topicKey: "news", intent: .optIn)],
                                                            source: .api, actor: .apiKey("k")))
        }
        var rows = 0
        try await Ledger.walkRanges(store, topics: ["news"], at: Date(), pageSize: 2, rangeSize: 3) { rows += $0.rows.count }
        #expect(rows == 12)
        struct Stop: Error {}
        await #expect(throws: Stop.self) {
            try await Ledger.walkRanges(store, topics: ["news"], at: Date(), pageSize: 2, rangeSize: 3) { _ in throw Stop() }
        }
        #expect(try await store.strings("SELECT current_setting('enable_hashjoin') || ' ' || current_setting('enable_sort')") == ["on on"])
    }

    @Test(arguments: StoreKind.available)
    func theAudienceIsExactlyWhoTheCheckAllowsInEveryStateCombination(_ kind: StoreKind) async throws {
        let clock = TestClock(Date(timeIntervalSince1970: 1_800_000_000))
        let ledger = try await kind.makeLedger(now: { clock.now })
        let topics = ["events", "news", "offers", "training"]
        for key in topics {
            _ = try await ledger.createTopic(Topic(key: key, title: key, requiresDoubleOptIn: key == "offers", consentLifetimeDays: key == "training" ? 30 : nil,
                                                   createdAt: Date()), noticeText: "About \(key).")
        }
        var random = SplitMix(state: 20_261_129)
        var contacts: [Contact] = []
        for i in 0..<48 {
            let contact = try await ledger.createContact(email: EmailAddress("p\(i)@example.com"), name: "P \(i)", externalID: nil,
                                                         locale: ["en", "de", "de-AT", nil][Int(random.next() % 4)])
            contacts.append(contact)
            for key in topics where random.next() % 3 != 0 {
                let intent: ConsentIntent = [.optIn, .optIn, .optOut][Int(random.next() % 3)]
                let source: ConsentSource = random.next() % 2 == 0 ? .form : .api // form + offers = pending
                _ = try await ledger.recordChange(ChangeRequest(contactID: contact.id, changes: [TopicChange(topicKey: key, intent: intent)],
                                                                source: source, actor: source == .form ? .subject : .apiKey("k")))
            }
        }
        for contact in contacts.prefix(3) { _ = try await ledger.eraseContact(contact.id, reason: "test", erasedBy: "test") }
        clock.now = clock.now.addingTimeInterval(31 * 86_400) // training grants have expired
        _ = try await ledger.retireTopic(key: "offers")
        await #expect(throws: DomainError.self) { try await ledger.validate(AudienceQuery(topics: ["offers"])) }
        for query in [AudienceQuery(topics: ["events"]), AudienceQuery(topics: ["events", "news"]), AudienceQuery(topics: ["events", "news"], match: .all),
                      AudienceQuery(topics: ["training"]), AudienceQuery(topics: ["news"], locale: "de")] {
            var got: [String] = []
            try await ledger.audience(query, pageSize: 5) { got += $0.map(\.contact.email.value) }
            var expected: [String] = []
            for contact in contacts {
                var allowed: [Bool] = []
                for key in query.topics { allowed.append(try await ledger.check(email: contact.email, topicKey: key).allowed) }
                let byTopics = query.match == .all ? allowed.allSatisfy { $0 } : allowed.contains(true)
                let current = try await ledger.existingContact(contact.id)
                let byLocale = query.locale.map { l in current.locale.map { $0 == l || $0.hasPrefix(l + "-") } ?? false } ?? true
                if byTopics && byLocale && !current.isErased { expected.append(contact.email.value) }
            }
            #expect(got.sorted() == expected.sorted(), "\(query.topics) \(query.match) \(query.locale ?? "")")
            #expect(Set(got).count == got.count, "nobody twice across pages")
            if query.topics == ["training"] { #expect(got.isEmpty, "expired grants are not an audience") }
        }
        // The batch check agrees with the single check, address by address.
        let emails = contacts.map(\.email) + [try EmailAddress("stranger@example.com")]
        let batch = try await ledger.check(emails: emails, topicKey: "news")
        for (email, result) in zip(emails, batch) {
            #expect(result == (try await ledger.check(email: email, topicKey: "news")), "\(email.value)")
        }
        #expect(batch.prefix(3).allSatisfy { $0.reason == .suppressed }, "the erased")
        #expect(batch.last?.reason == .unknown)
        await #expect(throws: DomainError.invalid(field: "emails", "at most 10000 addresses per call, not 10001")) {
            _ = try await ledger.check(emails: Array(repeating: emails[0], count: 10_001), topicKey: "news")
        }
    }
}

extension AudienceTests {
    /// A batch longer than one read (sorted, split into runs read side by side, each padded to a
    /// statement size) answers every address in its place: repeats, unknown and erased addresses
    /// included, on every store.
    @Test(arguments: StoreKind.available)
    func aBatchOfManyReadsAnswersEveryAddressInItsPlace(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        _ = try await ledger.createTopic(Topic(key: "news", title: "News", requiresDoubleOptIn: false, createdAt: Date()), noticeText: "News.")
        var random = SplitMix(state: 20_261_204)
        var known: [EmailAddress] = []
        for i in 0..<90 {
            let contact = try await ledger.createContact(email: EmailAddress("m\(i)@example.com"), name: nil, externalID: nil, locale: nil)
            known.append(contact.email)
            // None, granted, or granted and then withdrawn.
            for intent in [[], [.optIn], [.optIn, .optOut]][i % 3] as [ConsentIntent] {
                _ = try await ledger.recordChange(ChangeRequest(contactID: contact.id, changes: [TopicChange(topicKey: "news", intent: intent)],
                                                                source: .api, actor: .apiKey("k")))
            }
            if i < 2 { _ = try await ledger.eraseContact(contact.id, reason: "test", erasedBy: "test") }
        }
        let strangers = try (0..<700).map { try EmailAddress("m\($0)@example.net") } // sorted among the known
        // Over `checkRunLimit` addresses, so at least two reads on any machine; in no order.
        let emails = (0..<(Ledger.batchCheckLimit - 17)).map { _ in
            random.next() % 4 == 0 ? strangers[Int(random.next() % UInt64(strangers.count))] : known[Int(random.next() % UInt64(known.count))]
        }
        let batch = try await ledger.check(emails: emails, topicKey: "news")
        #expect(batch.count == emails.count)
        var single: [String: CheckResult] = [:]
        for email in Set(known + strangers) { single[email.value] = try await ledger.check(email: email, topicKey: "news") }
        let wrong = zip(emails, batch).filter { single[$0.0.value] != $0.1 }
        #expect(wrong.count == 0, "\(wrong.count) addresses answered unlike the single check, first \(wrong.first.map { "\($0.0.value): \($0.1)" } ?? "")")
        #expect(Set(zip(emails, batch).map { "\($0.1.reason)" }) == ["granted", "withdrawn", "none", "unknown", "suppressed"])
        // Short batches (one read, padded or not) agree too.
        for length in [1, 16, 17, 300] {
            let part = Array(emails.suffix(length))
            #expect(try await ledger.check(emails: part, topicKey: "news") == Array(batch.suffix(length)), "\(length) addresses")
        }
    }
}

@Suite struct AudienceLinkTests {
    /// A contact's link secret is made with the contact, so an export only reads; a contact made
    /// before that (no secret yet) gets one on its first export, and then keeps it.
    @Test(arguments: StoreKind.available)
    func exportedLinksResolveAndASecretIsMadeOnlyWhenMissing(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        _ = try await ledger.createTopic(Topic(key: "news", title: "News", requiresDoubleOptIn: false, createdAt: Date()), noticeText: "News.")
        let made = try await ledger.createContact(email: EmailAddress("made@example.com"), name: nil, externalID: nil, locale: nil)
        #expect(try await ledger.store.linkSecret(contactID: made.id) != nil, "made with the contact")
        // A contact as an older Assent stored it: no link secret.
        let legacy = Contact(id: UUID.timeOrdered(), email: try EmailAddress("legacy@example.com"), createdAt: Date())
        try await ledger.store.insertContact(NewContact(contact: legacy, wrappedKey: try ledger.masterKey.wrap(.generate(), contactID: legacy.id), webhooks: []))
        #expect(try await ledger.store.linkSecret(contactID: legacy.id) == nil)
        for contact in [made, legacy] {
            _ = try await ledger.recordChange(ChangeRequest(contactID: contact.id, changes: [TopicChange(topicKey: "news", intent: .optIn)],
                                                            source: .api, actor: .apiKey("k")))
        }
        func export() async throws -> [String] {
            var lines: [String] = []
            try await ledger.audience(AudienceQuery(topics: ["news"]), pageSize: 1) { members in
                let bytes = try await AudienceExportProbe.lines(members, ledger: ledger)
                lines += String(decoding: bytes, as: UTF8.self).split(separator: "\n").map(String.init)
            }
            return lines
        }
        let first = try await export(), second = try await export()
        #expect(first.count == 2 && first == second, "the same links on a second export")
        #expect(try await ledger.store.linkSecret(contactID: legacy.id) != nil, "made on the first export")
        for (line, contact) in zip(first, [made, legacy]) {
            let parts = line.split(separator: " ").map(String.init)
            let centre = try #require(try await ledger.resolveLink(parts[0], purpose: .preferenceCentre))
            let unsubscribe = try #require(try await ledger.resolveLink(parts[1], purpose: .unsubscribe))
            #expect(centre.contact.id == contact.id && unsubscribe.contact.id == contact.id && unsubscribe.link.topicKey == "news")
            #expect(parts[0] == (try await ledger.linkTokens(for: contact, unsubscribeTopic: "news")).centre, "the same token as one made alone")
        }
        #expect(try await ledger.resolveLink(String(first[0].split(separator: " ")[0]), purpose: .unsubscribe) == nil, "a link for one purpose only")
    }
}

/// The tokens of an audience page as `centre unsubscribe` lines, through the export's own byte path.
enum AudienceExportProbe {
    static func lines(_ members: [AudienceMember], ledger: Ledger) async throws -> [UInt8] {
        var out: [UInt8] = []
        for (member, secret) in zip(members, try await ledger.linkSecrets(for: members)) {
            guard let secret else { continue }
            ledger.appendLinkToken(ContactLink(purpose: .preferenceCentre, contactID: member.contact.id), secret: secret, to: &out)
            out.append(UInt8(ascii: " "))
            ledger.appendLinkToken(ContactLink(purpose: .unsubscribe, contactID: member.contact.id, topicKey: "news"), secret: secret, to: &out)
            out.append(10)
        }
        return out
    }
}

@Suite struct ExpiryTests {
    @Test(arguments: StoreKind.available)
    func expiryIsRecordedOnceWhenDueAndSurvivesARestart(_ kind: StoreKind) async throws {
        let clock = TestClock(Date(timeIntervalSince1970: 1_800_000_000))
        let ledger = try await kind.makeLedger(now: { clock.now })
        _ = try await ledger.createTopic(Topic(key: "events", title: "Events", consentLifetimeDays: 30, createdAt: Date()), noticeText: "About events.")
        _ = try await ledger.createTopic(Topic(key: "news", title: "News", createdAt: Date()), noticeText: "About news.")
        let jo = try await ledger.createContact(email: EmailAddress("jo@example.com"), name: nil, externalID: nil, locale: nil)
        let bo = try await ledger.createContact(email: EmailAddress("bo@example.com"), name: nil, externalID: nil, locale: nil)
        _ = try await optIn(ledger, jo, ["events", "news"])
        clock.now = clock.now.addingTimeInterval(10 * 86_400)
        _ = try await optIn(ledger, bo, ["events"])
        #expect(try await ledger.expireDue() == 0, "nothing is due yet")
        clock.now = clock.now.addingTimeInterval(25 * 86_400) // Jo's grant is 35 days old, Bo's 25
        #expect(try await ledger.check(email: jo.email, topicKey: "events").reason == .expired, "the check never waits for the scheduler")
        #expect(try await ledger.expireDue() == 1)
        let event = try #require(try await ledger.store.events(contactID: jo.id, beforeSeq: nil, limit: 1).first)
        #expect(event.action == .expired && event.source == .system && event.actor.kind == .system && event.topicKey == "events")
        #expect(event.occurredAt == Date(timeIntervalSince1970: 1_800_000_000 + 30 * 86_400), "when the lifetime ended, not when it was noticed")
        #expect(try await ledger.expireDue() == 0, "recorded once")
        // A restart: a new ledger over the same store finds only what fell due since.
        let restarted = Ledger(store: ledger.store, masterKey: ledger.masterKey, environment: LedgerEnvironment(now: { clock.now }))
        clock.now = clock.now.addingTimeInterval(6 * 86_400)
        #expect(try await restarted.expireDue() == 1, "Bo's")
        #expect(try await restarted.expireDue() == 0)
        #expect(try await ledger.check(email: jo.email, topicKey: "news").allowed, "topics without a lifetime never expire")
        #expect(try await ledger.verify().isIntact)
        await #expect(throws: DomainError.invalid(field: "source", "expiry is recorded by Assent itself (source system)")) {
            _ = try await ledger.recordChange(ChangeRequest(contactID: jo.id, changes: [TopicChange(topicKey: "news", intent: .expire)],
                                                            source: .api, actor: .apiKey("k")))
        }
    }

    @Test(arguments: StoreKind.available)
    func twoSchedulersAtOnceRecordEachExpiryOnce(_ kind: StoreKind) async throws {
        let clock = TestClock(Date(timeIntervalSince1970: 1_800_000_000))
        let ledger = try await kind.makeLedger(now: { clock.now })
        _ = try await ledger.createTopic(Topic(key: "events", title: "Events", consentLifetimeDays: 1, createdAt: Date()), noticeText: "About events.")
        for i in 0..<20 {
            let c = try await ledger.createContact(email: EmailAddress("p\(i)@example.com"), name: nil, externalID: nil, locale: nil)
            _ = try await optIn(ledger, c, ["events"])
        }
        clock.now = clock.now.addingTimeInterval(2 * 86_400)
        let counts = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<3 { group.addTask { try await ledger.expireDue() } }
            return try await group.reduce(0, +)
        }
        #expect(counts == 20)
        #expect(try await ledger.expireDue() == 0)
        #expect(try await ledger.verify().isIntact)
    }
}
