import AssentCore
import AssentSQLite
import AssentStore
import AssentTestSupport
import Foundation

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
