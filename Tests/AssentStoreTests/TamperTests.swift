import AssentCore
import AssentSQLite
import AssentStore
import AssentTestSupport
import Foundation
import Testing

/// Edits the database directly, as someone with access to it could, and
/// shows that `verify` names each kind of tampering, on every database store.
@Suite struct TamperTests {
    struct Fixture {
        let ledger: Ledger
        let victim: Contact
        let bystander: Contact
        var id: String { victim.id.uuidString.lowercased() }
    }

    func fixture(_ kind: StoreKind) async throws -> Fixture {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        let victim = try await ledger.createContact(email: EmailAddress("victim@example.com"), name: nil, externalID: nil, locale: nil)
        let bystander = try await ledger.createContact(email: EmailAddress("bystander@example.com"), name: nil, externalID: nil, locale: nil)
        for contact in [victim, bystander] {
            _ = try await optIn(ledger, contact, ["events"])
            _ = try await optIn(ledger, contact, ["news"])
            _ = try await optOut(ledger, contact, ["events"])
            _ = try await optIn(ledger, contact, ["hr-training"])
        }
        #expect(try await ledger.verify().isIntact)
        try await dropImmutabilityTriggers(ledger.store)
        return Fixture(ledger: ledger, victim: victim, bystander: bystander)
    }

    func onlyBreak(_ f: Fixture) async throws -> ChainBreak {
        let report = try await f.ledger.verify()
        #expect(report.contacts == 2)
        #expect(report.breaks.count == 1, "only the tampered contact is reported: \(report.breaks)")
        let problem = try #require(report.breaks.first)
        #expect(problem.contactID == f.victim.id)
        return problem
    }

    /// `verify` hashes batches of chains on other threads while the store reads on: breaks found by
    /// different batches are all reported, once each, in contact order.
    @Test(arguments: StoreKind.databases)
    func breaksFoundByDifferentBatchesAreAllReportedInContactOrder(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        // 1,600 contacts x 3 events: more than one batch of the workers (4,096 events).
        let csv = "email,events,news,hr-training\n" + (0..<1_600).map { "p\($0)@example.com,yes,yes,yes\n" }.joined()
        _ = try await ledger.importContacts({ CSVReader(text: csv) }, options: ImportOptions(evidence: "Test file", commit: true))
        let intact = try await ledger.verify()
        #expect(intact.contacts == 1_600 && intact.events == 4_800 && intact.isIntact, "\(intact)")
        try await dropImmutabilityTriggers(ledger.store)
        for pick in ["ORDER BY contact_id LIMIT 1", "ORDER BY contact_id LIMIT 1 OFFSET 800", "ORDER BY contact_id DESC LIMIT 1"] {
            try await tamper(ledger.store, "UPDATE consent_events SET batch_id = 'forged' WHERE seq = 2 AND contact_id IN (SELECT contact_id FROM chain_heads \(pick))")
        }
        let report = try await ledger.verify()
        #expect(report.contacts == 1_600 && report.events == 4_800)
        #expect(report.breaks.map(\.kind) == [.edited, .edited, .edited], "\(report.breaks)")
        let ids = report.breaks.map { $0.contactID.uuidString.lowercased() }
        #expect(ids == ids.sorted() && Set(ids).count == 3, "in contact order, once each: \(ids)")
        // Heads gone inside a store's page of contacts and between two pages (PostgreSQL's pages of
        // 1,000: with the 501st head gone, the first page ends at the 1,001st, and the 1,002nd is
        // gone): each such chain is still read once, whole, and reported (a store may read a
        // page's events by its range of ids).
        try await tamper(ledger.store, """
            DELETE FROM chain_heads WHERE contact_id IN (SELECT contact_id FROM chain_heads ORDER BY contact_id LIMIT 1 OFFSET 500)
                OR contact_id IN (SELECT contact_id FROM chain_heads ORDER BY contact_id LIMIT 1 OFFSET 1001)
            """)
        let headless = try await ledger.verify()
        #expect(headless.contacts == 1_600 && headless.events == 4_800, "\(headless)")
        #expect(headless.breaks.filter { $0.kind == .headMismatch }.count == 2 && headless.breaks.count == 5, "\(headless.breaks)")
    }

    @Test(arguments: StoreKind.databases)
    func eventsAreImmutableThroughSQLUntilTheTriggersAreDropped(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        let c = try await ledger.createContact(email: EmailAddress("a@example.com"), name: nil, externalID: nil, locale: nil)
        _ = try await optIn(ledger, c, ["events"])
        await #expect(throws: (any Error).self) { try await tamper(ledger.store, "UPDATE consent_events SET topic_key = 'news'") }
        await #expect(throws: (any Error).self) { try await tamper(ledger.store, "DELETE FROM consent_events") }
        #expect(try await ledger.store.events(contactID: c.id, beforeSeq: nil, limit: 10).first?.topicKey == "events")
    }

