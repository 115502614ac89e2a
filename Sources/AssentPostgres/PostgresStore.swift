import AssentCore
import AssentStore
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO

/// An event loop group whose loops are handed out in turn, also by `any()`. postgres-nio opens each
/// connection on `any()`, which is the calling thread's own loop when called from one; under `assent
/// serve` Swift's jobs run on the loops, so every connection opened on one loop and all of PostgreSQL's
/// traffic was handled there (perf of changes over HTTP: 29% of the samples on that loop, 11% on the
/// other, a quarter of the machine idle).
final class InTurnEventLoops: EventLoopGroup, @unchecked Sendable {
    let base: any EventLoopGroup

    init(_ base: any EventLoopGroup) { self.base = base }

    func next() -> any EventLoop { base.next() }
    func any() -> any EventLoop { base.next() }
    func makeIterator() -> EventLoopIterator { base.makeIterator() }
    func shutdownGracefully(queue: DispatchQueue, _ callback: @escaping @Sendable ((any Error)?) -> Void) {
        base.shutdownGracefully(queue: queue, callback)
    }
    func _preconditionSafeToSyncShutdown(file: StaticString, line: UInt) { base._preconditionSafeToSyncShutdown(file: file, line: line) }
}

/// The thread the group commit's transactions run on: an event loop of its own, which also holds
/// the connections they use, and a task executor on it. On the server's loops each of a group's
/// round trips waited behind HTTP requests twice (its answer read on the connection's loop, its task
/// resumed on another): timed under load, `BEGIN` took 1.6 ms and the head lock 2.2 ms of a 7.5 ms
/// transaction, and the one transaction at a time bound the rate of changes.
enum WriterLoop {
    static let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    static let executor = LoopExecutor(group.next())

    final class LoopExecutor: TaskExecutor, @unchecked Sendable {
        let loop: any EventLoop
        init(_ loop: any EventLoop) { self.loop = loop }

        func enqueue(_ job: consuming ExecutorJob) {
            let job = UnownedJob(job)
            let executor = asUnownedTaskExecutor()
            loop.execute { job.runSynchronously(on: executor) }
        }
    }
}

/// Where a PostgreSQL database is, parsed from `postgres://user:pass@host:port/db?sslmode=...`.
public struct PostgresLocation: Sendable, Equatable {
    public enum TLSMode: String, Sendable {
        case disable, prefer, require
    }

    public var host: String
    public var port: Int
    public var username: String
    public var password: String?
    public var database: String
    public var tls: TLSMode
    /// How often each idle connection is pinged (`keepalive_seconds` in the URL); nil: never. A ping
    /// finds a connection that a firewall or NAT dropped while idle before a request uses it; its
    /// timer is set again each time a connection goes back idle, which cost about a tenth of the CPU
    /// of a consent check, so it is off unless asked for.
    public var keepAliveSeconds: Int?

    public init(host: String, port: Int = 5432, username: String, password: String?, database: String, tls: TLSMode = .prefer,
                keepAliveSeconds: Int? = nil) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
        self.tls = tls
        self.keepAliveSeconds = keepAliveSeconds
    }

    public init(url text: String) throws {
        guard let url = URLComponents(string: text), ["postgres", "postgresql"].contains(url.scheme ?? "") else {
            throw DomainError.invalid(field: "ASSENT_DATABASE_URL", "'\(Self.redacted(text))' is not a postgres:// URL")
        }
        guard let host = url.host, !host.isEmpty else { throw DomainError.invalid(field: "ASSENT_DATABASE_URL", "names no host") }
        let database = String(url.path.drop { $0 == "/" })
        guard !database.isEmpty else { throw DomainError.invalid(field: "ASSENT_DATABASE_URL", "names no database (postgres://user@host/DATABASE)") }
        var tls = TLSMode.prefer
        if let mode = url.queryItems?.first(where: { $0.name == "sslmode" })?.value {
            switch mode {
            case "disable": tls = .disable
            case "prefer", "allow": tls = .prefer
            case "require", "verify-ca", "verify-full": tls = .require
            default: throw DomainError.invalid(field: "ASSENT_DATABASE_URL", "sslmode '\(mode)' must be disable, prefer or require")
            }
        }
        var keepAlive: Int?
        if let text = url.queryItems?.first(where: { $0.name == "keepalive_seconds" })?.value {
            guard let seconds = Int(text), (1...86_400).contains(seconds) else {
                throw DomainError.invalid(field: "ASSENT_DATABASE_URL", "keepalive_seconds '\(text.prefix(20))' must be a whole number of seconds from 1 to 86400")
            }
            keepAlive = seconds
        }
        self.init(host: host, port: url.port ?? 5432, username: url.user ?? "postgres", password: url.password,
                  database: database, tls: tls, keepAliveSeconds: keepAlive)
    }

    /// The URL with its password hidden, for messages and logs.
    public static func redacted(_ text: String) -> String {
        guard var url = URLComponents(string: text), url.password != nil else { return text }
        url.password = "***"
        return url.string ?? "postgres://***"
    }

    /// The URL form, as `ASSENT_DATABASE_URL` takes it.
    public var url: String { url(libpq: false) }

    /// The URL for libpq's tools (pg_dump, psql): without Assent's own parameters, which libpq refuses.
    public var libpqURL: String { url(libpq: true) }

    private func url(libpq: Bool) -> String {
        var components = URLComponents()
        components.scheme = "postgres"
        components.user = username
        components.password = password
        components.host = host
        components.port = port
        components.path = "/" + database
        components.queryItems = [URLQueryItem(name: "sslmode", value: tls.rawValue)]
            + (libpq ? [] : keepAliveSeconds.map { [URLQueryItem(name: "keepalive_seconds", value: String($0))] } ?? [])
        return components.string ?? "postgres://\(host)/\(database)"
    }

    public var isLocal: Bool { ["127.0.0.1", "localhost", "::1", "[::1]"].contains(host) }

    func connectionTLS() throws -> PostgresConnection.Configuration.TLS {
        switch tls {
        case .disable: .disable
        case .prefer: .prefer(try NIOSSLContext(configuration: .makeClientConfiguration()))
        case .require: .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
        }
    }

    var clientConfiguration: PostgresClient.Configuration {
        let tlsSetting: PostgresClient.Configuration.TLS = switch tls {
        case .disable: .disable
        case .prefer: .prefer(.makeClientConfiguration())
        case .require: .require(.makeClientConfiguration())
        }
        var configuration = PostgresClient.Configuration(host: host, port: port, username: username, password: password, database: database, tls: tlsSetting)
        configuration.options.keepAliveBehavior = keepAliveSeconds.map { .init(frequency: .seconds($0)) }
        return configuration
    }
}

/// The PostgreSQL store: the same ledger for several `assent serve`
/// instances on one database. Every rule the SQLite store keeps holds here
/// too (the conformance suite runs against both); concurrency across
/// processes rests on row locks and the `(contact_id, seq)` primary key.
public final class PostgresStore: LedgerStore, AudienceRangeReader {
    let client: PostgresClient
    /// The ledger's commits (group commit, imports' batches), on `WriterLoop`'s thread.
    let writeClient: PostgresClient
    /// Heavy reads (verify, exports) go here; the primary when no replica is configured.
    let readClient: PostgresClient
    private let runTask: Task<Void, Never>
    let logger: Logger
    let location: PostgresLocation
    let readLocation: PostgresLocation?
    /// Concurrent single commits (HTTP writes) share a transaction and its WAL flush.
    public let committer = GroupCommitter()
    /// Concurrent single checks share reads (see `checkRow`).
    let checkReads: ReadCoalescer<CheckKey, CheckRow?>
    /// Concurrent changes share their reads of the contact (see `contactSnapshot(id:)`).
    let snapshotReads: ReadCoalescer<UUID, ContactSnapshot?>

    /// `keepConnectionsOpen` (the server): the pool opens its connections at once and keeps them, where
    /// otherwise it opens them on demand and closes those idle for a minute. postgres-nio sets an idle
    /// timer (a task and a Dispatch timer) each time a connection it may close goes back idle, and cancels
    /// it on the next query: with that timer and the keep-alive's, a consent check cost 100-135 us of the
    /// server's CPU against 88-96 us without (PostgreSQL, 100,000 contacts, alternating runs).
    public init(location: PostgresLocation, readLocation: PostgresLocation? = nil, maxConnections: Int = 20, keepConnectionsOpen: Bool = false,
                logger: Logger = Logger(label: "assent.postgres")) {
        var config = location.clientConfiguration
        config.options.maximumConnections = maxConnections
        if keepConnectionsOpen { config.options.minimumConnections = maxConnections }
        let loops = InTurnEventLoops(PostgresClient.defaultEventLoopGroup)
        let client = PostgresClient(configuration: config, eventLoopGroup: loops)
        let reader = readLocation.map { location -> PostgresClient in
            var config = location.clientConfiguration
            config.options.maximumConnections = max(2, maxConnections / 2)
            if keepConnectionsOpen { config.options.minimumConnections = config.options.maximumConnections }
            return PostgresClient(configuration: config, eventLoopGroup: loops)
        }
        var writeConfig = location.clientConfiguration
        writeConfig.options.maximumConnections = min(4, maxConnections)
        if keepConnectionsOpen { writeConfig.options.minimumConnections = writeConfig.options.maximumConnections }
        let writer = PostgresClient(configuration: writeConfig, eventLoopGroup: WriterLoop.group)
        self.client = client
        self.writeClient = writer
        self.location = location
        self.readLocation = readLocation
        self.readClient = reader ?? client
        self.logger = logger
        self.checkReads = ReadCoalescer(width: Self.checkReadWidth) { [client, logger] keys in
            try await Self.checkRows(keys, client: client, logger: logger)
        }
        self.snapshotReads = ReadCoalescer(width: Self.snapshotReadWidth) { [client, logger] ids in
            try await Self.contactSnapshots(ids, client: client, logger: logger)
        }
        self.runTask = Task {
            await withDiscardingTaskGroup { group in
                group.addTask { await client.run() }
                group.addTask { await writer.run() }
                if let reader { group.addTask { await reader.run() } }
            }
        }
    }

    /// Closes every connection. The store cannot be used afterwards.
    public func shutdown() {
        runTask.cancel()
    }

    deinit { runTask.cancel() }

    // MARK: Plumbing

    /// A transaction that rethrows the body's own error (postgres-nio's
    /// `withTransaction` wraps it), so callers can match `StoreError`.
    func transaction<T: Sendable>(on pool: PostgresClient? = nil, _ body: (PostgresConnection) async throws -> T) async throws -> T {
        try await (pool ?? client).withConnection { connection in
            try await connection.query("BEGIN", logger: logger)
            do {
                let value = try await body(connection)
                try await connection.query("COMMIT", logger: logger)
                return value
            } catch {
                _ = try? await connection.query("ROLLBACK", logger: logger)
                throw error
            }
        }
    }

    /// All rows of a query, each as random access by column name.
    func rows(_ query: PostgresQuery, on connection: PostgresConnection? = nil, reader: Bool = false) async throws -> [PostgresRandomAccessRow] {
        try await allRows(query, on: connection, reader: reader).map { $0.makeRandomAccess() }
    }

    /// All rows of a query, gathered on the connection's event loop and handed over at once
    /// (postgres-nio's `EventLoopFuture` query). Its async row sequence hands rows over one
    /// `next()` at a time, each taking a lock, installing a cancellation handler and hopping
    /// executors: more than decoding the row cost.
    func allRows(_ query: PostgresQuery, on connection: PostgresConnection? = nil, reader: Bool = false) async throws -> [PostgresRow] {
        if let connection { return try await Self.allRows(query, on: connection, logger: logger) }
        return try await (reader ? readClient : client).withConnection { [logger] in try await Self.allRows(query, on: $0, logger: logger) }
    }

    private static func allRows(_ query: PostgresQuery, on connection: PostgresConnection, logger: Logger) async throws -> [PostgresRow] {
        // Each row is appended as it arrives. (postgres-nio's `query(_:logger:)` future gathers rows in
        // an array it copies whole, a few retains per row, at every network read.)
        let gathered = OnEventLoop([PostgresRow]())
        try await eachRow(query, on: connection, logger: logger) { gathered.value.append($0) }
        return gathered.value
    }

    /// Hands each row of a query to `body` as it arrives, on the connection's event loop, so that
    /// what a caller makes of the rows is made while PostgreSQL is still sending them. There is no
    /// back-pressure (nor was there in gathering every row first): for results whose size the
    /// query bounds, such as pages.
    func eachRow(_ query: PostgresQuery, reader: Bool = false, _ body: @escaping @Sendable (PostgresRow) throws -> Void) async throws {
        try await (reader ? readClient : client).withConnection { [logger] in try await Self.eachRow(query, on: $0, logger: logger, body) }
    }

    private static func eachRow(_ query: PostgresQuery, on connection: PostgresConnection, logger: Logger,
                                _ body: @escaping @Sendable (PostgresRow) throws -> Void) async throws {
        _ = try await connection.query(query, logger: logger, body).get()
    }

    /// A value that a query's `onRow` callback builds. Only that callback touches it until the
    /// query's future completes: postgres-nio calls it on the connection's event loop, one row
    /// after another, and completes the future after the last, which orders the read that follows.
    final class OnEventLoop<Value>: @unchecked Sendable {
        var value: Value
        init(_ value: Value) { self.value = value }
    }

    static func uniqueViolation(_ error: any Error) -> String? {
        guard let error = error as? PSQLError, error.serverInfo?[.sqlState] == "23505" else { return nil }
        return error.serverInfo?[.constraintName] ?? ""
    }

