import AssentCore
import AssentStore
import AssentTestSupport
import Foundation
import Testing

/// Reports against numbers worked out by hand for a small, fixed history.
@Suite struct ReportTests {
    static let monday = Date(timeIntervalSince1970: 1_799_625_600) // 2027-01-11 00:00 UTC
    static func at(days: Double = 0, hours: Double = 0) -> Date { monday.addingTimeInterval(days * 86_400 + hours * 3_600) }

    @Test(arguments: StoreKind.available)
    func reportsMatchTheHistoryCountedByHand(_ kind: StoreKind) async throws {
        let clock = TestClock(Self.monday)
        let ledger = try await kind.makeLedger(now: { clock.now })
        _ = try await ledger.createTopic(Topic(key: "events", title: "Events", requiresDoubleOptIn: true, consentLifetimeDays: 40, createdAt: Date()), noticeText: "Events.")
        _ = try await ledger.createTopic(Topic(key: "news", title: "News", createdAt: Date()), noticeText: "News.")
        var people: [String: Contact] = [:]
        for name in ["a", "b", "c", "d", "e"] {
            people[name] = try await ledger.createContact(email: EmailAddress("\(name)@example.com"), name: nil, externalID: nil, locale: nil)
        }
        func change(_ who: String, _ topic: String, _ yes: Bool, _ source: ConsentSource, at moment: Date) async throws {
            clock.now = moment
            _ = try await ledger.recordChange(ChangeRequest(contactID: people[who]!.id, changes: [TopicChange(topicKey: topic, intent: yes ? .optIn : .optOut)],
                                                            source: source, actor: .apiKey("k")))
        }
        try await change("a", "news", true, .api, at: Self.at(hours: 1))           // week 0: api opt-in
        try await change("b", "events", true, .form, at: Self.at(hours: 2))        // requested (double opt-in)
        try await change("c", "events", true, .form, at: Self.at(hours: 3))        // requested, never confirmed
        clock.now = Self.at(hours: 5)
        let item = try #require(try await ledger.store.outboxItems(contactID: people["b"]!.id).first { $0.kind == ConfirmationEmail.kind })
        _ = try await ledger.confirm(token: try ConfirmationEmail.open(item, masterKey: ledger.masterKey).token, ipAddress: nil, userAgent: nil) // week 0: email_link opt-in, 3 h
        try await change("d", "events", true, .form, at: Self.at(days: 8))        // requested in week 1, still open
        try await change("a", "news", false, .api, at: Self.at(days: 8, hours: 1))  // week 1: api opt-out
        try await change("e", "news", true, .import, at: Self.at(days: 8, hours: 2)) // week 1: import opt-in
        clock.now = Self.at(days: 9)

        let states = try await ledger.stateReport()
        func count(_ topic: String, _ state: PreferenceState) -> Int? { states.first { $0.topicKey == topic && $0.state == state }?.count }
        #expect(count("news", .granted) == 1 && count("news", .withdrawn) == 1 && count("news", .none) == 3 && count("news", .pending) == 0)
        #expect(count("events", .granted) == 1 && count("events", .pending) == 2 && count("events", .none) == 2 && count("events", .expired) == 0)

        let changes = try await ledger.changeReport(from: Self.monday, to: Self.at(days: 14))
        #expect(changes == [
            ChangeCount(week: Self.monday, source: .api, optIns: 1, optOuts: 0),
            ChangeCount(week: Self.monday, source: .emailLink, optIns: 1, optOuts: 0),
            ChangeCount(week: Self.at(days: 7), source: .api, optIns: 0, optOuts: 1),
            ChangeCount(week: Self.at(days: 7), source: .import, optIns: 1, optOuts: 0),
        ], "\(changes)")
        #expect(try await ledger.changeReport(from: Self.at(days: 7), to: Self.at(days: 14)).count == 2, "only the period asked for")

        let funnel = try await ledger.funnelReport(from: Self.monday, to: Self.at(days: 14))
        let expected = FunnelRow(topicKey: "events", requested: 3, confirmed: 1, expiredUnconfirmed: 1, open: 1, medianSecondsToConfirm: 3 * 3_600)
        #expect(funnel.first == expected && funnel.count == 2 && funnel.last?.topicKey == nil && funnel.last?.requested == 3)

        let expiring = try await ledger.expiringReport()
        #expect(expiring == [ExpiringCount(topicKey: "events", within30: 0, within60: 1, within90: 1)], "b's grant ends 40 days after day 0 + 5 h: in 31 days")
        #expect(Ledger.weekStart(Self.at(days: 13, hours: 23)) == Self.at(days: 7) && Ledger.weekStart(Self.monday) == Self.monday)
        await #expect(throws: DomainError.self) { _ = try await ledger.changeReport(from: Self.at(days: 2), to: Self.monday) }
        // An erased contact leaves the counts, which still add up to everyone.
        _ = try await ledger.eraseContact(people["e"]!.id, reason: "asked", erasedBy: "test")
        let after = try await ledger.stateReport().filter { $0.topicKey == "news" }
        #expect(after.map(\.count).reduce(0, +) == 4 && after.first { $0.state == .granted }?.count == 0)
    }
}