    @Test(arguments: StoreKind.databases)
    func editedEventIsDetected(_ kind: StoreKind) async throws {
        let f = try await fixture(kind)
        // Turn the withdrawal (#3) into a grant, and fix up the projection to match.
        try await tamper(f.ledger.store,
                         "UPDATE consent_events SET action = 'granted', to_state = 'granted' WHERE contact_id = '\(f.id)' AND seq = 3",
                         "UPDATE preferences SET state = 'granted' WHERE contact_id = '\(f.id)' AND topic_key = 'events'")
        let problem = try await onlyBreak(f)
        #expect(problem.kind == .edited && problem.seq == 3)
    }

    @Test(arguments: StoreKind.databases)
    func editedTimestampIsDetected(_ kind: StoreKind) async throws {
        let f = try await fixture(kind)
        try await tamper(f.ledger.store, "UPDATE consent_events SET occurred_at = occurred_at - 86400000 WHERE contact_id = '\(f.id)' AND seq = 1")
        let problem = try await onlyBreak(f)
        #expect(problem.kind == .edited && problem.seq == 1)
    }

    @Test(arguments: StoreKind.databases)
    func deletedMiddleEventIsDetected(_ kind: StoreKind) async throws {
        let f = try await fixture(kind)
        try await tamper(f.ledger.store, "DELETE FROM consent_events WHERE contact_id = '\(f.id)' AND seq = 2")
        let problem = try await onlyBreak(f)
        #expect(problem.kind == .sequenceGap && problem.seq == 3)
    }

    @Test(arguments: StoreKind.databases)
    func deletedLatestEventIsDetected(_ kind: StoreKind) async throws {
        let f = try await fixture(kind)
        try await tamper(f.ledger.store, "DELETE FROM consent_events WHERE contact_id = '\(f.id)' AND seq = 4")
        let problem = try await onlyBreak(f)
        #expect(problem.kind == .headMismatch)
    }

    @Test(arguments: StoreKind.databases)
    func reorderedEventsAreDetected(_ kind: StoreKind) async throws {
        let f = try await fixture(kind)
        try await tamper(f.ledger.store,
                         "UPDATE consent_events SET seq = 1000 WHERE contact_id = '\(f.id)' AND seq = 2",
                         "UPDATE consent_events SET seq = 2 WHERE contact_id = '\(f.id)' AND seq = 3",
                         "UPDATE consent_events SET seq = 3 WHERE contact_id = '\(f.id)' AND seq = 1000")
        let problem = try await onlyBreak(f)
        #expect(problem.seq == 2)
        #expect(problem.kind == .brokenLink || problem.kind == .edited)
    }

    @Test(arguments: StoreKind.databases)
    func editedProjectionIsDetected(_ kind: StoreKind) async throws {
        let f = try await fixture(kind)
        try await tamper(f.ledger.store, "UPDATE preferences SET state = 'granted' WHERE contact_id = '\(f.id)' AND topic_key = 'events'")
        let problem = try await onlyBreak(f)
        #expect(problem.kind == .projectionMismatch)
    }

    @Test(arguments: StoreKind.databases)
    func wholeChainDeletedIsDetected(_ kind: StoreKind) async throws {
        let f = try await fixture(kind)
        try await tamper(f.ledger.store, "DELETE FROM consent_events WHERE contact_id = '\(f.id)'")
        let problem = try await onlyBreak(f)
        #expect(problem.kind == .headMismatch)
    }

    @Test(arguments: StoreKind.databases)
    func deletedHeadIsDetected(_ kind: StoreKind) async throws {
        let f = try await fixture(kind)
        try await tamper(f.ledger.store, "DELETE FROM chain_heads WHERE contact_id = '\(f.id)'")
        let problem = try await onlyBreak(f)
        #expect(problem.kind == .headMismatch)
    }

    @Test(arguments: StoreKind.databases)
    func migrationsAreRecordedAndRerunSafely(_ kind: StoreKind) async throws {
        let store = try await kind.makeStore()
        try await store.migrate()
        #expect(try await store.appliedMigrations() == ["0001_ledger", "0002_outbox_and_confirmations", "0003_signing_keys", "0004_forms_and_links", "0005_portal_and_requests", "0006_staff_and_audit", "0007_erasure_and_objection", "0008_segments_and_repermission", "0009_webhooks", "0010_event_time_index", "0011_verify_runs", "0012_check_index"])
    }
}
