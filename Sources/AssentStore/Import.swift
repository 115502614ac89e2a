import AssentCore
import Foundation

/// Which column holds what. Columns not named here are matched by header:
/// `email`, `name`, `external_id`, `locale`, `occurred_at`, and a topic's
/// key (or `topic:<key>`) for its Yes/No value.
public struct ImportMapping: Sendable, Equatable {
    /// Header -> field (`email`, `name`, `external_id`, `locale`, `occurred_at`, `topic:<key>`, or `ignore`).
    public var columns: [String: String]

    public init(columns: [String: String] = [:]) {
        self.columns = columns
    }

    static let aliases: [String: String] = [
        "email": "email", "e-mail": "email", "email address": "email", "name": "name", "full name": "name",
        "external_id": "external_id", "externalid": "external_id", "external id": "external_id", "crm id": "external_id",
        "locale": "locale", "language": "locale", "occurred_at": "occurred_at", "occurredat": "occurred_at", "date": "occurred_at",
    ]
}

/// The batch's facts: why these consents may be recorded.
public struct ImportOptions: Sendable {
    /// Where the consents came from and what people were told: required, on every event (sealed evidence note).
    public var evidence: String
    /// Topic -> the notice version people saw; the current one when absent.
    public var noticeVersions: [String: Int]
    /// Write (false: a dry run that reports what would change).
    public var commit: Bool
    /// Who imports: a staff user's email, or `command line`.
    public var importedBy: String
    public var actor: Actor

    public init(evidence: String, noticeVersions: [String: Int] = [:], commit: Bool = false, importedBy: String = "command line",
                actor: Actor = Actor(kind: .staff, id: "command line")) {
        self.evidence = evidence
        self.noticeVersions = noticeVersions
        self.commit = commit
        self.importedBy = importedBy
        self.actor = actor
    }
}

/// A problem with the file, by line and column.
public struct ImportProblem: Sendable, Equatable, CustomStringConvertible {
    public var line: Int
    public var column: String?
    public var message: String

    public var description: String { "line \(line)" + (column.map { ", column \($0)" } ?? "") + ": \(message)" }
}

/// What an import did (or, in a dry run, would do).
public struct ImportReport: Sendable {
    public var batchID: String
    public var committed: Bool
    public var rows = 0
    public var newContacts = 0
    public var grants = 0
    public var withdrawals = 0
    /// Values that would change nothing (already so, or older than what is recorded).
    public var unchanged = 0
    /// Rows of erased (suppressed) addresses: refused.
    public var suppressed: [(line: Int, email: String)] = []
    public var problems: [ImportProblem] = []
    /// Up to this many problems are collected before giving up.
    public static let problemLimit = 100
}

