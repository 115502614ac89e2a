import AssentCore
import AssentStore
import AssentTestSupport
import Foundation
import Testing

@Suite struct CSVReaderTests {
    func records(_ text: String) throws -> [CSVReader.Record] {
        var reader = CSVReader(text: text)
        var all: [CSVReader.Record] = []
        while let r = try reader.nextRecord() { all.append(r) }
        return all
    }

    @Test func quotedFieldsCRLFAndABOMAreRead() throws {
        let all = try records("\u{FEFF}email,name\r\n\"a@example.com\",\"Lee, \"\"Ann\"\"\"\r\n\r\nb@example.com,\"two\nlines\"\r\nc@example.com,\n")
        #expect(all.map(\.fields) == [["email", "name"], ["a@example.com", "Lee, \"Ann\""], ["b@example.com", "two\nlines"], ["c@example.com", ""]])
        #expect(all.map(\.line) == [1, 2, 4, 6], "the line each record starts on, counting the empty line and the line break inside quotes")
        #expect(try records("a,b\nc,d").map(\.fields) == [["a", "b"], ["c", "d"]], "no newline at the end")
        #expect(try records("\u{FEFF}\"email\",name\n").map(\.fields) == [["email", "name"]], "a byte-order mark before a quoted header")
    }

    @Test func malformedInputIsNamedByLine() {
        #expect(throws: CSVReader.Failure.unterminatedQuote(line: 2)) { _ = try records("a,b\n\"open,x\n") }
        #expect(throws: CSVReader.Failure.stray(line: 1)) { _ = try records("a\"b,c\n") }
        #expect(throws: CSVReader.Failure.stray(line: 1)) { _ = try records("\"a\"b,c\n") }
    }

    @Test func chunkBoundariesDoNotMatter() throws {
        let text = "\u{FEFF}email,events\r\n\"x@example.com\",\"yes\"\r\nz@example.com,no\r\n"
        let bytes = Array(text.utf8)
        var offset = 0
        var reader = CSVReader {
            guard offset < bytes.count else { return nil }
            defer { offset += 1 }
            return Data([bytes[offset]]) // one byte at a time
        }
        var all: [[String]] = []
        while let r = try reader.nextRecord() { all.append(r.fields) }
        #expect(all == [["email", "events"], ["x@example.com", "yes"], ["z@example.com", "no"]])
    }
}

@Suite struct ImportTests {
    static let evidence = "CRM export of 2026-11-01; sign-up form notice v1"

    func run(_ ledger: Ledger, _ text: String, commit: Bool, mapping: ImportMapping = ImportMapping()) async throws -> ImportReport {
        try await ledger.importContacts({ CSVReader(text: text) }, mapping: mapping, options: ImportOptions(evidence: Self.evidence, commit: commit))
    }

