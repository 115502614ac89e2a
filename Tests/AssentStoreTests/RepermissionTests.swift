import AssentCore
import AssentStore
import AssentTestSupport
import Foundation
import Testing

@Suite struct RepermissionTests {
    static let start = Date(timeIntervalSince1970: 1_800_000_000)
    static func day(_ n: Double) -> Date { start.addingTimeInterval(n * 86_400) }

    func queued(_ ledger: Ledger) async throws -> [OutboxItem] {
        try await ledger.store.outboxItems(status: nil, limit: 100).filter { $0.kind == RepermissionEmail.kind }
    }

    @Test(arguments: StoreKind.available)
    func eachGrantIsAskedOnceInsideItsWindowAndARenewalStartsANewLifetime(_ kind: StoreKind) async throws {
        let clock = TestClock(Self.start)
        let ledger = try await kind.makeLedger(now: { clock.now })
        _ = try await ledger.createTopic(Topic(key: "events", title: "Events", consentLifetimeDays: 30, repermissionDaysBefore: 7, createdAt: Date()),
                                         noticeText: "About events.")
        _ = try await ledger.createTopic(Topic(key: "offers", title: "Offers", consentLifetimeDays: 30, createdAt: Date()), noticeText: "Offers.")
        _ = try await ledger.createTopic(Topic(key: "news", title: "News", createdAt: Date()), noticeText: "About news.")
        let jo = try await ledger.createContact(email: EmailAddress("jo@example.com"), name: "Jo", externalID: nil, locale: "de")
        let bo = try await ledger.createContact(email: EmailAddress("bo@example.com"), name: nil, externalID: nil, locale: nil)
        _ = try await optIn(ledger, jo, ["events", "offers", "news"])
        clock.now = Self.day(10)
        _ = try await optIn(ledger, bo, ["events"])

        clock.now = Self.day(22.9)
        #expect(try await ledger.queueRepermissions() == 0, "Jo's grant ends on day 30: the 7-day window opens on day 23")
        clock.now = Self.day(23.1)
        #expect(try await ledger.queueRepermissions() == 1, "Jo's events grant; offers has no re-permission, news no lifetime")
        #expect(try await ledger.queueRepermissions() == 0, "asked once")
        let restarted = Ledger(store: ledger.store, masterKey: ledger.masterKey, environment: LedgerEnvironment(now: { clock.now }))
        #expect(try await restarted.queueRepermissions() == 0, "and once across a restart")

        let item = try #require(try await queued(ledger).first)
        #expect(item.contactID == jo.id && item.status == .pending)
        let email = try RepermissionEmail.open(item, masterKey: ledger.masterKey)
        #expect(email.topicKey == "events" && email.to == "jo@example.com" && email.locale == "de" && email.expiresAt == Self.day(30))
        #expect(try await email.stillDue(in: ledger.store, masterKey: ledger.masterKey, at: clock.now))
        let renewal = try #require(try await ledger.renewal(token: email.token))
        #expect(renewal.contact.id == jo.id && renewal.topic.key == "events" && renewal.notice?.text == "About events.")
        #expect(try await ledger.resolveLink(email.centreToken, purpose: .preferenceCentre)?.contact.id == jo.id)

        // Jo renews on day 25: a fresh grant from granted, with evidence and a new lifetime.
        clock.now = Self.day(25)
        let (_, result) = try #require(try await ledger.renew(token: email.token, noticeVersion: 1, ipAddress: "203.0.113.9", userAgent: "Mail/1"))
        let event = try #require(result.events.first)
        #expect(result.events.count == 1)
        #expect(event.action == .granted && event.fromState == .granted && event.toState == .granted)
        #expect(event.source == .emailLink && event.actor.kind == .subject && event.noticeVersion == 1)
        #expect(event.expiresAt == Self.day(55))
        let timeline = try await ledger.timeline(contactID: jo.id, beforeSeq: nil, limit: 1)
        #expect(timeline.first?.personal?.ipAddress == "203.0.113.9" && timeline.first?.personal?.userAgent == "Mail/1")
        #expect(try await email.stillDue(in: ledger.store, masterKey: ledger.masterKey, at: clock.now) == false, "the grant it asked about was replaced")
        let again = try #require(try await ledger.renew(token: email.token, noticeVersion: 1, ipAddress: nil, userAgent: nil))
        #expect(again.1.events.isEmpty && again.1.unchanged.first?.reason == "renewed less than a day ago", "a second click adds nothing")

        // Bo's email is not sent to an address that stopped being Bo's, nor after the topic stops asking.
        clock.now = Self.day(33.5)
        // Bo's window opens on day 33; three schedulers at once ask once.
        clock.now = Self.day(33.5)
        let counts = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<3 { group.addTask { try await ledger.queueRepermissions() } }
            return try await group.reduce(0, +)
        }
        #expect(counts == 1)
        let boItem = try #require(try await queued(ledger).first { $0.contactID == bo.id })
        let boEmail = try RepermissionEmail.open(boItem, masterKey: ledger.masterKey)
        #expect(try await boEmail.stillDue(in: ledger.store, masterKey: ledger.masterKey, at: clock.now))
        _ = try await ledger.updateContact(id: bo.id) { $0.email = try! EmailAddress("bo.new@example.com") }
        #expect(try await boEmail.stillDue(in: ledger.store, masterKey: ledger.masterKey, at: clock.now) == false, "the address changed")
        _ = try await ledger.updateContact(id: bo.id) { $0.email = try! EmailAddress("bo@example.com") }
        #expect(try await boEmail.stillDue(in: ledger.store, masterKey: ledger.masterKey, at: clock.now))
        try await ledger.rotateLinks(contactID: bo.id)
        #expect(try await boEmail.stillDue(in: ledger.store, masterKey: ledger.masterKey, at: clock.now) == false, "its link was revoked")
        // Jo's renewed grant (ends day 55) is a new grant: asked again in its own window.
        clock.now = Self.day(48.5)
        #expect(try await ledger.queueRepermissions() == 1)
        #expect(try await queued(ledger).count == 3)
        #expect(try await ledger.verify().isIntact)
    }

    @Test(arguments: StoreKind.available)
    func renewalLinksAreCheckedAndOnlyThePersonRenews(_ kind: StoreKind) async throws {
        let clock = TestClock(Self.start)
        let ledger = try await kind.makeLedger(now: { clock.now })
        _ = try await ledger.createTopic(Topic(key: "events", title: "Events", consentLifetimeDays: 30, repermissionDaysBefore: 7, createdAt: Date()),
                                         noticeText: "About events.")
        let jo = try await ledger.createContact(email: EmailAddress("jo@example.com"), name: nil, externalID: nil, locale: nil)
        _ = try await optIn(ledger, jo, ["events"])
        let token = try await ledger.linkToken(ContactLink(purpose: .repermission, contactID: jo.id, topicKey: "events"))
        let centre = try await ledger.linkToken(ContactLink(purpose: .preferenceCentre, contactID: jo.id))
        var flipped = Array(token)
        flipped[flipped.count - 3] = flipped[flipped.count - 3] == "A" ? "B" : "A"
        #expect(try await ledger.renewal(token: String(flipped)) == nil, "a changed signature")
        #expect(try await ledger.renewal(token: String(token.dropLast(4))) == nil, "a truncated link")
        #expect(try await ledger.renewal(token: centre) == nil, "a preference-centre link is not a renewal link")
        #expect(ContactLink.parse(try await ledger.linkToken(ContactLink(purpose: .repermission, contactID: jo.id)), purpose: .repermission) == nil,
                "a renewal link always names its topic")
        try await ledger.rotateLinks(contactID: jo.id)
        #expect(try await ledger.renewal(token: token) == nil, "rotating the link secret revokes it")

        await #expect(throws: DomainError.invalid(field: "source", "a renewal is recorded from the person's own re-permission link only (source email_link)")) {
            _ = try await ledger.recordChange(ChangeRequest(contactID: jo.id, changes: [TopicChange(topicKey: "events", intent: .renew)],
                                                            source: .api, actor: .apiKey("k")))
        }
        // An objection stops the emails before they are queued.
        clock.now = Self.day(24)
        _ = try await ledger.objectToMarketing(jo.id, source: .api, actor: .apiKey("k"), evidence: Evidence())
        #expect(try await ledger.queueRepermissions() == 0)
    }

    @Test func aWindowNeedsALifetimeLongerThanIt() throws {
        #expect(throws: DomainError.invalid(field: "repermissionDaysBefore", "needs a consentLifetimeDays: only grants that expire are renewed")) {
            try Topic(key: "a", title: "A", repermissionDaysBefore: 7, createdAt: Date()).validate()
        }
        #expect(throws: DomainError.invalid(field: "repermissionDaysBefore", "must be between 1 and 29 days (less than the 30-day lifetime)")) {
            try Topic(key: "a", title: "A", consentLifetimeDays: 30, repermissionDaysBefore: 30, createdAt: Date()).validate()
        }
        try Topic(key: "a", title: "A", consentLifetimeDays: 730, repermissionDaysBefore: 30, createdAt: Date()).validate()
    }
}