extension Ledger {
    /// Imports a CSV of contacts and their Yes/No per topic. Every row is
    /// checked first; a file with any problem changes nothing. Then, when
    /// `options.commit`, each row goes through the one write path (source
    /// `import`, the batch id, the evidence statement as the note). A re-run
    /// of the same file changes nothing. `progress` gets (writing?, rows, bytes read) as each pass goes.
    public func importContacts(_ open: () throws -> CSVReader, mapping: ImportMapping = ImportMapping(), options: ImportOptions,
                               progress: (Bool, Int, Int) -> Void = { _, _, _ in }) async throws -> ImportReport {
        let evidence = options.evidence.trimmingCharacters(in: .whitespacesAndNewlines)
        var report = ImportReport(batchID: "import-" + environment.newID().uuidString.lowercased().prefix(13).replacingOccurrences(of: "-", with: ""),
                                  committed: false)
        if evidence.isEmpty {
            throw DomainError.invalid(field: "evidence", "is required: where these consents came from and the notice people saw (e.g. \"CRM export 2026-11-01; web form notice v3\")")
        }
        try TextCheck.check(evidence, field: "evidence", max: Limits.noteLength, allowNewlines: true)
        let topics = Dictionary(uniqueKeysWithValues: try await store.topics(includeRetired: true).map { ($0.key, $0) })
        for (key, version) in options.noticeVersions {
            guard let topic = topics[key] else { throw DomainError.invalid(field: "notice", "unknown topic '\(key)'") }
            guard (1...topic.currentNoticeVersion).contains(version) else {
                throw DomainError.invalid(field: "notice", "topic '\(key)' has notice versions 1...\(topic.currentNoticeVersion), not \(version)")
            }
        }

        // Pass 1: read every row, check it, and work out what it would change.
        var reader = try open()
        // Through the mapping of reader failures to a 422 (a header that is not UTF-8 was a 500, found by HostileConsoleTests).
        guard let header = try Self.nextRecord(&reader, &report) else { throw DomainError.invalid(field: "file", "is empty: the first line must name the columns") }
        let columns = try Self.importColumns(header.fields, mapping: mapping, topics: topics)
        var seen = Set<Int64>(), seenExternal = Set<Int64>()
        var pending: [ImportRow] = []
        func countChunk() async throws {
            let (rows, snapshots) = try await readChunk(pending, report: &report)
            try await countChanges(rows, snapshots: snapshots, topics: topics, report: &report)
            pending.removeAll(keepingCapacity: true)
        }
        while let record = try Self.nextRecord(&reader, &report) {
            report.rows += 1
            if let row = try await check(record, columns: columns, topics: topics, seen: &seen, seenExternal: &seenExternal, report: &report) {
                pending.append(row)
            }
            if pending.count == Self.importChunk {
                try await countChunk()
                progress(false, report.rows, reader.bytesRead)
            }
            if report.problems.count >= ImportReport.problemLimit { break }
        }
        try await countChunk()
        progress(false, report.rows, reader.bytesRead)
        guard report.problems.isEmpty, options.commit else { return report }

        // Pass 2: the same rows, written.
        reader = try open()
        var written = ImportReport(batchID: report.batchID, committed: true)
        _ = try Self.nextRecord(&reader, &written)
        seen.removeAll(keepingCapacity: true)
        seenExternal.removeAll(keepingCapacity: true)
        try await audit(nil, "import_start", actorEmail: options.importedBy, target: "batch:\(written.batchID)",
                        detail: "\(report.rows) rows checked; evidence: \(evidence)")
        // Chunks in flight together: while one's transactions are written, others are planned (keys,
        // seals, hashes), so both cores work. Chunks are independent: the checking pass refused any file
        // that names an address or external id twice. `settle` waits for the oldest and adds up its report.
        var chunk: [ImportRow] = []
        var inFlight: [Task<ImportReport, any Error>] = []
        func settle() async throws {
            guard !inFlight.isEmpty else { return }
            let part = try await inFlight.removeFirst().value
            written.newContacts += part.newContacts
            written.grants += part.grants
            written.withdrawals += part.withdrawals
            written.unchanged += part.unchanged
            written.suppressed += part.suppressed
            written.problems += part.problems
        }
        func start(_ rows: [ImportRow]) async throws {
            let batchID = written.batchID
            inFlight.append(Task { [self] in
                var part = ImportReport(batchID: batchID, committed: true)
                try await apply(rows, options: options, evidence: evidence, report: &part)
                return part
            })
            if inFlight.count >= Self.chunksInFlight { try await settle() }
        }
        do {
            while let record = try Self.nextRecord(&reader, &written) {
                written.rows += 1
                guard let row = try await check(record, columns: columns, topics: topics, seen: &seen, seenExternal: &seenExternal, report: &written) else { continue }
                chunk.append(row)
                if chunk.count == Self.importChunk {
                    try await start(chunk)
                    chunk.removeAll(keepingCapacity: true)
                    progress(true, written.rows, reader.bytesRead)
                }
            }
            try await start(chunk)
            while !inFlight.isEmpty { try await settle() }
        } catch {
            for task in inFlight { _ = try? await task.value } // nothing is still writing once the import has returned
            throw error
        }
        progress(true, written.rows, reader.bytesRead)
        // A large load leaves the planner's picture of the tables behind (PostgreSQL analyses a table
        // only after a while): an audience read straight after an import of 100,000 contacts, planned
        // for tables it took for nearly empty, sorted every remaining row for each page.
        if written.newContacts + written.grants + written.withdrawals >= Self.statisticsAfter { try await store.refreshStatistics() }
        try await audit(nil, "import", actorEmail: options.importedBy, target: "batch:\(written.batchID)",
                        detail: "\(written.rows) rows: \(written.newContacts) new contacts, \(written.grants) grants, \(written.withdrawals) withdrawals, "
                            + "\(written.unchanged) unchanged, \(written.suppressed.count) suppressed; evidence: \(evidence)")
        return written
    }

