import AssentCore
import AssentTestSupport
import Foundation

/// What PostgreSQL itself does with an import's rows and an export's or a verification's reads,
/// through psql (a separate process, as pgbench is for Q), timed by psql's `\timing`: the
/// database's own best case, before anything Assent or postgres-nio does.
extension Ceilings {
    /// (I on PostgreSQL) The import's own rows (per contact: the contact, its wrapped key and link
    /// secret, 3 events, 3 preferences, a chain head), with nothing computed, loaded by COPY into a
    /// database Assent has migrated (holding the topics news, events and offers), every table in one
    /// transaction and one commit: PostgreSQL's bulk path, with the schema's indexes, foreign keys
    /// and checks, at the server's durability. No import can write these rows faster. Events/s.
    static func postgresImport(url: String, contacts: Int, directory: URL, logs: URL) async throws -> Double {
        let files = try writeImportRows(contacts: contacts, directory: directory)
        defer { files.forEach { try? FileManager.default.removeItem(at: $0.file) } }
        let copies = files.map { "\\copy \($0.table) FROM '\($0.file.path)'" }
        let text = try await psql(url: url, commands: ["BEGIN"] + copies + ["COMMIT"], logs: logs, name: "ceiling-import")
        return Double(contacts * 3) / (try timedSeconds(text, commands: copies.count + 2))
    }

