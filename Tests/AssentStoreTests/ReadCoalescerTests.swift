import AssentCore
import AssentPostgres
import AssentSQLite
import AssentStore
import AssentTestSupport
import Foundation
import GRDB
import Testing

/// A batch read that records its batches, and holds each one until let through.
private final class HeldReads: @unchecked Sendable {
    private let lock = NSLock()
    private var held: [CheckedContinuation<Void, Never>] = []
    private var open = false
    private(set) var batches: [[Int]] {
        get { lock.withLock { _batches } }
        set { lock.withLock { _batches = newValue } }
    }
    private var _batches: [[Int]] = []
    let failing: Int?
    /// Whether a read fails when its task is cancelled (as postgres-nio's do).
    let checksCancellation: Bool

    init(failing: Int? = nil, checksCancellation: Bool = false) {
        self.failing = failing
        self.checksCancellation = checksCancellation
    }

    func read(_ keys: [Int]) async throws -> [String] {
        lock.withLock { _batches.append(keys) }
        await withCheckedContinuation { continuation in
            let wait = lock.withLock { () -> Bool in
                if open { return false }
                held.append(continuation)
                return true
            }
            if !wait { continuation.resume() }
        }
        if checksCancellation { try Task.checkCancellation() }
        if let failing, keys.contains(failing) { throw CancellationError() }
        return keys.map { "v\($0)" }
    }

    /// Lets every held and later read through.
    func release() {
        let waiting = lock.withLock { () -> [CheckedContinuation<Void, Never>] in
            open = true
            defer { held = [] }
            return held
        }
        for continuation in waiting { continuation.resume() }
    }
}

/// Waits (a few seconds at most) until `condition` holds.
private func eventually(_ condition: () -> Bool) async throws {
    for _ in 0..<500 where !condition() { try await Task.sleep(for: .milliseconds(10)) }
    #expect(condition())
}