    /// Changes an import makes before the store's statistics are refreshed.
    static let statisticsAfter = 1_000

    private static func nextRecord(_ reader: inout CSVReader, _ report: inout ImportReport) throws -> CSVReader.Record? {
        do { return try reader.nextRecord() } catch let failure as CSVReader.Failure {
            throw DomainError.invalid(field: "file", failure.description)
        }
    }

    enum ImportColumn: Equatable {
        case email, name, externalID, locale, occurredAt, topic(String), ignore
    }

    static func importColumns(_ headers: [String], mapping: ImportMapping, topics: [String: Topic]) throws -> [ImportColumn] {
        var problems: [ValidationError] = []
        var columns: [ImportColumn] = []
        for (i, raw) in headers.enumerated() {
            let header = raw.trimmingCharacters(in: .whitespaces)
            let target = mapping.columns[header] ?? ImportMapping.aliases[header.lowercased()]
                ?? (topics[header.lowercased()] != nil ? "topic:\(header.lowercased())" : header.lowercased().hasPrefix("topic:") ? header.lowercased() : nil)
            switch target {
            case "email": columns.append(.email)
            case "name": columns.append(.name)
            case "external_id": columns.append(.externalID)
            case "locale": columns.append(.locale)
            case "occurred_at": columns.append(.occurredAt)
            case "ignore": columns.append(.ignore)
            case let t? where t.hasPrefix("topic:"):
                let key = String(t.dropFirst("topic:".count))
                if let topic = topics[key], topic.isActive { columns.append(.topic(key)) } else {
                    problems.append(.init(field: "column \(i + 1)", "'\(header.prefix(64))': topic '\(key.prefix(64))' is \(topics[key] == nil ? "unknown" : "retired")"))
                    columns.append(.ignore)
                }
            default:
                problems.append(.init(field: "column \(i + 1)", "'\(header.prefix(64))' is neither a contact field nor a topic; map it (e.g. --map '\(header.prefix(32))=topic:events') or ignore it (--map '\(header.prefix(32))=ignore')"))
                columns.append(.ignore)
            }
        }
        if columns.filter({ $0 == .email }).count != 1 { problems.append(.init(field: "header", "needs exactly one email column")) }
        if !columns.contains(where: { if case .topic = $0 { true } else { false } }) { problems.append(.init(field: "header", "names no topic column")) }
        for (i, c) in columns.enumerated() where c != .ignore && columns[..<i].contains(c) {
            problems.append(.init(field: "column \(i + 1)", "'\(headers[i].prefix(64))' repeats an earlier column's field"))
        }
        if !problems.isEmpty { throw DomainError.invalid(problems) }
        return columns
    }

    struct ImportRow {
        var line: Int
        var email: EmailAddress
        var name: String?
        var externalID: String?
        var locale: String?
        var occurredAt: Date?
        /// Topic -> yes (true) or no (false); topics left empty are absent.
        var values: [(topic: String, yes: Bool)]
    }