@Suite struct SegmentTests {
    @Test(arguments: StoreKind.available)
    func aSegmentIsASavedAudienceMeasuredOnceADay(_ kind: StoreKind) async throws {
        let clock = TestClock(Date(timeIntervalSince1970: 1_800_000_000))
        let ledger = try await kind.makeLedger(now: { clock.now })
        for (key, category) in [("events", "events"), ("webinars", "events"), ("news", "general")] {
            _ = try await ledger.createTopic(Topic(key: key, title: key, category: category, createdAt: Date()), noticeText: "About \(key).")
        }
        var contacts: [Contact] = []
        for (i, topics) in [["events"], ["webinars"], ["news"], ["events", "news"], []].enumerated() {
            let c = try await ledger.createContact(email: EmailAddress("p\(i)@example.com"), name: nil, externalID: nil, locale: i == 0 ? "de" : "en")
            if !topics.isEmpty { _ = try await optIn(ledger, c, topics) }
            contacts.append(c)
        }
        let segment = try await ledger.createSegment(id: "event-fans", name: " Event fans ", query: AudienceQuery(topics: [], categories: ["events"]),
                                                     createdBy: "staff:ann@example.com")
        #expect(segment.name == "Event fans")
        #expect(try await ledger.store.segment(id: "event-fans") == segment)
        #expect(try await ledger.validate(segment.query).topics == ["events", "webinars"], "a category stands for its active topics")
        #expect(try await ledger.measureSegment(segment).size == 3)

        // Measured again the same day, the day's size is replaced, not added.
        _ = try await optOut(ledger, contacts[1], ["webinars"])
        #expect(try await ledger.measureSegmentsDue() == 0, "already measured today")
        #expect(try await ledger.measureSegment(segment).size == 2)
        #expect(try await ledger.store.segmentSizes(segmentID: "event-fans", limit: 30).map(\.size) == [2])

        // Next day: a topic added to the category joins the segment.
        clock.now = clock.now.addingTimeInterval(86_400)
        _ = try await ledger.createTopic(Topic(key: "meetups", title: "Meetups", category: "events", createdAt: Date()), noticeText: "Meetups.")
        _ = try await optIn(ledger, contacts[4], ["meetups"])
        #expect(try await ledger.measureSegmentsDue() == 1)
        let sizes = try await ledger.store.segmentSizes(segmentID: "event-fans", limit: 30)
        #expect(sizes.map(\.size) == [2, 3] && sizes[0].day < sizes[1].day, "oldest first")
        #expect(try await ledger.store.segmentSizes(segmentID: "event-fans", limit: 1).map(\.size) == [3], "the latest")

        let edited = try await ledger.updateSegment(id: "event-fans") { $0.query.locale = "de"; $0.name = "German event fans" }
        #expect(edited.createdBy == "staff:ann@example.com" && edited.createdAt == segment.createdAt && edited.updatedAt == clock.now)
        #expect(try await ledger.measureSegment(edited).size == 1)
        #expect(try await ledger.store.segments().map(\.id) == ["event-fans"])

        try await ledger.deleteSegment(id: "event-fans")
        #expect(try await ledger.store.segment(id: "event-fans") == nil)
        #expect(try await ledger.store.segmentSizes(segmentID: "event-fans", limit: 30).isEmpty, "its history goes with it")
        await #expect(throws: DomainError.notFound(what: "segment", id: "event-fans")) { try await ledger.deleteSegment(id: "event-fans") }
    }

