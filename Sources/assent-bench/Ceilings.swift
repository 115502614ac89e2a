import AssentCore
import AssentTestSupport
import Crypto
import Foundation
import GRDBSQLite
import Logging
import NIOSSL
import PostgresNIO

/// What this machine can do at best, measured in the same run as the scenarios,
/// so that every figure is also a ratio that holds on a noisy machine.
enum Ceilings {
    /// (S) SHA-256 over inputs the size of a stored event's canonical bytes, per second (one core).
    static func sha256(eventBytes: Int, seconds: Double) -> Double {
        var generator = SplitMix(state: 7)
        let inputs = (0..<64).map { _ in Data((0..<eventBytes).map { _ in UInt8.random(in: 0...255, using: &generator) }) }
        var count = 0
        var sink: UInt8 = 0
        let started = Date()
        repeat {
            for input in inputs {
                sink ^= SHA256.hash(data: input).withUnsafeBytes { $0[0] }
            }
            count += inputs.count
        } while Date().timeIntervalSince(started) < seconds
        if sink == 0xFF && count < 0 { print(sink) } // keep the work observable
        return Double(count) / Date().timeIntervalSince(started)
    }

    /// The canonical size of an event like an import's (a sealed evidence note included).
    static func eventSize() -> Int {
        let event = ConsentEvent(id: UUID.random(), contactID: UUID.random(), seq: 1, topicKey: "news", action: .granted, fromState: .none, toState: .granted,
                                 source: .import, channel: nil, actor: Actor(kind: .staff, id: "command line"), occurredAt: Date(), recordedAt: Date(),
                                 expiresAt: nil, noticeVersion: 1, formID: nil, formVersion: nil, batchID: "import-0123456789ab",
                                 sealedEvidence: Data(count: sealedEvidenceBytes), prevHash: Data(count: 32))
        return event.canonicalBytes.count
    }

    /// (R) Raw SQLite point selects by a unique text key with one prepared statement, and
    /// (W) raw single-row insert-and-commit, in WAL mode with `synchronous` as Assent uses it.
    static func sqlite(directory: URL, rows: Int, seconds: Double, synchronous: String) throws -> (reads: Double, writes: Double) {
        let path = directory.appendingPathComponent("ceiling.sqlite").path
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        var db: OpaquePointer?
        guard sqlite3_open(path, &db) == SQLITE_OK, let db else { throw BenchError("cannot open \(path)") }
        defer { sqlite3_close(db) }
        func exec(_ sql: String) throws {
            guard sqlite3_exec(db, sql, nil, nil, nil) == SQLITE_OK else { throw BenchError("\(sql): \(String(cString: sqlite3_errmsg(db)))") }
        }
        try exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = \(synchronous);")
        try exec("CREATE TABLE r (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, state TEXT NOT NULL)")
        try exec("CREATE TABLE w (id INTEGER PRIMARY KEY, contact TEXT NOT NULL, body BLOB NOT NULL)")
        let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
        var insert: OpaquePointer?
        try exec("BEGIN")
        sqlite3_prepare_v2(db, "INSERT INTO r (email, state) VALUES (?, 'granted')", -1, &insert, nil)
        for i in 0..<rows {
            sqlite3_bind_text(insert, 1, "person\(i)@bench.example", -1, transient)
            guard sqlite3_step(insert) == SQLITE_DONE else { throw BenchError("insert: \(String(cString: sqlite3_errmsg(db)))") }
            sqlite3_reset(insert)
        }
        sqlite3_finalize(insert)
        try exec("COMMIT")

        var select: OpaquePointer?
        sqlite3_prepare_v2(db, "SELECT state FROM r WHERE email = ?", -1, &select, nil)
        var generator = SplitMix(state: 11)
        var reads = 0
        var started = Date()
        repeat {
            for _ in 0..<1_000 {
                sqlite3_bind_text(select, 1, "person\(Int.random(in: 0..<rows, using: &generator))@bench.example", -1, transient)
                guard sqlite3_step(select) == SQLITE_ROW else { throw BenchError("select found nothing") }
                sqlite3_reset(select)
            }
            reads += 1_000
        } while Date().timeIntervalSince(started) < seconds
        let readRate = Double(reads) / Date().timeIntervalSince(started)
        sqlite3_finalize(select)

        var write: OpaquePointer?
        sqlite3_prepare_v2(db, "INSERT INTO w (contact, body) VALUES (?, ?)", -1, &write, nil)
        let body = [UInt8](repeating: 7, count: 300)
        var writes = 0
        started = Date()
        repeat {
            sqlite3_bind_text(write, 1, UUID.random().uuidString, -1, transient)
            _ = body.withUnsafeBytes { sqlite3_bind_blob(write, 2, $0.baseAddress, Int32($0.count), transient) }
            guard sqlite3_step(write) == SQLITE_DONE else { throw BenchError("write: \(String(cString: sqlite3_errmsg(db)))") }
            sqlite3_reset(write)
            writes += 1
        } while Date().timeIntervalSince(started) < seconds
        let writeRate = Double(writes) / Date().timeIntervalSince(started)
        sqlite3_finalize(write)
        return (readRate, writeRate)
    }

