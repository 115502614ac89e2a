import AssentCore
import AssentStore
import AssentTestSupport
import Foundation
import Testing

@Suite struct CacheTests {
    final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var n = 0
        func next() -> Int { lock.withLock { n += 1; return n } }
        var count: Int { lock.withLock { n } }
    }

    @Test func aValueIsReadOnceWithinItsAgeAgainAfterItAndAtOnceWhenInvalidated() async throws {
        let cache = ShortLivedCache<String, Int>(maxAge: 0.2, limit: 3)
        let reads = Counter()
        #expect(try await cache.value("a") { reads.next() } == 1)
        #expect(try await cache.value("a") { reads.next() } == 1, "kept")
        #expect(reads.count == 1)
        cache.invalidate("a")
        #expect(try await cache.value("a") { reads.next() } == 2, "read again once invalidated")
        try await Task.sleep(nanoseconds: 250_000_000)
        #expect(try await cache.value("a") { reads.next() } == 3, "read again once older than its age")
        #expect(try await cache.value("missing") { nil } == nil)
        #expect(try await cache.value("missing") { 99 } == nil, "a missing value is remembered too, for its age")
        for key in ["b", "c", "d"] { _ = try await cache.value(key) { reads.next() } }
        #expect(try await cache.value("a") { 42 } == 42, "a full cache starts afresh, so random keys cannot grow it")
    }

    @Test(arguments: StoreKind.available)
    func checksSeeATopicRetiredThroughTheLedgerAtOnce(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        _ = try await ledger.createTopic(Topic(key: "news", title: "News", createdAt: Date()), noticeText: "News.")
        let jo = try await ledger.createContact(email: EmailAddress("jo@example.com"), name: nil, externalID: nil, locale: nil)
        _ = try await ledger.recordChange(ChangeRequest(contactID: jo.id, changes: [TopicChange(topicKey: "news", intent: .optIn)], source: .api, actor: .apiKey("k")))
        #expect(try await ledger.check(email: EmailAddress("jo@example.com"), topicKey: "news").allowed)
        _ = try await ledger.retireTopic(key: "news")
        #expect(try await ledger.check(email: EmailAddress("jo@example.com"), topicKey: "news").allowed == false, "no stale topic after a retirement here")
        #expect(try await ledger.check(emails: [EmailAddress("jo@example.com")], topicKey: "news").first?.allowed == false)
    }

    @Test(arguments: StoreKind.available)
    func changesSeeANoticePublishedAndATopicRetiredThroughTheLedgerAtOnce(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        _ = try await ledger.createTopic(Topic(key: "news", title: "News", createdAt: Date()), noticeText: "News.")
        let jo = try await ledger.createContact(email: EmailAddress("jo@example.com"), name: nil, externalID: nil, locale: nil)
        func change(_ intent: ConsentIntent) async throws -> ChangeResult {
            try await ledger.recordChange(ChangeRequest(contactID: jo.id, changes: [TopicChange(topicKey: "news", intent: intent)], source: .api, actor: .apiKey("k")))
        }
        #expect(try await change(.optIn).events.first?.noticeVersion == 1) // the topic is now in the cache
        _ = try await ledger.publishNotice(topicKey: "news", text: "News, second wording.")
        _ = try await change(.optOut)
        #expect(try await change(.optIn).events.first?.noticeVersion == 2, "the notice published a moment ago, not the cached topic's")
        _ = try await ledger.retireTopic(key: "news")
        await #expect(throws: DomainError.self, "a retired topic refuses an opt-in at once") { try await change(.optIn) }
    }

    @Test(arguments: StoreKind.available)
    func changesAcceptATopicAndANoticeMadeByAnotherInstanceAMomentAgo(_ kind: StoreKind) async throws {
        // Two ledgers on one store, each with caches of its own: two instances of the server.
        let store = try await kind.makeStore(), key = MasterKey.generate()
        let here = Ledger(store: store, masterKey: key), elsewhere = Ledger(store: store, masterKey: key)
        _ = try await here.createTopic(Topic(key: "news", title: "News", createdAt: Date()), noticeText: "News.")
        let jo = try await here.createContact(email: EmailAddress("jo@example.com"), name: nil, externalID: nil, locale: nil)
        func change(_ topic: String, _ intent: ConsentIntent, notice: Int? = nil) async throws -> ChangeResult {
            try await here.recordChange(ChangeRequest(contactID: jo.id, changes: [TopicChange(topicKey: topic, intent: intent, noticeVersion: notice)],
                                                      source: .api, actor: .apiKey("k")))
        }
        await #expect(throws: DomainError.self) { try await change("events", .optIn) } // unknown here, and remembered so by the cache
        _ = try await elsewhere.createTopic(Topic(key: "events", title: "Events", createdAt: Date()), noticeText: "Events.")
        #expect(try await change("events", .optIn).events.count == 1, "a topic created elsewhere a moment ago is read afresh")
        #expect(try await change("news", .optIn).events.first?.noticeVersion == 1) // the topic is now in this instance's cache
        _ = try await elsewhere.publishNotice(topicKey: "news", text: "News, second wording.")
        _ = try await change("news", .optOut)
        #expect(try await change("news", .optIn, notice: 2).events.first?.noticeVersion == 2, "a version published elsewhere a moment ago is accepted")
        await #expect(throws: DomainError.self, "a version that does not exist is still refused") { try await change("news", .optOut, notice: 3) }
        // An opt-in is decided on the topic as it is now: double opt-in switched on elsewhere a moment ago applies at once.
        _ = try await change("news", .optOut)
        _ = try await elsewhere.updateTopic(key: "news") { $0.requiresDoubleOptIn = true }
        let fromForm = try await here.recordChange(ChangeRequest(contactID: jo.id, changes: [TopicChange(topicKey: "news", intent: .optIn)],
                                                                 source: .form, actor: .subject))
        #expect(fromForm.events.first?.toState == .pending, "a form's opt-in waits for its confirmation, not granted on the cached topic")
        #expect(try await here.check(email: EmailAddress("jo@example.com"), topicKey: "news").allowed == false)
        _ = try await elsewhere.retireTopic(key: "events")
        _ = try await change("events", .optOut)
        await #expect(throws: DomainError.self, "a topic retired elsewhere a moment ago refuses an opt-in at once") { try await change("events", .optIn) }
    }
}
