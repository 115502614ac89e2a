import AssentCore
import AssentSQLite
import AssentStore
import AssentPostgres
import AssentTestSupport
import Crypto
import Foundation
import GRDB
import Testing

/// Erasure, suppression, objection and the completeness of the access export.
@Suite struct RightsTests {
    /// A contact with something in every place a person's data can be.
    func richContact(_ ledger: Ledger) async throws -> Contact {
        try await seedTopics(ledger)
        _ = try await ledger.updateTopic(key: "news") { $0.requiresDoubleOptIn = true }
        _ = try await ledger.createForm(id: "signup", definition: FormDefinition(title: "Join", topics: [FormTopic(key: "events"), FormTopic(key: "news")],
                                                                                 doubleOptIn: false, askName: true))
        let result = try await ledger.submitForm(FormSubmission(formID: "signup", email: "erin@example.com", name: "Erin Example", locale: "de",
                                                                chosenTopics: ["events", "news"], ipAddress: "198.51.100.7", userAgent: "Browser/9"))
        let contact = result.contact
        _ = try await optIn(ledger, contact, ["hr-training"], source: .staff, note: "Erin rang and said yes to training.", channel: .phone)
        _ = try await ledger.linkToken(ContactLink(purpose: .preferenceCentre, contactID: contact.id))
        try await ledger.requestPortalLink(email: "erin@example.com")
        _ = try await ledger.recordSubjectRequest(contactID: contact.id, kind: .erasure, channel: "portal", note: "Erin Example wants to be forgotten.")
        _ = try await ledger.store.beginIdempotency(scope: "k", key: "i1", requestHash: Data([1]), now: Date())
        try await ledger.store.completeIdempotency(scope: "k", key: "i1", response: StoredResponse(
            status: 201, contentType: "application/json", body: Data(#"{"email":"erin@example.com"}"#.utf8)))
        return contact
    }

    @Test(arguments: StoreKind.available)
    func erasureShredsTheEvidenceKeepsTheSkeletonAndSuppressesTheAddress(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        let erin = try await richContact(ledger)
        let before = try await ledger.store.events(contactID: erin.id, beforeSeq: nil, limit: 100)
        let erased = try await ledger.eraseContact(erin.id, reason: "Erin's request by email of 2026-11-29", erasedBy: "dpo@example.com")
        #expect(erased.isErased && erased.name == nil && erased.externalID == nil && erased.email != erin.email)
        // Every topic that was Yes or pending was withdrawn by Assent first; the rest of the history stays.
        let after = try await ledger.store.events(contactID: erin.id, beforeSeq: nil, limit: 100)
        #expect(after.count == before.count + 3 && after.prefix(3).allSatisfy { $0.action == .withdrawn && $0.source == .system })
        let timeline = try await ledger.timeline(contactID: erin.id, beforeSeq: nil, limit: 100)
        #expect(timeline.allSatisfy { $0.personal == nil }, "no evidence can be read any more")
        #expect(timeline.filter(\.evidenceShredded).count == 3, "the two form events and the staff entry had evidence: all shredded")
        #expect(try await ledger.verify().isIntact, "the chain still verifies: it hashes the ciphertext")
        #expect(try await ledger.store.contact(email: erin.email) == nil)
        #expect(try await ledger.check(email: erin.email, topicKey: "events").reason == .suppressed)
        #expect(try await ledger.store.subjectRequests(contactID: erin.id, status: nil, limit: 10).map(\.outcome) == ["erased"])
        #expect(try await ledger.store.subjectRequests(contactID: erin.id, status: nil, limit: 10).first?.note == nil)
        await #expect(throws: DomainError.gone(what: "contact", id: erin.id.uuidString.lowercased())) {
            _ = try await optIn(ledger, erased, ["events"])
        }
        #expect(try await ledger.store.auditEntries(AuditQuery(action: "erase_contact")).first?.detail == "Erin's request by email of 2026-11-29")
    }

    @Test(arguments: StoreKind.available)
    func aSuppressedAddressComesBackOnlyWithFreshConsent(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        let erin = try await richContact(ledger)
        _ = try await ledger.eraseContact(erin.id, reason: "request", erasedBy: "dpo@example.com")
        do {
            _ = try await ledger.createContact(email: EmailAddress("Erin@Example.com"), name: nil, externalID: nil, locale: nil)
            Issue.record("a suppressed address was added back")
        } catch let DomainError.conflict(field, message) {
            #expect(field == "email" && message.contains("was erased on") && message.contains("freshConsent"))
        }
        // The person signing up again through a form is fresh consent.
        let back = try await ledger.submitForm(FormSubmission(formID: "signup", email: "erin@example.com", chosenTopics: ["events"]))
        #expect(back.createdContact && back.contact.id != erin.id)
        #expect(try await ledger.check(email: erin.email, topicKey: "events").allowed)
        // A staff or API addition needs stated evidence, which is audited.
        let other = try await ledger.createContact(email: EmailAddress("gone@example.com"), name: nil, externalID: nil, locale: nil)
        _ = try await ledger.eraseContact(other.id, reason: "request", erasedBy: "dpo@example.com")
        _ = try await ledger.createContact(email: EmailAddress("gone@example.com"), name: nil, externalID: nil, locale: nil,
                                           freshConsent: "Signed paper form of 2026-12-01, ref 42", actor: "API key k1")
        #expect(try await ledger.store.auditEntries(AuditQuery(action: "suppression_override")).first?.detail == "fresh consent: Signed paper form of 2026-12-01, ref 42")
    }

    @Test(arguments: StoreKind.databases)
    func noTableHoldsTheErasedEmailNameOrEvidence(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        let erin = try await richContact(ledger)
        // Before: the email is there, to prove the scan finds it.
        #expect(try await tablesContaining("erin@example.com", ledger.store).contains("contacts"))
        _ = try await ledger.eraseContact(erin.id, reason: "request", erasedBy: "dpo@example.com")
        for needle in ["erin@example.com", "Erin Example", "198.51.100.7", "Browser/9", "Erin rang"] {
            #expect(try await tablesContaining(needle, ledger.store).isEmpty, "'\(needle)' is still stored")
        }
    }

    @Test(arguments: StoreKind.available)
    func anObjectionWithdrawsEverythingAndOnlyThePersonCanOptInAgain(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        let erin = try await richContact(ledger)
        let result = try await ledger.objectToMarketing(erin.id, source: .staff, channel: .phone, actor: .staff("agent"),
                                                        evidence: Evidence(personal: PersonalEvidence(note: "Stop all marketing, please.")))
        #expect(Set(result.events.map(\.topicKey)) == ["events", "news", "hr-training"])
        #expect(try await ledger.existingContact(erin.id).objectedAt != nil)
        do {
            _ = try await optIn(ledger, erin, ["events"])
            Issue.record("an API opt-in after an objection")
        } catch let DomainError.invalid(errors) {
            #expect(errors.first?.message.contains("objected to all direct marketing") == true)
        }
        let own = try await ledger.withdraw(contactID: erin.id, topicKey: nil, source: .portal, evidence: Evidence()) // nothing left
        #expect(own.events.isEmpty)
        let signup = try await ledger.submitForm(FormSubmission(formID: "signup", email: "erin@example.com", chosenTopics: ["events"]))
        #expect(signup.change.events.map(\.action) == [.granted], "the person's own opt-in")
    }

    @Test func deadlinesAreCalendarMonthsAndMonthEndsClamp() {
        func day(_ text: String) -> Date { ISO8601DateFormatter().date(from: text + "T10:00:00Z")! }
        #expect(SubjectRequest.dueDate(after: day("2026-01-31")) == day("2026-02-28"))
        #expect(SubjectRequest.dueDate(after: day("2028-01-31")) == day("2028-02-29"), "a leap year")
        #expect(SubjectRequest.dueDate(after: day("2026-03-15")) == day("2026-04-15"))
        #expect(SubjectRequest.dueDate(after: day("2026-11-30"), months: 3) == day("2027-02-28"))
        #expect(SubjectRequest.dueDate(after: day("2026-12-31")) == day("2027-01-31"))
    }

    @Test(arguments: StoreKind.available)
    func aRequestIsRecordedExtendedOnceAndClosedWithEachStepAudited(_ kind: StoreKind) async throws {
        let clock = TestClock(ISO8601DateFormatter().date(from: "2026-03-10T09:00:00Z")!)
        let ledger = try await kind.makeLedger(now: { clock.now })
        let jo = try await ledger.createContact(email: EmailAddress("jo@example.com"), name: nil, externalID: nil, locale: nil)
        let received = ISO8601DateFormatter().date(from: "2026-01-31T12:00:00Z")!
        let letter = try await ledger.recordSubjectRequest(contactID: jo.id, kind: .access, channel: "letter", note: "Please send my data.",
                                                           receivedAt: received, identityNote: "Signature matches the 2025 form")
        #expect(letter.dueAt == ISO8601DateFormatter().date(from: "2026-02-28T12:00:00Z")! && letter.isOverdue(at: clock.now))
        await #expect(throws: DomainError.invalid(field: "reason", "is required: why the request needs more time (complexity, number of requests)")) {
            _ = try await ledger.extendSubjectRequest(letter.id, reason: " ", actor: nil)
        }
        let extended = try await ledger.extendSubjectRequest(letter.id, reason: "Records are archived off-site", actor: nil)
        #expect(extended.dueAt == ISO8601DateFormatter().date(from: "2026-04-30T12:00:00Z")! && !extended.isOverdue(at: clock.now))
        await #expect(throws: DomainError.conflict(field: "reason", message: "the deadline was already extended")) {
            _ = try await ledger.extendSubjectRequest(letter.id, reason: "again", actor: nil)
        }
        let closed = try await ledger.completeSubjectRequest(letter.id, outcome: "Export sent by post", actor: nil)
        #expect(closed.status == .closed && closed.closedAt == clock.now && closed.outcome == "Export sent by post")
        let stored = try #require(try await ledger.store.subjectRequest(id: letter.id))
        #expect(stored.identityNote == "Signature matches the 2025 form" && stored.extensionReason == "Records are archived off-site")
        #expect(Set(try await ledger.store.auditEntries(AuditQuery()).map(\.action)).isSuperset(of: ["request_extend", "request_complete"]))
        await #expect(throws: DomainError.self) {
            _ = try await ledger.recordSubjectRequest(contactID: jo.id, kind: .erasure, channel: "email", note: nil,
                                                      receivedAt: clock.now.addingTimeInterval(86_400))
        }
    }

    /// Every table with a `contact_id` column is either in the export or
    /// explicitly listed as holding no personal data to hand over, so a new
    /// table cannot be forgotten silently.
    @Test(arguments: StoreKind.databases)
    func theExportAccountsForEveryRowThatReferencesTheContact(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        let erin = try await richContact(ledger)
        let export = try await ledger.exportPersonalData(contactID: erin.id)
        let exported: [String: Int] = [
            "consent_events": export.events.count, "preferences": export.preferences.count, "outbox": export.emails.count,
            "subject_requests": export.requests.count, "webhook_deliveries": export.disclosures.count,
        ]
        // Secrets and bookkeeping, not facts about the person: keys, hashes of link and session secrets, the chain head,
        // which grants were asked to renew (the emails themselves are in the export).
        let technical: Set<String> = ["contact_keys", "chain_heads", "contact_link_secrets", "confirmation_tokens", "portal_links",
                                      "portal_sessions", "suppressions", "repermission_requests"]
        let counts = try await rowsReferencing(erin.id, ledger.store)
        #expect(!counts.isEmpty)
        for (table, count) in counts {
            if let n = exported[table] {
                #expect(n == count, "\(table): \(count) rows, \(n) in the export")
            } else {
                #expect(technical.contains(table), "table \(table) references contacts but is neither exported nor listed as technical")
            }
        }
        #expect(export.contact.email == "erin@example.com" && export.contact.name == "Erin Example")
        #expect(export.receipts.count == export.events.filter { ["granted", "confirmed", "withdrawn"].contains($0.action) }.count)
        #expect(export.notices.count == 3 && export.forms.map(\.id) == ["signup"])
    }
}