@Suite struct ReadCoalescerTests {
    @Test func aReadUnderTheWidthGoesAloneAtOnce() async throws {
        let reads = HeldReads()
        reads.release()
        let coalescer = ReadCoalescer<Int, String>(width: 2) { try await reads.read($0) }
        for key in 0..<5 { #expect(try await coalescer.read(key) == "v\(key)") }
        #expect(reads.batches == [[0], [1], [2], [3], [4]])
        #expect(coalescer.statistics == (5, 5))
    }

    @Test func readsQueuedBehindTheWidthShareBatchesAndEachGetsItsOwnValue() async throws {
        let reads = HeldReads()
        let coalescer = ReadCoalescer<Int, String>(width: 2, maxBatch: 8) { try await reads.read($0) }
        try await withThrowingTaskGroup(of: (Int, String).self) { group in
            for key in 0..<2 { group.addTask { (key, try await coalescer.read(key)) } }
            try await eventually { reads.batches.count == 2 }
            // Both reads are out: these queue, in order. 7 is asked twice and answered twice.
            let queued = Array(2..<21) + [7]
            for (index, key) in queued.enumerated() {
                group.addTask { (key, try await coalescer.read(key)) }
                try await eventually { coalescer.queuedCount == index + 1 }
            }
            reads.release()
            var answered = 0
            for try await (key, value) in group {
                #expect(value == "v\(key)")
                answered += 1
            }
            #expect(answered == 22)
        }
        let batches = reads.batches
        #expect(batches.count == 5, "\(batches)")
        #expect(Array(batches.dropFirst(2)).map(\.count).sorted() == [4, 8, 8], "\(batches)")
        #expect(batches.dropFirst(2).flatMap { $0 }.sorted() == (Array(2..<21) + [7]).sorted())
        #expect(coalescer.statistics == (5, 22))
        // Every slot was given back: the next read goes alone, at once.
        #expect(try await coalescer.read(99) == "v99")
        #expect(reads.batches.last == [99])
    }

    @Test func aFailedBatchFailsItsReadsOnlyAndFreesItsSlot() async throws {
        let reads = HeldReads(failing: 13)
        let coalescer = ReadCoalescer<Int, String>(width: 1, maxBatch: 3) { try await reads.read($0) }
        let results = await withTaskGroup(of: (Int, Bool).self) { group in
            group.addTask { (0, (try? await coalescer.read(0)) != nil) }
            try? await eventually { reads.batches.count == 1 }
            for (index, key) in [11, 12, 13, 14, 15].enumerated() {
                group.addTask { (key, (try? await coalescer.read(key)) != nil) }
                try? await eventually { coalescer.queuedCount == index + 1 }
            }
            reads.release()
            var results: [Int: Bool] = [:]
            for await (key, succeeded) in group { results[key] = succeeded }
            return results
        }
        // [0] alone, then [11, 12, 13] fails as one, then [14, 15].
        #expect(reads.batches == [[0], [11, 12, 13], [14, 15]])
        #expect(results == [0: true, 11: false, 12: false, 13: false, 14: true, 15: true])
        #expect(try await coalescer.read(1) == "v1")
    }

    /// The leader of a batch reads for others too: its own cancellation (its client gone) must not
    /// fail their reads.
    @Test func aCancelledLeaderDoesNotFailTheOthersInItsBatch() async throws {
        let reads = HeldReads(checksCancellation: true)
        let coalescer = ReadCoalescer<Int, String>(width: 1, maxBatch: 8) { try await reads.read($0) }
        let first = Task { try await coalescer.read(0) }
        try await eventually { reads.batches.count == 1 }
        // Queued first, so it leads the next batch.
        let leader = Task { try await coalescer.read(1) }
        try await eventually { coalescer.queuedCount == 1 }
        var others: [Task<String, any Error>] = []
        for key in [2, 3] {
            others.append(Task { try await coalescer.read(key) })
            try await eventually { coalescer.queuedCount == key }
        }
        leader.cancel()
        reads.release()
        #expect(try await first.value == "v0")
        for (key, task) in zip([2, 3], others) { #expect(try await task.value == "v\(key)") }
        _ = try? await leader.value
        #expect(reads.batches == [[0], [1, 2, 3]])
    }

    @Test func aBatchReadThatMiscountsIsAnErrorNotAWrongAnswer() async throws {
        let coalescer = ReadCoalescer<Int, String>(width: 1) { keys in keys.dropLast().map { "v\($0)" } }
        await #expect(throws: CoalescedReadError.self) { try await coalescer.read(1) }
    }
}

extension AudienceTests {
    /// Many single checks at once (which a store may read together) answer as the batch check
    /// does, each its own address and topic: repeats, unknown addresses and two topics mixed.
    @Test(arguments: StoreKind.available)
    func concurrentSingleChecksEachGetTheirOwnAnswer(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        for key in ["news", "offers"] {
            _ = try await ledger.createTopic(Topic(key: key, title: key, requiresDoubleOptIn: false, createdAt: Date()), noticeText: "\(key).")
        }
        var known: [EmailAddress] = []
        for i in 0..<40 {
            let contact = try await ledger.createContact(email: EmailAddress("c\(i)@example.com"), name: nil, externalID: nil, locale: nil)
            known.append(contact.email)
            // news: granted, withdrawn or never asked; offers: granted or never asked.
            var intents: [(String, ConsentIntent)] = [[("news", .optIn)], [("news", .optIn), ("news", .optOut)], []][i % 3]
            if i % 2 == 0 { intents.append(("offers", .optIn)) }
            for (topic, intent) in intents {
                _ = try await ledger.recordChange(ChangeRequest(contactID: contact.id, changes: [TopicChange(topicKey: topic, intent: intent)],
                                                                source: .api, actor: .apiKey("k")))
            }
        }
        let strangers = try (0..<10).map { try EmailAddress("s\($0)@example.net") }
        var random = SplitMix(state: 7)
        let asked = (0..<600).map { _ in
            (random.next() % 5 == 0 ? strangers[Int(random.next() % 10)] : known[Int(random.next() % 40)], random.next() % 2 == 0 ? "news" : "offers")
        }
        var expected: [String: CheckResult] = [:]
        for topic in ["news", "offers"] {
            for (email, result) in zip(known + strangers, try await ledger.check(emails: known + strangers, topicKey: topic)) {
                expected["\(email.value) \(topic)"] = result
            }
        }
        #expect(Set(expected.values.map(\.reason)) == [.granted, .withdrawn, .none, .unknown])
        let answers = try await withThrowingTaskGroup(of: (Int, CheckResult).self) { group in
            for (index, (email, topic)) in asked.enumerated() {
                group.addTask { (index, try await ledger.check(email: email, topicKey: topic)) }
            }
            var answers: [Int: CheckResult] = [:]
            for try await (index, result) in group { answers[index] = result }
            return answers
        }
        let wrong = asked.indices.filter { answers[$0] != expected["\(asked[$0].0.value) \(asked[$0].1)"] }
        #expect(wrong.count == 0, "\(wrong.count) checks answered unlike the batch check, first \(wrong.first.map { "\(asked[$0])" } ?? "")")
        if let store = ledger.store as? PostgresStore {
            let statistics = store.checkReadStatistics
            #expect(statistics.keys == asked.count)
            #expect(statistics.reads < statistics.keys, "600 checks at once were read in \(statistics.reads) reads")
        }
    }
}

/// A change's read of its contact (which a store may coalesce with other changes' reads).
@Suite struct ContactReadTests {
    /// Many changes' reads of their contacts at once each get their own contact as a read alone
    /// gets it: repeats, unknown ids, a contact with no history, withdrawn and granted topics,
    /// an edited one with a locale, an objection, an erased one; and while others write, a read
    /// begun after a write returned sees at least that write.
    @Test(arguments: StoreKind.available)
    func concurrentContactReadsEachGetTheirOwnContact(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        for key in ["news", "offers"] {
            _ = try await ledger.createTopic(Topic(key: key, title: key, requiresDoubleOptIn: false, createdAt: Date()), noticeText: "\(key).")
        }
        var ids: [UUID] = []
        for i in 0..<30 {
            let contact = try await ledger.createContact(email: EmailAddress("r\(i)@example.com"), name: i % 4 == 0 ? "Name \(i)" : nil,
                                                         externalID: i % 5 == 0 ? "ext-\(i)" : nil, locale: i % 6 == 0 ? "fr" : nil)
            ids.append(contact.id)
            let intents: [(String, ConsentIntent)] = [[], [("news", .optIn)], [("news", .optIn), ("offers", .optIn), ("news", .optOut)]][i % 3]
            for (topic, intent) in intents {
                _ = try await ledger.recordChange(ChangeRequest(contactID: contact.id, changes: [TopicChange(topicKey: topic, intent: intent)],
                                                                source: .api, actor: .apiKey("k")))
            }
        }
        try await Task.sleep(for: .milliseconds(5))
        _ = try await ledger.updateContact(id: ids[7]) { $0.locale = "de" }
        _ = try await ledger.objectToMarketing(ids[8], source: .api, actor: .apiKey("k"), evidence: Evidence())
        _ = try await ledger.eraseContact(ids[2], reason: "asked", erasedBy: "test")
        let unknown = (0..<5).map { _ in UUID.random() }
        let store = ledger.store
        // One at a time, each read alone.
        var expected: [UUID: String] = [:]
        for id in ids + unknown {
            let snapshot = try await store.contactSnapshot(id: id)
            expected[id] = Self.describe(snapshot)
            // As the store's other reads, each of its own, give it.
            #expect(snapshot?.contact == (try await store.contact(id: id)), "\(id)")
            if let snapshot {
                let state = try await store.ledgerState(contactID: id)
                #expect(snapshot.state.head == state.head && snapshot.state.preferences == state.preferences, "\(id)")
                #expect(snapshot.wrappedKey == (try await store.wrappedKey(contactID: id)), "\(id)")
            }
        }
        #expect(expected.values.filter { $0 == "none" }.count == unknown.count)
        #expect(expected[ids[2]]!.contains("erased"), "\(expected[ids[2]]!)")
        #expect(expected[ids[5]]!.contains("news=withdrawn") && expected[ids[5]]!.contains("offers=granted"), "\(expected[ids[5]]!)")
        #expect(expected[ids[7]]!.contains(" de ") && expected[ids[8]]!.contains("objected"), "\(expected[ids[7]]!) / \(expected[ids[8]]!)")
        // Contacts that are written to while the others are read.
        var written: [UUID] = []
        for i in 0..<20 {
            written.append(try await ledger.createContact(email: EmailAddress("w\(i)@example.com"), name: nil, externalID: nil, locale: nil).id)
        }
        let before = (store as? PostgresStore)?.snapshotReadStatistics
        var random = SplitMix(state: 11)
        let asked = (0..<400).map { _ in random.next() % 8 == 0 ? unknown[Int(random.next() % 5)] : ids[Int(random.next() % 30)] }
        let (answers, stale) = try await withThrowingTaskGroup(of: (Int, String)?.self) { group in
            for (index, id) in asked.enumerated() {
                group.addTask { (index, Self.describe(try await store.contactSnapshot(id: id))) }
            }
            for id in written {
                group.addTask {
                    for (n, intent) in [ConsentIntent.optIn, .optOut, .optIn].enumerated() {
                        let change = try await ledger.recordChange(ChangeRequest(contactID: id, changes: [TopicChange(topicKey: "news", intent: intent)],
                                                                                 source: .api, actor: .apiKey("k")))
                        let seen = try #require(try await store.contactSnapshot(id: id))
                        if seen.state.head.seq < change.events.last!.seq || seen.state.preferences["news"]?.state != (n == 1 ? .withdrawn : .granted) {
                            return (-1, "\(id) read head \(seen.state.head.seq) after writing \(change.events.last!.seq)")
                        }
                    }
                    return nil
                }
            }
            var answers: [Int: String] = [:], stale: [String] = []
            for try await answer in group {
                guard let (index, text) = answer else { continue }
                if index < 0 { stale.append(text) } else { answers[index] = text }
            }
            return (answers, stale)
        }
        #expect(stale.isEmpty, "reads older than the reader's own write: \(stale.prefix(3))")
        let wrong = asked.indices.filter { answers[$0] != expected[asked[$0]] }
        #expect(wrong.count == 0, "\(wrong.count) reads differ from a read alone, first \(wrong.first.map { "\(answers[$0]!) vs \(expected[asked[$0]]!)" } ?? "")")
        if let store = store as? PostgresStore, let before {
            let after = store.snapshotReadStatistics
            #expect(after.keys - before.keys >= asked.count + written.count * 6)
            #expect(after.reads - before.reads < after.keys - before.keys, "\(after.keys - before.keys) reads at once took \(after.reads - before.reads) statements")
        }
    }

    /// Everything a change reads of its contact, as text to compare.
    static func describe(_ snapshot: ContactSnapshot?) -> String {
        guard let s = snapshot else { return "none" }
        let c = s.contact
        let preferences = s.state.preferences.values.sorted { $0.topicKey < $1.topicKey }
            .map { "\($0.topicKey)=\($0.state.rawValue)@\($0.since.timeIntervalSince1970)/\($0.seq)/\($0.expiresAt.map { "\($0.timeIntervalSince1970)" } ?? "-")" }
        return "\(c.id) \(c.email.value) \(c.name ?? "-") \(c.externalID ?? "-") \(c.locale ?? "-") "
            + "\(c.createdAt.timeIntervalSince1970) \(c.updatedAt.timeIntervalSince1970) \(c.erasedAt == nil ? "" : "erased") \(c.objectedAt == nil ? "" : "objected") "
            + "head \(s.state.head.contactID) \(s.state.head.seq) \(s.state.head.hash.base64EncodedString()) key \(s.wrappedKey?.base64EncodedString() ?? "-") "
            + preferences.joined(separator: ",")
    }
}

/// SQLite answers a single check on the calling thread, by a statement each quick reader keeps
/// prepared between checks, and through its pool of readers when no quick reader is free.
@Suite struct SQLiteCheckPathTests {
    /// Both ways answer alike (granted, withdrawn, never asked, erased, unknown); and the kept
    /// statement sees every change committed before the check began, never an older state.
    @Test func checksOnTheCallingThreadAndThroughThePoolAnswerAlikeAndSeeEachChange() async throws {
        let path = try TestDirectory.make().appendingPathComponent("ledger.sqlite").path
        let store = try SQLiteStore(path: path)
        try await store.migrate()
        let masterKey = MasterKey.generate()
        let ledger = Ledger(store: store, masterKey: masterKey)
        let pooled = Ledger(store: try SQLiteStore(path: path, quickReaders: 0), masterKey: masterKey)
        _ = try await ledger.createTopic(Topic(key: "news", title: "News", requiresDoubleOptIn: false, createdAt: Date()), noticeText: "News.")
        var emails: [EmailAddress] = []
        for i in 0..<4 {
            let contact = try await ledger.createContact(email: EmailAddress("q\(i)@example.com"), name: nil, externalID: nil, locale: nil)
            emails.append(contact.email)
            let intents: [ConsentIntent] = [[.optIn], [.optIn, .optOut], [], [.optIn]][i]
            for intent in intents {
                _ = try await ledger.recordChange(ChangeRequest(contactID: contact.id, changes: [TopicChange(topicKey: "news", intent: intent)],
                                                                source: .api, actor: .apiKey("k")))
            }
            if i == 3 { _ = try await ledger.eraseContact(contact.id, reason: "asked", erasedBy: "test") }
        }
        emails.append(try EmailAddress("nobody@example.net"))
        var reasons: [CheckResult.Reason] = []
        for email in emails {
            let here = try await ledger.check(email: email, topicKey: "news")
            #expect(here == (try await pooled.check(email: email, topicKey: "news")), "\(email.value)")
            reasons.append(here.reason)
        }
        #expect(reasons == [.granted, .withdrawn, .none, .suppressed, .unknown])

        let contactID = try #require(try await ledger.check(email: emails[0], topicKey: "news").contactID)
        for (intent, reason) in [(ConsentIntent.optOut, CheckResult.Reason.withdrawn), (.optIn, .granted), (.optOut, .withdrawn)] {
            _ = try await ledger.recordChange(ChangeRequest(contactID: contactID, changes: [TopicChange(topicKey: "news", intent: intent)],
                                                            source: .api, actor: .apiKey("k")))
            #expect(try await ledger.check(email: emails[0], topicKey: "news").reason == reason)
            #expect(try await pooled.check(email: emails[0], topicKey: "news").reason == reason)
        }
    }

    /// A kept statement that fails (here: its index dropped by another connection, so SQLite
    /// cannot prepare it again) is an error for that check, not a crash; once the index is back,
    /// the same statement answers again.
    @Test func aFailingKeptStatementIsAnErrorAndLaterChecksRecover() async throws {
        let path = try TestDirectory.make().appendingPathComponent("ledger.sqlite").path
        let store = try SQLiteStore(path: path, quickReaders: 1)
        try await store.migrate()
        let ledger = Ledger(store: store, masterKey: .generate())
        _ = try await ledger.createTopic(Topic(key: "news", title: "News", requiresDoubleOptIn: false, createdAt: Date()), noticeText: "News.")
        let contact = try await ledger.createContact(email: EmailAddress("k@example.com"), name: nil, externalID: nil, locale: nil)
        _ = try await ledger.recordChange(ChangeRequest(contactID: contact.id, changes: [TopicChange(topicKey: "news", intent: .optIn)],
                                                        source: .api, actor: .apiKey("k")))
        #expect(try await ledger.check(email: contact.email, topicKey: "news").reason == .granted)
        let other = try DatabaseQueue(path: path)
        try await other.write { try $0.execute(sql: "DROP INDEX contacts_email_id") }
        await #expect(throws: DatabaseError.self) { try await ledger.check(email: contact.email, topicKey: "news") }
        try await other.write { try $0.execute(sql: "CREATE INDEX contacts_email_id ON contacts(email, id)") }
        #expect(try await ledger.check(email: contact.email, topicKey: "news").reason == .granted)
    }
}