    /// One parser for every row's full timestamps (making one per row cost more than the rest of the row's checks).
    nonisolated(unsafe) static let dateFormatter = ISO8601DateFormatter()

    static let yes: Set<String> = ["yes", "y", "true", "1", "granted", "opt-in", "opted in", "x"]
    static let no: Set<String> = ["no", "n", "false", "0", "withdrawn", "opt-out", "opted out"]

    /// One row checked; nil (with the problems noted) when it has any.
    private func check(_ record: CSVReader.Record, columns: [ImportColumn], topics: [String: Topic], seen: inout Set<Int64>,
                       seenExternal: inout Set<Int64>, report: inout ImportReport) async throws -> ImportRow? {
        let before = report.problems.count
        func problem(_ column: Int?, _ message: String) {
            report.problems.append(ImportProblem(line: record.line, column: column.map { "\($0 + 1)" }, message: message))
        }
        if record.fields.count != columns.count {
            problem(nil, "has \(record.fields.count) fields but the header has \(columns.count)")
            return nil
        }
        var email: EmailAddress?
        var row = ImportDraft()
        for (i, column) in columns.enumerated() {
            let value = record.fields[i].trimmingWhitespace
            switch column {
            case .email:
                do { email = try EmailAddress(value, field: "email") } catch { problem(i, "'\(value.prefix(80))' is not an email address") }
            case .name: row.name = value.isEmpty ? nil : value
            case .externalID: row.externalID = value.isEmpty ? nil : value
            case .locale: row.locale = value.isEmpty ? nil : value
            case .occurredAt:
                guard !value.isEmpty else { continue }
                guard let date = UTCTime.parseDay(value) ?? Self.dateFormatter.date(from: value) else {
                    problem(i, "'\(value.prefix(40))' is not a date such as 2026-11-01 or 2026-11-01T10:00:00Z")
                    continue
                }
                if date.timeIntervalSince(now) > allowedClockSkew { problem(i, "\(value) is in the future") }
                if date.timeIntervalSince1970 < 946_684_800 { problem(i, "\(value) is before 2000-01-01") }
                row.occurredAt = date
            case .topic(let key):
                let lower = value.lowercased()
                if lower.isEmpty { continue }
                if Self.yes.contains(lower) { row.values.append((key, true)) } else if Self.no.contains(lower) { row.values.append((key, false)) } else {
                    problem(i, "'\(value.prefix(40))' for \(key) is neither yes nor no (yes/no, true/false, 1/0, or empty for no change)")
                }
            case .ignore: continue
            }
        }
        if let email {
            if !seen.insert(Self.fingerprint(email.value)).inserted { problem(nil, "\(email.value) appears more than once in the file") }
            // The contact's fields as adding the contact would check them, so that the import cannot fail half way.
            do {
                // Any id does for checking the fields (a random one per row cost two getrandom calls).
                try Contact(id: Self.checkingID, email: email, name: row.name, externalID: row.externalID, locale: row.locale, createdAt: now).validate()
            } catch DomainError.invalid(let errors) {
                for e in errors {
                    let column = e.field == "name" ? ImportColumn.name : e.field == "locale" ? .locale : .externalID
                    problem(columns.firstIndex(of: column), e.message)
                }
            }
            if let id = row.externalID {
                if !seenExternal.insert(Self.fingerprint(id)).inserted {
                    problem(columns.firstIndex(of: .externalID), "external id '\(id.prefix(64))' appears more than once in the file")
                }
            }
        }
        guard report.problems.count == before, let email else { return nil }
        return ImportRow(line: record.line, email: email, name: row.name, externalID: row.externalID, locale: row.locale,
                         occurredAt: row.occurredAt, values: row.values)
    }

    /// 64 bits that stand for a value in the sets that spot a repeat in the file: Swift's hash, keyed
    /// afresh in each process (SHA-256 had been about a tenth of the checking pass, and its first 64
    /// bits could be made to collide offline; these cannot be predicted). A chance collision (about
    /// one in 37 million for a file of a million rows) would name a row as a repeat: the file is
    /// refused and nothing changes.
    static func fingerprint(_ value: String) -> Int64 {
        var hasher = Hasher()
        hasher.combine(value)
        return Int64(hasher.finalize())
    }