    /// Maps a unique violation to `StoreError.duplicate` naming the field.
    @discardableResult
    func mapUnique<T>(value: (String) -> String, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            guard let constraint = Self.uniqueViolation(error) else { throw error }
            let field = constraint.contains("email") ? "email" : constraint.contains("external_id") ? "externalId"
                : constraint.hasPrefix("topics") ? "key" : "id"
            throw StoreError.duplicate(field: field, value: value(field))
        }
    }

    /// Runs SQL text as is. For tests that play an attacker with database
    /// access, and operators' tooling; never called with user input.
    public func unsafeExecute(_ sql: String) async throws {
        try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger)
    }

    /// Runs SQL text as is and returns the first column of each row as text
    /// (for tests that inspect the schema); never called with user input.
    public func strings(_ sql: String) async throws -> [String] {
        var out: [String] = []
        for try await row in try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger) {
            out.append(try row.makeRandomAccess()[0].decode(String.self))
        }
        return out
    }

    // MARK: Schema

    static let migrationLock: Int64 = 0x4153_5345_4E54  // "ASSENT"

    /// One direct connection attempt, so that a wrong host, port or password
    /// is reported at once (the pool would keep retrying in the background).
    public func checkReachable() async throws {
        for (location, role) in [(location, "PostgreSQL"), readLocation.map { ($0, "the PostgreSQL read replica") }].compactMap({ $0 }) {
            let config = PostgresConnection.Configuration(
                host: location.host, port: location.port, username: location.username, password: location.password,
                database: location.database, tls: try location.connectionTLS())
            do {
                let connection = try await PostgresConnection.connect(configuration: config, id: 0, logger: logger)
                try await connection.close()
            } catch {
                throw StoreError.unavailable("cannot connect to \(role) at \(location.username)@\(location.host):\(location.port)/\(location.database): \(Self.describe(error))")
            }
        }
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] { return message }
            if let underlying = error.underlying { return String(describing: underlying) }
            return String(describing: error.code)
        }
        return String(describing: error)
    }

    public func migrate() async throws {
        try await checkReachable()
        try await client.withConnection { connection in
            // One migrator at a time across every instance starting together.
            try await connection.query("SELECT pg_advisory_lock(\(Self.migrationLock))", logger: logger)
            do {
                try await connection.query("CREATE TABLE IF NOT EXISTS schema_migrations (version TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)", logger: logger)
                var applied: Set<String> = []
                for try await version in try await connection.query("SELECT version FROM schema_migrations", logger: logger).decode(String.self) {
                    applied.insert(version)
                }
                for migration in PostgresMigrations.all where !applied.contains(migration.version) {
                    try await connection.query("BEGIN", logger: logger)
                    do {
                        for statement in migration.statements {
                            try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                        }
                        let now = Date().millisecondsSince1970
                        try await connection.query("INSERT INTO schema_migrations (version, applied_at) VALUES (\(migration.version), \(now))", logger: logger)
                        try await connection.query("COMMIT", logger: logger)
                    } catch {
                        _ = try? await connection.query("ROLLBACK", logger: logger)
                        throw error
                    }
                }
            } catch {
                _ = try? await connection.query("SELECT pg_advisory_unlock(\(Self.migrationLock))", logger: logger)
                throw error
            }
            try await connection.query("SELECT pg_advisory_unlock(\(Self.migrationLock))", logger: logger)
        }
    }

    public func appliedMigrations() async throws -> [String] {
        try await rows("SELECT version FROM schema_migrations ORDER BY version").map { try $0["version"].decode(String.self) }
    }

    public func ping() async throws {
        _ = try await rows("SELECT 1 AS one")
    }

    // MARK: Topics

    public func insertTopic(_ topic: Topic, notice: Notice) async throws {
        try await mapUnique(value: { _ in topic.key }) {
            try await transaction { c in
                try await c.query("""
                    INSERT INTO topics (key, title, description, category, status, requires_double_opt_in, consent_lifetime_days,
                        repermission_days, current_notice_version, created_at, updated_at)
                    VALUES (\(topic.key), \(topic.title), \(topic.description), \(topic.category), \(topic.status.rawValue),
                        \(topic.requiresDoubleOptIn), \(topic.consentLifetimeDays), \(topic.repermissionDaysBefore), \(topic.currentNoticeVersion),
                        \(topic.createdAt.millisecondsSince1970), \(topic.updatedAt.millisecondsSince1970))
                    """, logger: logger)
                try await c.query("""
                    INSERT INTO notices (topic_key, version, text, created_at)
                    VALUES (\(notice.topicKey), \(notice.version), \(notice.text), \(notice.createdAt.millisecondsSince1970))
                    """, logger: logger)
            }
        }
    }

    public func updateTopic(_ topic: Topic) async throws {
        let updated = try await rows("""
            UPDATE topics SET title = \(topic.title), description = \(topic.description), category = \(topic.category),
                status = \(topic.status.rawValue), requires_double_opt_in = \(topic.requiresDoubleOptIn),
                consent_lifetime_days = \(topic.consentLifetimeDays),
                repermission_days = \(topic.repermissionDaysBefore), updated_at = \(topic.updatedAt.millisecondsSince1970)
            WHERE key = \(topic.key) RETURNING key
            """)
        if updated.isEmpty { throw StoreError.notFound(what: "topic", id: topic.key) }
    }

    public func topic(key: String) async throws -> Topic? {
        try await rows("SELECT * FROM topics WHERE key = \(key)").first.map(Self.topic)
    }

    public func topics(includeRetired: Bool) async throws -> [Topic] {
        try await rows("SELECT * FROM topics WHERE \(includeRetired) OR status = 'active' ORDER BY category, key").map(Self.topic)
    }

    static func topic(_ r: PostgresRandomAccessRow) throws -> Topic {
        Topic(key: try r["key"].decode(String.self), title: try r["title"].decode(String.self),
              description: try r["description"].decode(String.self), category: try r["category"].decode(String.self),
              status: Topic.Status(rawValue: try r["status"].decode(String.self)) ?? .retired,
              requiresDoubleOptIn: try r["requires_double_opt_in"].decode(Bool.self),
              consentLifetimeDays: try r["consent_lifetime_days"].decode(Int?.self),
              repermissionDaysBefore: try r["repermission_days"].decode(Int?.self),
              currentNoticeVersion: try r["current_notice_version"].decode(Int.self),
              createdAt: Date(millisecondsSince1970: try r["created_at"].decode(Int64.self)),
              updatedAt: Date(millisecondsSince1970: try r["updated_at"].decode(Int64.self)))
    }

    public func appendNotice(topicKey: String, text: String, at: Date) async throws -> Notice {
        try await transaction { c in
            // Locking the topic row serialises concurrent publishers of the same topic.
            guard let current = try await rows("SELECT current_notice_version FROM topics WHERE key = \(topicKey) FOR UPDATE", on: c).first else {
                throw StoreError.notFound(what: "topic", id: topicKey)
            }
            let version = try current["current_notice_version"].decode(Int.self) + 1
            let ms = at.millisecondsSince1970
            try await c.query("INSERT INTO notices (topic_key, version, text, created_at) VALUES (\(topicKey), \(version), \(text), \(ms))", logger: logger)
            try await c.query("UPDATE topics SET current_notice_version = \(version), updated_at = \(ms) WHERE key = \(topicKey)", logger: logger)
            return Notice(topicKey: topicKey, version: version, text: text, createdAt: at)
        }
    }

    public func notices(topicKey: String) async throws -> [Notice] {
        try await rows("SELECT * FROM notices WHERE topic_key = \(topicKey) ORDER BY version").map(Self.notice)
    }

    public func notice(topicKey: String, version: Int) async throws -> Notice? {
        try await rows("SELECT * FROM notices WHERE topic_key = \(topicKey) AND version = \(version)").first.map(Self.notice)
    }

    static func notice(_ r: PostgresRandomAccessRow) throws -> Notice {
        Notice(topicKey: try r["topic_key"].decode(String.self), version: try r["version"].decode(Int.self),
               text: try r["text"].decode(String.self), createdAt: Date(millisecondsSince1970: try r["created_at"].decode(Int64.self)))
    }

    // MARK: Contacts

    public func insertContact(_ new: NewContact) async throws {
        let contact = new.contact
        try await mapUnique(value: { field in field == "email" ? contact.email.value : field == "externalId" ? contact.externalID ?? "" : contact.id.uuidString.lowercased() }) {
            try await transaction { c in try await insertContacts([new], on: c) }
        }
    }

    public func updateContact(_ contact: Contact) async throws {
        let updated = try await mapUnique(value: { field in field == "email" ? contact.email.value : contact.externalID ?? "" }) {
            try await rows("""
                UPDATE contacts SET email = \(contact.email.value), name = \(contact.name), external_id = \(contact.externalID),
                    locale = \(contact.locale), updated_at = \(contact.updatedAt.millisecondsSince1970)
                WHERE id = \(contact.id) RETURNING id
                """)
        }
        if updated.isEmpty { throw StoreError.notFound(what: "contact", id: contact.id.uuidString.lowercased()) }
    }

    public func contact(id: UUID) async throws -> Contact? {
        try await rows("SELECT * FROM contacts WHERE id = \(id)").first.flatMap(Self.contact)
    }

    public func contact(email: EmailAddress) async throws -> Contact? {
        try await rows("SELECT * FROM contacts WHERE email = \(email.value)").first.flatMap(Self.contact)
    }

    public func contact(externalID: String) async throws -> Contact? {
        try await rows("SELECT * FROM contacts WHERE external_id = \(externalID)").first.flatMap(Self.contact)
    }

    public func contacts(after: UUID?, limit: Int) async throws -> [Contact] {
        let rows = if let after {
            try await rows("SELECT * FROM contacts WHERE id > \(after) ORDER BY id LIMIT \(limit)")
        } else {
            try await rows("SELECT * FROM contacts ORDER BY id LIMIT \(limit)")
        }
        return try rows.compactMap(Self.contact)
    }

    static func contact(_ r: PostgresRandomAccessRow) throws -> Contact? {
        contact(ContactColumns(id: try r["id"].decode(UUID.self), email: try r["email"].decode(String?.self), name: try r["name"].decode(String?.self),
                               externalID: try r["external_id"].decode(String?.self), locale: try r["locale"].decode(String?.self),
                               createdAt: try r["created_at"].decode(Int64.self), updatedAt: try r["updated_at"].decode(Int64.self),
                               erasedAt: try r["erased_at"].decode(Int64?.self), objectedAt: try r["objected_at"].decode(Int64?.self)))
    }

    public func wrappedKey(contactID: UUID) async throws -> Data? {
        try await rows("SELECT wrapped_key FROM contact_keys WHERE contact_id = \(contactID)").first.map { try $0["wrapped_key"].decode(Data.self) }
    }

    public func sampleWrappedKey() async throws -> (contactID: UUID, wrappedKey: Data)? {
        try await rows("SELECT contact_id, wrapped_key FROM contact_keys LIMIT 1").first.map {
            (try $0["contact_id"].decode(UUID.self), try $0["wrapped_key"].decode(Data.self))
        }
    }

    // MARK: Ledger

    public func contactSnapshots(emails: [EmailAddress]) async throws -> [ContactSnapshot] {
        guard !emails.isEmpty else { return [] }
        let contacts = try await rows("SELECT * FROM contacts WHERE email = ANY(\(emails.map(\.value)))").compactMap(Self.contact)
        guard !contacts.isEmpty else { return [] }
        let ids = contacts.map(\.id)
        var heads: [UUID: ChainHead] = [:], keys: [UUID: Data] = [:], preferences: [UUID: [String: Preference]] = [:]
        for r in try await rows("SELECT * FROM chain_heads WHERE contact_id = ANY(\(ids))") {
            let id = try r["contact_id"].decode(UUID.self)
            heads[id] = ChainHead(contactID: id, seq: try r["seq"].decode(Int64.self), hash: try r["hash"].decode(Data.self))
        }
        for r in try await rows("SELECT * FROM contact_keys WHERE contact_id = ANY(\(ids))") {
            keys[try r["contact_id"].decode(UUID.self)] = try r["wrapped_key"].decode(Data.self)
        }
        for r in try await rows("SELECT * FROM preferences WHERE contact_id = ANY(\(ids))") {
            let id = try r["contact_id"].decode(UUID.self)
            let p = try Self.preference(r, contactID: id)
            preferences[id, default: [:]][p.topicKey] = p
        }
        return contacts.map { c in
            ContactSnapshot(contact: c, state: LedgerState(head: heads[c.id] ?? .empty(c.id), preferences: preferences[c.id] ?? [:]), wrappedKey: keys[c.id])
        }
    }

    /// A change's read of its contact. Concurrent changes' reads are coalesced like checks' (see
    /// `checkRow`): with 64 changes in flight, PostgreSQL spent 45 us of executor start-up, locks
    /// and index descents per change on this read alone, and the server postgres-nio's per-query price.
    /// A read that finds fewer than `snapshotReadWidth` out runs at once, alone. A queued read is
    /// answered by a statement that starts after it queued, so it never sees an older state than
    /// a read of its own would. As with checks, a statement that fails (a dropped connection)
    /// fails every change it read for; each caller gets the error, and nothing was written.
    public func contactSnapshot(id: UUID) async throws -> ContactSnapshot? {
        try await snapshotReads.read(id)
    }

    /// How many contact reads run at once before changes queue to share one.
    static let snapshotReadWidth = 2

    /// How many reads carried how many changes' contacts so far.
    public var snapshotReadStatistics: (reads: Int, keys: Int) { snapshotReads.statistics }

    /// The snapshots of contacts, in the ids' order (nil: no such contact).
    static func contactSnapshots(_ ids: [UUID], client: PostgresClient, logger: Logger) async throws -> [ContactSnapshot?] {
        var builders = [SnapshotBuilder?](repeating: nil, count: ids.count)
        func add(_ index: Int, _ row: ContactSnapshotStatement.Row) {
            let (c, key, headSeq, headHash, topicKey, state, since, expiresAt, seq) = row
            if builders[index] == nil {
                builders[index] = SnapshotBuilder(contact: Self.contact(c), wrappedKey: key,
                                                  head: headSeq.flatMap { seq in headHash.map { ChainHead(contactID: c.id, seq: seq, hash: $0) } } ?? .empty(c.id))
            }
            if let topicKey, let p = Self.checkedPreference(c.id, topicKey, topicKey, state, since, expiresAt, seq) { builders[index]!.preferences[p.topicKey] = p }
        }
        if ids.count == 1 {
            // One round trip: the contact with its key and head, then one row per preference (or one with none).
            for try await row in try await client.execute(ContactSnapshotStatement(id: ids[0]), logger: logger) { add(0, row) }
        } else {
            for try await (ordinal, row) in try await client.execute(ContactSnapshotsStatement(ids: ids), logger: logger) {
                let index = Int(ordinal) - 1
                guard ids.indices.contains(index) else { continue }
                add(index, row)
            }
        }
        return builders.map { builder in
            builder.flatMap { b in
                b.contact.map { ContactSnapshot(contact: $0, state: LedgerState(head: b.head, preferences: b.preferences), wrappedKey: b.wrappedKey) }
            }
        }
    }

    /// A snapshot as its rows arrive.
    struct SnapshotBuilder {
        var contact: Contact?
        var wrappedKey: Data?
        var head: ChainHead
        var preferences: [String: Preference] = [:]
    }

    /// A change's read, prepared once per connection (sent as a fresh query, PostgreSQL parsed and
    /// planned the four-table join for every change: with the topic's query, half its CPU for a change).
    struct ContactSnapshotStatement: PostgresPreparedStatement {
        static let name = "assent_contact_snapshot_v1"
        static let sql = """
            SELECT \(PostgresStore.contactColumns), k.wrapped_key, h.seq, h.hash, p.topic_key, p.state, p.since, p.expires_at, p.seq
            FROM contacts c
            LEFT JOIN contact_keys k ON k.contact_id = c.id
            LEFT JOIN chain_heads h ON h.contact_id = c.id
            LEFT JOIN preferences p ON p.contact_id = c.id
            WHERE c.id = $1
            """
        typealias Row = (ContactColumns, Data?, Int64?, Data?, String?, String?, Int64?, Int64?, Int64?)

        var id: UUID

        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 1)
            bindings.append(id)
            return bindings
        }

        func decodeRow(_ row: PostgresRow) throws -> Row {
            let (id, email, name, externalID, locale, createdAt, updatedAt, erasedAt, objectedAt, key, headSeq, headHash, topicKey, state, since, expiresAt, seq)
                = try row.decode((UUID, String?, String?, String?, String?, Int64, Int64, Int64?, Int64?, Data?, Int64?, Data?, String?, String?, Int64?, Int64?, Int64?).self)
            return Self.row(id, email, name, externalID, locale, createdAt, updatedAt, erasedAt, objectedAt, key, headSeq, headHash, topicKey, state, since, expiresAt, seq)
        }

        /// A row from its cells, in the statement's column order (the batch statement's after its ordinal).
        static func row(_ id: UUID, _ email: String?, _ name: String?, _ externalID: String?, _ locale: String?, _ createdAt: Int64, _ updatedAt: Int64,
                        _ erasedAt: Int64?, _ objectedAt: Int64?, _ key: Data?, _ headSeq: Int64?, _ headHash: Data?, _ topicKey: String?,
                        _ state: String?, _ since: Int64?, _ expiresAt: Int64?, _ seq: Int64?) -> Row {
            (ContactColumns(id: id, email: email, name: name, externalID: externalID, locale: locale, createdAt: createdAt, updatedAt: updatedAt,
                            erasedAt: erasedAt, objectedAt: objectedAt), key, headSeq, headHash, topicKey, state, since, expiresAt, seq)
        }
    }

    /// Several changes' reads in one statement, each contact looked up on its own through the
    /// indexes (the lateral subqueries, fenced by OFFSET 0, are not flattened into joins PostgreSQL
    /// might plan over scans), found again by its place in the array (one contact asked for twice is
    /// answered twice).
    struct ContactSnapshotsStatement: PostgresPreparedStatement {
        static let name = "assent_contact_snapshots_v1"
        static let sql = """
            SELECT a.i, \(PostgresStore.contactColumns), k.wrapped_key, h.seq, h.hash, p.topic_key, p.state, p.since, p.expires_at, p.seq
            FROM unnest($1::uuid[]) WITH ORDINALITY AS a(id, i)
            JOIN LATERAL (SELECT \(PostgresStore.contactColumnNames.joined(separator: ", ")) FROM contacts WHERE id = a.id OFFSET 0) c ON true
            LEFT JOIN LATERAL (SELECT wrapped_key FROM contact_keys WHERE contact_id = c.id OFFSET 0) k ON true
            LEFT JOIN LATERAL (SELECT seq, hash FROM chain_heads WHERE contact_id = c.id OFFSET 0) h ON true
            LEFT JOIN LATERAL (SELECT topic_key, state, since, expires_at, seq FROM preferences WHERE contact_id = c.id OFFSET 0) p ON true
            """
        typealias Row = (Int64, ContactSnapshotStatement.Row)

        var ids: [UUID]

        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 1)
            bindings.append(ids)
            return bindings
        }

        func decodeRow(_ row: PostgresRow) throws -> Row {
            let (ordinal, id, email, name, externalID, locale, createdAt, updatedAt, erasedAt, objectedAt, key, headSeq, headHash, topicKey, state, since, expiresAt, seq)
                = try row.decode((Int64, UUID, String?, String?, String?, String?, Int64, Int64, Int64?, Int64?, Data?, Int64?, Data?, String?, String?, Int64?, Int64?, Int64?).self)
            return (ordinal, ContactSnapshotStatement.row(id, email, name, externalID, locale, createdAt, updatedAt, erasedAt, objectedAt,
                                                          key, headSeq, headHash, topicKey, state, since, expiresAt, seq))
        }
    }

    /// The columns of a contact as a prepared statement names them (`contactColumns`, in this order).
    struct ContactColumns {
        var id: UUID, email: String?, name: String?, externalID: String?, locale: String?
        var createdAt: Int64, updatedAt: Int64, erasedAt: Int64?, objectedAt: Int64?
    }

    static let contactColumnNames = ["id", "email", "name", "external_id", "locale", "created_at", "updated_at", "erased_at", "objected_at"]
    static let contactColumns = contactColumnNames.map { "c." + $0 }.joined(separator: ", ")

    /// A contact from its columns (an erased one keeps a placeholder address); nil for a row with neither.
    static func contact(_ c: ContactColumns) -> Contact? {
        let erasedAt = c.erasedAt.map(Date.init(millisecondsSince1970:))
        guard let email = c.email.map(EmailAddress.init(stored:)) ?? (erasedAt != nil ? Contact.erasedPlaceholder(c.id) : nil) else { return nil }
        return Contact(id: c.id, email: email, name: c.name, externalID: c.externalID, locale: c.locale,
                       createdAt: Date(millisecondsSince1970: c.createdAt), updatedAt: Date(millisecondsSince1970: c.updatedAt),
                       erasedAt: erasedAt, objectedAt: c.objectedAt.map(Date.init(millisecondsSince1970:)))
    }

    public func contacts(externalIDs: [String]) async throws -> [Contact] {
        guard !externalIDs.isEmpty else { return [] }
        return try await rows("SELECT * FROM contacts WHERE external_id = ANY(\(externalIDs))").compactMap(Self.contact)
    }

    public func ledgerState(contactID: UUID) async throws -> LedgerState {
        // One round trip: the head (if any) and every preference row.
        let rows = try await rows("""
            SELECT h.seq AS head_seq, h.hash AS head_hash, p.topic_key, p.state, p.since, p.expires_at, p.seq
            FROM (SELECT \(contactID)::uuid AS contact_id) AS c
            LEFT JOIN chain_heads h ON h.contact_id = c.contact_id
            LEFT JOIN preferences p ON p.contact_id = c.contact_id
            """)
        var head = ChainHead.empty(contactID)
        var preferences: [String: Preference] = [:]
        for r in rows {
            if let seq = try r["head_seq"].decode(Int64?.self) {
                head = ChainHead(contactID: contactID, seq: seq, hash: try r["head_hash"].decode(Data.self))
            }
            if try r["topic_key"].decode(String?.self) != nil {
                let p = try Self.preference(r, contactID: contactID)
                preferences[p.topicKey] = p
            }
        }
        return LedgerState(head: head, preferences: preferences)
    }

    public func commit(_ commit: LedgerCommit) async throws {
        try await committer.commit(commit) { [self] group in try await self.commit(group: group) }
    }

    public func commit(group: [LedgerCommit]) async throws -> [(any Error)?] {
        await withTaskExecutorPreference(WriterLoop.executor) {
            // Optimistically the whole group in one transaction, with the few statements of a batch;
            // if any commit in it is refused, each is written again on its own so that only that one fails.
            if group.count > 1, (try? await commit(batch: group)) != nil { return group.map { _ in nil } }
            var errors: [(any Error)?] = []
            for commit in group {
                do {
                    try await writeAlone(commit)
                    errors.append(nil)
                } catch {
                    errors.append(error)
                }
            }
            return errors
        }
    }

    private func writeAlone(_ commit: LedgerCommit) async throws {
        do {
            try await transaction(on: writeClient) { c in try await write([commit], on: c, firstWritesInsert: false) }
        } catch {
            // Two first writers of a contact both found no head to lock; the
            // primary key (contact_id, seq) lets one win and refuses the other.
            if Self.uniqueViolation(error) != nil { throw StoreError.concurrentModification(contactID: commit.contactID) }
            throw error
        }
    }

    public func commit(batch: [LedgerCommit]) async throws {
        guard !batch.isEmpty else { return }
        // Heads are locked in contact order, so two batches never wait on each other in a circle.
        // (By each id's text made once: making two in every comparison was a fiftieth of a change's CPU.)
        let ordered = batch.map { ($0.contactID.uuidString, $0) }.sorted { $0.0 < $1.0 }.map(\.1)
        do {
            try await transaction(on: writeClient) { c in try await write(ordered, on: c, firstWritesInsert: true) }
        } catch {
            let state = (error as? PSQLError)?.serverInfo?[.sqlState]
            if Self.uniqueViolation(error) != nil || state == "40P01" { throw StoreError.concurrentModification(contactID: ordered[0].contactID) }
            throw error
        }
    }

    /// Writes commits (for different contacts) in the caller's transaction, with a
    /// few statements for the lot rather than several per event: an import chunk of
    /// 500 contacts made some 4,500 round trips before, and made the import crawl.
    /// With `firstWritesInsert`, the preferences and chain head of a contact written for the
    /// first time (expected head 0: it has neither yet) are inserted, not upserted: PostgreSQL's
    /// upsert inserts speculatively and confirms, which made the preferences of an import cost
    /// more than its events. Were a row there after all, the insert fails the batch with a unique
    /// violation, and its changes are written again one by one, by upsert (`writeAlone`).
    func write(_ commits: [LedgerCommit], on c: PostgresConnection, firstWritesInsert: Bool) async throws {
        let ids = commits.map(\.contactID)
        // Lock the head rows: a concurrent writer of the same contact waits here, then sees the moved head.
        var heads: [UUID: Int64] = [:]
        for r in try await rows("SELECT contact_id, seq FROM chain_heads WHERE contact_id = ANY(\(ids)) ORDER BY contact_id FOR UPDATE", on: c) {
            heads[try r["contact_id"].decode(UUID.self)] = try r["seq"].decode(Int64.self)
        }
        var states: [UUID: (erased: Bool, objected: Bool)] = [:]
        for r in try await rows("SELECT id, erased_at, objected_at FROM contacts WHERE id = ANY(\(ids))", on: c) {
            states[try r["id"].decode(UUID.self)] = (try r["erased_at"].decode(Int64?.self) != nil, try r["objected_at"].decode(Int64?.self) != nil)
        }
        for commit in commits {
            let id = commit.contactID
            guard (heads[id] ?? 0) == commit.expectedHead.seq else { throw StoreError.concurrentModification(contactID: id) }
            // Erased since the change was decided (erasure takes the same head lock): start again, and the re-read refuses it
            // (or, for someone else's opt-in, objected).
            if let state = states[id], state.erased || (state.objected && commit.optsInForSomeoneElse) {
                throw StoreError.concurrentModification(contactID: id)
            }
        }
        for commit in commits {
            let id = commit.contactID
            if let consume = commit.consumeToken {
                let updated = try await rows("""
                    UPDATE confirmation_tokens
                    SET confirmed_topics = ARRAY(SELECT DISTINCT unnest(confirmed_topics || \(consume.topics)) ORDER BY 1)
                    WHERE hash = \(consume.hash) AND superseded_at IS NULL RETURNING hash
                    """, on: c)
                // Missing or replaced since it was read: let the caller re-read and see which.
                if updated.isEmpty { throw StoreError.concurrentModification(contactID: id) }
            }
            if let token = commit.issueToken {
                try await c.query("""
                    UPDATE confirmation_tokens SET superseded_at = \(token.createdAt.millisecondsSince1970)
                    WHERE contact_id = \(id) AND superseded_at IS NULL
                    """, logger: logger)
                try await c.query("""
                    INSERT INTO confirmation_tokens (hash, contact_id, topics, confirmed_topics, created_at, expires_at)
                    VALUES (\(token.hash), \(id), \(token.topics), \(token.confirmedTopics), \(token.createdAt.millisecondsSince1970),
                        \(token.expiresAt.millisecondsSince1970))
                    """, logger: logger)
            }
            for item in commit.outbox {
                try await c.query("""
                    INSERT INTO outbox (id, contact_id, kind, payload, status, attempts, next_attempt_at, created_at)
                    VALUES (\(item.id), \(item.contactID), \(item.kind), \(item.payload), \(item.status.rawValue), \(item.attempts),
                        \(item.nextAttemptAt.millisecondsSince1970), \(item.createdAt.millisecondsSince1970))
                    """, logger: logger)
            }
            // After the head lock: one contact's deliveries get ordinals in commit order.
            try await insert(commit.webhooks, on: c)
        }
        let events = commits.flatMap { commit in commit.events.map { (commit.contactID, $0) } }
        for chunk in stride(from: 0, to: events.count, by: 1_000).map({ events[$0..<min($0 + 1_000, events.count)] }) {
            var q = PostgresQuery.StringInterpolation(literalCapacity: 400 + chunk.count * 90, interpolationCount: chunk.count * 21)
            q.appendLiteral("""
                INSERT INTO consent_events (contact_id, seq, id, topic_key, action, from_state, to_state, source, channel,
                    actor_kind, actor_id, occurred_at, recorded_at, expires_at, notice_version, form_id, form_version, batch_id,
                    sealed_evidence, prev_hash, hash) VALUES
                """)
            for (n, (id, e)) in chunk.enumerated() {
                q.appendLiteral(n == 0 ? " (" : ", (")
                q.appendInterpolation(id); q.appendLiteral(", "); q.appendInterpolation(e.seq); q.appendLiteral(", ")
                q.appendInterpolation(e.id); q.appendLiteral(", "); q.appendInterpolation(e.topicKey); q.appendLiteral(", ")
                q.appendInterpolation(e.action.rawValue); q.appendLiteral(", "); q.appendInterpolation(e.fromState.rawValue); q.appendLiteral(", ")
                q.appendInterpolation(e.toState.rawValue); q.appendLiteral(", "); q.appendInterpolation(e.source.rawValue); q.appendLiteral(", ")
                q.appendInterpolation(e.channel?.rawValue); q.appendLiteral(", "); q.appendInterpolation(e.actor.kind.rawValue); q.appendLiteral(", ")
                q.appendInterpolation(e.actor.id); q.appendLiteral(", "); q.appendInterpolation(e.occurredAt.millisecondsSince1970); q.appendLiteral(", ")
                q.appendInterpolation(e.recordedAt.millisecondsSince1970); q.appendLiteral(", "); q.appendInterpolation(e.expiresAt?.millisecondsSince1970)
                q.appendLiteral(", "); q.appendInterpolation(e.noticeVersion); q.appendLiteral(", "); q.appendInterpolation(e.formID); q.appendLiteral(", ")
                q.appendInterpolation(e.formVersion); q.appendLiteral(", "); q.appendInterpolation(e.batchID); q.appendLiteral(", ")
                try q.appendInterpolation(e.sealedEvidence); q.appendLiteral(", "); try q.appendInterpolation(e.prevHash); q.appendLiteral(", ")
                try q.appendInterpolation(e.hash); q.appendLiteral(")")
            }
            try await c.query(PostgresQuery(stringInterpolation: q), logger: logger)
        }
        // First writes (see above) apart from the rest, each part in order; `upsert` for the rest.
        let parts: [(upsert: Bool, commits: [LedgerCommit])] = firstWritesInsert
            ? [(false, commits.filter { $0.expectedHead.seq == 0 }), (true, commits.filter { $0.expectedHead.seq != 0 })]
            : [(true, commits)]
        for (upsert, part) in parts where !part.isEmpty {
            let preferences = part.flatMap { commit in commit.preferences.map { (commit.contactID, $0) } }
            for chunk in stride(from: 0, to: preferences.count, by: 2_000).map({ preferences[$0..<min($0 + 2_000, preferences.count)] }) {
                var q = PostgresQuery.StringInterpolation(literalCapacity: 300 + chunk.count * 40, interpolationCount: chunk.count * 6)
                q.appendLiteral("INSERT INTO preferences (contact_id, topic_key, state, since, expires_at, seq) VALUES")
                for (n, (id, p)) in chunk.enumerated() {
                    q.appendLiteral(n == 0 ? " (" : ", (")
                    q.appendInterpolation(id); q.appendLiteral(", "); q.appendInterpolation(p.topicKey); q.appendLiteral(", ")
                    q.appendInterpolation(p.state.rawValue); q.appendLiteral(", "); q.appendInterpolation(p.since.millisecondsSince1970); q.appendLiteral(", ")
                    q.appendInterpolation(p.expiresAt?.millisecondsSince1970); q.appendLiteral(", "); q.appendInterpolation(p.seq); q.appendLiteral(")")
                }
                if upsert {
                    q.appendLiteral("""
                         ON CONFLICT (contact_id, topic_key) DO UPDATE SET state = excluded.state, since = excluded.since,
                            expires_at = excluded.expires_at, seq = excluded.seq
                        """)
                }
                try await c.query(PostgresQuery(stringInterpolation: q), logger: logger)
            }
            for chunk in stride(from: 0, to: part.count, by: 5_000).map({ part[$0..<min($0 + 5_000, part.count)] }) {
                var q = PostgresQuery.StringInterpolation(literalCapacity: 200 + chunk.count * 20, interpolationCount: chunk.count * 3)
                q.appendLiteral("INSERT INTO chain_heads (contact_id, seq, hash) VALUES")
                for (n, commit) in chunk.enumerated() {
                    q.appendLiteral(n == 0 ? " (" : ", (")
                    q.appendInterpolation(commit.contactID); q.appendLiteral(", "); q.appendInterpolation(commit.newHead.seq); q.appendLiteral(", ")
                    try q.appendInterpolation(commit.newHead.hash); q.appendLiteral(")")
                }
                if upsert { q.appendLiteral(" ON CONFLICT (contact_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash") }
                try await c.query(PostgresQuery(stringInterpolation: q), logger: logger)
            }
        }
    }

    public func insertContacts(_ contacts: [NewContact]) async throws {
        guard !contacts.isEmpty else { return }
        try await mapUnique(value: { _ in "" }) {
            try await transaction { c in try await insertContacts(contacts, on: c) }
        }
    }

    /// New contacts' rows, a statement per table for the lot (a round trip per row made an import wait on the network).
    private func insertContacts(_ contacts: [NewContact], on c: PostgresConnection) async throws {
        let ids = contacts.map(\.contact.id), emails = contacts.map(\.contact.email.value)
        // postgres-nio's arrays hold no NULL: an optional text goes as its value and a flag.
        let names = contacts.map { $0.contact.name ?? "" }, hasName = contacts.map { $0.contact.name != nil }
        let externalIDs = contacts.map { $0.contact.externalID ?? "" }, hasExternalID = contacts.map { $0.contact.externalID != nil }
        let locales = contacts.map { $0.contact.locale ?? "" }, hasLocale = contacts.map { $0.contact.locale != nil }
        let created = contacts.map(\.contact.createdAt.millisecondsSince1970), updated = contacts.map(\.contact.updatedAt.millisecondsSince1970)
        try await c.query("""
            INSERT INTO contacts (id, email, name, external_id, locale, created_at, updated_at)
            SELECT id, email, CASE WHEN has_name THEN name END, CASE WHEN has_external_id THEN external_id END, CASE WHEN has_locale THEN locale END,
                   created_at, updated_at
            FROM unnest(\(ids)::uuid[], \(emails)::text[], \(names)::text[], \(hasName)::bool[], \(externalIDs)::text[], \(hasExternalID)::bool[],
                        \(locales)::text[], \(hasLocale)::bool[], \(created)::bigint[], \(updated)::bigint[])
                 WITH ORDINALITY AS u(id, email, name, has_name, external_id, has_external_id, locale, has_locale, created_at, updated_at, n)
            ORDER BY n
            """, logger: logger)
        try await c.query("""
            INSERT INTO contact_keys (contact_id, wrapped_key)
            SELECT id, decode(k, 'hex') FROM unnest(\(ids)::uuid[], \(contacts.map { $0.wrappedKey.hexString })::text[]) AS u(id, k)
            """, logger: logger)
        let withSecret = contacts.filter { $0.linkSecret != nil }
        if !withSecret.isEmpty {
            try await c.query("""
                INSERT INTO contact_link_secrets (contact_id, secret, created_at)
                SELECT id, decode(s, 'hex'), at FROM unnest(\(withSecret.map(\.contact.id))::uuid[], \(withSecret.map { $0.linkSecret!.hexString })::text[],
                                                            \(withSecret.map(\.contact.createdAt.millisecondsSince1970))::bigint[]) AS u(id, s, at)
                """, logger: logger)
        }
        for new in contacts where !new.webhooks.isEmpty { try await insert(new.webhooks, on: c) }
    }

    public func preferences(contactID: UUID) async throws -> [Preference] {
        try await rows("SELECT * FROM preferences WHERE contact_id = \(contactID) ORDER BY topic_key").map { try Self.preference($0, contactID: contactID) }
    }

    static func preference(_ r: PostgresRandomAccessRow, contactID: UUID) throws -> Preference {
        Preference(contactID: contactID, topicKey: try r["topic_key"].decode(String.self),
                   state: PreferenceState(rawValue: try r["state"].decode(String.self)) ?? .none,
                   since: Date(millisecondsSince1970: try r["since"].decode(Int64.self)),
                   expiresAt: try r["expires_at"].decode(Int64?.self).map(Date.init(millisecondsSince1970:)),
                   seq: try r["seq"].decode(Int64.self))
    }

    public func events(contactID: UUID, beforeSeq: Int64?, limit: Int) async throws -> [ConsentEvent] {
        try await rows("""
            SELECT \(unescaped: Self.eventColumns) FROM consent_events WHERE contact_id = \(contactID) AND seq < \(beforeSeq ?? Int64.max) ORDER BY seq DESC LIMIT \(limit)
            """).map(Self.event)
    }

    public func eventsPage(after: (contactID: UUID, seq: Int64)?, limit: Int) async throws -> [ConsentEvent] {
        let rows = if let after {
            try await rows("SELECT \(unescaped: Self.eventColumns) FROM consent_events WHERE (contact_id, seq) > (\(after.contactID), \(after.seq)) ORDER BY contact_id, seq LIMIT \(limit)")
        } else {
            try await rows("SELECT \(unescaped: Self.eventColumns) FROM consent_events ORDER BY contact_id, seq LIMIT \(limit)")
        }
        return try rows.map(Self.event)
    }

    public func preferencesPage(after: (contactID: UUID, topicKey: String)?, limit: Int) async throws -> [Preference] {
        let rows = if let after {
            try await rows("""
                SELECT * FROM preferences WHERE (contact_id, topic_key) > (\(after.contactID), \(after.topicKey)) ORDER BY contact_id, topic_key LIMIT \(limit)
                """)
        } else {
            try await rows("SELECT * FROM preferences ORDER BY contact_id, topic_key LIMIT \(limit)")
        }
        return try rows.map { try Self.preference($0, contactID: try $0["contact_id"].decode(UUID.self)) }
    }

    /// An event's columns in the order `event(_:)` reads them.
    static let eventColumns = """
        id, contact_id, seq, topic_key, action, from_state, to_state, source, channel, actor_kind, actor_id, occurred_at, \
        recorded_at, expires_at, notice_version, form_id, form_version, batch_id, sealed_evidence, prev_hash, hash
        """

    /// A row of `SELECT eventColumns`, read by position: by name, each of the 21 cells was a
    /// dictionary look-up of its column's name (a third of reading a 1,000-event export's rows).
    static func event(_ r: PostgresRandomAccessRow) throws -> ConsentEvent {
        ConsentEvent(
            id: try r[0].decode(UUID.self), contactID: try r[1].decode(UUID.self), seq: try r[2].decode(Int64.self),
            topicKey: try r[3].decode(String.self),
            action: ConsentAction(rawValue: try r[4].decode(String.self)) ?? .granted,
            fromState: PreferenceState(rawValue: try r[5].decode(String.self)) ?? .none,
            toState: PreferenceState(rawValue: try r[6].decode(String.self)) ?? .none,
            source: ConsentSource(rawValue: try r[7].decode(String.self)) ?? .api,
            channel: try r[8].decode(String?.self).flatMap(StaffChannel.init(rawValue:)),
            actor: Actor(kind: Actor.Kind(rawValue: try r[9].decode(String.self)) ?? .system, id: try r[10].decode(String?.self)),
            occurredAt: Date(millisecondsSince1970: try r[11].decode(Int64.self)),
            recordedAt: Date(millisecondsSince1970: try r[12].decode(Int64.self)),
            expiresAt: try r[13].decode(Int64?.self).map(Date.init(millisecondsSince1970:)),
            noticeVersion: try r[14].decode(Int?.self), formID: try r[15].decode(String?.self),
            formVersion: try r[16].decode(Int?.self), batchID: try r[17].decode(String?.self),
            sealedEvidence: try r[18].decode(Data?.self), prevHash: try r[19].decode(Data.self),
            hash: try r[20].decode(Data.self))
    }

    public func dueExpiries(now: Date, limit: Int) async throws -> [Preference] {
        try await rows("""
            SELECT * FROM preferences WHERE state = 'granted' AND expires_at IS NOT NULL AND expires_at <= \(now.millisecondsSince1970)
            ORDER BY expires_at, contact_id LIMIT \(limit)
            """).map { try Self.preference($0, contactID: try $0["contact_id"].decode(UUID.self)) }
    }

    /// Four: the lookups run in PostgreSQL's processes and each read's rows come back at once, so
    /// with more runs than cores the server decodes one run's rows while PostgreSQL reads the
    /// next (10,000 addresses, 100,000 contacts, alternating: 47.9, 51.0 ms as two runs -> 45.1, 46.8 as four).
    public var batchCheckReads: Int { 4 }

    public func checkRows(emails: [EmailAddress], topicKey: String) async throws -> [String: CheckRow] {
        guard !emails.isEmpty else { return [:] }
        let found = OnEventLoop([String: CheckRow](minimumCapacity: emails.count))
        // Unprepared, so that its thousands of rows come as they are read (see `eachRow`), each decoded
        // then, its cells in order (as one tuple, through postgres-nio's generic decoding, a row cost
        // more). Each address is looked up on its own through the indexes (the lateral subqueries,
        // fenced by OFFSET 0, cannot be flattened): planned for an actual list of 5,000 addresses, the
        // plain join became a hash join over seq scans of contacts and preferences (38 ms a run against 20-22 ms).
        try await eachRow("""
            SELECT c.id, c.email, p.topic_key, p.state, p.since, p.expires_at, p.seq
            FROM unnest(\(emails.map(\.value))::text[]) AS a(email)
            JOIN LATERAL (SELECT id, email FROM contacts WHERE email = a.email OFFSET 0) c ON true
            LEFT JOIN LATERAL (SELECT topic_key, state, since, expires_at, seq FROM preferences
                               WHERE contact_id = c.id AND topic_key = \(topicKey) OFFSET 0) p ON true
            """) { row in
            var cells = row.makeIterator()
            guard let id = cells.next(), let email = cells.next(), let topic = cells.next(), let state = cells.next(),
                  let since = cells.next(), let expiresAt = cells.next(), let seq = cells.next() else {
                throw StoreError.unavailable("PostgreSQL answered a batch check with fewer columns than its query names")
            }
            let contactID = try id.decode(UUID.self)
            found.value[try email.decode(String.self)] = CheckRow(contactID: contactID, preference: Self.checkedPreference(
                contactID, topicKey, try topic.decode(String?.self), try state.decode(String?.self), try since.decode(Int64?.self),
                try expiresAt.decode(Int64?.self), try seq.decode(Int64?.self)))
        }
        return found.value
    }

    /// The preference of a check's row: none where the contact has no row for the topic (the LEFT JOIN's nulls).
    static func checkedPreference(_ contactID: UUID, _ topicKey: String, _ topic: String?, _ state: String?, _ since: Int64?,
                                  _ expiresAt: Int64?, _ seq: Int64?) -> Preference? {
        state.map { state in
            Preference(contactID: contactID, topicKey: topic ?? topicKey, state: PreferenceState(rawValue: state) ?? .none,
                       since: Date(millisecondsSince1970: since ?? 0), expiresAt: expiresAt.map(Date.init(millisecondsSince1970:)), seq: seq ?? 0)
        }
    }

    public func suppressedHashes(_ hashes: [Data]) async throws -> Set<Data> {
        guard !hashes.isEmpty else { return [] }
        // (hexString: String(format:) per byte had this query at a third of a PostgreSQL import's CPU.)
        let hexes = hashes.map(\.hexString)
        return Set(try await rows("""
            SELECT email_hash FROM suppressions WHERE email_hash IN (SELECT decode(h, 'hex') FROM unnest(\(hexes)::text[]) AS h)
            """).map { try $0["email_hash"].decode(Data.self) })
    }

    /// The columns an audience page's query returns: every one a member has, or those the rows path writes.
    enum AudienceColumns {
        case all, written

        var sql: String {
            switch self {
            case .all: "c.id, c.email, c.name, c.external_id, c.locale, c.created_at, c.updated_at, c.objected_at, p.topic_key, p.state, p.since, p.expires_at, p.seq, s.secret"
            case .written: "c.id, c.email, c.name, c.external_id, c.locale, p.topic_key, p.since, s.secret"
            }
        }
    }

    /// An audience page's query.
    static func audienceQuery(topics: [String], now: Date, after: UUID?, through: UUID? = nil, rowLimit: Int,
                              columns: AudienceColumns = .all) -> PostgresQuery {
        let at = now.millisecondsSince1970
        // One pass in contact-id order from where the last page ended: the grants by the
        // preferences' primary key, each contact and link secret by theirs, so a page costs its own
        // rows. (A page of distinct ids first, joined back, began every page's scan of the
        // preferences at the first contact and hashed the whole contacts table: 100,000 contacts
        // took 4.3 s, and a page's cost grew with its position.)
        // The first page starts above the nil UUID, which is below every id (ids carry version bits, so are never nil).
        // Each table is bounded by the start, so that a merge join does not walk contacts or secrets from the first id.
        // A range's end (see `walkRanges`) bounds each table likewise; without one, the max UUID does.
        let start = after ?? Self.nilUUID, end = through ?? Self.maxUUID
        return """
            SELECT \(unescaped: columns.sql)
            FROM preferences p JOIN contacts c ON c.id = p.contact_id
            LEFT JOIN contact_link_secrets s ON s.contact_id = p.contact_id AND s.contact_id > \(start) AND s.contact_id <= \(end)
            WHERE p.topic_key = ANY(\(topics)) AND p.state = 'granted' AND (p.expires_at IS NULL OR p.expires_at > \(at))
              AND c.email IS NOT NULL AND p.contact_id > \(start) AND c.id > \(start) AND p.contact_id <= \(end) AND c.id <= \(end)
            ORDER BY p.contact_id, p.topic_key LIMIT \(rowLimit)
            """
    }

    /// The rows of `audiencePage` as bytes (see `AudienceRowsPage`): text and secrets copied from
    /// the cells' bytes, with no member made (a String, Data or dictionary per field and grant).
    public func audienceRowsPage(topics: [String], now: Date, after: UUID?, limit: Int) async throws -> AudienceRowsPage {
        try await audienceRowsPage(topics: topics, now: now, after: after, through: nil, limit: limit)
    }

    /// The next two ranges' first pages are read while a range is handed on (see `Ledger.walkRanges`):
    /// a page at a time, PostgreSQL and the event loop taking the page in took turns (each about
    /// half busy). With a range's further page and the next boundaries, up to four reader
    /// connections per export; three at once were no faster than two.
    public var audienceReadsAtOnce: Int { 2 }

    public func contactBoundaries(after: UUID?, step: Int, count: Int) async throws -> [UUID] {
        // The contacts' id index walked from `after` for `step * count` ids at most (an index-only
        // scan where the visibility map allows; 100,000 ids in ~15 ms here).
        let start = after ?? Self.nilUUID, step = max(1, step), window = max(1, step) * max(1, count)
        var ends: [UUID] = []
        for row in try await allRows("""
            SELECT id FROM (SELECT id, row_number() OVER (ORDER BY id) AS n
                            FROM (SELECT id FROM contacts WHERE id > \(start) ORDER BY id LIMIT \(window)) w) t
            WHERE n % \(step) = 0 ORDER BY id
            """, reader: true) {
            ends.append(try row.decode(UUID.self))
        }
        return ends
    }

    public func audienceRowsPage(topics: [String], now: Date, after: UUID?, through: UUID?, limit: Int) async throws -> AudienceRowsPage {
        guard !topics.isEmpty else { return AudienceRowsPage() }
        let rowLimit = max(2, limit) * topics.count
        // Made as the rows arrive (gathered first, the page was made only after PostgreSQL had sent
        // the last row, and the two took turns instead of running side by side).
        let builder = AudienceRowsBuilder(topics: topics, limit: limit)
        let query = Self.audienceQuery(topics: topics, now: now, after: after, through: through, rowLimit: rowLimit, columns: .written)
        if through == nil {
            // Unbounded (an export's first page, read whole, and the pages of its last range, which holds
            // fewer contacts than a range): the planner's own choice, which finds a small audience
            // through the preferences' indexes.
            try await eachRow(query, reader: true) { try builder.add($0) }
        } else {
            try await transaction(on: readClient) { [logger] connection in
                // A range of known ends: merge joins over the three primary keys, in the order the page
                // is written, with no hash and no sort. The planner takes the range's bound on both
                // sides of a join for two independent filters and expects a range of 4,000 grants to
                // have 158; it then hashes the contacts, sorts the grants and sorts the result again:
                // 5.2 ms of PostgreSQL's execution per range against 3.0 ms (100,000 contacts, one
                // topic, median of seven EXPLAIN ANALYZE). Set for this transaction alone, at the price
                // of three statements' round trips (BEGIN, this, COMMIT) per page.
                try await connection.query("SELECT set_config('enable_hashjoin', 'off', true), set_config('enable_sort', 'off', true)", logger: logger)
                try await Self.eachRow(query, on: connection, logger: logger) { try builder.add($0) }
            }
        }
        builder.page.end(rowsRead: builder.rows, rowLimit: rowLimit, topicCount: topics.count)
        return builder.page
    }

    /// An audience page made from its query's rows as PostgreSQL sends them: touched only by the
    /// query's `onRow` callback until the query completes (see `OnEventLoop`), so its properties
    /// go without Swift's run-time exclusivity checks, which cost more than a cell's copy here.
    final class AudienceRowsBuilder: @unchecked Sendable {
        @exclusivity(unchecked) var page = AudienceRowsPage()
        @exclusivity(unchecked) var rows = 0
        let topicKeys: [[UInt8]]

        init(topics: [String], limit: Int) {
            topicKeys = topics.map { Array($0.utf8) }
            page.rows.reserveCapacity(limit)
        }

        /// Adds a row of the query's columns this path writes, its cells taken in order (without
        /// `makeRandomAccess`, an array of the row's buffers per row): id, email, name,
        /// external_id, locale, topic_key, since, secret.
        func add(_ row: PostgresRow) throws {
            rows += 1
            var cells = row.makeIterator()
            guard let idCell = cells.next(), let email = cells.next(), let name = cells.next(), let externalID = cells.next(),
                  let locale = cells.next(), let topicCell = cells.next(), let since = cells.next(), let secret = cells.next() else {
                throw StoreError.unavailable("PostgreSQL answered an audience page with fewer columns than its query names")
            }
            guard let key = topicCell.bytes, let topic = topicKeys.firstIndex(where: { $0.elementsEqual(key.readableBytesView) }) else { return }
            try page.add(id: try idCell.decode(UUID.self), AudienceRowsPage.Grant(topic: topic, sinceMilliseconds: try since.decode(Int64.self))) { page in
                // Text cells are their UTF-8 in either format; a bytea is its bytes in binary (postgres-nio's), else decoded.
                (Self.field(email, &page), Self.field(name, &page), Self.field(externalID, &page), Self.field(locale, &page),
                 secret.dataType == .bytea && secret.format != .binary ? page.field(try secret.decode(Data?.self)) : Self.field(secret, &page))
            }
        }

        /// A cell's bytes appended to the page where they lie (through a ByteBufferView, each was
        /// copied by a generic collection append).
        private static func field(_ cell: PostgresCell, _ page: inout AudienceRowsPage) -> AudienceRowsPage.Field {
            guard let bytes = cell.bytes else { return nil }
            return bytes.withUnsafeReadableBytes { page.field($0) }
        }
    }

    public func audiencePage(topics: [String], now: Date, after: UUID?, limit: Int) async throws -> [AudienceMember] {
        guard !topics.isEmpty else { return [] }
        let rowLimit = max(2, limit) * topics.count
        let select = Self.audienceQuery(topics: topics, now: now, after: after, rowLimit: rowLimit)
        var members: [AudienceMember] = []
        var rows = 0
        // Read by column position (by name, each cell was a dictionary look-up).
        for row in try await allRows(select, reader: true) {
            rows += 1
            let r = row.makeRandomAccess()
            let id = try r[0].decode(UUID.self), topic = try r[8].decode(String.self)
            let preference = Preference(contactID: id, topicKey: topic, state: PreferenceState(rawValue: try r[9].decode(String.self)) ?? .none,
                                        since: Date(millisecondsSince1970: try r[10].decode(Int64.self)),
                                        expiresAt: try r[11].decode(Int64?.self).map(Date.init(millisecondsSince1970:)), seq: try r[12].decode(Int64.self))
            if members.last?.contact.id == id {
                members[members.count - 1].grants[topic] = preference
                continue
            }
            // Erased contacts have no email and never reach the page.
            let contact = Contact(id: id, email: EmailAddress(stored: try r[1].decode(String.self)), name: try r[2].decode(String?.self),
                                  externalID: try r[3].decode(String?.self), locale: try r[4].decode(String?.self),
                                  createdAt: Date(millisecondsSince1970: try r[5].decode(Int64.self)),
                                  updatedAt: Date(millisecondsSince1970: try r[6].decode(Int64.self)),
                                  erasedAt: nil, objectedAt: try r[7].decode(Int64?.self).map(Date.init(millisecondsSince1970:)))
            members.append(AudienceMember(contact: contact, grants: [topic: preference], linkSecret: try r[13].decode(Data?.self)))
        }
        // A full page may end part way through a contact's grants: that contact starts the next page.
        if rows == rowLimit && topics.count > 1 && members.count > 1 { members.removeLast() }
        return members
    }

    static let nilUUID = UUID(uuid: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    /// Above every id (PostgreSQL orders UUIDs by their bytes).
    static let maxUUID = UUID(uuid: (255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255))

    public func refreshStatistics() async throws {
        try await client.query("ANALYZE contacts, contact_keys, contact_link_secrets, preferences, consent_events, chain_heads", logger: logger)
    }

    /// The send path's read. While `checkReadWidth` checks are being read, those that arrive queue
    /// and are then read together, in one query (`CheckRowsStatement`): each check otherwise paid
    /// postgres-nio's and PostgreSQL's per-query price (connection lease, bind, send, executor hops,
    /// the backend's wake-up) on its own, most of the server's and PostgreSQL's CPU per check.
    /// A check that finds fewer reads out is read at once, alone, as before.
    public func checkRow(email: EmailAddress, topicKey: String) async throws -> CheckRow? {
        try await checkReads.read(CheckKey(address: email.value, topicKey: topicKey))
    }

    /// How many reads carried how many single checks so far.
    public var checkReadStatistics: (reads: Int, keys: Int) { checkReads.statistics }

    /// How many check reads run at once before checks queue to share one.
    static let checkReadWidth = 2

    struct CheckKey: Sendable {
        var address: String
        var topicKey: String
    }

    /// The rows of checks, in the checks' order (nil: no contact has the address).
    static func checkRows(_ keys: [CheckKey], client: PostgresClient, logger: Logger) async throws -> [CheckRow?] {
        if keys.count == 1 {
            var found: CheckRow?
            // Read to the end (one row at most: emails are unique), so the connection goes back clean.
            for try await (contactID, topic, state, since, expiresAt, seq) in try await client.execute(
                CheckRowStatement(topicKey: keys[0].topicKey, address: keys[0].address), logger: logger) {
                found = CheckRow(contactID: contactID, preference: checkedPreference(contactID, keys[0].topicKey, topic, state, since, expiresAt, seq))
            }
            return [found]
        }
        var found = [CheckRow?](repeating: nil, count: keys.count)
        for try await (ordinal, contactID, topic, state, since, expiresAt, seq) in try await client.execute(
            CheckRowsStatement(topicKey: keys.map(\.topicKey), address: keys.map(\.address)), logger: logger) {
            let index = Int(ordinal) - 1
            guard found.indices.contains(index) else { continue }
            found[index] = CheckRow(contactID: contactID, preference: checkedPreference(contactID, keys[index].topicKey, topic, state, since, expiresAt, seq))
        }
        return found
    }

    /// Several checks' reads in one statement, each check looked up on its own through the indexes
    /// (the lateral subqueries, fenced by OFFSET 0, are not flattened into a join PostgreSQL
    /// might plan over scans). A check is found by its place in the arrays (the ordinality),
    /// so one address checked twice in a batch is answered twice.
    struct CheckRowsStatement: CheckStatement {
        static let name = "assent_check_rows_v2"
        static let sql = """
            SELECT a.i, c.id, p.topic_key, p.state, p.since, p.expires_at, p.seq
            FROM unnest($2::text[], $1::text[]) WITH ORDINALITY AS a(email, topic, i)
            JOIN LATERAL (SELECT id FROM contacts WHERE email = a.email OFFSET 0) c ON true
            LEFT JOIN LATERAL (SELECT topic_key, state, since, expires_at, seq FROM preferences
                               WHERE contact_id = c.id AND topic_key = a.topic OFFSET 0) p ON true
            """
        typealias Row = (Int64, UUID, String?, String?, Int64?, Int64?, Int64?)

        var topicKey: [String]
        var address: [String]

        func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
    }

    /// A check's read, bound to the topic or topics ($1) and the address or addresses ($2) it looks up.
    protocol CheckStatement: PostgresPreparedStatement {
        associatedtype TopicKey: PostgresEncodable
        associatedtype Address: PostgresEncodable
        var topicKey: TopicKey { get }
        var address: Address { get }
    }

    /// The single check's read, prepared once per connection: sent as a fresh query, PostgreSQL
    /// parsed and planned the join for every check. The send path's one query; the result's
    /// columns are named, so a later migration that adds columns does not invalidate it.
    struct CheckRowStatement: CheckStatement {
        static let name = "assent_check_row_v1"
        static let sql = """
            SELECT c.id, p.topic_key, p.state, p.since, p.expires_at, p.seq
            FROM contacts c LEFT JOIN preferences p ON p.contact_id = c.id AND p.topic_key = $1
            WHERE c.email = $2
            """
        typealias Row = (UUID, String?, String?, Int64?, Int64?, Int64?)

        var topicKey: String
        var address: String

        func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
    }

    /// Reads every chain in one consistent snapshot (a REPEATABLE READ,
    /// read-only transaction, on the read replica when configured), a page of
    /// contacts at a time, so memory stays bounded however large the ledger.
    public func scanChains(_ body: @Sendable (ChainSnapshot) throws -> Void) async throws {
        let page = 1_000
        /// A page of contacts' rows as they came, decoded later.
        struct Page: Sendable {
            var heads: [PostgresRandomAccessRow], events: [PostgresRandomAccessRow], preferences: [PostgresRandomAccessRow]
            var lastID: UUID
        }
        try await readClient.withConnection { c in
            try await c.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", logger: logger)
            do {
                /// The page after `after`; nil past the last.
                @Sendable func read(after: UUID?) async throws -> Page? {
                    let heads = if let after {
                        try await rows("SELECT * FROM chain_heads WHERE contact_id > \(after) ORDER BY contact_id LIMIT \(page)", on: c)
                    } else {
                        try await rows("SELECT * FROM chain_heads ORDER BY contact_id LIMIT \(page)", on: c)
                    }
                    guard let last = heads.last else { return nil }
                    let first = try heads[0]["contact_id"].decode(UUID.self), lastID = try last["contact_id"].decode(UUID.self)
                    // The page's range of ids, so each read walks its stretch of an index (the heads are in id order).
                    async let events = rows("""
                        SELECT \(unescaped: Self.eventColumns) FROM consent_events WHERE contact_id BETWEEN \(first) AND \(lastID) ORDER BY contact_id, seq
                        """, on: c)
                    async let preferences = rows("SELECT * FROM preferences WHERE contact_id BETWEEN \(first) AND \(lastID)", on: c)
                    return Page(heads: heads, events: try await events, preferences: try await preferences, lastID: lastID)
                }
                // The next page is read while this one is decoded and handed on: PostgreSQL and the
                // decoding no longer wait for each other.
                var next = try await read(after: nil)
                while let current = next {
                    async let following = read(after: current.lastID)
                    var events: [UUID: [ConsentEvent]] = [:]
                    for r in current.events {
                        let e = try Self.event(r)
                        events[e.contactID, default: []].append(e)
                    }
                    var preferences: [UUID: [Preference]] = [:]
                    for r in current.preferences {
                        let id = try r["contact_id"].decode(UUID.self)
                        preferences[id, default: []].append(try Self.preference(r, contactID: id))
                    }
                    for h in current.heads {
                        let id = try h["contact_id"].decode(UUID.self)
                        let head = ChainHead(contactID: id, seq: try h["seq"].decode(Int64.self), hash: try h["hash"].decode(Data.self))
                        try body(ChainSnapshot(contactID: id, events: events[id] ?? [], head: head, preferences: preferences[id] ?? []))
                    }
                    next = try await following
                }
                // Events or preferences whose contact has no head at all: the head row was removed.
                let orphans = try await rows("""
                    SELECT DISTINCT contact_id FROM consent_events e WHERE NOT EXISTS (SELECT 1 FROM chain_heads h WHERE h.contact_id = e.contact_id)
                    UNION
                    SELECT DISTINCT contact_id FROM preferences p WHERE NOT EXISTS (SELECT 1 FROM chain_heads h WHERE h.contact_id = p.contact_id)
                    ORDER BY contact_id
                    """, on: c)
                for o in orphans {
                    let id = try o["contact_id"].decode(UUID.self)
                    let events = try await rows("SELECT \(unescaped: Self.eventColumns) FROM consent_events WHERE contact_id = \(id) ORDER BY seq", on: c).map(Self.event)
                    let preferences = try await rows("SELECT * FROM preferences WHERE contact_id = \(id)", on: c).map { try Self.preference($0, contactID: id) }
                    try body(ChainSnapshot(contactID: id, events: events, head: nil, preferences: preferences))
                }
                try await c.query("COMMIT", logger: logger)
            } catch {
                _ = try? await c.query("ROLLBACK", logger: logger)
                throw error
            }
        }
    }

    // MARK: Double opt-in and outbox

    public func confirmationToken(hash: Data) async throws -> ConfirmationToken? {
        try await confirmationToken(rows("SELECT * FROM confirmation_tokens WHERE hash = \(hash)").first)
    }

    public func latestConfirmationToken(contactID: UUID) async throws -> ConfirmationToken? {
        try await confirmationToken(rows("SELECT * FROM confirmation_tokens WHERE contact_id = \(contactID) ORDER BY created_at DESC, hash DESC LIMIT 1").first)
    }

    private func confirmationToken(_ row: PostgresRandomAccessRow?) throws -> ConfirmationToken? {
        try row.map { r in
            ConfirmationToken(hash: try r["hash"].decode(Data.self), contactID: try r["contact_id"].decode(UUID.self),
                              topics: try r["topics"].decode([String].self), confirmedTopics: try r["confirmed_topics"].decode([String].self),
                              createdAt: Date(millisecondsSince1970: try r["created_at"].decode(Int64.self)),
                              expiresAt: Date(millisecondsSince1970: try r["expires_at"].decode(Int64.self)),
                              supersededAt: try r["superseded_at"].decode(Int64?.self).map(Date.init(millisecondsSince1970:)))
        }
    }

    public func supersedeConfirmationTokens(contactID: UUID, at: Date) async throws {
        try await client.query("""
            UPDATE confirmation_tokens SET superseded_at = \(at.millisecondsSince1970) WHERE contact_id = \(contactID) AND superseded_at IS NULL
            """, logger: logger)
    }

    /// `FOR UPDATE SKIP LOCKED`: any number of workers in any number of
    /// processes claim disjoint items with no coordinator; the lease in
    /// `claimed_until` hands an item back if its worker dies mid-send.
    public func claimOutbox(now: Date, limit: Int, lease: TimeInterval) async throws -> [OutboxItem] {
        let ms = now.millisecondsSince1970
        return try await rows("""
            UPDATE outbox SET attempts = attempts + 1, claimed_until = \(now.addingTimeInterval(lease).millisecondsSince1970)
            WHERE id IN (
                SELECT id FROM outbox
                WHERE status = 'pending' AND next_attempt_at <= \(ms) AND (claimed_until IS NULL OR claimed_until < \(ms))
                ORDER BY next_attempt_at, created_at LIMIT \(limit)
                FOR UPDATE SKIP LOCKED)
            RETURNING *
            """).map(Self.outboxItem).sorted { ($0.nextAttemptAt, $0.createdAt) < ($1.nextAttemptAt, $1.createdAt) }
    }

    static func outboxItem(_ r: PostgresRandomAccessRow) throws -> OutboxItem {
        OutboxItem(id: try r["id"].decode(UUID.self), contactID: try r["contact_id"].decode(UUID?.self), kind: try r["kind"].decode(String.self),
                   payload: try r["payload"].decode(Data.self), status: OutboxItem.Status(rawValue: try r["status"].decode(String.self)) ?? .dead,
                   attempts: try r["attempts"].decode(Int.self),
                   nextAttemptAt: Date(millisecondsSince1970: try r["next_attempt_at"].decode(Int64.self)),
                   lastError: try r["last_error"].decode(String?.self),
                   createdAt: Date(millisecondsSince1970: try r["created_at"].decode(Int64.self)),
                   sentAt: try r["sent_at"].decode(Int64?.self).map(Date.init(millisecondsSince1970:)))
    }

    public func completeOutbox(id: UUID, at: Date, payload: Data) async throws {
        try await client.query("""
            UPDATE outbox SET status = 'sent', sent_at = \(at.millisecondsSince1970), payload = \(payload), last_error = NULL, claimed_until = NULL
            WHERE id = \(id) AND status = 'pending'
            """, logger: logger)
    }

    public func failOutbox(id: UUID, error: String, retryAt: Date?) async throws {
        if let retryAt {
            try await client.query("""
                UPDATE outbox SET last_error = \(error), next_attempt_at = \(retryAt.millisecondsSince1970), claimed_until = NULL WHERE id = \(id) AND status = 'pending'
                """, logger: logger)
        } else {
            try await client.query("UPDATE outbox SET last_error = \(error), status = 'dead', claimed_until = NULL WHERE id = \(id) AND status = 'pending'", logger: logger)
        }
    }

    public func recordVerifyRun(_ run: VerifyRun) async throws {
        _ = try await rows("""
            INSERT INTO verify_runs (finished_at, seconds, contacts, events, breaks, origin)
            VALUES (\(run.finishedAt.millisecondsSince1970), \(run.seconds), \(Int64(run.contacts)), \(Int64(run.events)), \(Int64(run.breaks)), \(run.origin))
            """)
    }

    public func lastVerifyRun() async throws -> VerifyRun? {
        try await rows("SELECT finished_at, seconds, contacts, events, breaks, origin FROM verify_runs ORDER BY id DESC LIMIT 1").first.map { r in
            VerifyRun(finishedAt: Date(millisecondsSince1970: try r["finished_at"].decode(Int64.self)), seconds: try r["seconds"].decode(Double.self),
                      contacts: Int(try r["contacts"].decode(Int64.self)), events: Int(try r["events"].decode(Int64.self)),
                      breaks: Int(try r["breaks"].decode(Int64.self)), origin: try r["origin"].decode(String.self))
        }
    }

    public func outboxBacklog() async throws -> (pending: Int, oldestCreatedAt: Date?) {
        let row = try await rows("SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox WHERE status = 'pending'").first
        return (Int(try row?["n"].decode(Int64.self) ?? 0), try row?["oldest"].decode(Int64?.self).map(Date.init(millisecondsSince1970:)))
    }

    public func outboxItems(status: OutboxItem.Status?, limit: Int) async throws -> [OutboxItem] {
        let rows = if let status {
            try await rows("SELECT * FROM outbox WHERE status = \(status.rawValue) ORDER BY created_at DESC, id DESC LIMIT \(limit)")
        } else {
            try await rows("SELECT * FROM outbox ORDER BY created_at DESC, id DESC LIMIT \(limit)")
        }
        return try rows.map(Self.outboxItem)
    }

    public func retryOutbox(id: UUID?, now: Date) async throws -> Int {
        let rows = if let id {
            try await rows("""
                UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = \(now.millisecondsSince1970), claimed_until = NULL
                WHERE status = 'dead' AND id = \(id) RETURNING id
                """)
        } else {
            try await rows("""
                UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = \(now.millisecondsSince1970), claimed_until = NULL
                WHERE status = 'dead' RETURNING id
                """)
        }
        return rows.count
    }

    // MARK: Receipts

    public func signingKeys() async throws -> [SigningKeyRecord] {
        try await rows("SELECT * FROM signing_keys ORDER BY created_at, key_id").map {
            SigningKeyRecord(keyID: try $0["key_id"].decode(String.self), sealedPrivateKey: try $0["sealed_private_key"].decode(Data.self),
                             createdAt: Date(millisecondsSince1970: try $0["created_at"].decode(Int64.self)))
        }
    }

    public func insertSigningKey(_ key: SigningKeyRecord) async throws {
        try await mapUnique(value: { _ in key.keyID }) {
            try await client.query("""
                INSERT INTO signing_keys (key_id, sealed_private_key, created_at) VALUES (\(key.keyID), \(key.sealedPrivateKey), \(key.createdAt.millisecondsSince1970))
                """, logger: logger)
        }
    }

    public func event(id: UUID) async throws -> ConsentEvent? {
        try await rows("SELECT \(unescaped: Self.eventColumns) FROM consent_events WHERE id = \(id)").first.map(Self.event)
    }

    public func searchContacts(_ text: String, limit: Int) async throws -> [Contact] {
        let pattern = "%" + text.lowercased().replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "%", with: "\\%")
            .replacingOccurrences(of: "_", with: "\\_") + "%"
        return try await rows("""
            SELECT * FROM contacts WHERE email LIKE \(pattern) OR lower(name) LIKE \(pattern) OR external_id = \(text)
            ORDER BY email LIMIT \(limit)
            """).compactMap(Self.contact)
    }

    // MARK: Forms

    public func insertForm(_ form: Form) async throws {
        let definition = try FormJSON.encode(form.definition)
        try await mapUnique(value: { _ in form.id }) {
            try await transaction { c in
                try await c.query("""
                    INSERT INTO forms (id, current_version, status, created_at, updated_at)
                    VALUES (\(form.id), \(form.version), \(form.status.rawValue), \(form.createdAt.millisecondsSince1970),
                        \(form.versionCreatedAt.millisecondsSince1970))
                    """, logger: logger)
                try await c.query("""
                    INSERT INTO form_versions (form_id, version, definition, created_at)
                    VALUES (\(form.id), \(form.version), \(definition), \(form.versionCreatedAt.millisecondsSince1970))
                    """, logger: logger)
            }
        }
    }

    public func appendFormVersion(_ form: Form) async throws {
        let definition = try FormJSON.encode(form.definition)
        do {
            try await transaction { c in
                // The row lock orders concurrent saves of one form.
                guard let current = try await rows("SELECT current_version FROM forms WHERE id = \(form.id) FOR UPDATE", on: c).first
                else { throw StoreError.notFound(what: "form", id: form.id) }
                guard form.version == (try current["current_version"].decode(Int.self)) + 1 else {
                    throw StoreError.duplicate(field: "version", value: "\(form.version)")
                }
                try await c.query("""
                    INSERT INTO form_versions (form_id, version, definition, created_at)
                    VALUES (\(form.id), \(form.version), \(definition), \(form.versionCreatedAt.millisecondsSince1970))
                    """, logger: logger)
                try await c.query("""
                    UPDATE forms SET current_version = \(form.version), updated_at = \(form.versionCreatedAt.millisecondsSince1970)
                    WHERE id = \(form.id)
                    """, logger: logger)
            }
        } catch where Self.uniqueViolation(error) != nil {
            throw StoreError.duplicate(field: "version", value: "\(form.version)")
        }
    }

    public func setFormStatus(id: String, status: Form.Status, at: Date) async throws {
        let updated = try await rows("UPDATE forms SET status = \(status.rawValue), updated_at = \(at.millisecondsSince1970) WHERE id = \(id) RETURNING id")
        if updated.isEmpty { throw StoreError.notFound(what: "form", id: id) }
    }

    public func form(id: String) async throws -> Form? {
        try await rows("""
            SELECT f.id, f.status, f.created_at, v.version, v.definition, v.created_at AS version_created_at
            FROM forms f JOIN form_versions v ON v.form_id = f.id
            WHERE f.id = \(id) AND v.version = f.current_version
            """).first.map(Self.form)
    }

    public func form(id: String, version: Int) async throws -> Form? {
        try await rows("""
            SELECT f.id, f.status, f.created_at, v.version, v.definition, v.created_at AS version_created_at
            FROM forms f JOIN form_versions v ON v.form_id = f.id
            WHERE f.id = \(id) AND v.version = \(version)
            """).first.map(Self.form)
    }

    public func forms(includeRetired: Bool) async throws -> [Form] {
        try await rows("""
            SELECT f.id, f.status, f.created_at, v.version, v.definition, v.created_at AS version_created_at
            FROM forms f JOIN form_versions v ON v.form_id = f.id
            WHERE v.version = f.current_version AND (\(includeRetired) OR f.status = 'active')
            ORDER BY f.id
            """).map(Self.form)
    }

    static func form(_ r: PostgresRandomAccessRow) throws -> Form {
        Form(id: try r["id"].decode(String.self), version: try r["version"].decode(Int.self),
             status: Form.Status(rawValue: try r["status"].decode(String.self)) ?? .active,
             definition: try FormJSON.decode(try r["definition"].decode(String.self)),
             createdAt: Date(millisecondsSince1970: try r["created_at"].decode(Int64.self)),
             versionCreatedAt: Date(millisecondsSince1970: try r["version_created_at"].decode(Int64.self)))
    }

    // MARK: Contact links

    public func linkSecret(contactID: UUID) async throws -> Data? {
        try await rows("SELECT secret FROM contact_link_secrets WHERE contact_id = \(contactID)").first.map { try $0["secret"].decode(Data.self) }
    }

    public func ensureLinkSecrets(_ ids: [UUID], at: Date, make: @Sendable () -> Data) async throws -> [UUID: Data] {
        guard !ids.isEmpty else { return [:] }
        var found: [UUID: Data] = [:]
        for r in try await rows("SELECT contact_id, secret FROM contact_link_secrets WHERE contact_id = ANY(\(ids))") {
            found[try r["contact_id"].decode(UUID.self)] = try r["secret"].decode(Data.self)
        }
        // In contact order, so that two exports making secrets for the same contacts never wait on each other in a circle.
        let missing = Set(ids.filter { found[$0] == nil }).sorted { $0.uuidString < $1.uuidString }.map { ($0, make()) }
        guard !missing.isEmpty else { return found }
        // One statement for the lot (a round trip per contact made a first export of 100,000 take a minute).
        let ordered = missing.map(\.0), hexes = missing.map { $0.1.hexString }
        for r in try await rows("""
            INSERT INTO contact_link_secrets (contact_id, secret, created_at)
            SELECT u.id, decode(u.secret, 'hex'), \(at.millisecondsSince1970) FROM unnest(\(ordered)::uuid[], \(hexes)::text[]) WITH ORDINALITY AS u(id, secret, n)
            WHERE EXISTS (SELECT 1 FROM contacts WHERE id = u.id AND erased_at IS NULL)
            ORDER BY u.n
            ON CONFLICT (contact_id) DO UPDATE SET secret = contact_link_secrets.secret
            RETURNING contact_id, secret
            """) {
            found[try r["contact_id"].decode(UUID.self)] = try r["secret"].decode(Data.self)
        }
        return found
    }

    public func ensureLinkSecret(contactID: UUID, candidate: Data, at: Date) async throws -> Data {
        do {
            // A no-op update on conflict makes RETURNING give the stored secret in one round trip.
            let row = try await rows("""
                INSERT INTO contact_link_secrets (contact_id, secret, created_at) VALUES (\(contactID), \(candidate), \(at.millisecondsSince1970))
                ON CONFLICT (contact_id) DO UPDATE SET secret = contact_link_secrets.secret
                RETURNING secret
                """).first
            return try row?["secret"].decode(Data.self) ?? candidate
        } catch where Self.foreignKeyViolation(error) {
            throw StoreError.notFound(what: "contact", id: contactID.uuidString.lowercased())
        }
    }

    public func replaceLinkSecret(contactID: UUID, secret: Data, at: Date) async throws {
        do {
            try await client.query("""
                INSERT INTO contact_link_secrets (contact_id, secret, created_at) VALUES (\(contactID), \(secret), \(at.millisecondsSince1970))
                ON CONFLICT (contact_id) DO UPDATE SET secret = excluded.secret, created_at = excluded.created_at
                """, logger: logger)
        } catch where Self.foreignKeyViolation(error) {
            throw StoreError.notFound(what: "contact", id: contactID.uuidString.lowercased())
        }
    }

    static func foreignKeyViolation(_ error: any Error) -> Bool {
        (error as? PSQLError)?.serverInfo?[.sqlState] == "23503"
    }

    // MARK: Portal

    public func issuePortalLink(_ link: PortalLinkRecord, email: OutboxItem) async throws {
        do {
            try await transaction { c in
                try await c.query("""
                    INSERT INTO portal_links (hash, contact_id, created_at, expires_at)
                    VALUES (\(link.hash), \(link.contactID), \(link.createdAt.millisecondsSince1970), \(link.expiresAt.millisecondsSince1970))
                    """, logger: logger)
                try await c.query("""
                    INSERT INTO outbox (id, contact_id, kind, payload, status, attempts, next_attempt_at, created_at)
                    VALUES (\(email.id), \(email.contactID), \(email.kind), \(email.payload), \(email.status.rawValue), \(email.attempts),
                        \(email.nextAttemptAt.millisecondsSince1970), \(email.createdAt.millisecondsSince1970))
                    """, logger: logger)
            }
        } catch where Self.foreignKeyViolation(error) {
            throw StoreError.notFound(what: "contact", id: link.contactID.uuidString.lowercased())
        }
    }

    public func portalLink(hash: Data) async throws -> PortalLinkRecord? {
        try await rows("SELECT * FROM portal_links WHERE hash = \(hash)").first.map { r in
            PortalLinkRecord(hash: try r["hash"].decode(Data.self), contactID: try r["contact_id"].decode(UUID.self),
                             createdAt: Date(millisecondsSince1970: try r["created_at"].decode(Int64.self)),
                             expiresAt: Date(millisecondsSince1970: try r["expires_at"].decode(Int64.self)),
                             usedAt: try r["used_at"].decode(Int64?.self).map(Date.init(millisecondsSince1970:)))
        }
    }

    public func portalLinkCount(contactID: UUID, since: Date) async throws -> Int {
        try await rows("SELECT COUNT(*) AS n FROM portal_links WHERE contact_id = \(contactID) AND created_at >= \(since.millisecondsSince1970)")
            .first.map { try $0["n"].decode(Int.self) } ?? 0
    }

    public func consumePortalLink(hash: Data, at: Date) async throws -> UUID? {
        try await rows("""
            UPDATE portal_links SET used_at = \(at.millisecondsSince1970)
            WHERE hash = \(hash) AND used_at IS NULL AND expires_at > \(at.millisecondsSince1970)
            RETURNING contact_id
            """).first.map { try $0["contact_id"].decode(UUID.self) }
    }

    public func insertPortalSession(_ session: PortalSession) async throws {
        try await client.query("""
            INSERT INTO portal_sessions (hash, contact_id, created_at, expires_at)
            VALUES (\(session.hash), \(session.contactID), \(session.createdAt.millisecondsSince1970), \(session.expiresAt.millisecondsSince1970))
            """, logger: logger)
    }

    public func portalSession(hash: Data) async throws -> PortalSession? {
        try await rows("SELECT * FROM portal_sessions WHERE hash = \(hash)").first.map { r in
            PortalSession(hash: try r["hash"].decode(Data.self), contactID: try r["contact_id"].decode(UUID.self),
                          createdAt: Date(millisecondsSince1970: try r["created_at"].decode(Int64.self)),
                          expiresAt: Date(millisecondsSince1970: try r["expires_at"].decode(Int64.self)))
        }
    }

    public func deletePortalSession(hash: Data) async throws {
        try await client.query("DELETE FROM portal_sessions WHERE hash = \(hash)", logger: logger)
    }

    // MARK: Subject requests

    public func insertSubjectRequest(_ request: SubjectRequest, webhooks: [WebhookDelivery]) async throws {
        do {
            try await transaction { c in
                try await c.query("""
                    INSERT INTO subject_requests (id, contact_id, kind, status, channel, note, created_at, due_at, closed_at, outcome, identity_note,
                        extension_reason, handler)
                    VALUES (\(request.id), \(request.contactID), \(request.kind.rawValue), \(request.status.rawValue), \(request.channel), \(request.note),
                        \(request.createdAt.millisecondsSince1970), \(request.dueAt.millisecondsSince1970), \(request.closedAt?.millisecondsSince1970),
                        \(request.outcome), \(request.identityNote), \(request.extensionReason), \(request.handler))
                    """, logger: logger)
                try await insert(webhooks, on: c)
            }
        } catch where Self.foreignKeyViolation(error) {
            throw StoreError.notFound(what: "contact", id: request.contactID.uuidString.lowercased())
        } catch where Self.uniqueViolation(error) != nil {
            throw StoreError.duplicate(field: "kind", value: request.kind.rawValue)
        }
    }

    public func updateSubjectRequest(_ r: SubjectRequest) async throws {
        let updated = try await rows("""
            UPDATE subject_requests SET status = \(r.status.rawValue), due_at = \(r.dueAt.millisecondsSince1970), closed_at = \(r.closedAt?.millisecondsSince1970),
                outcome = \(r.outcome), identity_note = \(r.identityNote), extension_reason = \(r.extensionReason), handler = \(r.handler)
            WHERE id = \(r.id) RETURNING id
            """)
        if updated.isEmpty { throw StoreError.notFound(what: "request", id: r.id.uuidString.lowercased()) }
    }

    public func subjectRequest(id: UUID) async throws -> SubjectRequest? {
        try await rows("SELECT * FROM subject_requests WHERE id = \(id)").first.map(Self.subjectRequest)
    }

    public func closeSubjectRequest(id: UUID, at: Date, outcome: String) async throws {
        let updated = try await rows("UPDATE subject_requests SET status = 'closed', closed_at = \(at.millisecondsSince1970), outcome = \(outcome) WHERE id = \(id) RETURNING id")
        if updated.isEmpty { throw StoreError.notFound(what: "request", id: id.uuidString.lowercased()) }
    }

    public func subjectRequests(contactID: UUID?, status: SubjectRequest.Status?, limit: Int) async throws -> [SubjectRequest] {
        try await rows("""
            SELECT * FROM subject_requests
            WHERE (\(contactID)::uuid IS NULL OR contact_id = \(contactID)) AND (\(status?.rawValue)::text IS NULL OR status = \(status?.rawValue))
            ORDER BY created_at DESC, id DESC LIMIT \(limit)
            """).map(Self.subjectRequest)
    }

    static func subjectRequest(_ r: PostgresRandomAccessRow) throws -> SubjectRequest {
        var request = SubjectRequest(id: try r["id"].decode(UUID.self), contactID: try r["contact_id"].decode(UUID.self),
                                     kind: SubjectRequest.Kind(rawValue: try r["kind"].decode(String.self)) ?? .access,
                                     status: SubjectRequest.Status(rawValue: try r["status"].decode(String.self)) ?? .open,
                                     channel: try r["channel"].decode(String.self), note: try r["note"].decode(String?.self),
                                     createdAt: Date(millisecondsSince1970: try r["created_at"].decode(Int64.self)),
                                     dueAt: Date(millisecondsSince1970: try r["due_at"].decode(Int64.self)),
                                     closedAt: try r["closed_at"].decode(Int64?.self).map(Date.init(millisecondsSince1970:)),
                                     outcome: try r["outcome"].decode(String?.self))
        request.identityNote = try r["identity_note"].decode(String?.self)
        request.extensionReason = try r["extension_reason"].decode(String?.self)
        request.handler = try r["handler"].decode(String?.self)
        return request
    }


    // MARK: Erasure and objection

    public func eraseContact(_ e: ContactErasure) async throws {
        try await transaction { c in
            // The chain head's lock: a change being committed for this contact finishes first, or waits and then sees the erasure.
            _ = try await rows("SELECT seq FROM chain_heads WHERE contact_id = \(e.contactID) FOR UPDATE", on: c)
            let updated = try await rows("""
                UPDATE contacts SET email = NULL, name = NULL, external_id = NULL, locale = NULL,
                    erased_at = \(e.at.millisecondsSince1970), updated_at = \(e.at.millisecondsSince1970)
                WHERE id = \(e.contactID) RETURNING id
                """, on: c)
            if updated.isEmpty { throw StoreError.notFound(what: "contact", id: e.contactID.uuidString.lowercased()) }
            try await c.query("DELETE FROM contact_keys WHERE contact_id = \(e.contactID)", logger: logger)
            try await c.query("DELETE FROM outbox WHERE contact_id = \(e.contactID)", logger: logger)
            try await c.query("DELETE FROM confirmation_tokens WHERE contact_id = \(e.contactID)", logger: logger)
            try await c.query("DELETE FROM contact_link_secrets WHERE contact_id = \(e.contactID)", logger: logger)
            try await c.query("DELETE FROM portal_links WHERE contact_id = \(e.contactID)", logger: logger)
            try await c.query("DELETE FROM portal_sessions WHERE contact_id = \(e.contactID)", logger: logger)
            try await c.query("UPDATE subject_requests SET note = NULL, identity_note = NULL WHERE contact_id = \(e.contactID)", logger: logger)
            try await c.query("DELETE FROM webhook_deliveries WHERE contact_id = \(e.contactID)", logger: logger) // attempts cascade
            try await insert(e.webhooks, on: c)
            // Stored API responses (idempotent replays) that carry the address.
            try await c.query("DELETE FROM idempotency_keys WHERE position(convert_to(\(e.email), 'UTF8') IN body) > 0", logger: logger)
            try await c.query("""
                INSERT INTO suppressions (email_hash, contact_id, erased_at, reason, erased_by)
                VALUES (\(e.emailHash), \(e.contactID), \(e.at.millisecondsSince1970), \(e.reason), \(e.erasedBy))
                ON CONFLICT (email_hash) DO UPDATE SET contact_id = excluded.contact_id, erased_at = excluded.erased_at,
                    reason = excluded.reason, erased_by = excluded.erased_by
                """, logger: logger)
        }
    }

    public func outboxItems(contactID: UUID) async throws -> [OutboxItem] {
        try await rows("SELECT * FROM outbox WHERE contact_id = \(contactID) ORDER BY created_at, id").map(Self.outboxItem)
    }

    public func suppression(emailHash: Data) async throws -> Suppression? {
        try await rows("SELECT * FROM suppressions WHERE email_hash = \(emailHash)").first.map { r in
            Suppression(emailHash: try r["email_hash"].decode(Data.self), contactID: try r["contact_id"].decode(UUID.self),
                        erasedAt: Date(millisecondsSince1970: try r["erased_at"].decode(Int64.self)), reason: try r["reason"].decode(String.self),
                        erasedBy: try r["erased_by"].decode(String.self))
        }
    }

    public func setContactObjection(contactID: UUID, at: Date?) async throws {
        let updated = try await rows("UPDATE contacts SET objected_at = \(at?.millisecondsSince1970) WHERE id = \(contactID) RETURNING id")
        if updated.isEmpty { throw StoreError.notFound(what: "contact", id: contactID.uuidString.lowercased()) }
    }

    // MARK: Staff

    public func insertStaffUser(_ u: StaffUser) async throws {
        try await mapUnique(value: { _ in u.email.value }) {
            try await client.query("""
                INSERT INTO staff_users (id, email, name, role, password_hash, must_change_password, failed_sign_ins, locked_until, created_at, disabled_at)
                VALUES (\(u.id), \(u.email.value), \(u.name), \(u.role.rawValue), \(u.passwordHash), \(u.mustChangePassword), \(u.failedSignIns),
                    \(u.lockedUntil?.millisecondsSince1970), \(u.createdAt.millisecondsSince1970), \(u.disabledAt?.millisecondsSince1970))
                """, logger: logger)
        }
    }

    public func recordStaffSignInFailure(userID: UUID, lockAfter: Int, lockUntil: Date) async throws -> Date? {
        // One statement: concurrent wrong guesses are counted one by one.
        let row = try await rows("""
            UPDATE staff_users SET
                failed_sign_ins = CASE WHEN failed_sign_ins + 1 >= \(lockAfter) THEN 0 ELSE failed_sign_ins + 1 END,
                locked_until = CASE WHEN failed_sign_ins + 1 >= \(lockAfter) THEN \(lockUntil.millisecondsSince1970) ELSE locked_until END
            WHERE id = \(userID)
            RETURNING failed_sign_ins, locked_until
            """).first
        guard let row, try row["failed_sign_ins"].decode(Int.self) == 0,
              try row["locked_until"].decode(Int64?.self) == lockUntil.millisecondsSince1970 else { return nil }
        return lockUntil
    }

    public func recordStaffSignInSuccess(userID: UUID, passwordHash: String) async throws -> Bool {
        !(try await rows("""
            UPDATE staff_users SET failed_sign_ins = 0, locked_until = NULL
            WHERE id = \(userID) AND password_hash = \(passwordHash) AND disabled_at IS NULL RETURNING id
            """).isEmpty)
    }

    public func setStaffPassword(userID: UUID, expected: String?, newHash: String, mustChange: Bool) async throws -> Bool {
        !(try await rows("""
            UPDATE staff_users SET password_hash = \(newHash), must_change_password = \(mustChange), failed_sign_ins = 0, locked_until = NULL
            WHERE id = \(userID) AND (\(expected)::text IS NULL OR password_hash = \(expected)) RETURNING id
            """).isEmpty)
    }

    public func disableStaffUser(userID: UUID, at: Date) async throws {
        let updated = try await rows("""
            UPDATE staff_users SET disabled_at = COALESCE(disabled_at, \(at.millisecondsSince1970)) WHERE id = \(userID) RETURNING id
            """)
        if updated.isEmpty { throw StoreError.notFound(what: "staff user", id: userID.uuidString.lowercased()) }
    }

    public func staffUser(id: UUID) async throws -> StaffUser? {
        try await rows("SELECT * FROM staff_users WHERE id = \(id)").first.flatMap(Self.staffUser)
    }

    public func staffUser(email: EmailAddress) async throws -> StaffUser? {
        try await rows("SELECT * FROM staff_users WHERE email = \(email.value)").first.flatMap(Self.staffUser)
    }

    public func staffUsers() async throws -> [StaffUser] {
        try await rows("SELECT * FROM staff_users ORDER BY email").compactMap(Self.staffUser)
    }

    static func staffUser(_ r: PostgresRandomAccessRow) throws -> StaffUser? {
        guard let email = try? EmailAddress(try r["email"].decode(String.self)) else { return nil }
        return StaffUser(id: try r["id"].decode(UUID.self), email: email, name: try r["name"].decode(String.self),
                         role: StaffUser.Role(rawValue: try r["role"].decode(String.self)) ?? .auditor,
                         passwordHash: try r["password_hash"].decode(String.self), mustChangePassword: try r["must_change_password"].decode(Bool.self),
                         failedSignIns: try r["failed_sign_ins"].decode(Int.self),
                         lockedUntil: try r["locked_until"].decode(Int64?.self).map(Date.init(millisecondsSince1970:)),
                         createdAt: Date(millisecondsSince1970: try r["created_at"].decode(Int64.self)),
                         disabledAt: try r["disabled_at"].decode(Int64?.self).map(Date.init(millisecondsSince1970:)))
    }

    public func insertStaffSession(_ session: StaffSession) async throws {
        try await client.query("""
            INSERT INTO staff_sessions (hash, user_id, created_at, expires_at)
            VALUES (\(session.hash), \(session.userID), \(session.createdAt.millisecondsSince1970), \(session.expiresAt.millisecondsSince1970))
            """, logger: logger)
    }

    public func staffSession(hash: Data) async throws -> StaffSession? {
        try await rows("SELECT * FROM staff_sessions WHERE hash = \(hash)").first.map { r in
            StaffSession(hash: try r["hash"].decode(Data.self), userID: try r["user_id"].decode(UUID.self),
                         createdAt: Date(millisecondsSince1970: try r["created_at"].decode(Int64.self)),
                         expiresAt: Date(millisecondsSince1970: try r["expires_at"].decode(Int64.self)))
        }
    }

    public func extendStaffSession(hash: Data, expiresAt: Date) async throws {
        try await client.query("UPDATE staff_sessions SET expires_at = \(expiresAt.millisecondsSince1970) WHERE hash = \(hash)", logger: logger)
    }

    public func deleteStaffSession(hash: Data) async throws {
        try await client.query("DELETE FROM staff_sessions WHERE hash = \(hash)", logger: logger)
    }

    public func deleteStaffSessions(userID: UUID) async throws {
        try await client.query("DELETE FROM staff_sessions WHERE user_id = \(userID)", logger: logger)
    }

    // MARK: Audit log

    public func appendAudit(_ e: AuditEntry) async throws {
        try await client.query("""
            INSERT INTO audit_log (id, at, actor_id, actor_email, action, target, detail, ip_address)
            VALUES (\(e.id), \(e.at.millisecondsSince1970), \(e.actorID), \(e.actorEmail), \(e.action), \(e.target), \(e.detail), \(e.ipAddress))
            """, logger: logger)
    }

    public func auditEntries(_ q: AuditQuery) async throws -> [AuditEntry] {
        try await rows("""
            SELECT * FROM audit_log
            WHERE (\(q.actorID)::uuid IS NULL OR actor_id = \(q.actorID)) AND (\(q.action)::text IS NULL OR action = \(q.action))
              AND (\(q.target)::text IS NULL OR target = \(q.target))
              AND (\(q.since?.millisecondsSince1970)::bigint IS NULL OR at >= \(q.since?.millisecondsSince1970))
              AND (\(q.until?.millisecondsSince1970)::bigint IS NULL OR at < \(q.until?.millisecondsSince1970))
            ORDER BY at DESC, id DESC LIMIT \(q.limit)
            """).map { r in
            AuditEntry(id: try r["id"].decode(UUID.self), at: Date(millisecondsSince1970: try r["at"].decode(Int64.self)),
                       actorID: try r["actor_id"].decode(UUID?.self), actorEmail: try r["actor_email"].decode(String.self),
                       action: try r["action"].decode(String.self), target: try r["target"].decode(String?.self),
                       detail: try r["detail"].decode(String?.self), ipAddress: try r["ip_address"].decode(String?.self))
        }
    }

    // MARK: API keys

    public func insertAPIKey(_ key: APIKey) async throws {
        try await mapUnique(value: { _ in key.id }) {
            try await client.query("""
                INSERT INTO api_keys (id, name, scope, secret_hash, created_at, revoked_at)
                VALUES (\(key.id), \(key.name), \(key.scope.rawValue), \(key.secretHash), \(key.createdAt.millisecondsSince1970), \(key.revokedAt?.millisecondsSince1970))
                """, logger: logger)
        }
    }

    public func apiKey(id: String) async throws -> APIKey? {
        try await rows("SELECT * FROM api_keys WHERE id = \(id)").first.map(Self.apiKey)
    }

    public func apiKeys() async throws -> [APIKey] {
        try await rows("SELECT * FROM api_keys ORDER BY created_at, id").map(Self.apiKey)
    }

    static func apiKey(_ r: PostgresRandomAccessRow) throws -> APIKey {
        APIKey(id: try r["id"].decode(String.self), name: try r["name"].decode(String.self),
               scope: APIScope(rawValue: try r["scope"].decode(String.self)) ?? .read, secretHash: try r["secret_hash"].decode(Data.self),
               createdAt: Date(millisecondsSince1970: try r["created_at"].decode(Int64.self)),
               revokedAt: try r["revoked_at"].decode(Int64?.self).map(Date.init(millisecondsSince1970:)))
    }

    public func revokeAPIKey(id: String, at: Date) async throws -> Bool {
        !(try await rows("UPDATE api_keys SET revoked_at = \(at.millisecondsSince1970) WHERE id = \(id) AND revoked_at IS NULL RETURNING id").isEmpty)
    }

    // MARK: Segments

    public func insertSegment(_ segment: Segment) async throws {
        try await mapUnique(value: { _ in segment.id }) {
            try await client.query("""
                INSERT INTO segments (id, name, description, definition, created_by, created_at, updated_at)
                VALUES (\(segment.id), \(segment.name), \(segment.description), \(segment.definitionJSON), \(segment.createdBy),
                    \(segment.createdAt.millisecondsSince1970), \(segment.updatedAt.millisecondsSince1970))
                """, logger: logger)
        }
    }

    public func updateSegment(_ segment: Segment) async throws {
        let updated = try await rows("""
            UPDATE segments SET name = \(segment.name), description = \(segment.description), definition = \(segment.definitionJSON),
                updated_at = \(segment.updatedAt.millisecondsSince1970)
            WHERE id = \(segment.id) RETURNING id
            """)
        if updated.isEmpty { throw StoreError.notFound(what: "segment", id: segment.id) }
    }

    public func deleteSegment(id: String) async throws -> Bool {
        // segment_sizes go with it (ON DELETE CASCADE).
        !(try await rows("DELETE FROM segments WHERE id = \(id) RETURNING id").isEmpty)
    }

    public func segment(id: String) async throws -> Segment? {
        try await rows("SELECT * FROM segments WHERE id = \(id)").first.map(Self.segment)
    }

    public func segments() async throws -> [Segment] {
        try await rows("SELECT * FROM segments ORDER BY id").map(Self.segment)
    }

    static func segment(_ r: PostgresRandomAccessRow) throws -> Segment {
        Segment(id: try r["id"].decode(String.self), name: try r["name"].decode(String.self), description: try r["description"].decode(String.self),
                query: try Segment.query(fromJSON: try r["definition"].decode(String.self)), createdBy: try r["created_by"].decode(String.self),
                createdAt: Date(millisecondsSince1970: try r["created_at"].decode(Int64.self)),
                updatedAt: Date(millisecondsSince1970: try r["updated_at"].decode(Int64.self)))
    }

    public func recordSegmentSize(_ size: SegmentSize) async throws {
        do {
            try await client.query("""
                INSERT INTO segment_sizes (segment_id, day, size, measured_at)
                VALUES (\(size.segmentID), \(size.day), \(size.size), \(size.measuredAt.millisecondsSince1970))
                ON CONFLICT (segment_id, day) DO UPDATE SET size = excluded.size, measured_at = excluded.measured_at
                """, logger: logger)
        } catch where Self.foreignKeyViolation(error) {
            throw StoreError.notFound(what: "segment", id: size.segmentID)
        }
    }

    public func segmentSizes(segmentID: String, limit: Int) async throws -> [SegmentSize] {
        try await rows("SELECT * FROM segment_sizes WHERE segment_id = \(segmentID) ORDER BY day DESC LIMIT \(limit)").map { r in
            SegmentSize(segmentID: try r["segment_id"].decode(String.self), day: try r["day"].decode(String.self),
                        size: try r["size"].decode(Int.self), measuredAt: Date(millisecondsSince1970: try r["measured_at"].decode(Int64.self)))
        }.reversed()
    }

    // MARK: Re-permission

    public func dueRepermissions(now: Date, horizon: Date, limit: Int) async throws -> [RepermissionDue] {
        let at = now.millisecondsSince1970
        return try await rows("""
            SELECT p.contact_id, p.topic_key, p.expires_at FROM preferences p
            JOIN topics t ON t.key = p.topic_key
            JOIN contacts c ON c.id = p.contact_id
            WHERE p.state = 'granted' AND p.expires_at IS NOT NULL AND p.expires_at > \(at) AND p.expires_at <= \(horizon.millisecondsSince1970)
              AND t.status = 'active' AND t.repermission_days IS NOT NULL AND p.expires_at <= \(at) + t.repermission_days * 86400000
              AND c.erased_at IS NULL AND c.objected_at IS NULL
              AND NOT EXISTS (SELECT 1 FROM repermission_requests r
                              WHERE r.contact_id = p.contact_id AND r.topic_key = p.topic_key AND r.grant_expires_at = p.expires_at)
            ORDER BY p.expires_at, p.contact_id, p.topic_key LIMIT \(limit)
            """).map { r in
            RepermissionDue(contactID: try r["contact_id"].decode(UUID.self), topicKey: try r["topic_key"].decode(String.self),
                            expiresAt: Date(millisecondsSince1970: try r["expires_at"].decode(Int64.self)))
        }
    }

    public func insertRepermission(_ request: RepermissionRequest, email: OutboxItem) async throws -> Bool {
        do {
            return try await transaction { c in
                let inserted = try await rows("""
                    INSERT INTO repermission_requests (contact_id, topic_key, grant_expires_at, sent_at, outbox_id)
                    VALUES (\(request.contactID), \(request.topicKey), \(request.grantExpiresAt.millisecondsSince1970),
                        \(request.sentAt.millisecondsSince1970), \(request.outboxID))
                    ON CONFLICT DO NOTHING RETURNING contact_id
                    """, on: c)
                guard !inserted.isEmpty else { return false }
                try await c.query("""
                    INSERT INTO outbox (id, contact_id, kind, payload, status, attempts, next_attempt_at, created_at)
                    VALUES (\(email.id), \(email.contactID), \(email.kind), \(email.payload), \(email.status.rawValue), \(email.attempts),
                        \(email.nextAttemptAt.millisecondsSince1970), \(email.createdAt.millisecondsSince1970))
                    """, logger: logger)
                return true
            }
        } catch where Self.foreignKeyViolation(error) {
            throw StoreError.notFound(what: "contact", id: request.contactID.uuidString.lowercased())
        }
    }

    // MARK: Reports

    public func stateCounts(now: Date) async throws -> [StateCount] {
        try await rows("""
            SELECT p.topic_key, CASE WHEN p.state = 'granted' AND p.expires_at IS NOT NULL AND p.expires_at <= \(now.millisecondsSince1970) THEN 'expired' ELSE p.state END AS s,
                COUNT(*) AS n
            FROM preferences p JOIN contacts c ON c.id = p.contact_id WHERE c.erased_at IS NULL GROUP BY p.topic_key, s
            """, reader: true).compactMap { r -> StateCount? in
            guard let state = PreferenceState(rawValue: try r["s"].decode(String.self)) else { return nil }
            return StateCount(topicKey: try r["topic_key"].decode(String.self), state: state, count: try r["n"].decode(Int.self))
        }
    }

    public func contactCount() async throws -> Int {
        try await rows("SELECT COUNT(*) AS n FROM contacts WHERE erased_at IS NULL", reader: true).first.map { try $0["n"].decode(Int.self) } ?? 0
    }

    public func changeCounts(from: Date, to: Date, weekStart: Date) async throws -> [ChangeCount] {
        let origin = weekStart.millisecondsSince1970
        return try await rows("""
            SELECT (occurred_at - \(origin)) / 604800000 AS week, source,
                SUM(CASE WHEN action IN ('granted', 'confirmed') THEN 1 ELSE 0 END) AS opt_ins,
                SUM(CASE WHEN action = 'withdrawn' THEN 1 ELSE 0 END) AS opt_outs
            FROM consent_events
            WHERE occurred_at >= \(from.millisecondsSince1970) AND occurred_at < \(to.millisecondsSince1970) AND action IN ('granted', 'confirmed', 'withdrawn')
            GROUP BY week, source ORDER BY week, source
            """, reader: true).compactMap { r -> ChangeCount? in
            guard let source = ConsentSource(rawValue: try r["source"].decode(String.self)) else { return nil }
            return ChangeCount(week: Date(millisecondsSince1970: origin + (try r["week"].decode(Int64.self)) * 604_800_000), source: source,
                               optIns: try r["opt_ins"].decode(Int.self), optOuts: try r["opt_outs"].decode(Int.self))
        }
    }

    public func confirmationOutcomes(from: Date, to: Date) async throws -> [ConfirmationOutcome] {
        try await rows("""
            SELECT r.topic_key, r.occurred_at,
                (SELECT CASE WHEN n.action = 'confirmed' THEN n.occurred_at END FROM consent_events n
                 WHERE n.contact_id = r.contact_id AND n.topic_key = r.topic_key AND n.seq > r.seq ORDER BY n.seq LIMIT 1) AS confirmed_at
            FROM consent_events r
            WHERE r.action = 'requested' AND r.occurred_at >= \(from.millisecondsSince1970) AND r.occurred_at < \(to.millisecondsSince1970)
            """, reader: true).map { r in
            ConfirmationOutcome(topicKey: try r["topic_key"].decode(String.self), requestedAt: Date(millisecondsSince1970: try r["occurred_at"].decode(Int64.self)),
                                confirmedAt: try r["confirmed_at"].decode(Int64?.self).map(Date.init(millisecondsSince1970:)))
        }
    }

    public func expiringCounts(now: Date) async throws -> [ExpiringCount] {
        let at = now.millisecondsSince1970, day: Int64 = 86_400_000
        return try await rows("""
            SELECT topic_key, SUM(CASE WHEN expires_at <= \(at + 30 * day) THEN 1 ELSE 0 END) AS d30,
                SUM(CASE WHEN expires_at <= \(at + 60 * day) THEN 1 ELSE 0 END) AS d60, COUNT(*) AS d90
            FROM preferences WHERE state = 'granted' AND expires_at > \(at) AND expires_at <= \(at + 90 * day) GROUP BY topic_key ORDER BY topic_key
            """, reader: true).map { r in
            ExpiringCount(topicKey: try r["topic_key"].decode(String.self), within30: try r["d30"].decode(Int.self),
                          within60: try r["d60"].decode(Int.self), within90: try r["d90"].decode(Int.self))
        }
    }

    // MARK: Webhooks

    /// An endpoint deleted since the ledger read its list gets nothing (the write itself goes ahead).
    func insert(_ deliveries: [WebhookDelivery], on c: PostgresConnection) async throws {
        for d in deliveries {
            try await c.query("""
                INSERT INTO webhook_deliveries (id, endpoint_id, event_type, contact_id, payload, status, attempts, next_attempt_at, created_at,
                    delivered_at, last_status_code, last_error)
                SELECT \(d.id), \(d.endpointID), \(d.eventType.rawValue), \(d.contactID), \(d.payload), \(d.status.rawValue), \(d.attempts),
                    \(d.nextAttemptAt.millisecondsSince1970), \(d.createdAt.millisecondsSince1970), \(d.deliveredAt?.millisecondsSince1970),
                    \(d.lastStatusCode), \(d.lastError)
                WHERE EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = \(d.endpointID) FOR KEY SHARE)
                """, logger: logger)
        }
    }

    static func delivery(_ r: PostgresRandomAccessRow) throws -> WebhookDelivery? {
        guard let type = WebhookEventType(rawValue: try r["event_type"].decode(String.self)),
              let status = WebhookDelivery.Status(rawValue: try r["status"].decode(String.self)) else { return nil }
        return WebhookDelivery(id: try r["id"].decode(UUID.self), endpointID: try r["endpoint_id"].decode(String.self), eventType: type,
                               contactID: try r["contact_id"].decode(UUID?.self), payload: try r["payload"].decode(Data.self), status: status,
                               attempts: try r["attempts"].decode(Int.self),
                               nextAttemptAt: Date(millisecondsSince1970: try r["next_attempt_at"].decode(Int64.self)),
                               createdAt: Date(millisecondsSince1970: try r["created_at"].decode(Int64.self)),
                               deliveredAt: try r["delivered_at"].decode(Int64?.self).map(Date.init(millisecondsSince1970:)),
                               lastStatusCode: try r["last_status_code"].decode(Int?.self), lastError: try r["last_error"].decode(String?.self))
    }

    public func insertWebhookEndpoint(_ e: WebhookEndpoint) async throws {
        try await mapUnique(value: { _ in e.id }) {
            try await client.query("""
                INSERT INTO webhook_endpoints (id, url, description, events, topics, sources, enabled, allow_private_network, sealed_secret,
                    created_by, created_at, updated_at)
                VALUES (\(e.id), \(e.url), \(e.description), \(e.events.map(\.rawValue).joined(separator: ",")), \(e.topics.joined(separator: ",")),
                    \(e.sources.map(\.rawValue).joined(separator: ",")), \(e.enabled), \(e.allowPrivateNetwork), \(e.sealedSecret), \(e.createdBy),
                    \(e.createdAt.millisecondsSince1970), \(e.updatedAt.millisecondsSince1970))
                """, logger: logger)
        }
    }

    public func updateWebhookEndpoint(_ e: WebhookEndpoint) async throws {
        let updated = try await rows("""
            UPDATE webhook_endpoints SET url = \(e.url), description = \(e.description), events = \(e.events.map(\.rawValue).joined(separator: ",")),
                topics = \(e.topics.joined(separator: ",")), sources = \(e.sources.map(\.rawValue).joined(separator: ",")), enabled = \(e.enabled),
                allow_private_network = \(e.allowPrivateNetwork), sealed_secret = \(e.sealedSecret), updated_at = \(e.updatedAt.millisecondsSince1970)
            WHERE id = \(e.id) RETURNING id
            """)
        if updated.isEmpty { throw StoreError.notFound(what: "webhook", id: e.id) }
    }

    public func deleteWebhookEndpoint(id: String) async throws -> Bool {
        // Deliveries and their attempts cascade.
        !(try await rows("DELETE FROM webhook_endpoints WHERE id = \(id) RETURNING id").isEmpty)
    }

    static func endpoint(_ r: PostgresRandomAccessRow) throws -> WebhookEndpoint {
        func list(_ text: String) -> [String] { text.split(separator: ",").map(String.init) }
        return WebhookEndpoint(
            id: try r["id"].decode(String.self), url: try r["url"].decode(String.self), description: try r["description"].decode(String.self),
            events: list(try r["events"].decode(String.self)).compactMap(WebhookEventType.init(rawValue:)), topics: list(try r["topics"].decode(String.self)),
            sources: list(try r["sources"].decode(String.self)).compactMap(ConsentSource.init(rawValue:)), enabled: try r["enabled"].decode(Bool.self),
            allowPrivateNetwork: try r["allow_private_network"].decode(Bool.self), sealedSecret: try r["sealed_secret"].decode(Data.self),
            createdBy: try r["created_by"].decode(String.self), createdAt: Date(millisecondsSince1970: try r["created_at"].decode(Int64.self)),
            updatedAt: Date(millisecondsSince1970: try r["updated_at"].decode(Int64.self)))
    }

    public func webhookEndpoint(id: String) async throws -> WebhookEndpoint? {
        try await rows("SELECT * FROM webhook_endpoints WHERE id = \(id)").first.map(Self.endpoint)
    }

    public func webhookEndpoints() async throws -> [WebhookEndpoint] {
        try await rows("SELECT * FROM webhook_endpoints ORDER BY created_at, id").map(Self.endpoint)
    }

    public func insertWebhookDeliveries(_ deliveries: [WebhookDelivery]) async throws {
        do {
            try await transaction { c in try await insert(deliveries, on: c) }
        } catch where Self.foreignKeyViolation(error) {
            throw StoreError.notFound(what: "webhook", id: deliveries.first?.endpointID ?? "")
        }
    }

    public func claimWebhookDeliveries(now: Date, limit: Int, lease: TimeInterval) async throws -> [WebhookDelivery] {
        let at = now.millisecondsSince1970, until = now.addingTimeInterval(lease).millisecondsSince1970
        // SKIP LOCKED: concurrent workers take different rows. An earlier pending delivery of the same
        // contact and endpoint (claimed or not) holds later ones back, which keeps their order.
        return try await rows("""
            UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = \(until)
            WHERE id IN (
                SELECT d.id FROM webhook_deliveries d
                WHERE d.status = 'pending' AND d.next_attempt_at <= \(at)
                  AND EXISTS (SELECT 1 FROM webhook_endpoints w WHERE w.id = d.endpoint_id AND w.enabled)
                  AND (d.contact_id IS NULL OR NOT EXISTS (
                      SELECT 1 FROM webhook_deliveries e WHERE e.status = 'pending' AND e.endpoint_id = d.endpoint_id
                          AND e.contact_id = d.contact_id AND e.ordinal < d.ordinal))
                ORDER BY d.ordinal LIMIT \(limit) FOR UPDATE SKIP LOCKED)
            RETURNING *
            """).compactMap(Self.delivery).sorted { $0.createdAt < $1.createdAt }
    }

    public func recordWebhookAttempt(_ a: WebhookAttempt, outcome: WebhookOutcome, payload: Data?) async throws {
        let (status, next, delivered): (String, Int64?, Int64?) = switch outcome {
        case .delivered: ("delivered", nil, a.at.millisecondsSince1970)
        case .retry(let at): ("pending", at.millisecondsSince1970, nil)
        case .failed: ("failed", nil, nil)
        }
        try await transaction { c in
            // Only the worker holding this claim records: a late answer to an attempt whose lease ran
            // out (and was claimed again) must not overwrite the newer outcome.
            let exists = try await rows("""
                SELECT id FROM webhook_deliveries WHERE id = \(a.deliveryID) AND status = 'pending' AND attempts = \(a.number) FOR UPDATE
                """, on: c)
            guard !exists.isEmpty else { return }
            // Numbered after those already logged (a retry after `failed` starts a fresh count but keeps the log).
            try await c.query("""
                INSERT INTO webhook_attempts (delivery_id, number, at, status_code, latency_ms, response, error)
                VALUES (\(a.deliveryID), (SELECT COALESCE(MAX(number), 0) + 1 FROM webhook_attempts WHERE delivery_id = \(a.deliveryID)),
                    \(a.at.millisecondsSince1970), \(a.statusCode), \(a.latencyMilliseconds), \(a.response), \(a.error))
                """, logger: logger)
            try await c.query("""
                UPDATE webhook_deliveries SET status = \(status), next_attempt_at = COALESCE(\(next)::bigint, next_attempt_at),
                    delivered_at = \(delivered), last_status_code = \(a.statusCode), last_error = \(a.error), payload = COALESCE(\(payload)::bytea, payload)
                WHERE id = \(a.deliveryID)
                """, logger: logger)
        }
    }

    public func webhookDelivery(id: UUID) async throws -> WebhookDelivery? {
        try await rows("SELECT * FROM webhook_deliveries WHERE id = \(id)").first.flatMap(Self.delivery)
    }

    public func webhookDeliveries(_ q: WebhookDeliveryQuery) async throws -> [WebhookDelivery] {
        try await rows("""
            SELECT * FROM webhook_deliveries
            WHERE (\(q.endpointID)::text IS NULL OR endpoint_id = \(q.endpointID)) AND (\(q.status?.rawValue)::text IS NULL OR status = \(q.status?.rawValue))
              AND (\(q.contactID)::uuid IS NULL OR contact_id = \(q.contactID)) AND (\(q.since?.millisecondsSince1970)::bigint IS NULL OR created_at >= \(q.since?.millisecondsSince1970))
            ORDER BY ordinal DESC LIMIT \(q.limit)
            """).compactMap(Self.delivery)
    }

    public func webhookAttempts(deliveryID: UUID) async throws -> [WebhookAttempt] {
        try await rows("SELECT * FROM webhook_attempts WHERE delivery_id = \(deliveryID) ORDER BY number").map { r in
            WebhookAttempt(deliveryID: deliveryID, number: try r["number"].decode(Int.self), at: Date(millisecondsSince1970: try r["at"].decode(Int64.self)),
                           statusCode: try r["status_code"].decode(Int?.self), latencyMilliseconds: try r["latency_ms"].decode(Int.self),
                           response: try r["response"].decode(String?.self), error: try r["error"].decode(String?.self))
        }
    }

    public func retryWebhookDeliveries(ids: [UUID]?, endpointID: String?, now: Date) async throws -> Int {
        if let ids, ids.isEmpty { return 0 }
        return try await rows("""
            UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = \(now.millisecondsSince1970)
            WHERE status = 'failed' AND (\(endpointID)::text IS NULL OR endpoint_id = \(endpointID)) AND (\(ids.map { _ in true })::boolean IS NULL OR id = ANY(\(ids ?? [])))
            RETURNING id
            """).count
    }

    // MARK: Idempotency

    public func beginIdempotency(scope: String, key: String, requestHash: Data, now: Date) async throws -> IdempotencyBegin {
        try await transaction { c in
            let ms = now.millisecondsSince1970
            let inserted = try await rows("""
                INSERT INTO idempotency_keys (scope, key, request_hash, created_at) VALUES (\(scope), \(key), \(requestHash), \(ms))
                ON CONFLICT (scope, key) DO NOTHING RETURNING key
                """, on: c)
            if !inserted.isEmpty {
                if Int.random(in: 0..<100) == 0 {
                    let cutoff = now.addingTimeInterval(-IdempotencyPolicy.retention).millisecondsSince1970
                    try await c.query("DELETE FROM idempotency_keys WHERE created_at < \(cutoff)", logger: logger)
                }
                return .started
            }
            guard let r = try await rows("SELECT * FROM idempotency_keys WHERE scope = \(scope) AND key = \(key) FOR UPDATE", on: c).first else {
                return .inProgress
            }
            let at = Date(millisecondsSince1970: try r["created_at"].decode(Int64.self))
            let status = try r["status"].decode(Int?.self)
            let stale = status == nil && now.timeIntervalSince(at) > IdempotencyPolicy.inProgressTimeout
            let expired = now.timeIntervalSince(at) > IdempotencyPolicy.retention
            if !stale && !expired {
                guard try r["request_hash"].decode(Data.self) == requestHash else { return .mismatch }
                guard let status else { return .inProgress }
                return .replay(StoredResponse(status: status, contentType: try r["content_type"].decode(String?.self) ?? "application/json",
                                              body: try r["body"].decode(Data?.self) ?? Data()))
            }
            try await c.query("""
                UPDATE idempotency_keys SET request_hash = \(requestHash), status = NULL, content_type = NULL, body = NULL, created_at = \(ms)
                WHERE scope = \(scope) AND key = \(key)
                """, logger: logger)
            return .started
        }
    }

    public func completeIdempotency(scope: String, key: String, response: StoredResponse) async throws {
        try await client.query("""
            UPDATE idempotency_keys SET status = \(response.status), content_type = \(response.contentType), body = \(response.body)
            WHERE scope = \(scope) AND key = \(key)
            """, logger: logger)
    }

    public func abandonIdempotency(scope: String, key: String) async throws {
        try await client.query("DELETE FROM idempotency_keys WHERE scope = \(scope) AND key = \(key)", logger: logger)
    }
}

extension PostgresStore.CheckStatement {
    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 2)
        try bindings.append(topicKey)
        try bindings.append(address)
        return bindings
    }
}