    @Test(arguments: StoreKind.available)
    func aDryRunShowsWhatWouldChangeACommitWritesItAndARerunChangesNothing(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        let bo = try await ledger.createContact(email: EmailAddress("bo@example.com"), name: "Bo", externalID: nil, locale: nil)
        _ = try await optIn(ledger, bo, ["news"])
        let gone = try await ledger.createContact(email: EmailAddress("gone@example.com"), name: nil, externalID: nil, locale: nil)
        _ = try await ledger.eraseContact(gone.id, reason: "asked", erasedBy: "test")
        let csv = """
            \u{FEFF}Email,Name,external_id,events,news,hr-training,occurred_at\r
            jo@example.com,"Bloggs, Jo",crm-1,yes,,no,2026-01-15\r
            bo@example.com,Bo,,Y,no,,\r
            gone@example.com,,,yes,,,\r
            new@example.com,,,no,,,\r

            """
        let dry = try await run(ledger, csv, commit: false)
        #expect(dry.problems.isEmpty && !dry.committed && dry.rows == 4, "\(dry.problems)")
        #expect(dry.newContacts == 1 && dry.grants == 2 && dry.withdrawals == 1 && dry.unchanged == 2, "jo: events; bo: events, news withdrawn; new: a No is already so")
        #expect(dry.suppressed.map(\.line) == [4] && dry.suppressed.map(\.email) == ["gone@example.com"])
        #expect(try await ledger.store.contact(email: EmailAddress("jo@example.com")) == nil, "a dry run writes nothing")

        let done = try await run(ledger, csv, commit: true)
        #expect(done.committed && done.problems.isEmpty && done.newContacts == 1 && done.grants == 2 && done.withdrawals == 1, "\(done)")
        #expect(done.suppressed.map(\.email) == ["gone@example.com"], "erased addresses are refused and listed")
        let jo = try #require(try await ledger.store.contact(email: EmailAddress("jo@example.com")))
        #expect(jo.name == "Bloggs, Jo" && jo.externalID == "crm-1")
        let events = try await ledger.store.events(contactID: jo.id, beforeSeq: nil, limit: 10)
        #expect(events.count == 1 && events[0].source == .import && events[0].batchID == done.batchID && events[0].topicKey == "events")
        #expect(events[0].occurredAt == ISO8601DateFormatter().date(from: "2026-01-15T00:00:00Z"), "the row's occurred_at")
        #expect(try await ledger.timeline(contactID: jo.id, beforeSeq: nil, limit: 1).first?.personal?.note == Self.evidence)
        #expect(try await ledger.store.contact(email: EmailAddress("new@example.com")) == nil, "nobody to record a No for")
        #expect(try await ledger.check(email: EmailAddress("bo@example.com"), topicKey: "news").reason == .withdrawn)

        let again = try await run(ledger, csv, commit: true)
        #expect(again.newContacts == 0 && again.grants == 0 && again.withdrawals == 0 && again.problems.isEmpty, "a re-run changes nothing")
        #expect(try await ledger.store.events(contactID: jo.id, beforeSeq: nil, limit: 10).count == 1)
        #expect(try await ledger.verify().isIntact)
        #expect(try await ledger.store.auditEntries(AuditQuery(action: "import")).count == 2)
    }