    /// The id of the contacts made only to check a row's fields.
    static let checkingID = UUID(uuid: (0, 0, 0, 0, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 0))

    /// A row's fields while they are read.
    struct ImportDraft {
        var name: String?
        var externalID: String?
        var locale: String?
        var occurredAt: Date?
        var values: [(topic: String, yes: Bool)] = []
    }

    /// Rows written together: their new contacts in one transaction, their changes in another.
    static let importChunk = 500
    /// Chunks planned and written at once (see pass 2). Each chunk's reads and planning wait on one
    /// another, so with 3 the one writer sometimes waited for the next chunk. 1,000,000 contacts,
    /// alternating pairs: 3 in flight 60.3 / 63.3 s against 5 in flight 54.2 / 56.1 s; then 8 in
    /// flight 56.5 / 57.2 s against 5 in flight 57.8 / 57.4 s (a slower phase), within the noise,
    /// with 9 MB more peak memory for 8. So 5.
    static let chunksInFlight = 5

    /// Reads what a chunk of rows needs (its contacts with their states and keys, in one go)
    /// and drops rows whose external id belongs to someone else, naming them.
    private func readChunk(_ rows: [ImportRow], report: inout ImportReport) async throws -> (rows: [ImportRow], snapshots: [EmailAddress: ContactSnapshot]) {
        guard !rows.isEmpty else { return ([], [:]) }
        let snapshots = Dictionary(try await store.contactSnapshots(emails: rows.map(\.email)).map { ($0.contact.email, $0) }, uniquingKeysWith: { a, _ in a })
        let owners = Dictionary(try await store.contacts(externalIDs: rows.compactMap(\.externalID)).compactMap { c in c.externalID.map { ($0, c) } },
                                uniquingKeysWith: { a, _ in a })
        var kept: [ImportRow] = []
        for row in rows {
            if let id = row.externalID, let other = owners[id], other.email != row.email {
                report.problems.append(ImportProblem(line: row.line, column: nil, message: "external id '\(id.prefix(64))' already belongs to \(other.email.value)"))
            } else {
                kept.append(row)
            }
        }
        return (kept, snapshots)
    }

    /// Which of these addresses (of no contact) are suppressed.
    private func suppressed(_ rows: [ImportRow]) async throws -> Set<EmailAddress> {
        guard !rows.isEmpty else { return [] }
        let hashed = rows.map { ($0.email, suppressionHash($0.email)) }
        let hashes = try await store.suppressedHashes(hashed.map(\.1))
        return Set(hashed.filter { hashes.contains($0.1) }.map(\.0))
    }

    /// A dry run's count of what a chunk would change, from the stored state.
    private func countChanges(_ rows: [ImportRow], snapshots: [EmailAddress: ContactSnapshot], topics: [String: Topic], report: inout ImportReport) async throws {
        let at = now
        /// A yes whose consent would already have lapsed grants nothing (as the ledger decides).
        func lapsed(_ row: ImportRow, _ topic: String) -> Bool {
            guard let days = topics[topic]?.consentLifetimeDays else { return false }
            return (row.occurredAt ?? at).addingTimeInterval(TimeInterval(days) * 86_400) <= at
        }
        let blocked = try await suppressed(rows.filter { snapshots[$0.email] == nil })
        for row in rows {
            guard let snapshot = snapshots[row.email] else {
                if blocked.contains(row.email) {
                    report.suppressed.append((row.line, row.email.value))
                    continue
                }
                let yes = row.values.filter { $0.yes && !lapsed(row, $0.topic) }.count
                if row.values.contains(where: \.yes) { report.newContacts += 1 }
                report.grants += yes
                report.unchanged += row.values.count - yes
                continue
            }
            if let objected = snapshot.contact.objectedAt, row.values.contains(where: \.yes) {
                report.problems.append(ImportProblem(line: row.line, column: nil, message: "\(row.email.value) objected to all direct marketing on \(objected.isoDay); "
                                                     + "only their own opt-in can change that, not an import"))
                continue
            }
            for value in row.values {
                if value.yes && lapsed(row, value.topic) {
                    report.unchanged += 1
                    continue
                }
                let stored = snapshot.state.preferences[value.topic]
                let current = stored?.effectiveState(at: at) ?? .none
                if let since = stored?.since, let occurred = row.occurredAt, occurred < since {
                    report.unchanged += 1
                    continue
                }
                switch (value.yes, current) {
                case (true, .granted), (false, .none), (false, .withdrawn), (false, .expired): report.unchanged += 1
                case (true, _): report.grants += 1
                case (false, _): report.withdrawals += 1
                }
            }
        }
    }