    /// A raw read of `sql`'s rows by COPY in binary to /dev/null: rows per second, as PostgreSQL
    /// produces and sends them with nothing decoded.
    static func postgresRawRead(url: String, sql: String, logs: URL, name: String) async throws -> Double {
        let query = sql.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
        let text = try await psql(url: url, commands: ["\\copy (\(query)) TO '/dev/null' WITH (FORMAT binary)"], logs: logs, name: name)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("COPY ") }), let rows = Double(line.dropFirst(5)) else {
            throw BenchError("\(name): psql did not say how many rows it copied:\n\(text.suffix(2_000))")
        }
        return rows / (try timedSeconds(text, commands: 1))
    }

    /// The rows `assent verify` reads, in its order (a contact's events by sequence).
    static let postgresScanQuery = """
        SELECT contact_id, seq, id, topic_key, action, from_state, to_state, source, channel, actor_kind, actor_id, occurred_at,
            recorded_at, expires_at, notice_version, form_id, form_version, batch_id, sealed_evidence, prev_hash, hash
        FROM consent_events ORDER BY contact_id, seq
        """

    /// The rows of one topic's audience as the server's pages read them (`PostgresStore.audienceQuery`
    /// with the columns an export writes), in one statement.
    static func postgresAudienceQuery(topic: String) -> String {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        return """
            SELECT c.id, c.email, c.name, c.external_id, c.locale, p.topic_key, p.since, s.secret
            FROM preferences p JOIN contacts c ON c.id = p.contact_id
            LEFT JOIN contact_link_secrets s ON s.contact_id = p.contact_id
            WHERE p.topic_key = '\(topic)' AND p.state = 'granted' AND (p.expires_at IS NULL OR p.expires_at > \(now))
              AND c.email IS NOT NULL
            ORDER BY p.contact_id, p.topic_key
            """
    }

    /// Runs `commands` in one psql session with `\timing` on, stopping at the first error; psql's output.
    static func psql(url: String, commands: [String], logs: URL, name: String) async throws -> String {
        guard let psql = postgresTool("psql") else {
            throw BenchError("psql is not installed (Debian: apt-get install postgresql-client; scripts/bench installs it)")
        }
        // LC_ALL=C: psql writes its "Time: 1.234 ms" lines in the locale's language and decimal mark.
        return try await run(psql, ["-X", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", "\\timing on"] + commands.flatMap { ["-c", $0] },
                             environment: ["LC_ALL": "C"], logs: logs, name: name)
    }

    /// The sum of psql's "Time: ... ms" lines, which must be one per command.
    static func timedSeconds(_ text: String, commands: Int) throws -> Double {
        let times = text.split(separator: "\n").filter { $0.hasPrefix("Time: ") }.compactMap { line in
            Double(line.dropFirst("Time: ".count).prefix { $0 != " " })
        }
        guard times.count == commands else { throw BenchError("psql timed \(times.count) commands, not \(commands):\n\(text.suffix(2_000))") }
        return times.reduce(0, +) / 1000
    }

    /// COPY's text files of an import's rows, in the order their foreign keys need, with time-ordered
    /// ids and the stored sizes of keys, secrets, evidence and hashes (as `sqliteImport` writes).
    static func writeImportRows(contacts: Int, directory: URL) throws -> [(table: String, file: URL)] {
        var generator = SplitMix(state: 13)
        func hex(_ count: Int) -> String {
            "\\\\x" + (0..<count).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
        }
        let wrapped = hex(60), linkSecret = hex(32), evidence = hex(sealedEvidenceBytes), hash = hex(32)
        let zero = "\\\\x" + String(repeating: "00", count: 32)
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let batch = "import-\(UUID.random().uuidString.prefix(12).lowercased())"
        let tables = [
            "contacts (id, email, name, external_id, created_at, updated_at)",
            "contact_keys (contact_id, wrapped_key)",
            "contact_link_secrets (contact_id, secret, created_at)",
            """
            consent_events (contact_id, seq, id, topic_key, action, from_state, to_state, source, actor_kind, actor_id, occurred_at, \
            recorded_at, notice_version, batch_id, sealed_evidence, prev_hash, hash)
            """,
            "preferences (contact_id, topic_key, state, since, seq)",
            "chain_heads (contact_id, seq, hash)",
        ]
        let files = tables.indices.map { directory.appendingPathComponent("ceiling-import-\($0).tsv") }
        let handles = try files.map { file in
            _ = FileManager.default.createFile(atPath: file.path, contents: nil)
            return try FileHandle(forWritingTo: file)
        }
        defer { handles.forEach { try? $0.close() } }
        // Written a thousand contacts at a time: a million contacts' rows are gigabytes.
        var text = Array(repeating: "", count: tables.count)
        func flush() throws {
            for (n, handle) in handles.enumerated() where !text[n].isEmpty {
                try handle.write(contentsOf: Data(text[n].utf8))
                text[n] = ""
            }
        }
        for i in 0..<contacts {
            let id = UUID.timeOrdered().lowercasedString
            text[0] += "\(id)\tperson\(i)@bench.example\tAnn \(i)\tcrm-\(i)\t\(now)\t\(now)\n"
            text[1] += "\(id)\t\(wrapped)\n"
            text[2] += "\(id)\t\(linkSecret)\t\(now)\n"
            for (seq, topic) in ["news", "events", "offers"].enumerated() {
                text[3] += "\(id)\t\(seq + 1)\t\(UUID.timeOrdered().lowercasedString)\t\(topic)\tgranted\tnone\tgranted\timport\tstaff\tcommand line\t"
                    + "\(now)\t\(now)\t1\t\(batch)\t\(evidence)\t\(seq == 0 ? zero : hash)\t\(hash)\n"
                text[4] += "\(id)\t\(topic)\tgranted\t\(now)\t\(seq + 1)\n"
            }
            text[5] += "\(id)\t3\t\(hash)\n"
            if i % 1_000 == 999 { try flush() }
        }
        try flush()
        return Array(zip(tables, files))
    }

    /// The newest server version's copy of a PostgreSQL tool (Debian keeps them under
    /// /usr/lib/postgresql), else the one on PATH.
    static func postgresTool(_ name: String) -> String? {
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).compactMap(Int.init).sorted()
        for version in versions.reversed() where FileManager.default.isExecutableFile(atPath: "\(root)/\(version)/bin/\(name)") {
            return "\(root)/\(version)/bin/\(name)"
        }
        return Bench.which(name)
    }
}