    @Test(arguments: StoreKind.available)
    func badDefinitionsAreRefusedNamingTheField(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        _ = try await ledger.createSegment(id: "news", name: "News", query: AudienceQuery(topics: ["news"]), createdBy: "command line")
        func refused(_ id: String, _ name: String, _ query: AudienceQuery) async -> [String] {
            do {
                _ = try await ledger.createSegment(id: id, name: name, query: query, createdBy: "command line")
                return []
            } catch DomainError.invalid(let errors) {
                return errors.map(\.field)
            } catch DomainError.conflict(let field, _) {
                return ["conflict: \(field)"]
            } catch {
                return ["unexpected \(error)"]
            }
        }
        #expect(await refused("news", "Again", AudienceQuery(topics: ["news"])) == ["conflict: id"], "taken")
        #expect(await refused("Bad Id", "X", AudienceQuery(topics: ["news"])) == ["id"])
        #expect(await refused("x", " ", AudienceQuery(topics: ["news"])) == ["name"])
        #expect(await refused("x", "X", AudienceQuery(topics: [])) == ["topic"])
        #expect(await refused("x", "X", AudienceQuery(topics: ["nope"])) == ["topic[0]"])
        #expect(await refused("x", "X", AudienceQuery(topics: [], categories: ["nothing-here"])) == ["category[0]"])
        #expect(try await ledger.store.segments().map(\.id) == ["news"], "nothing bad was saved")
    }
}
