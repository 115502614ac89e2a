import AssentCore
import AssentSQLite
import AssentStore
import Foundation

/// Every backend the conformance suite runs against. A new store joins by
/// adding a case here; every test below then runs on it too.
enum StoreKind: String, CaseIterable {
    case memory
    case sqlite

    func makeStore() async throws -> any LedgerStore {
        switch self {
        case .memory:
            return MemoryStore()
        case .sqlite:
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("assent-tests-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let store = try SQLiteStore(path: dir.appendingPathComponent("ledger.sqlite").path)
            try await store.migrate()
            return store
        }
    }

    func makeLedger(now: @escaping @Sendable () -> Date = { Date() }) async throws -> Ledger {
        Ledger(store: try await makeStore(), masterKey: .generate(), environment: LedgerEnvironment(now: now))
    }
}


/// Seeds the topics of the seed scenario.
func seedTopics(_ ledger: Ledger) async throws {
    for (key, title, category) in [("events", "Events", "news"), ("news", "News", "news"), ("hr-training", "HR training", "training")] {
        _ = try await ledger.createTopic(Topic(key: key, title: title, category: category, createdAt: Date()), noticeText: "We will email you about \(title).")
    }
}

func optIn(_ ledger: Ledger, _ contact: Contact, _ topics: [String], source: ConsentSource = .api, note: String? = nil,
           channel: StaffChannel? = nil) async throws -> ChangeResult {
    try await ledger.recordChange(ChangeRequest(
        contactID: contact.id, changes: topics.map { TopicChange(topicKey: $0, intent: .optIn) }, source: source, channel: channel,
        actor: .apiKey("test"), evidence: Evidence(personal: PersonalEvidence(note: note))))
}

func optOut(_ ledger: Ledger, _ contact: Contact, _ topics: [String]) async throws -> ChangeResult {
    try await ledger.recordChange(ChangeRequest(
        contactID: contact.id, changes: topics.map { TopicChange(topicKey: $0, intent: .optOut) }, source: .api, actor: .apiKey("test")))
}

/// Reads back one contact's chain and checks it the way `assent verify` does.
func chainProblem(_ ledger: Ledger, _ contactID: UUID) async throws -> ChainBreak? {
    let report = try await ledger.verify()
    return report.breaks.first { $0.contactID == contactID }
}