    /// Pass 2 writes several 500-row chunks at once: the committed report adds up to the dry run's,
    /// row for row, and every contact's state is the file's.
    @Test(arguments: StoreKind.available)
    func chunksWrittenTogetherAddUpToTheDryRun(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        for i in stride(from: 0, to: 2_300, by: 97) { // existing contacts, some already granted
            let c = try await ledger.createContact(email: EmailAddress("p\(i)@example.com"), name: nil, externalID: nil, locale: nil)
            if i % 2 == 0 { _ = try await optIn(ledger, c, ["events"]) }
        }
        let gone = try await ledger.createContact(email: EmailAddress("p1234@example.com"), name: nil, externalID: nil, locale: nil)
        _ = try await ledger.eraseContact(gone.id, reason: "asked", erasedBy: "test")
        let csv = "email,events,news\n" + (0..<2_300).map { i in "p\(i)@example.com,\(i % 3 == 0 ? "no" : "yes"),\(i % 5 == 0 ? "" : "yes")\n" }.joined()
        let dry = try await run(ledger, csv, commit: false)
        let done = try await run(ledger, csv, commit: true)
        #expect(done.committed && done.problems.isEmpty && done.rows == 2_300, "\(done.problems)")
        #expect((done.newContacts, done.grants, done.withdrawals, done.unchanged) == (dry.newContacts, dry.grants, dry.withdrawals, dry.unchanged),
                "dry \(dry.newContacts)/\(dry.grants)/\(dry.withdrawals)/\(dry.unchanged), done \(done.newContacts)/\(done.grants)/\(done.withdrawals)/\(done.unchanged)")
        #expect(done.suppressed.map(\.line) == [1_236] && dry.grants > 3_000)
        for i in [0, 1, 499, 500, 501, 1_001, 1_999, 2_299] {
            let news = try await ledger.check(email: EmailAddress("p\(i)@example.com"), topicKey: "news")
            let events = try await ledger.check(email: EmailAddress("p\(i)@example.com"), topicKey: "events")
            #expect(news.allowed == (i % 5 != 0) && events.allowed == (i % 3 != 0), "row of p\(i)")
        }
        let again = try await run(ledger, csv, commit: true)
        #expect(again.newContacts == 0 && again.grants == 0 && again.withdrawals == 0, "a re-run changes nothing")
        #expect(try await ledger.verify().isIntact)
    }

    @Test(arguments: [StoreKind.memory, .sqlite])
    func aBadFileChangesNothingAndEveryProblemNamesItsLineAndColumn(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        let bad = """
            email,events,news
            ok@example.com,yes,no
            not-an-email,yes,
            dup@example.com,maybe,
            dup@example.com,yes,
            short@example.com,yes

            """
        let report = try await run(ledger, bad, commit: true)
        #expect(!report.committed)
        #expect(report.problems.map(\.description) == [
            "line 3, column 1: 'not-an-email' is not an email address",
            "line 4, column 2: 'maybe' for events is neither yes nor no (yes/no, true/false, 1/0, or empty for no change)",
            "line 5: dup@example.com appears more than once in the file",
            "line 6: has 2 fields but the header has 3",
        ])
        #expect(try await ledger.store.contact(email: EmailAddress("ok@example.com")) == nil, "a bad file changes nothing, not even its good rows")

        await #expect(throws: DomainError.self) { _ = try await run(ledger, "email,evnts\nok@example.com,yes\n", commit: false) }
        do {
            _ = try await run(ledger, "email,evnts,Newsletter\nok@example.com,yes,no\n", commit: false)
        } catch DomainError.invalid(let errors) {
            #expect(errors.map(\.field) == ["column 2", "column 3", "header"], "unknown columns are named; and no topic is left")
        }
        let fields = try await run(ledger, "email,external_id,locale,events\na@example.com,crm-1,en,yes\nb@example.com,crm-1,xx_YY!,yes\n", commit: true)
        #expect(fields.problems.map(\.description) == ["line 3, column 3: 'xx_YY!' is not a language tag such as en or en-GB",
                                                        "line 3, column 2: external id 'crm-1' appears more than once in the file"], "\(fields.problems)")
        #expect(try await ledger.store.contact(email: EmailAddress("a@example.com")) == nil, "found before anything was written")
        let mapped = try await run(ledger, "E-Mail,Newsletter,Notes\nok@example.com,yes,called twice\n", commit: true,
                                   mapping: ImportMapping(columns: ["Newsletter": "topic:news", "Notes": "ignore"]))
        #expect(mapped.problems.isEmpty && mapped.grants == 1, "a column mapping names what the headers do not")
        await #expect(throws: DomainError.invalid(field: "evidence", "is required: where these consents came from and the notice people saw (e.g. \"CRM export 2026-11-01; web form notice v3\")")) {
            _ = try await ledger.importContacts({ CSVReader(text: "email,events\n") }, options: ImportOptions(evidence: "  "))
        }
    }

    @Test(arguments: StoreKind.available)
    func anObjectionBlocksTheFileAndALapsedYesGrantsNothingEvenOnARerun(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        _ = try await ledger.createTopic(Topic(key: "offers", title: "Offers", consentLifetimeDays: 30, createdAt: Date()), noticeText: "Offers.")
        let jo = try await ledger.createContact(email: EmailAddress("jo@example.com"), name: nil, externalID: nil, locale: nil)
        _ = try await ledger.objectToMarketing(jo.id, source: .staff, channel: .letter, actor: .staff("s"), evidence: Evidence(personal: PersonalEvidence(note: "letter")))
        let blocked = try await run(ledger, "email,offers\njo@example.com,yes\nbo@example.com,yes\n", commit: true)
        #expect(!blocked.committed && blocked.problems.first?.description.hasPrefix("line 2: jo@example.com objected to all direct marketing") == true, "\(blocked.problems)")
        #expect(try await ledger.store.contact(email: EmailAddress("bo@example.com")) == nil, "and so nothing was written")
        let old = "email,offers,occurred_at\nbo@example.com,yes,2020-03-01\n"
        let first = try await run(ledger, old, commit: true)
        #expect(first.grants == 0 && first.unchanged == 1 && first.problems.isEmpty, "a 30-day consent given in 2020 lapsed long ago")
        let again = try await run(ledger, old, commit: true)
        #expect(again.grants == 0 && again.problems.isEmpty)
        let bo = try #require(try await ledger.store.contact(email: EmailAddress("bo@example.com")))
        #expect(try await ledger.store.events(contactID: bo.id, beforeSeq: nil, limit: 10).isEmpty, "nothing recorded, however often it is imported")
    }
}
