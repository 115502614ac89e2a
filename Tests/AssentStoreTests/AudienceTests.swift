import AssentCore
import AssentStore
import AssentTestSupport
import Foundation
import Testing

/// Audiences and batch checks against a brute-force oracle on randomised data.
@Suite struct AudienceTests {
    /// A deterministic generator, so a failure can be replayed.
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
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
