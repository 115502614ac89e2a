import AssentCore
import AssentSQLite
import AssentStore
import AssentTestSupport
import Foundation
import GRDB
import Testing

/// Edits the SQLite file directly, as someone with access to it could, and
/// shows that `verify` names each kind of tampering.
@Suite struct SQLiteTamperTests {
    struct Fixture {
        let ledger: Ledger
        let store: SQLiteStore
        let victim: Contact
        let bystander: Contact
    }

    func fixture() async throws -> Fixture {
        let store = try await StoreKind.sqlite.makeStore() as! SQLiteStore
        let ledger = Ledger(store: store, masterKey: .generate())
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
        // What an attacker with the file does first.
        try await store.pool.write { db in
            try db.execute(sql: "DROP TRIGGER consent_events_immutable_update; DROP TRIGGER consent_events_immutable_delete")
        }
        return Fixture(ledger: ledger, store: store, victim: victim, bystander: bystander)
    }

    func onlyBreak(_ f: Fixture) async throws -> ChainBreak {
        let report = try await f.ledger.verify()
        #expect(report.contacts == 2)
        #expect(report.breaks.count == 1, "only the tampered contact is reported: \(report.breaks)")
        let problem = try #require(report.breaks.first)
        #expect(problem.contactID == f.victim.id)
        return problem
    }

    @Test func eventsAreImmutableThroughSQLUntilTheTriggersAreDropped() async throws {
        let store = try await StoreKind.sqlite.makeStore() as! SQLiteStore
        let ledger = Ledger(store: store, masterKey: .generate())
        try await seedTopics(ledger)
        let c = try await ledger.createContact(email: EmailAddress("a@example.com"), name: nil, externalID: nil, locale: nil)
        _ = try await optIn(ledger, c, ["events"])
        await #expect(throws: DatabaseError.self) {
            try await store.pool.write { db in try db.execute(sql: "UPDATE consent_events SET topic_key = 'news'") }
        }
        await #expect(throws: DatabaseError.self) {
            try await store.pool.write { db in try db.execute(sql: "DELETE FROM consent_events") }
        }
    }

    @Test func editedEventIsDetected() async throws {
        let f = try await fixture()
        try await f.store.pool.write { db in
            // Turn the withdrawal (#3) into a grant, and fix up the projection to match.
            try db.execute(sql: "UPDATE consent_events SET action = 'granted', to_state = 'granted' WHERE contact_id = ? AND seq = 3",
                           arguments: [f.victim.id.uuidString.lowercased()])
            try db.execute(sql: "UPDATE preferences SET state = 'granted' WHERE contact_id = ? AND topic_key = 'events'",
                           arguments: [f.victim.id.uuidString.lowercased()])
        }
        let problem = try await onlyBreak(f)
        #expect(problem.kind == .edited && problem.seq == 3)
    }

    @Test func editedTimestampIsDetected() async throws {
        let f = try await fixture()
        try await f.store.pool.write { db in
            try db.execute(sql: "UPDATE consent_events SET occurred_at = occurred_at - 86400000 WHERE contact_id = ? AND seq = 1",
                           arguments: [f.victim.id.uuidString.lowercased()])
        }
        let problem = try await onlyBreak(f)
        #expect(problem.kind == .edited && problem.seq == 1)
    }

    @Test func deletedMiddleEventIsDetected() async throws {
        let f = try await fixture()
        try await f.store.pool.write { db in
            try db.execute(sql: "DELETE FROM consent_events WHERE contact_id = ? AND seq = 2", arguments: [f.victim.id.uuidString.lowercased()])
        }
        let problem = try await onlyBreak(f)
        #expect(problem.kind == .sequenceGap && problem.seq == 3)
    }

    @Test func deletedLatestEventIsDetected() async throws {
        let f = try await fixture()
        try await f.store.pool.write { db in
            try db.execute(sql: "DELETE FROM consent_events WHERE contact_id = ? AND seq = 4", arguments: [f.victim.id.uuidString.lowercased()])
        }
        let problem = try await onlyBreak(f)
        #expect(problem.kind == .headMismatch)
    }

    @Test func reorderedEventsAreDetected() async throws {
        let f = try await fixture()
        try await f.store.pool.write { db in
            let id = f.victim.id.uuidString.lowercased()
            try db.execute(sql: "UPDATE consent_events SET seq = 1000 WHERE contact_id = ? AND seq = 2", arguments: [id])
            try db.execute(sql: "UPDATE consent_events SET seq = 2 WHERE contact_id = ? AND seq = 3", arguments: [id])
            try db.execute(sql: "UPDATE consent_events SET seq = 3 WHERE contact_id = ? AND seq = 1000", arguments: [id])
        }
        let problem = try await onlyBreak(f)
        #expect(problem.seq == 2)
        #expect(problem.kind == .brokenLink || problem.kind == .edited)
    }

    @Test func editedProjectionIsDetected() async throws {
        let f = try await fixture()
        try await f.store.pool.write { db in
            try db.execute(sql: "UPDATE preferences SET state = 'granted' WHERE contact_id = ? AND topic_key = 'events'",
                           arguments: [f.victim.id.uuidString.lowercased()])
        }
        let problem = try await onlyBreak(f)
        #expect(problem.kind == .projectionMismatch)
    }

    @Test func wholeChainDeletedIsDetected() async throws {
        let f = try await fixture()
        try await f.store.pool.write { db in
            try db.execute(sql: "DELETE FROM consent_events WHERE contact_id = ?", arguments: [f.victim.id.uuidString.lowercased()])
        }
        let problem = try await onlyBreak(f)
        #expect(problem.kind == .headMismatch)
    }

    @Test func migrationsAreRecordedAndRerunSafely() async throws {
        let store = try await StoreKind.sqlite.makeStore() as! SQLiteStore
        try await store.migrate()
        #expect(try await store.appliedMigrations() == ["0001_ledger"])
    }
}