/// Tables (other than `contacts` itself) whose `contact_id` column names the contact, with their row counts.
func rowsReferencing(_ id: UUID, _ store: any LedgerStore) async throws -> [String: Int] {
    var counts: [String: Int] = [:]
    if let sqlite = store as? SQLiteStore {
        counts = try await sqlite.pool.read { db in
            var counts: [String: Int] = [:]
            for table in try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE 'grdb_%'") {
                let columns = try Row.fetchAll(db, sql: "PRAGMA table_info(\(table))").map { $0["name"] as String }
                guard columns.contains("contact_id") else { continue }
                counts[table] = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM \(table) WHERE contact_id = ?", arguments: [id.uuidString.lowercased()]) ?? 0
            }
            return counts
        }
    } else if let postgres = store as? PostgresStore {
        for table in try await postgres.strings("SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' AND column_name = 'contact_id'") {
            counts[table] = Int(try await postgres.strings("SELECT COUNT(*)::text FROM \(table) WHERE contact_id = '\(id.uuidString.lowercased())'").first ?? "0")
        }
    }
    return counts
}

/// Tables with any text or binary column containing `needle`.
func tablesContaining(_ needle: String, _ store: any LedgerStore) async throws -> Set<String> {
    var found: Set<String> = []
    if let sqlite = store as? SQLiteStore {
        found = try await sqlite.pool.read { db in
            var found: Set<String> = []
            for table in try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'") {
                let columns = try Row.fetchAll(db, sql: "PRAGMA table_info(\(table))").map { $0["name"] as String }
                let condition = columns.map { "instr(CAST(\"\($0)\" AS TEXT), ?) > 0" }.joined(separator: " OR ")
                if try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM \(table) WHERE \(condition)", arguments: StatementArguments(columns.map { _ in needle })) ?? 0 > 0 {
                    found.insert(table)
                }
            }
            return found
        }
    } else if let postgres = store as? PostgresStore {
        let columns = try await postgres.strings("""
            SELECT table_name || '.' || column_name || '.' || data_type FROM information_schema.columns
            WHERE table_schema = 'public' AND data_type IN ('text', 'bytea', 'ARRAY')
            """)
        for entry in columns {
            let parts = entry.split(separator: ".").map(String.init)
            let (table, column, type) = (parts[0], parts[1], parts[2])
            let expression = type == "bytea" ? "position(convert_to('\(needle)', 'UTF8') in \(column)) > 0" : "\(column)::text LIKE '%\(needle)%'"
            if Int(try await postgres.strings("SELECT COUNT(*)::text FROM \(table) WHERE \(expression)").first ?? "0") ?? 0 > 0 { found.insert(table) }
        }
    }
    return found
}

@Suite struct SuppressionHashTests {
    /// The suppression list's keyed hash is HMAC-SHA256 of the address under the key derived for it: the
    /// hashes stored by earlier versions still match. Asked in turns and again, so copies of the keyed
    /// HMAC the ledger reuses can be seen not to share state.
    @Test func suppressionHashIsTheKeyedHMACOfTheAddress() throws {
        let ledger = Ledger(store: MemoryStore(), masterKey: .generate())
        let key = ledger.masterKey.derivedKey(purpose: "suppression/v1")
        let emails = try ["ann@example.com", "bob@example.org", "ann@example.com", "x@y.z", "bob@example.org"].map { try EmailAddress($0) }
        for email in emails {
            let expected = Data(HMAC<SHA256>.authenticationCode(for: Data(email.value.utf8), using: key))
            #expect(ledger.suppressionHash(email) == expected)
        }
        #expect(ledger.suppressionHash(emails[0]) != ledger.suppressionHash(emails[1]))
    }
}