    /// (I) The import's own rows written through SQLite's C API into Assent's schema, with nothing
    /// computed: per 500 contacts one transaction of contacts, wrapped keys and link secrets, then one
    /// of 3 events, 3 preference upserts and a chain-head upsert per contact (with the two guard reads
    /// a commit makes), as `assent import` does; WAL, `synchronous` as Assent uses it, time-ordered ids.
    /// `path` is a database Assent has migrated, holding the topics news, events and offers. Events/s.
    static func sqliteImport(path: String, contacts: Int, synchronous: String) throws -> Double {
        var db: OpaquePointer?
        guard sqlite3_open(path, &db) == SQLITE_OK, let db else { throw BenchError("cannot open \(path)") }
        defer { sqlite3_close(db) }
        func fail(_ what: String) -> BenchError { BenchError("import ceiling, \(what): \(String(cString: sqlite3_errmsg(db)))") }
        func exec(_ sql: String) throws { guard sqlite3_exec(db, sql, nil, nil, nil) == SQLITE_OK else { throw fail(sql) } }
        try exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = \(synchronous); PRAGMA foreign_keys = ON; PRAGMA cache_size = -65536;")
        func prepare(_ sql: String) throws -> OpaquePointer {
            var statement: OpaquePointer?
            guard sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil) == SQLITE_OK, let statement else { throw fail(sql) }
            return statement
        }
        let contact = try prepare("INSERT INTO contacts (id, email, name, external_id, locale, created_at, updated_at) VALUES (?, ?, ?, ?, NULL, ?, ?)")
        let key = try prepare("INSERT INTO contact_keys (contact_id, wrapped_key) VALUES (?, ?)")
        let secret = try prepare("INSERT INTO contact_link_secrets (contact_id, secret, created_at) VALUES (?, ?, ?)")
        let head = try prepare("SELECT seq FROM chain_heads WHERE contact_id = ?")
        let erased = try prepare("SELECT erased_at, objected_at FROM contacts WHERE id = ?")
        let event = try prepare("""
            INSERT INTO consent_events (id, contact_id, seq, topic_key, action, from_state, to_state, source, channel,
                actor_kind, actor_id, occurred_at, recorded_at, expires_at, notice_version, form_id, form_version, batch_id,
                sealed_evidence, prev_hash, hash)
            VALUES (?, ?, ?, ?, 'granted', 'none', 'granted', 'import', NULL, 'staff', 'command line', ?, ?, NULL, 1, NULL, NULL, ?, ?, ?, ?)
            """)
        let preference = try prepare("""
            INSERT INTO preferences (contact_id, topic_key, state, since, expires_at, seq) VALUES (?, ?, 'granted', ?, NULL, ?)
            ON CONFLICT (contact_id, topic_key) DO UPDATE SET state = excluded.state, since = excluded.since,
                expires_at = excluded.expires_at, seq = excluded.seq
            """)
        let upsertHead = try prepare("""
            INSERT INTO chain_heads (contact_id, seq, hash) VALUES (?, ?, ?)
            ON CONFLICT (contact_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash
            """)
        let statements = [contact, key, secret, head, erased, event, preference, upsertHead]
        defer { statements.forEach { sqlite3_finalize($0) } }
        func step(_ statement: OpaquePointer, _ what: String) throws {
            let code = sqlite3_step(statement)
            guard code == SQLITE_DONE || code == SQLITE_ROW else { throw fail(what) }
            sqlite3_reset(statement)
        }
        let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
        func text(_ s: OpaquePointer, _ i: Int32, _ value: String) { sqlite3_bind_text(s, i, value, -1, transient) }
        func blob(_ s: OpaquePointer, _ i: Int32, _ bytes: [UInt8]) { _ = bytes.withUnsafeBytes { sqlite3_bind_blob(s, i, $0.baseAddress, Int32($0.count), transient) } }
        // Sizes as Assent stores them: an AES-GCM wrapped 32-byte key, a 32-byte secret, a sealed evidence note, SHA-256 hashes.
        var generator = SplitMix(state: 13)
        func bytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) } }
        let wrapped = bytes(60), linkSecret = bytes(32), evidence = bytes(Ceilings.sealedEvidenceBytes), hash = bytes(32), zero = [UInt8](repeating: 0, count: 32)
        let topics = ["news", "events", "offers"]
        let chunk = 500
        let started = Date()
        var first = 0
        while first < contacts {
            let range = first..<min(first + chunk, contacts)
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            let ids = range.map { _ in UUID.timeOrdered().lowercasedString }
            try exec("BEGIN IMMEDIATE")
            for (n, i) in range.enumerated() {
                text(contact, 1, ids[n]); text(contact, 2, "person\(i)@bench.example"); text(contact, 3, "Ann \(i)"); text(contact, 4, "crm-\(i)")
                sqlite3_bind_int64(contact, 5, now); sqlite3_bind_int64(contact, 6, now)
                try step(contact, "contact")
                text(key, 1, ids[n]); blob(key, 2, wrapped)
                try step(key, "key")
                text(secret, 1, ids[n]); blob(secret, 2, linkSecret); sqlite3_bind_int64(secret, 3, now)
                try step(secret, "secret")
            }
            try exec("COMMIT")
            try exec("BEGIN IMMEDIATE")
            let batch = "import-\(UUID.random().uuidString.prefix(12).lowercased())"
            for id in ids {
                text(head, 1, id); try step(head, "head")
                text(erased, 1, id); try step(erased, "erased")
                for (seq, topic) in topics.enumerated() {
                    text(event, 1, UUID.timeOrdered().lowercasedString); text(event, 2, id); sqlite3_bind_int64(event, 3, Int64(seq + 1))
                    text(event, 4, topic); sqlite3_bind_int64(event, 5, now); sqlite3_bind_int64(event, 6, now); text(event, 7, batch)
                    blob(event, 8, evidence); blob(event, 9, seq == 0 ? zero : hash); blob(event, 10, hash)
                    try step(event, "event")
                    text(preference, 1, id); text(preference, 2, topic); sqlite3_bind_int64(preference, 3, now); sqlite3_bind_int64(preference, 4, Int64(seq + 1))
                    try step(preference, "preference")
                }
                text(upsertHead, 1, id); sqlite3_bind_int64(upsertHead, 2, 3); blob(upsertHead, 3, hash)
                try step(upsertHead, "chain head")
            }
            try exec("COMMIT")
            first = range.upperBound
        }
        return Double(contacts * topics.count) / Date().timeIntervalSince(started)
    }

    /// The stored size of an import's sealed evidence note (as `eventSize` assumes).
    static let sealedEvidenceBytes = 100

    /// A raw read of every stored event, in the order `assent verify` reads them, through SQLite's C
    /// API with nothing decoded (each column's bytes only touched): rows per second. It is what
    /// scenario 6 can reach at best before it hashes anything.
    static func sqliteScan(path: String) throws -> Double {
        try rawReadRate(path: path, what: "scan", columns: 21, sql: """
            SELECT id, contact_id, seq, topic_key, action, from_state, to_state, source, channel, actor_kind, actor_id, occurred_at,
                recorded_at, expires_at, notice_version, form_id, form_version, batch_id, sealed_evidence, prev_hash, hash
            FROM consent_events ORDER BY contact_id, seq
            """) { _ in }
    }

    /// Rows per second of one read-only statement stepped through SQLite's C API, each of its
    /// `columns` only touched (its bytes counted), after `bind` has set its parameters.
    static func rawReadRate(path: String, what: String, columns: Int32, sql: String, bind: (OpaquePointer) -> Void) throws -> Double {
        var db: OpaquePointer?
        guard sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, nil) == SQLITE_OK, let db else { throw BenchError("cannot open \(path)") }
        defer { sqlite3_close(db) }
        var statement: OpaquePointer?
        guard sqlite3_prepare_v2(db, sql, -1, &statement, nil) == SQLITE_OK, let statement else {
            throw BenchError("\(what): \(String(cString: sqlite3_errmsg(db)))")
        }
        defer { sqlite3_finalize(statement) }
        bind(statement)
        var rows = 0, bytes = 0
        let started = Date()
        while sqlite3_step(statement) == SQLITE_ROW {
            for column in 0..<columns {
                _ = sqlite3_column_blob(statement, column)
                bytes &+= Int(sqlite3_column_bytes(statement, column))
            }
            rows += 1
        }
        if bytes < 0 { print(bytes) } // keep the work observable
        return Double(rows) / Date().timeIntervalSince(started)
    }

    /// Scenario 2's lookups done raw: the server's check query (`SQLiteStore.checkSelect`: each
    /// address through the email index to its contact, then its preference for the topic) run
    /// through SQLite's C API on one connection, read as the server reads them (sorted, without
    /// repeats, in one IN list per run of `runs` equal runs), with each row's columns only
    /// touched. Milliseconds per batch, one per batch: what one core spends on SQLite alone,
    /// before any JSON is read, checked or written.
    static func sqliteBatchLookup(path: String, topic: String, batches: [[String]], runs: Int) throws -> [Double] {
        var db: OpaquePointer?
        guard sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, nil) == SQLITE_OK, let db else { throw BenchError("cannot open \(path)") }
        defer { sqlite3_close(db) }
        let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
        var statements: [Int: OpaquePointer] = [:]
        defer { statements.values.forEach { sqlite3_finalize($0) } }
        func statement(_ count: Int) throws -> OpaquePointer {
            if let made = statements[count] { return made }
            var made: OpaquePointer?
            let sql = """
                SELECT c.id, c.email, p.topic_key, p.state, p.since, p.expires_at, p.seq
                FROM contacts c INDEXED BY contacts_email_id LEFT JOIN preferences p ON p.contact_id = c.id AND p.topic_key = ?
                WHERE c.email IN (\(Array(repeating: "?", count: count).joined(separator: ", ")))
                """
            guard sqlite3_prepare_v2(db, sql, -1, &made, nil) == SQLITE_OK, let made else { throw BenchError("batch lookup: \(String(cString: sqlite3_errmsg(db)))") }
            statements[count] = made
            return made
        }
        var bytes = 0
        let timings = try batches.map { batch in
            let started = Date()
            let emails = Array(Set(batch)).sorted()
            let length = (emails.count + runs - 1) / runs
            for start in stride(from: 0, to: emails.count, by: max(1, length)) {
                let chunk = emails[start..<min(start + length, emails.count)]
                let lookup = try statement(chunk.count)
                sqlite3_bind_text(lookup, 1, topic, -1, transient)
                for (i, email) in chunk.enumerated() { sqlite3_bind_text(lookup, Int32(i + 2), email, -1, transient) }
                while sqlite3_step(lookup) == SQLITE_ROW {
                    for column in 0..<Int32(7) {
                        _ = sqlite3_column_blob(lookup, column)
                        bytes &+= Int(sqlite3_column_bytes(lookup, column))
                    }
                }
                sqlite3_reset(lookup)
            }
            return Date().timeIntervalSince(started) * 1000
        }
        if bytes < 0 { print(bytes) } // keep the work observable
        return timings
    }

    /// A raw read of one topic's audience through SQLite's C API: the query scenario 5's pages
    /// run (contacts in id order, their grants, their link secrets), in one statement, with each
    /// column's bytes only touched. Granted contacts per second: what scenario 5 can reach at best
    /// before anything is decoded or written out.
    static func sqliteAudienceScan(path: String, topic: String) throws -> Double {
        try rawReadRate(path: path, what: "audience scan", columns: 14, sql: """
            SELECT c.id, c.email, c.name, c.external_id, c.locale, c.created_at, c.updated_at, c.objected_at,
                   p.topic_key, p.state, p.since, p.expires_at, p.seq, s.secret
            FROM contacts c
            JOIN preferences p ON p.contact_id = c.id AND p.topic_key IN (?) AND p.state = 'granted'
                AND (p.expires_at IS NULL OR p.expires_at > ?)
            LEFT JOIN contact_link_secrets s ON s.contact_id = c.id
            WHERE c.email IS NOT NULL AND c.id > ''
            ORDER BY c.id, p.topic_key
            """) { statement in
            sqlite3_bind_text(statement, 1, topic, -1, unsafeBitCast(-1, to: sqlite3_destructor_type.self))
            sqlite3_bind_int64(statement, 2, Int64(Date().timeIntervalSince1970 * 1000))
        }
    }

    /// The same two ceilings on PostgreSQL: a prepared point select by a unique text key and
    /// a single-row insert committed on its own, over one connection (as one request would).
    static func postgres(url: String, rows: Int, seconds: Double) async throws -> (reads: Double, writes: Double) {
        guard let config = PostgresURL.configuration(url) else { throw BenchError("ASSENT_DATABASE_URL is not a postgres:// URL") }
        let logger = Logger(label: "assent-bench")
        let client = PostgresClient(configuration: config, backgroundLogger: logger)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            return try await client.withConnection { c in
                try await c.query("DROP TABLE IF EXISTS bench_r, bench_w", logger: logger)
                try await c.query("CREATE UNLOGGED TABLE bench_r (id BIGSERIAL PRIMARY KEY, email TEXT NOT NULL UNIQUE, state TEXT NOT NULL)", logger: logger)
                try await c.query("CREATE TABLE bench_w (id BIGSERIAL PRIMARY KEY, contact TEXT NOT NULL, body BYTEA NOT NULL)", logger: logger)
                try await c.query("""
                    INSERT INTO bench_r (email, state) SELECT 'person' || i || '@bench.example', 'granted' FROM generate_series(0, \(rows - 1)) AS i
                    """, logger: logger)
                try await c.query("ANALYZE bench_r", logger: logger)
                var generator = SplitMix(state: 11)
                var reads = 0
                var started = Date()
                repeat {
                    let email = "person\(Int.random(in: 0..<rows, using: &generator))@bench.example"
                    let found = try await c.query("SELECT state FROM bench_r WHERE email = \(email)", logger: logger)
                    for try await _ in found {}
                    reads += 1
                } while Date().timeIntervalSince(started) < seconds
                let readRate = Double(reads) / Date().timeIntervalSince(started)
                let body = Data(repeating: 7, count: 300)
                var writes = 0
                started = Date()
                repeat {
                    try await c.query("INSERT INTO bench_w (contact, body) VALUES (\(UUID.random().uuidString), \(body))", logger: logger)
                    writes += 1
                } while Date().timeIntervalSince(started) < seconds
                let writeRate = Double(writes) / Date().timeIntervalSince(started)
                try await c.query("DROP TABLE bench_r, bench_w", logger: logger)
                return (readRate, writeRate)
            }
        }
    }
}