    private func apply(_ chunk: [ImportRow], options: ImportOptions, evidence: String, report: inout ImportReport) async throws {
        let (rows, found) = try await readChunk(chunk, report: &report)
        guard !rows.isEmpty else { return }
        let blocked = try await suppressed(rows.filter { found[$0.email] == nil })
        var contacts: [Contact?] = []
        var toCreate: [(index: Int, row: ImportRow)] = []
        for (i, row) in rows.enumerated() {
            let existing = found[row.email]?.contact
            contacts.append(existing)
            guard existing == nil else { continue }
            if blocked.contains(row.email) {
                report.suppressed.append((row.line, row.email.value))
            } else if row.values.contains(where: \.yes) {
                toCreate.append((i, row))
            } else {
                report.unchanged += row.values.count // nobody to record a No for: a new contact reads No already
            }
        }
        let created = try await createContacts(toCreate.map { ($0.row.email, $0.row.name, $0.row.externalID, $0.row.locale) })
        var snapshots: [UUID: ContactSnapshot] = [:]
        for snapshot in found.values { snapshots[snapshot.contact.id] = snapshot }
        for (n, item) in toCreate.enumerated() {
            switch created[n] {
            case .success(let snapshot):
                contacts[item.index] = snapshot.contact
                snapshots[snapshot.contact.id] = snapshot
                report.newContacts += 1
            case .failure(let error):
                report.problems.append(ImportProblem(line: item.row.line, column: nil, message: "could not add the contact: \(error)"))
            }
        }
        var requests: [ChangeRequest] = []
        var lines: [Int] = []
        for (i, row) in rows.enumerated() {
            guard let contact = contacts[i], !row.values.isEmpty else { continue }
            requests.append(ChangeRequest(
                contactID: contact.id, changes: row.values.map { TopicChange(topicKey: $0.topic, intent: $0.yes ? .optIn : .optOut,
                                                                          noticeVersion: options.noticeVersions[$0.topic]) },
                source: .import, actor: options.actor, occurredAt: row.occurredAt,
                evidence: Evidence(personal: PersonalEvidence(note: evidence)), batchID: report.batchID, changesField: "line \(row.line)"))
            lines.append(row.line)
        }
        for (n, result) in try await recordChanges(requests, snapshots: snapshots).enumerated() {
            switch result {
            case .success(let change):
                report.grants += change.events.filter { $0.action == .granted }.count
                report.withdrawals += change.events.filter { $0.action == .withdrawn }.count
                report.unchanged += change.unchanged.count
            case .failure(DomainError.gone):
                report.unchanged += requests[n].changes.count // erased meanwhile
            case .failure(DomainError.invalid(let errors)):
                // An objection: only the person's own opt-in counts. Reported, not fatal.
                report.problems.append(ImportProblem(line: lines[n], column: nil, message: errors.map(\.message).joined(separator: "; ")))
            case .failure(let error):
                throw error
            }
        }
    }
}