extension Ceilings {
    /// (Q) PostgreSQL answering the single check's own query (the server's SQL, for a random
    /// generated address) to pgbench, a separate process as wrk is for HTTP: `clients` connections
    /// on two threads, prepared statements, `seconds` long. Queries per second: what the database
    /// server itself can answer here, whatever the program in front of it does.
    static func postgresCheckQuery(url: String, contacts: Int, clients: Int, seconds: Int, logs: URL) async throws -> Double {
        let script = """
            \\set i random(0, \(contacts - 1))
            SELECT c.id AS cid, p.topic_key, p.state, p.since, p.expires_at, p.seq FROM contacts c LEFT JOIN preferences p ON p.contact_id = c.id AND p.topic_key = 'news' WHERE c.email = 'person' || :i || '@bench.example';

            """
        return try await pgbench(url: url, script: script, clients: clients, seconds: seconds, logs: logs, name: "pgbench-check")
    }

    /// Transactions per second of a pgbench run of `script` (`-M prepared`, two threads) lasting
    /// about `seconds`. Counted in transactions, not timed with `-T`: pgbench ends a timed run on
    /// SIGALRM, which a child of this process never received (it ran on past ten minutes), so a
    /// short run measures the rate and a second, sized from it, is the figure.
    static func pgbench(url: String, script: String, clients: Int, seconds: Int, logs: URL, name: String) async throws -> Double {
        guard let pgbench = postgresTool("pgbench") else {
            throw BenchError("pgbench is not installed (Debian: apt-get install postgresql; scripts/bench installs it)")
        }
        let file = logs.appendingPathComponent("\(name).sql")
        try script.write(to: file, atomically: true, encoding: .utf8)
        func transactionsPerSecond(perClient: Int, run name: String) async throws -> Double {
            let text = try await run(pgbench, ["-n", "-M", "prepared", "-c", "\(clients)", "-j", "2", "-t", "\(perClient)", "-f", file.path, url],
                                     logs: logs, name: name)
            // "tps = 12345.678901 (without initial connection time)"
            guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("tps = ") }),
                  let tps = Double(line.dropFirst("tps = ".count).prefix { $0 != " " }), tps > 0 else {
                throw BenchError("could not read pgbench's output:\n\(text.suffix(2_000))")
            }
            if let failed = text.split(separator: "\n").first(where: { $0.hasPrefix("number of failed transactions:") }),
               !failed.dropFirst("number of failed transactions:".count).trimmingCharacters(in: .whitespaces).hasPrefix("0 ") {
                throw BenchError("pgbench: \(failed)")
            }
            return tps
        }
        let probe = try await transactionsPerSecond(perClient: 50, run: "\(name)-probe")
        return try await transactionsPerSecond(perClient: max(50, Int(probe * Double(seconds) / Double(clients))), run: name)
    }
}

/// postgres://user:password@host:port/database?sslmode=disable, as `assent` reads it (TLS off unless asked).
enum PostgresURL {
    static func configuration(_ text: String) -> PostgresClient.Configuration? {
        guard let url = URLComponents(string: text), ["postgres", "postgresql"].contains(url.scheme ?? ""), let host = url.host else { return nil }
        let database = url.path.hasPrefix("/") ? String(url.path.dropFirst()) : url.path
        let mode = url.queryItems?.first { $0.name == "sslmode" }?.value ?? "disable"
        let tls: PostgresClient.Configuration.TLS = ["require", "verify-ca", "verify-full"].contains(mode) ? .require(.makeClientConfiguration()) : .disable
        return PostgresClient.Configuration(host: host, port: url.port ?? 5432, username: url.user ?? "postgres", password: url.password,
                                            database: database.isEmpty ? nil : database, tls: tls)
    }
}
