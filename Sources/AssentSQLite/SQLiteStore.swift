import AssentCore
import AssentStore
import CSQLiteConfig
import Foundation
import GRDB
import GRDBSQLite

/// The embedded default: one SQLite file in WAL mode through a GRDB
/// `DatabasePool` (one writer, concurrent readers).
public final class SQLiteStore: LedgerStore, AudienceRowsReader {
    public let pool: DatabasePool
    public let path: String
    /// Concurrent single commits (HTTP writes) share a transaction and its fsync.
    public let committer: GroupCommitter

    /// How SQLite makes a commit durable. `full` (the default) fsyncs the WAL
    /// on every commit, so an acknowledged write survives power loss too.
    public enum Durability: String, Sendable, CaseIterable {
        case full = "FULL"
        case normal = "NORMAL"
    }

    /// Opens the database on one of Dispatch's threads. Opening can wait (up to the busy timeout)
    /// while another process holds the file; under `assent serve` Swift's jobs run on the event
    /// loops, and a loop waiting there would leave every connection it serves unanswered.
    public static func open(path: String, durability: Durability = .full) async throws -> SQLiteStore {
        try await blocking { try SQLiteStore(path: path, durability: durability) }
    }

    /// SQLite keeps memory statistics (which Assent never reads) by default, and counts every
    /// allocation under one mutex shared by every connection in the process. Turned off when the
    /// first store opens: an import's rows written through SQLite's C API alone went 68,600 -> 78,400
    /// events/s on this machine (300,000 contacts), and the lock is no longer passed between the
    /// readers and the writer. `sqlite3_config` works only before SQLite is first used in the process
    /// (the answer is then false, and nothing else changes); in `assent` nothing uses SQLite before
    /// its store opens, and `assent-bench` checks the answer in its own process.
    public static let memoryStatisticsOff: Bool = assent_sqlite_disable_memory_statistics() == SQLITE_OK

    /// `quickReaders`: how many connections read on the calling thread (`readHere`, the single
    /// check); one more than the cores by default, none to send every read through the pool.
    public init(path: String, durability: Durability = .full, quickReaders: Int? = nil) throws {
        _ = Self.memoryStatisticsOff
        var config = Configuration()
        config.busyMode = .timeout(10)
        config.foreignKeysEnabled = true
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = \(durability.rawValue)")
            // A bigger page cache than SQLite's 2 MB for the one writer, whose inserts land at random
            // places in the id and email indexes (at a million contacts an import slowed by a tenth
            // as those pages were read back through the OS); readers keep a smaller one each.
            try db.execute(sql: "PRAGMA cache_size = \(db.configuration.readonly ? -8_192 : -65_536)")
        }
        self.path = path
        let pool = try DatabasePool(path: path, configuration: config)
        self.pool = pool
        self.committer = GroupCommitter()
        var readerConfig = config
        readerConfig.readonly = true
        self.quickReaders = (0..<max(0, quickReaders ?? ProcessInfo.processInfo.activeProcessorCount + 1)).map { _ in QuickReader(path: path, configuration: readerConfig) }
    }

    /// Connections for short reads on the calling thread (see `readHere`), opened on first use.
    private let quickReaders: [QuickReader]

    /// Whether `error` is SQLite's "another connection holds the lock" (after the busy timeout).
    public static func isLocked(_ error: any Error) -> Bool {
        guard let error = error as? DatabaseError else { return false }
        return error.resultCode == .SQLITE_BUSY || error.resultCode == .SQLITE_LOCKED
    }

    public func migrate() async throws {
        // Migrating is blocking work (it owns the writer while it runs).
        let pool = self.pool
        try await Self.blocking { try SQLiteMigrations.migrator.migrate(pool) }
    }

    /// Runs blocking GRDB work (work that may wait for one of the pool's connections) on one of
    /// Dispatch's threads, never on a Swift executor's: `Task.detached` would run it on one.
    /// Under `assent serve` Swift's jobs run on the event loops, each job on the loop it came
    /// from, so a loop blocked waiting for a reader would also hold back the jobs that are to
    /// hand that reader back (a server hung so in a test until `segments()` stopped doing it).
    static func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(with: Result { try body() }) }
        }
    }

    /// Migrations applied to this file, oldest first.
    public func appliedMigrations() async throws -> [String] {
        try await pool.read { db in try SQLiteMigrations.migrator.appliedMigrations(db) }
    }

    /// Copies the live database to `path` with SQLite's online backup API:
    /// a consistent snapshot, taken while the server keeps serving.
    public func backup(to path: String) async throws {
        let destination = try DatabaseQueue(path: path)
        let pool = self.pool
        try await Self.blocking { try pool.backup(to: destination) }
        try destination.close()
    }

    public func ping() async throws {
        _ = try await pool.read { db in try Int.fetchOne(db, sql: "SELECT 1") }
    }

    /// Maps SQLite's unique-constraint failures to `StoreError.duplicate` naming the field.
    private func mapUnique<T>(_ body: () async throws -> T, value: (String) -> String) async throws -> T {
        do {
            return try await body()
        } catch let error as DatabaseError where error.extendedResultCode == .SQLITE_CONSTRAINT_UNIQUE
            || error.extendedResultCode == .SQLITE_CONSTRAINT_PRIMARYKEY {
            let message = error.message ?? ""
            let field: String = if message.contains("contacts.email") || message.contains("staff_users.email") { "email" }
                else if message.contains("contacts.external_id") { "externalId" }
                else if message.contains("topics.key") { "key" }
                else { "id" }
            throw StoreError.duplicate(field: field, value: value(field))
        }
    }

    // MARK: Topics

    public func insertTopic(_ topic: Topic, notice: Notice) async throws {
        try await mapUnique({
            try await pool.write { db in
                try db.execute(sql: """
                    INSERT INTO topics (key, title, description, category, status, requires_double_opt_in,
                        consent_lifetime_days, repermission_days, current_notice_version, created_at, updated_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """, arguments: Self.topicArguments(topic))
                try db.execute(sql: "INSERT INTO notices (topic_key, version, text, created_at) VALUES (?, ?, ?, ?)",
                               arguments: [notice.topicKey, notice.version, notice.text, notice.createdAt.millisecondsSince1970])
            }
        }, value: { _ in topic.key })
    }

    private static func topicArguments(_ t: Topic) -> StatementArguments {
        [t.key, t.title, t.description, t.category, t.status.rawValue, t.requiresDoubleOptIn, t.consentLifetimeDays,
         t.repermissionDaysBefore, t.currentNoticeVersion, t.createdAt.millisecondsSince1970, t.updatedAt.millisecondsSince1970]
    }

    public func updateTopic(_ topic: Topic) async throws {
        let changed = try await pool.write { db in
            try db.execute(sql: """
                UPDATE topics SET title = ?, description = ?, category = ?, status = ?, requires_double_opt_in = ?,
                    consent_lifetime_days = ?, repermission_days = ?, updated_at = ? WHERE key = ?
                """, arguments: [topic.title, topic.description, topic.category, topic.status.rawValue, topic.requiresDoubleOptIn,
                                 topic.consentLifetimeDays, topic.repermissionDaysBefore, topic.updatedAt.millisecondsSince1970, topic.key])
            return db.changesCount
        }
        if changed == 0 { throw StoreError.notFound(what: "topic", id: topic.key) }
    }

    public func topic(key: String) async throws -> Topic? {
        // On the calling thread (`readHere`): every recorded change reads its topics fresh, and the hop
        // to a pool reader and back cost more than the one-row select.
        try await readHere { db in try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM topics WHERE key = ?"), arguments: [key]).map(Self.topic) }
    }

    public func topics(includeRetired: Bool) async throws -> [Topic] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM topics WHERE ? OR status = 'active' ORDER BY category, key", arguments: [includeRetired])
                .map(Self.topic)
        }
    }

    static func topic(_ row: Row) -> Topic {
        Topic(key: row["key"], title: row["title"], description: row["description"], category: row["category"],
              status: Topic.Status(rawValue: row["status"]) ?? .retired, requiresDoubleOptIn: row["requires_double_opt_in"],
              consentLifetimeDays: row["consent_lifetime_days"], repermissionDaysBefore: row["repermission_days"],
              currentNoticeVersion: row["current_notice_version"],
              createdAt: Date(millisecondsSince1970: row["created_at"]), updatedAt: Date(millisecondsSince1970: row["updated_at"]))
    }

    public func appendNotice(topicKey: String, text: String, at: Date) async throws -> Notice {
        try await pool.write { db in
            guard let current = try Int.fetchOne(db, sql: "SELECT max(version) FROM notices WHERE topic_key = ?", arguments: [topicKey]) else {
                throw StoreError.notFound(what: "topic", id: topicKey)
            }
            let notice = Notice(topicKey: topicKey, version: current + 1, text: text, createdAt: at)
            try db.execute(sql: "INSERT INTO notices (topic_key, version, text, created_at) VALUES (?, ?, ?, ?)",
                           arguments: [topicKey, notice.version, text, at.millisecondsSince1970])
            try db.execute(sql: "UPDATE topics SET current_notice_version = ?, updated_at = ? WHERE key = ?",
                           arguments: [notice.version, at.millisecondsSince1970, topicKey])
            return notice
        }
    }

    public func notices(topicKey: String) async throws -> [Notice] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM notices WHERE topic_key = ? ORDER BY version", arguments: [topicKey]).map(Self.notice)
        }
    }

    public func notice(topicKey: String, version: Int) async throws -> Notice? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM notices WHERE topic_key = ? AND version = ?", arguments: [topicKey, version]).map(Self.notice)
        }
    }

    static func notice(_ row: Row) -> Notice {
        Notice(topicKey: row["topic_key"], version: row["version"], text: row["text"], createdAt: Date(millisecondsSince1970: row["created_at"]))
    }

    // MARK: Contacts

    public func insertContact(_ new: NewContact) async throws {
        let contact = new.contact
        try await mapUnique({
            try await pool.write { db in try Self.insert(new, db) }
        }, value: { field in field == "email" ? contact.email.value : field == "externalId" ? contact.externalID ?? "" : contact.id.db })
    }

    /// A new contact's rows: the contact, its wrapped key, its link secret, its webhook messages.
    /// Bound and stepped through SQLite's C API (see `RawStatement`).
    static func insert(_ new: NewContact, _ db: Database) throws {
        let c = new.contact
        let contact = try RawStatement(db.cachedStatement(sql: """
            INSERT INTO contacts (id, email, name, external_id, locale, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)
            """), db)
        try contact.bind(1, c.id)
        try contact.bind(2, c.email.value)
        try contact.bind(3, c.name)
        try contact.bind(4, c.externalID)
        try contact.bind(5, c.locale)
        try contact.bind(6, c.createdAt)
        try contact.bind(7, c.updatedAt)
        try contact.execute()
        let key = try RawStatement(db.cachedStatement(sql: "INSERT INTO contact_keys (contact_id, wrapped_key) VALUES (?, ?)"), db)
        try key.bind(1, c.id)
        try key.bind(2, new.wrappedKey)
        try key.execute()
        if let secret = new.linkSecret {
            let insert = try RawStatement(db.cachedStatement(sql: "INSERT INTO contact_link_secrets (contact_id, secret, created_at) VALUES (?, ?, ?)"), db)
            try insert.bind(1, c.id)
            try insert.bind(2, secret)
            try insert.bind(3, c.createdAt)
            try insert.execute()
        }
        try Self.insert(new.webhooks, db)
    }

    public func updateContact(_ contact: Contact) async throws {
        let changed = try await mapUnique({
            try await pool.write { db in
                try db.execute(sql: """
                    UPDATE contacts SET email = ?, name = ?, external_id = ?, locale = ?, updated_at = ? WHERE id = ?
                    """, arguments: [contact.email.value, contact.name, contact.externalID, contact.locale,
                                     contact.updatedAt.millisecondsSince1970, contact.id.db])
                return db.changesCount
            }
        }, value: { field in field == "email" ? contact.email.value : contact.externalID ?? "" })
        if changed == 0 { throw StoreError.notFound(what: "contact", id: contact.id.db) }
    }

    public func contact(id: UUID) async throws -> Contact? {
        try await readHere { db in try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM contacts WHERE id = ?"), arguments: [id.db]).flatMap(Self.contact) }
    }

    public func contact(email: EmailAddress) async throws -> Contact? {
        try await pool.read { db in try Row.fetchOne(db, sql: "SELECT * FROM contacts WHERE email = ?", arguments: [email.value]).flatMap(Self.contact) }
    }

    public func contact(externalID: String) async throws -> Contact? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM contacts WHERE external_id = ?", arguments: [externalID]).flatMap(Self.contact)
        }
    }

    public func contacts(after: UUID?, limit: Int) async throws -> [Contact] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM contacts WHERE id > ? ORDER BY id LIMIT ?", arguments: [after?.db ?? "", limit])
                .compactMap(Self.contact)
        }
    }

    static func contact(_ row: Row) -> Contact? {
        guard let id = UUID(text: row["id"]) else { return nil }
        let erasedAt = (row["erased_at"] as Int64?).map(Date.init(millisecondsSince1970:))
        guard let email = (row["email"] as String?).map(EmailAddress.init(stored:)) ?? (erasedAt != nil ? Contact.erasedPlaceholder(id) : nil)
        else { return nil }
        return Contact(id: id, email: email, name: row["name"], externalID: row["external_id"], locale: row["locale"],
                       createdAt: Date(millisecondsSince1970: row["created_at"]), updatedAt: Date(millisecondsSince1970: row["updated_at"]),
                       erasedAt: erasedAt, objectedAt: (row["objected_at"] as Int64?).map(Date.init(millisecondsSince1970:)))
    }

    public func wrappedKey(contactID: UUID) async throws -> Data? {
        try await pool.read { db in try Data.fetchOne(db.cachedStatement(sql: "SELECT wrapped_key FROM contact_keys WHERE contact_id = ?"), arguments: [contactID.db]) }
    }

    public func sampleWrappedKey() async throws -> (contactID: UUID, wrappedKey: Data)? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT contact_id, wrapped_key FROM contact_keys LIMIT 1").flatMap { row in
                UUID(text: row["contact_id"]).map { ($0, row["wrapped_key"] as Data) }
            }
        }
    }

    // MARK: Ledger

    public func contactSnapshots(emails: [EmailAddress]) async throws -> [ContactSnapshot] {
        guard !emails.isEmpty else { return [] }
        return try await pool.read { db in
            let contacts = try Row.fetchAll(db, sql: "SELECT * FROM contacts WHERE email IN (\(Self.marks(emails.count)))",
                                            arguments: StatementArguments(emails.map(\.value))).compactMap(Self.contact)
            guard !contacts.isEmpty else { return [] }
            let ids = contacts.map(\.id.db), marks = Self.marks(ids.count)
            var heads: [String: ChainHead] = [:], keys: [String: Data] = [:], preferences: [String: [String: Preference]] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT * FROM chain_heads WHERE contact_id IN (\(marks))", arguments: StatementArguments(ids)) {
                let id: String = row["contact_id"]
                heads[id] = ChainHead(contactID: UUID(text: id)!, seq: row["seq"], hash: row["hash"])
            }
            for row in try Row.fetchAll(db, sql: "SELECT * FROM contact_keys WHERE contact_id IN (\(marks))", arguments: StatementArguments(ids)) {
                keys[row["contact_id"]] = row["wrapped_key"]
            }
            for row in try Row.fetchAll(db, sql: "SELECT * FROM preferences WHERE contact_id IN (\(marks))", arguments: StatementArguments(ids)) {
                let id: String = row["contact_id"]
                let p = Self.preference(row, contactID: UUID(text: id)!)
                preferences[id, default: [:]][p.topicKey] = p
            }
            return contacts.map { c in
                ContactSnapshot(contact: c, state: LedgerState(head: heads[c.id.db] ?? .empty(c.id), preferences: preferences[c.id.db] ?? [:]),
                                wrappedKey: keys[c.id.db])
            }
        }
    }

    public func contactSnapshot(id: UUID) async throws -> ContactSnapshot? {
        // One statement, which sees one committed state by itself (no transaction), stepped through
        // SQLite's C API: four statements in a read transaction (BEGIN, COMMIT and GRDB's query_only
        // pragmas around them) with GRDB's rows by name were 6% of a recorded change's CPU.
        try await readHere { db in
            let statement = try db.cachedStatement(sql: Self.snapshotSelect)
            try statement.setArguments([id.db])
            let row = RawStatement(statement, db)
            defer { row.reset() }
            guard try row.step(), let contactID = row.text(0).flatMap(UUID.init(text:)) else { return nil }
            let erasedAt = row.int(7).map(Date.init(millisecondsSince1970:))
            guard let email = row.text(1).map(EmailAddress.init(stored:)) ?? (erasedAt != nil ? Contact.erasedPlaceholder(contactID) : nil) else { return nil }
            let contact = Contact(id: contactID, email: email, name: row.text(2), externalID: row.text(3), locale: row.text(4),
                                  createdAt: Date(millisecondsSince1970: row.int(5) ?? 0), updatedAt: Date(millisecondsSince1970: row.int(6) ?? 0),
                                  erasedAt: erasedAt, objectedAt: row.int(8).map(Date.init(millisecondsSince1970:)))
            let wrappedKey = row.blob(9)
            let head = row.int(10).map { ChainHead(contactID: contactID, seq: $0, hash: row.blob(11) ?? Data()) } ?? .empty(contactID)
            var preferences: [String: Preference] = [:]
            repeat {
                guard let topic = row.text(12) else { continue }
                preferences[topic] = Preference(contactID: contactID, topicKey: topic, state: row.text(13).flatMap(PreferenceState.init(rawValue:)) ?? .none,
                                                since: Date(millisecondsSince1970: row.int(14) ?? 0), expiresAt: row.int(15).map(Date.init(millisecondsSince1970:)),
                                                seq: row.int(16) ?? 0)
            } while try row.step()
            return ContactSnapshot(contact: contact, state: LedgerState(head: head, preferences: preferences), wrappedKey: wrappedKey)
        }
    }

    /// A contact, its key, its chain head and its preferences: a row per preference (one with none).
    static let snapshotSelect = """
        SELECT c.id, c.email, c.name, c.external_id, c.locale, c.created_at, c.updated_at, c.erased_at, c.objected_at,
               k.wrapped_key, h.seq, h.hash, p.topic_key, p.state, p.since, p.expires_at, p.seq
        FROM contacts c
        LEFT JOIN contact_keys k ON k.contact_id = c.id
        LEFT JOIN chain_heads h ON h.contact_id = c.id
        LEFT JOIN preferences p ON p.contact_id = c.id
        WHERE c.id = ?
        """

    public func contacts(externalIDs: [String]) async throws -> [Contact] {
        guard !externalIDs.isEmpty else { return [] }
        return try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM contacts WHERE external_id IN (\(Self.marks(externalIDs.count)))",
                             arguments: StatementArguments(externalIDs)).compactMap(Self.contact)
        }
    }

    static func marks(_ n: Int) -> String { Array(repeating: "?", count: n).joined(separator: ", ") }

    public func ledgerState(contactID: UUID) async throws -> LedgerState {
        try await pool.read { db in try Self.ledgerState(contactID, db) }
    }

    static func ledgerState(_ contactID: UUID, _ db: Database) throws -> LedgerState {
            let head = try Row.fetchOne(db.cachedStatement(sql: "SELECT seq, hash FROM chain_heads WHERE contact_id = ?"), arguments: [contactID.db])
                .map { ChainHead(contactID: contactID, seq: $0["seq"], hash: $0["hash"]) } ?? .empty(contactID)
            var preferences: [String: Preference] = [:]
            let rows = try Row.fetchCursor(db.cachedStatement(sql: "SELECT * FROM preferences WHERE contact_id = ?"), arguments: [contactID.db])
            while let row = try rows.next() {
                let p = Self.preference(row, contactID: contactID)
                preferences[p.topicKey] = p
            }
            return LedgerState(head: head, preferences: preferences)
    }

    public func commit(_ commit: LedgerCommit) async throws {
        try await committer.commit(commit) { [self] group in try await self.commit(group: group) }
    }

    public func commit(group: [LedgerCommit]) async throws -> [(any Error)?] {
        try await pool.write { db in
            // One commit alone needs no savepoint: its error rolls the transaction back.
            if group.count == 1 {
                try SQLiteStore.write(group[0], in: db)
                return [nil]
            }
            return group.map { commit -> (any Error)? in
                do {
                    try db.inSavepoint {
                        try SQLiteStore.write(commit, in: db)
                        return .commit
                    }
                    return nil
                } catch {
                    return error
                }
            }
        }
    }

    public func commit(batch: [LedgerCommit]) async throws {
        guard !batch.isEmpty else { return }
        try await pool.write { db in
            for commit in batch { try Self.write(commit, in: db) }
        }
    }

    public func insertContacts(_ contacts: [NewContact]) async throws {
        guard !contacts.isEmpty else { return }
        try await mapUnique({
            try await pool.write { db in
                for new in contacts { try Self.insert(new, db) }
            }
        }, value: { _ in "" })
    }

    /// The body of one commit, usable inside a larger transaction. Its reads and the rows every change
    /// writes (events, preferences, chain head) are bound and stepped through SQLite's C API: through GRDB's
    /// arguments (an array of existentials, each converted to a `DatabaseValue`) the one writer spent more
    /// on them than SQLite did (see `RawStatement`).
    static func write(_ commit: LedgerCommit, in db: Database) throws {
        let id = commit.contactID.db
        let headRead = try RawStatement(db.cachedStatement(sql: "SELECT seq FROM chain_heads WHERE contact_id = ?"), db)
        try headRead.bind(1, commit.contactID)
        let currentSeq = try headRead.step() ? headRead.int(0) ?? 0 : 0
        headRead.reset()
        guard currentSeq == commit.expectedHead.seq else { throw StoreError.concurrentModification(contactID: commit.contactID) }
        // Erased (or, for someone else's opt-in, objected) since the change was decided: start again, and the re-read refuses it.
        let marks = try RawStatement(db.cachedStatement(sql: "SELECT erased_at, objected_at FROM contacts WHERE id = ?"), db)
        try marks.bind(1, commit.contactID)
        let (erased, objected) = try marks.step() ? (marks.int(0) != nil, marks.int(1) != nil) : (false, false)
        marks.reset()
        if erased || (objected && commit.optsInForSomeoneElse) {
            throw StoreError.concurrentModification(contactID: commit.contactID)
        }
        if let consume = commit.consumeToken {
            guard let row = try Row.fetchOne(db, sql: "SELECT confirmed_topics, superseded_at FROM confirmation_tokens WHERE hash = ?", arguments: [consume.hash]) else {
                throw StoreError.notFound(what: "confirmation link", id: "")
            }
            // Replaced since it was read: let the caller re-read and see it.
            if (row["superseded_at"] as Int64?) != nil { throw StoreError.concurrentModification(contactID: commit.contactID) }
            var confirmed = TopicList.decode(row["confirmed_topics"])
            confirmed += consume.topics.filter { !confirmed.contains($0) }
            try db.execute(sql: "UPDATE confirmation_tokens SET confirmed_topics = ? WHERE hash = ?", arguments: [TopicList.encode(confirmed), consume.hash])
        }
        if let token = commit.issueToken {
            try db.execute(sql: "UPDATE confirmation_tokens SET superseded_at = ? WHERE contact_id = ? AND superseded_at IS NULL",
                           arguments: [token.createdAt.millisecondsSince1970, id])
            try db.execute(sql: """
                INSERT INTO confirmation_tokens (hash, contact_id, topics, confirmed_topics, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)
                """, arguments: [token.hash, id, TopicList.encode(token.topics), TopicList.encode(token.confirmedTopics),
                                 token.createdAt.millisecondsSince1970, token.expiresAt.millisecondsSince1970])
        }
        try insert(commit.webhooks, db)
        for item in commit.outbox {
            try db.execute(sql: """
                INSERT INTO outbox (id, contact_id, kind, payload, status, attempts, next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [item.id.db, item.contactID?.db, item.kind, item.payload, item.status.rawValue, item.attempts,
                                 item.nextAttemptAt.millisecondsSince1970, item.createdAt.millisecondsSince1970])
        }
        let insertEvent = try RawStatement(db.cachedStatement(sql: """
            INSERT INTO consent_events (id, contact_id, seq, topic_key, action, from_state, to_state, source, channel,
                actor_kind, actor_id, occurred_at, recorded_at, expires_at, notice_version, form_id, form_version, batch_id,
                sealed_evidence, prev_hash, hash)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """), db)
        for e in commit.events {
            try insertEvent.bind(1, e.id)
            try insertEvent.bind(2, commit.contactID)
            try insertEvent.bind(3, e.seq)
            try insertEvent.bind(4, e.topicKey)
            try insertEvent.bind(5, e.action.rawValue)
            try insertEvent.bind(6, e.fromState.rawValue)
            try insertEvent.bind(7, e.toState.rawValue)
            try insertEvent.bind(8, e.source.rawValue)
            try insertEvent.bind(9, e.channel?.rawValue)
            try insertEvent.bind(10, e.actor.kind.rawValue)
            try insertEvent.bind(11, e.actor.id)
            try insertEvent.bind(12, e.occurredAt)
            try insertEvent.bind(13, e.recordedAt)
            try insertEvent.bind(14, e.expiresAt)
            try insertEvent.bind(15, e.noticeVersion.map(Int64.init))
            try insertEvent.bind(16, e.formID)
            try insertEvent.bind(17, e.formVersion.map(Int64.init))
            try insertEvent.bind(18, e.batchID)
            try insertEvent.bind(19, e.sealedEvidence)
            try insertEvent.bind(20, e.prevHash)
            try insertEvent.bind(21, e.hash)
            try insertEvent.execute()
        }
        let upsertPreference = try RawStatement(db.cachedStatement(sql: """
            INSERT INTO preferences (contact_id, topic_key, state, since, expires_at, seq) VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT (contact_id, topic_key) DO UPDATE SET state = excluded.state, since = excluded.since,
                expires_at = excluded.expires_at, seq = excluded.seq
            """), db)
        for p in commit.preferences {
            try upsertPreference.bind(1, commit.contactID)
            try upsertPreference.bind(2, p.topicKey)
            try upsertPreference.bind(3, p.state.rawValue)
            try upsertPreference.bind(4, p.since)
            try upsertPreference.bind(5, p.expiresAt)
            try upsertPreference.bind(6, p.seq)
            try upsertPreference.execute()
        }
        let head = commit.newHead
        let upsertHead = try RawStatement(db.cachedStatement(sql: """
            INSERT INTO chain_heads (contact_id, seq, hash) VALUES (?, ?, ?)
            ON CONFLICT (contact_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash
            """), db)
        try upsertHead.bind(1, commit.contactID)
        try upsertHead.bind(2, head.seq)
        try upsertHead.bind(3, head.hash)
        try upsertHead.execute()
    }

    public func preferences(contactID: UUID) async throws -> [Preference] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM preferences WHERE contact_id = ? ORDER BY topic_key", arguments: [contactID.db])
                .map { Self.preference($0, contactID: contactID) }
        }
    }

    static func preference(_ row: Row, contactID: UUID) -> Preference {
        Preference(contactID: contactID, topicKey: row["topic_key"], state: PreferenceState(rawValue: row["state"]) ?? .none,
                   since: Date(millisecondsSince1970: row["since"]),
                   expiresAt: (row["expires_at"] as Int64?).map(Date.init(millisecondsSince1970:)), seq: row["seq"])
    }

    public func events(contactID: UUID, beforeSeq: Int64?, limit: Int) async throws -> [ConsentEvent] {
        try await pool.read { db in
            // Stepped through SQLite's C API: GRDB's generic row decoding was a third of a 1,000-event access export.
            let statement = try db.cachedStatement(sql: """
                SELECT \(Self.eventColumns) FROM consent_events WHERE contact_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?
                """)
            try statement.setArguments([contactID.db, beforeSeq ?? Int64.max, limit])
            let row = RawStatement(statement, db)
            var events: [ConsentEvent] = []
            while try row.step() { if let event = Self.event(row) { events.append(event) } }
            return events
        }
    }

    public func eventsPage(after: (contactID: UUID, seq: Int64)?, limit: Int) async throws -> [ConsentEvent] {
        try await pool.read { db in
            try Row.fetchAll(db.cachedStatement(sql: """
                SELECT \(Self.eventColumns) FROM consent_events WHERE (contact_id, seq) > (?, ?) ORDER BY contact_id, seq LIMIT ?
                """), arguments: [after?.contactID.db ?? "", after?.seq ?? Int64.min, limit]).compactMap(Self.event)
        }
    }

    public func preferencesPage(after: (contactID: UUID, topicKey: String)?, limit: Int) async throws -> [Preference] {
        try await pool.read { db in
            try Row.fetchAll(db.cachedStatement(sql: """
                SELECT * FROM preferences WHERE (contact_id, topic_key) > (?, ?) ORDER BY contact_id, topic_key LIMIT ?
                """), arguments: [after?.contactID.db ?? "", after?.topicKey ?? "", limit]).compactMap { row in
                UUID(text: row["contact_id"]).map { Self.preference(row, contactID: $0) }
            }
        }
    }

    /// The columns `event(_:)` reads, in the order it reads them (by index: GRDB's
    /// lookup by name lower-cases the name on every call, a fifth of `assent verify`).
    static let eventColumns = """
        id, contact_id, seq, topic_key, action, from_state, to_state, source, channel, actor_kind, actor_id, occurred_at, recorded_at,
        expires_at, notice_version, form_id, form_version, batch_id, sealed_evidence, prev_hash, hash
        """

    /// An event from a row selecting `eventColumns`.
    static func event(_ row: some ColumnReader) -> ConsentEvent? {
        guard let id = row.text(0).flatMap(UUID.init(text:)), let contactID = row.text(1).flatMap(UUID.init(text:)) else { return nil }
        // Unknown enum text can only come from a hand-edited row; it is kept
        // visible (as the closest value) and verification flags the hash.
        return ConsentEvent(
            id: id, contactID: contactID, seq: row.int(2) ?? 0, topicKey: row.text(3) ?? "",
            action: row.text(4).flatMap(ConsentAction.init(rawValue:)) ?? .granted,
            fromState: row.text(5).flatMap(PreferenceState.init(rawValue:)) ?? .none,
            toState: row.text(6).flatMap(PreferenceState.init(rawValue:)) ?? .none,
            source: row.text(7).flatMap(ConsentSource.init(rawValue:)) ?? .api,
            channel: row.text(8).flatMap(StaffChannel.init(rawValue:)),
            actor: Actor(kind: row.text(9).flatMap(Actor.Kind.init(rawValue:)) ?? .system, id: row.text(10)),
            occurredAt: Date(millisecondsSince1970: row.int(11) ?? 0), recordedAt: Date(millisecondsSince1970: row.int(12) ?? 0),
            expiresAt: row.int(13).map(Date.init(millisecondsSince1970:)),
            noticeVersion: row.int(14).map(Int.init), formID: row.text(15), formVersion: row.int(16).map(Int.init), batchID: row.text(17),
            sealedEvidence: row.blob(18), prevHash: row.blob(19) ?? Data(), hash: row.blob(20) ?? Data()
        )
    }

    public func dueExpiries(now: Date, limit: Int) async throws -> [Preference] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: """
                SELECT * FROM preferences WHERE state = 'granted' AND expires_at IS NOT NULL AND expires_at <= ?
                ORDER BY expires_at, contact_id LIMIT ?
                """, arguments: [now.millisecondsSince1970, limit]).compactMap { row in
                UUID(text: row["contact_id"]).map { Self.preference(row, contactID: $0) }
            }
        }
    }

    public func checkRows(emails: [EmailAddress], topicKey: String) async throws -> [String: CheckRow] {
        guard !emails.isEmpty else { return [:] }
        return try await pool.read { db in
            // Cached, and padded with NULLs (which match no address) to a multiple of 256 addresses
            // past 16, so a connection keeps a few sizes of the statement, not one per batch length.
            // Stepped through SQLite's C API: GRDB's rows and their decoding were a seventh of a
            // 10,000-address check.
            let slots = emails.count <= 16 ? emails.count : (emails.count + 255) / 256 * 256
            let marks = Array(repeating: "?", count: slots).joined(separator: ", ")
            let row = RawStatement(try db.cachedStatement(sql: "\(Self.checkSelect) WHERE c.email IN (\(marks))"), db)
            // Reset, and the addresses let go of: the cached statement would hold them until its next use.
            defer { row.reset() }
            // Bound through the C API (GRDB's arguments made an existential and a value of each
            // address); the padding is NULL, as a reset first clears every binding.
            row.reset()
            try row.bind(1, topicKey)
            for (i, email) in emails.enumerated() { try row.bind(Int32(i + 2), email.value) }
            var rows: [String: CheckRow] = [:]
            rows.reserveCapacity(emails.count)
            while try row.step() {
                if let (email, checkRow) = Self.checkRow(row) { rows[email] = checkRow }
            }
            return rows
        }
    }

    static let checkSelect = """
        SELECT c.id, c.email, p.topic_key, p.state, p.since, p.expires_at, p.seq
        FROM contacts c INDEXED BY contacts_email_id LEFT JOIN preferences p ON p.contact_id = c.id AND p.topic_key = ?
        """

    /// `checkSelect` for one address (built once: the single check runs it on every request).
    static let checkByEmail = "\(checkSelect) WHERE c.email = ?"

    /// The current row of `checkSelect`, by column position.
    static func checkRow(_ row: RawStatement) -> (email: String, CheckRow)? {
        guard let contactID = row.uuid(0) else { return nil }
        let preference: Preference? = row.text(3).map { state in
            Preference(contactID: contactID, topicKey: row.text(2) ?? "", state: PreferenceState(rawValue: state) ?? .none,
                       since: Date(millisecondsSince1970: row.int(4) ?? 0), expiresAt: row.int(5).map(Date.init(millisecondsSince1970:)),
                       seq: row.int(6) ?? 0)
        }
        return (row.text(1) ?? "", CheckRow(contactID: contactID, preference: preference))
    }

    public func suppressedHashes(_ hashes: [Data]) async throws -> Set<Data> {
        guard !hashes.isEmpty else { return [] }
        return try await pool.read { db in
            Set(try Data.fetchAll(db, sql: "SELECT email_hash FROM suppressions WHERE email_hash IN (\(Array(repeating: "?", count: hashes.count).joined(separator: ", ")))",
                                  arguments: StatementArguments(hashes)))
        }
    }

    public func audiencePage(topics: [String], now: Date, after: UUID?, limit: Int) async throws -> [AudienceMember] {
        guard !topics.isEmpty else { return [] }
        // One pass in contact-id order (the id index, then each contact's grants and link secret by
        // primary key), stepped through SQLite's C API: GRDB's rows, and a second join to page by
        // contact, cost more than the rest of an export's row.
        let rowLimit = max(2, limit) * topics.count
        return try await pool.read { db in
            let statement = try Self.audienceStatement(db, topics: topics, now: now, after: after, rowLimit: rowLimit)
            let row = RawStatement(statement, db)
            var members: [AudienceMember] = []
            var rows = 0, lastID: String? = nil
            while try row.step() {
                rows += 1
                let idText = row.text(0) ?? ""
                let preference: (UUID) -> Preference = { id in
                    Preference(contactID: id, topicKey: row.text(8) ?? "", state: row.text(9).flatMap(PreferenceState.init(rawValue:)) ?? .none,
                               since: Date(millisecondsSince1970: row.int(10) ?? 0), expiresAt: row.int(11).map(Date.init(millisecondsSince1970:)),
                               seq: row.int(12) ?? 0)
                }
                if idText == lastID, let id = members.last?.contact.id {
                    let p = preference(id)
                    members[members.count - 1].grants[p.topicKey] = p
                    continue
                }
                lastID = idText
                guard let id = UUID(text: idText) else { continue }
                // Erased contacts have no email and never reach the page.
                let contact = Contact(id: id, email: EmailAddress(stored: row.text(1) ?? ""), name: row.text(2), externalID: row.text(3), locale: row.text(4),
                                      createdAt: Date(millisecondsSince1970: row.int(5) ?? 0), updatedAt: Date(millisecondsSince1970: row.int(6) ?? 0),
                                      erasedAt: nil, objectedAt: row.int(7).map(Date.init(millisecondsSince1970:)))
                let p = preference(id)
                members.append(AudienceMember(contact: contact, grants: [p.topicKey: p], linkSecret: row.blob(13)))
            }
            // A full page may end part way through a contact's grants: that contact starts the next page.
            if rows == rowLimit && topics.count > 1 && members.count > 1 { members.removeLast() }
            return members
        }
    }

    /// The rows of `audiencePage` as bytes (see `AudienceRowsPage`): each field's bytes copied
    /// from SQLite's into the page's one buffer, nothing else made but the id.
    public func audienceRowsPage(topics: [String], now: Date, after: UUID?, limit: Int) async throws -> AudienceRowsPage {
        guard !topics.isEmpty else { return AudienceRowsPage() }
        let rowLimit = max(2, limit) * topics.count
        return try await pool.read { db in
            let statement = try Self.audienceStatement(db, topics: topics, now: now, after: after, rowLimit: rowLimit)
            let row = RawStatement(statement, db), handle = row.handle
            let topicKeys = topics.map { Array($0.utf8) }
            var page = AudienceRowsPage()
            page.bytes.reserveCapacity(limit * 96)
            page.rows.reserveCapacity(limit)
            page.grants.reserveCapacity(limit)
            func column(_ column: Int32) -> UnsafeRawBufferPointer? {
                guard sqlite3_column_type(handle, column) != SQLITE_NULL else { return nil }
                // The pointer first, then the count (as SQLite asks); an empty blob has no pointer.
                let pointer = column == 13 ? sqlite3_column_blob(handle, column) : UnsafeRawPointer(sqlite3_column_text(handle, column))
                return UnsafeRawBufferPointer(start: pointer, count: Int(sqlite3_column_bytes(handle, column)))
            }
            var rows = 0
            while try row.step() {
                rows += 1
                guard let id = row.uuid(0), let key = sqlite3_column_text(handle, 8),
                      let topic = topicKeys.firstIndex(where: { $0.elementsEqual(UnsafeBufferPointer(start: key, count: Int(sqlite3_column_bytes(handle, 8)))) })
                else { continue }
                page.add(id: id, AudienceRowsPage.Grant(topic: topic, sinceMilliseconds: sqlite3_column_int64(handle, 10))) { page in
                    (page.field(column(1)), page.field(column(2)), page.field(column(3)), page.field(column(4)), page.field(column(13)))
                }
            }
            page.end(rowsRead: rows, rowLimit: rowLimit, topicCount: topics.count)
            return page
        }
    }

    /// An audience page's query (contacts in id order, their grants of the topics, their link secrets).
    static func audienceStatement(_ db: Database, topics: [String], now: Date, after: UUID?, rowLimit: Int) throws -> Statement {
        let statement = try db.makeStatement(sql: """
            SELECT c.id, c.email, c.name, c.external_id, c.locale, c.created_at, c.updated_at, c.objected_at,
                   p.topic_key, p.state, p.since, p.expires_at, p.seq, s.secret
            FROM contacts c
            JOIN preferences p ON p.contact_id = c.id AND p.topic_key IN (\(Array(repeating: "?", count: topics.count).joined(separator: ", ")))
                AND p.state = 'granted' AND (p.expires_at IS NULL OR p.expires_at > ?)
            LEFT JOIN contact_link_secrets s ON s.contact_id = c.id
            WHERE c.email IS NOT NULL AND c.id > ?
            ORDER BY c.id, p.topic_key LIMIT ?
            """)
        try statement.setArguments(StatementArguments(topics + [now.millisecondsSince1970, after?.db ?? "", rowLimit] as [any DatabaseValueConvertible]))
        return statement
    }

    public func checkRow(email: EmailAddress, topicKey: String) async throws -> CheckRow? {
        // On the calling thread, by the statement each quick reader keeps prepared (see `QuickReader.tryCheck`).
        for reader in quickReaders {
            if let found = try reader.tryCheck(email: email.value, topicKey: topicKey) { return found.value }
        }
        return try await pool.read { db in
            let row = RawStatement(try db.cachedStatement(sql: Self.checkByEmail), db)
            return try Self.checkRow(row, email: email.value, topicKey: topicKey)
        }
    }

    /// The single check's row, by `checkByEmail` stepped through SQLite's C API (GRDB's row, a cursor,
    /// a copy and decoding by protocol, cost more than the select).
    static func checkRow(_ row: RawStatement, email: String, topicKey: String) throws -> CheckRow? {
        try row.bind(1, topicKey)
        try row.bind(2, email)
        // Reset at once, so that no statement left on a row holds the read open (and a checkpoint back).
        defer { row.reset() }
        return try row.step() ? checkRow(row)?.1 : nil
    }

    /// A short read on the calling thread, on a connection of its own. GRDB's async read hands
    /// the work to a reader's queue and back: for a point select that hop (two thread wake-ups)
    /// cost more than the select. Only for reads of a few rows, as the thread runs them itself.
    /// A connection is taken only if free (never waited for: waiting on the cooperative threads
    /// for a pool reader deadlocked, as the readers are handed back on those threads); when
    /// every one is busy the read goes through the pool as usual.
    /// The body runs outside a transaction (BEGIN and COMMIT were half of a point read's time):
    /// one SELECT, which sees one committed state by itself.
    func readHere<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        for reader in quickReaders {
            if let value = try reader.tryRead(body) { return value.value }
        }
        return try await pool.read(body)
    }

    public func scanChains(_ body: @Sendable (ChainSnapshot) throws -> Void) async throws {
        try await pool.read { db in
            // Three ordered cursors merged by contact id: one pass, one contact in memory at a time. They step
            // SQLite directly: GRDB's rows cost more than the hashing (generic decoding, a copy per row).
            let events = try RawCursor(db, "SELECT \(Self.eventColumns) FROM consent_events ORDER BY contact_id, seq", idColumn: 1)
            let heads = try RawCursor(db, "SELECT contact_id, seq, hash FROM chain_heads ORDER BY contact_id", idColumn: 0)
            let prefs = try RawCursor(db, """
                SELECT contact_id, topic_key, state, since, expires_at, seq FROM preferences ORDER BY contact_id, topic_key
                """, idColumn: 0)
            while true {
                let candidates = [events.contactID, heads.contactID, prefs.contactID].compactMap { $0 }
                guard let current = candidates.min() else { return }
                guard let contactID = UUID(text: current) else {
                    _ = try events.take(while: current) { _ in () }
                    _ = try heads.take(while: current) { _ in () }
                    _ = try prefs.take(while: current) { _ in () }
                    continue
                }
                let chainEvents = try events.take(while: current, Self.event)
                let head = try heads.take(while: current) { row in ChainHead(contactID: contactID, seq: row.int(1) ?? 0, hash: row.blob(2) ?? Data()) }.first
                let preferences = try prefs.take(while: current) { row in
                    Preference(contactID: contactID, topicKey: row.text(1) ?? "", state: row.text(2).flatMap(PreferenceState.init(rawValue:)) ?? .none,
                               since: Date(millisecondsSince1970: row.int(3) ?? 0), expiresAt: row.int(4).map(Date.init(millisecondsSince1970:)),
                               seq: row.int(5) ?? 0)
                }
                try body(ChainSnapshot(contactID: contactID, events: chainEvents, head: head, preferences: preferences))
            }
        }
    }

    // MARK: Double opt-in and outbox

    public func confirmationToken(hash: Data) async throws -> ConfirmationToken? {
        try await confirmationToken(sql: "SELECT * FROM confirmation_tokens WHERE hash = ?", arguments: [hash])
    }

    public func latestConfirmationToken(contactID: UUID) async throws -> ConfirmationToken? {
        try await confirmationToken(sql: "SELECT * FROM confirmation_tokens WHERE contact_id = ? ORDER BY created_at DESC, hash DESC LIMIT 1",
                                    arguments: [contactID.db])
    }

    private func confirmationToken(sql: String, arguments: StatementArguments) async throws -> ConfirmationToken? {
        // On the calling thread: a change that changes nothing looks its latest token up, and the
        // hop to a pool reader cost more than the select.
        try await readHere { db in
            try Row.fetchOne(db.cachedStatement(sql: sql), arguments: arguments).flatMap { row in
                guard let contactID = UUID(text: row["contact_id"]) else { return nil }
                return ConfirmationToken(hash: row["hash"], contactID: contactID, topics: TopicList.decode(row["topics"]),
                                         confirmedTopics: TopicList.decode(row["confirmed_topics"]),
                                         createdAt: Date(millisecondsSince1970: row["created_at"]),
                                         expiresAt: Date(millisecondsSince1970: row["expires_at"]),
                                         supersededAt: (row["superseded_at"] as Int64?).map(Date.init(millisecondsSince1970:)))
            }
        }
    }

    public func supersedeConfirmationTokens(contactID: UUID, at: Date) async throws {
        try await pool.write { db in
            try db.execute(sql: "UPDATE confirmation_tokens SET superseded_at = ? WHERE contact_id = ? AND superseded_at IS NULL",
                           arguments: [at.millisecondsSince1970, contactID.db])
        }
    }

    public func claimOutbox(now: Date, limit: Int, lease: TimeInterval) async throws -> [OutboxItem] {
        // One writer at a time in SQLite: the select and the claim are atomic together.
        try await pool.write { db in
            let ms = now.millisecondsSince1970
            let rows = try Row.fetchAll(db, sql: """
                UPDATE outbox SET attempts = attempts + 1, claimed_until = ?
                WHERE id IN (SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_at <= ?
                             AND (claimed_until IS NULL OR claimed_until < ?) ORDER BY next_attempt_at, created_at LIMIT ?)
                RETURNING *
                """, arguments: [now.addingTimeInterval(lease).millisecondsSince1970, ms, ms, limit])
            return rows.compactMap(Self.outboxItem).sorted { ($0.nextAttemptAt, $0.createdAt) < ($1.nextAttemptAt, $1.createdAt) }
        }
    }

    static func outboxItem(_ row: Row) -> OutboxItem? {
        guard let id = UUID(text: row["id"]) else { return nil }
        return OutboxItem(id: id, contactID: (row["contact_id"] as String?).flatMap(UUID.init(uuidString:)), kind: row["kind"],
                          payload: row["payload"], status: OutboxItem.Status(rawValue: row["status"]) ?? .dead, attempts: row["attempts"],
                          nextAttemptAt: Date(millisecondsSince1970: row["next_attempt_at"]), lastError: row["last_error"],
                          createdAt: Date(millisecondsSince1970: row["created_at"]),
                          sentAt: (row["sent_at"] as Int64?).map(Date.init(millisecondsSince1970:)))
    }

    public func completeOutbox(id: UUID, at: Date, payload: Data) async throws {
        try await pool.write { db in
            try db.execute(sql: "UPDATE outbox SET status = 'sent', sent_at = ?, payload = ?, last_error = NULL, claimed_until = NULL WHERE id = ? AND status = 'pending'",
                           arguments: [at.millisecondsSince1970, payload, id.db])
        }
    }

    public func failOutbox(id: UUID, error: String, retryAt: Date?) async throws {
        try await pool.write { db in
            if let retryAt {
                try db.execute(sql: "UPDATE outbox SET last_error = ?, next_attempt_at = ?, claimed_until = NULL WHERE id = ? AND status = 'pending'",
                               arguments: [error, retryAt.millisecondsSince1970, id.db])
            } else {
                try db.execute(sql: "UPDATE outbox SET last_error = ?, status = 'dead', claimed_until = NULL WHERE id = ? AND status = 'pending'", arguments: [error, id.db])
            }
        }
    }

    public func recordVerifyRun(_ run: VerifyRun) async throws {
        try await pool.write { db in
            try db.execute(sql: "INSERT INTO verify_runs (finished_at, seconds, contacts, events, breaks, origin) VALUES (?, ?, ?, ?, ?, ?)",
                           arguments: [run.finishedAt.millisecondsSince1970, run.seconds, run.contacts, run.events, run.breaks, run.origin])
        }
    }

    public func lastVerifyRun() async throws -> VerifyRun? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT finished_at, seconds, contacts, events, breaks, origin FROM verify_runs ORDER BY id DESC LIMIT 1").map { row in
                VerifyRun(finishedAt: Date(millisecondsSince1970: row[0]), seconds: row[1], contacts: row[2], events: row[3], breaks: row[4], origin: row[5])
            }
        }
    }

    public func outboxBacklog() async throws -> (pending: Int, oldestCreatedAt: Date?) {
        try await pool.read { db in
            let row = try Row.fetchOne(db, sql: "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE status = 'pending'")
            return (row?[0] ?? 0, (row?[1] as Int64?).map(Date.init(millisecondsSince1970:)))
        }
    }

    public func outboxItems(status: OutboxItem.Status?, limit: Int) async throws -> [OutboxItem] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM outbox WHERE ? IS NULL OR status = ? ORDER BY created_at DESC, id DESC LIMIT ?",
                             arguments: [status?.rawValue, status?.rawValue, limit]).compactMap(Self.outboxItem)
        }
    }

    public func retryOutbox(id: UUID?, now: Date) async throws -> Int {
        try await pool.write { db in
            try db.execute(sql: """
                UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?, claimed_until = NULL
                WHERE status = 'dead' AND (? IS NULL OR id = ?)
                """, arguments: [now.millisecondsSince1970, id?.db, id?.db])
            return db.changesCount
        }
    }

    // MARK: Receipts

    public func signingKeys() async throws -> [SigningKeyRecord] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM signing_keys ORDER BY created_at, key_id").map {
                SigningKeyRecord(keyID: $0["key_id"], sealedPrivateKey: $0["sealed_private_key"], createdAt: Date(millisecondsSince1970: $0["created_at"]))
            }
        }
    }

    public func insertSigningKey(_ key: SigningKeyRecord) async throws {
        try await mapUnique({
            try await pool.write { db in
                try db.execute(sql: "INSERT INTO signing_keys (key_id, sealed_private_key, created_at) VALUES (?, ?, ?)",
                               arguments: [key.keyID, key.sealedPrivateKey, key.createdAt.millisecondsSince1970])
            }
        }, value: { _ in key.keyID })
    }

    public func event(id: UUID) async throws -> ConsentEvent? {
        try await pool.read { db in try Row.fetchOne(db, sql: "SELECT \(Self.eventColumns) FROM consent_events WHERE id = ?", arguments: [id.db]).flatMap(Self.event) }
    }

    public func searchContacts(_ text: String, limit: Int) async throws -> [Contact] {
        let pattern = "%" + text.lowercased().replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "%", with: "\\%")
            .replacingOccurrences(of: "_", with: "\\_") + "%"
        return try await pool.read { db in
            try Row.fetchAll(db, sql: """
                SELECT * FROM contacts WHERE email LIKE ? ESCAPE '\\' OR lower(name) LIKE ? ESCAPE '\\' OR external_id = ?
                ORDER BY email LIMIT ?
                """, arguments: [pattern, pattern, text, limit]).compactMap(Self.contact)
        }
    }

    // MARK: Forms

    public func insertForm(_ form: Form) async throws {
        let definition = try FormJSON.encode(form.definition)
        try await mapUnique({
            try await pool.write { db in
                try db.execute(sql: "INSERT INTO forms (id, current_version, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                               arguments: [form.id, form.version, form.status.rawValue, form.createdAt.millisecondsSince1970,
                                           form.versionCreatedAt.millisecondsSince1970])
                try db.execute(sql: "INSERT INTO form_versions (form_id, version, definition, created_at) VALUES (?, ?, ?, ?)",
                               arguments: [form.id, form.version, definition, form.versionCreatedAt.millisecondsSince1970])
            }
        }, value: { _ in form.id })
    }

    public func appendFormVersion(_ form: Form) async throws {
        let definition = try FormJSON.encode(form.definition)
        try await pool.write { db in
            guard let current = try Int.fetchOne(db, sql: "SELECT current_version FROM forms WHERE id = ?", arguments: [form.id]) else {
                throw StoreError.notFound(what: "form", id: form.id)
            }
            guard form.version == current + 1 else { throw StoreError.duplicate(field: "version", value: "\(form.version)") }
            try db.execute(sql: "INSERT INTO form_versions (form_id, version, definition, created_at) VALUES (?, ?, ?, ?)",
                           arguments: [form.id, form.version, definition, form.versionCreatedAt.millisecondsSince1970])
            try db.execute(sql: "UPDATE forms SET current_version = ?, updated_at = ? WHERE id = ?",
                           arguments: [form.version, form.versionCreatedAt.millisecondsSince1970, form.id])
        }
    }

    public func setFormStatus(id: String, status: Form.Status, at: Date) async throws {
        try await pool.write { db in
            try db.execute(sql: "UPDATE forms SET status = ?, updated_at = ? WHERE id = ?", arguments: [status.rawValue, at.millisecondsSince1970, id])
            if db.changesCount == 0 { throw StoreError.notFound(what: "form", id: id) }
        }
    }

    private static let formSelect = """
        SELECT f.id, f.status, f.created_at, v.version, v.definition, v.created_at AS version_created_at
        FROM forms f JOIN form_versions v ON v.form_id = f.id
        """

    public func form(id: String) async throws -> Form? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: Self.formSelect + " WHERE f.id = ? AND v.version = f.current_version", arguments: [id]).map(Self.form)
        }
    }

    public func form(id: String, version: Int) async throws -> Form? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: Self.formSelect + " WHERE f.id = ? AND v.version = ?", arguments: [id, version]).map(Self.form)
        }
    }

    public func forms(includeRetired: Bool) async throws -> [Form] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: Self.formSelect + " WHERE v.version = f.current_version" + (includeRetired ? "" : " AND f.status = 'active'")
                                + " ORDER BY f.id").map(Self.form)
        }
    }

    static func form(_ row: Row) throws -> Form {
        Form(id: row["id"], version: row["version"], status: Form.Status(rawValue: row["status"]) ?? .active,
             definition: try FormJSON.decode(row["definition"]), createdAt: Date(millisecondsSince1970: row["created_at"]),
             versionCreatedAt: Date(millisecondsSince1970: row["version_created_at"]))
    }

    // MARK: Contact links

    public func linkSecret(contactID: UUID) async throws -> Data? {
        try await pool.read { db in
            try Data.fetchOne(db, sql: "SELECT secret FROM contact_link_secrets WHERE contact_id = ?", arguments: [contactID.db])
        }
    }

    public func ensureLinkSecret(contactID: UUID, candidate: Data, at: Date) async throws -> Data {
        try await pool.write { db in
            try Self.requireContact(contactID, db)
            try db.execute(sql: "INSERT INTO contact_link_secrets (contact_id, secret, created_at) VALUES (?, ?, ?) ON CONFLICT (contact_id) DO NOTHING",
                           arguments: [contactID.db, candidate, at.millisecondsSince1970])
            return try Data.fetchOne(db, sql: "SELECT secret FROM contact_link_secrets WHERE contact_id = ?", arguments: [contactID.db]) ?? candidate
        }
    }

    public func ensureLinkSecrets(_ ids: [UUID], at: Date, make: @Sendable () -> Data) async throws -> [UUID: Data] {
        guard !ids.isEmpty else { return [:] }
        @Sendable func read(_ ids: [UUID], _ db: Database) throws -> [UUID: Data] {
            var found: [UUID: Data] = [:]
            let marks = Array(repeating: "?", count: ids.count).joined(separator: ",")
            for row in try Row.fetchAll(db, sql: "SELECT contact_id, secret FROM contact_link_secrets WHERE contact_id IN (\(marks))",
                                        arguments: StatementArguments(ids.map(\.db))) {
                if let id = UUID(text: row[0]) { found[id] = row[1] }
            }
            return found
        }
        var found = try await pool.read { db in try read(ids, db) }
        let missing = Set(ids.filter { found[$0] == nil }).map { ($0, make()) }
        guard !missing.isEmpty else { return found }
        let made = try await pool.write { db in
            let insert = try db.cachedStatement(sql: """
                INSERT INTO contact_link_secrets (contact_id, secret, created_at)
                SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM contacts WHERE id = ? AND erased_at IS NULL) ON CONFLICT (contact_id) DO NOTHING
                """)
            for (id, secret) in missing { try insert.execute(arguments: [id.db, secret, at.millisecondsSince1970, id.db]) }
            return try read(missing.map(\.0), db)
        }
        found.merge(made) { _, new in new }
        return found
    }

    public func replaceLinkSecret(contactID: UUID, secret: Data, at: Date) async throws {
        try await pool.write { db in
            try Self.requireContact(contactID, db)
            try db.execute(sql: """
                INSERT INTO contact_link_secrets (contact_id, secret, created_at) VALUES (?, ?, ?)
                ON CONFLICT (contact_id) DO UPDATE SET secret = excluded.secret, created_at = excluded.created_at
                """, arguments: [contactID.db, secret, at.millisecondsSince1970])
        }
    }

    private static func requireContact(_ id: UUID, _ db: Database) throws {
        guard try Bool.fetchOne(db, sql: "SELECT 1 FROM contacts WHERE id = ?", arguments: [id.db]) == true else {
            throw StoreError.notFound(what: "contact", id: id.uuidString.lowercased())
        }
    }

    // MARK: Portal

    public func issuePortalLink(_ link: PortalLinkRecord, email: OutboxItem) async throws {
        try await pool.write { db in
            try Self.requireContact(link.contactID, db)
            try db.execute(sql: "INSERT INTO portal_links (hash, contact_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
                           arguments: [link.hash, link.contactID.db, link.createdAt.millisecondsSince1970, link.expiresAt.millisecondsSince1970])
            try db.execute(sql: """
                INSERT INTO outbox (id, contact_id, kind, payload, status, attempts, next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [email.id.db, email.contactID?.db, email.kind, email.payload, email.status.rawValue, email.attempts,
                                   email.nextAttemptAt.millisecondsSince1970, email.createdAt.millisecondsSince1970])
        }
    }

    public func portalLink(hash: Data) async throws -> PortalLinkRecord? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM portal_links WHERE hash = ?", arguments: [hash]).map { row in
                PortalLinkRecord(hash: row["hash"], contactID: UUID(text: row["contact_id"])!,
                                 createdAt: Date(millisecondsSince1970: row["created_at"]), expiresAt: Date(millisecondsSince1970: row["expires_at"]),
                                 usedAt: (row["used_at"] as Int64?).map(Date.init(millisecondsSince1970:)))
            }
        }
    }

    public func portalLinkCount(contactID: UUID, since: Date) async throws -> Int {
        try await pool.read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM portal_links WHERE contact_id = ? AND created_at >= ?",
                             arguments: [contactID.db, since.millisecondsSince1970]) ?? 0
        }
    }

    public func consumePortalLink(hash: Data, at: Date) async throws -> UUID? {
        try await pool.write { db in
            try db.execute(sql: "UPDATE portal_links SET used_at = ? WHERE hash = ? AND used_at IS NULL AND expires_at > ?",
                           arguments: [at.millisecondsSince1970, hash, at.millisecondsSince1970])
            guard db.changesCount == 1 else { return nil }
            return try String.fetchOne(db, sql: "SELECT contact_id FROM portal_links WHERE hash = ?", arguments: [hash]).flatMap(UUID.init(uuidString:))
        }
    }

    public func insertPortalSession(_ session: PortalSession) async throws {
        try await pool.write { db in
            try db.execute(sql: "INSERT INTO portal_sessions (hash, contact_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
                           arguments: [session.hash, session.contactID.db, session.createdAt.millisecondsSince1970, session.expiresAt.millisecondsSince1970])
        }
    }

    public func portalSession(hash: Data) async throws -> PortalSession? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM portal_sessions WHERE hash = ?", arguments: [hash]).map { row in
                PortalSession(hash: row["hash"], contactID: UUID(text: row["contact_id"])!,
                              createdAt: Date(millisecondsSince1970: row["created_at"]), expiresAt: Date(millisecondsSince1970: row["expires_at"]))
            }
        }
    }

    public func deletePortalSession(hash: Data) async throws {
        try await pool.write { db in try db.execute(sql: "DELETE FROM portal_sessions WHERE hash = ?", arguments: [hash]) }
    }

    // MARK: Subject requests

    public func insertSubjectRequest(_ request: SubjectRequest, webhooks: [WebhookDelivery]) async throws {
        try await mapUnique({ try await insertSubjectRequestRow(request, webhooks: webhooks) }, value: { _ in request.kind.rawValue })
    }

    private func insertSubjectRequestRow(_ request: SubjectRequest, webhooks: [WebhookDelivery]) async throws {
        try await pool.write { db in
            try Self.requireContact(request.contactID, db)
            try db.execute(sql: """
                INSERT INTO subject_requests (id, contact_id, kind, status, channel, note, created_at, due_at, closed_at, outcome, identity_note,
                    extension_reason, handler)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [request.id.db, request.contactID.db, request.kind.rawValue, request.status.rawValue, request.channel, request.note,
                                   request.createdAt.millisecondsSince1970, request.dueAt.millisecondsSince1970, request.closedAt?.millisecondsSince1970,
                                   request.outcome, request.identityNote, request.extensionReason, request.handler])
            try Self.insert(webhooks, db)
        }
    }

    public func updateSubjectRequest(_ r: SubjectRequest) async throws {
        try await pool.write { db in
            try db.execute(sql: """
                UPDATE subject_requests SET status = ?, due_at = ?, closed_at = ?, outcome = ?, identity_note = ?, extension_reason = ?, handler = ?
                WHERE id = ?
                """, arguments: [r.status.rawValue, r.dueAt.millisecondsSince1970, r.closedAt?.millisecondsSince1970, r.outcome, r.identityNote,
                                   r.extensionReason, r.handler, r.id.db])
            if db.changesCount == 0 { throw StoreError.notFound(what: "request", id: r.id.db) }
        }
    }

    public func subjectRequest(id: UUID) async throws -> SubjectRequest? {
        try await pool.read { db in try Row.fetchOne(db, sql: "SELECT * FROM subject_requests WHERE id = ?", arguments: [id.db]).map(Self.subjectRequest) }
    }

    public func closeSubjectRequest(id: UUID, at: Date, outcome: String) async throws {
        try await pool.write { db in
            try db.execute(sql: "UPDATE subject_requests SET status = 'closed', closed_at = ?, outcome = ? WHERE id = ?",
                           arguments: [at.millisecondsSince1970, outcome, id.db])
            if db.changesCount == 0 { throw StoreError.notFound(what: "request", id: id.db) }
        }
    }

    public func subjectRequests(contactID: UUID?, status: SubjectRequest.Status?, limit: Int) async throws -> [SubjectRequest] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: """
                SELECT * FROM subject_requests WHERE (? IS NULL OR contact_id = ?) AND (? IS NULL OR status = ?)
                ORDER BY created_at DESC, id DESC LIMIT ?
                """, arguments: [contactID?.db, contactID?.db, status?.rawValue, status?.rawValue, limit]).map(Self.subjectRequest)
        }
    }

    static func subjectRequest(_ row: Row) -> SubjectRequest {
        var r = SubjectRequest(id: UUID(text: row["id"])!, contactID: UUID(text: row["contact_id"])!,
                               kind: SubjectRequest.Kind(rawValue: row["kind"]) ?? .access, status: SubjectRequest.Status(rawValue: row["status"]) ?? .open,
                               channel: row["channel"], note: row["note"], createdAt: Date(millisecondsSince1970: row["created_at"]),
                               dueAt: Date(millisecondsSince1970: row["due_at"]), closedAt: (row["closed_at"] as Int64?).map(Date.init(millisecondsSince1970:)),
                               outcome: row["outcome"])
        r.identityNote = row["identity_note"]
        r.extensionReason = row["extension_reason"]
        r.handler = row["handler"]
        return r
    }


    // MARK: Erasure and objection

    public func eraseContact(_ e: ContactErasure) async throws {
        try await pool.write { db in
            let id = e.contactID.db
            try db.execute(sql: "UPDATE contacts SET email = NULL, name = NULL, external_id = NULL, locale = NULL, erased_at = ?, updated_at = ? WHERE id = ?",
                           arguments: [e.at.millisecondsSince1970, e.at.millisecondsSince1970, id])
            if db.changesCount == 0 { throw StoreError.notFound(what: "contact", id: id) }
            for table in ["contact_keys", "outbox", "confirmation_tokens", "contact_link_secrets", "portal_links", "portal_sessions"] {
                try db.execute(sql: "DELETE FROM \(table) WHERE contact_id = ?", arguments: [id])
            }
            try db.execute(sql: "UPDATE subject_requests SET note = NULL, identity_note = NULL WHERE contact_id = ?", arguments: [id])
            try db.execute(sql: "DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM webhook_deliveries WHERE contact_id = ?)", arguments: [id])
            try db.execute(sql: "DELETE FROM webhook_deliveries WHERE contact_id = ?", arguments: [id])
            try Self.insert(e.webhooks, db)
            // Stored API responses (idempotent replays) that carry the address.
            try db.execute(sql: "DELETE FROM idempotency_keys WHERE instr(CAST(body AS TEXT), ?) > 0", arguments: [e.email])
            try db.execute(sql: """
                INSERT INTO suppressions (email_hash, contact_id, erased_at, reason, erased_by) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (email_hash) DO UPDATE SET contact_id = excluded.contact_id, erased_at = excluded.erased_at,
                    reason = excluded.reason, erased_by = excluded.erased_by
                """, arguments: [e.emailHash, id, e.at.millisecondsSince1970, e.reason, e.erasedBy])
        }
    }

    public func outboxItems(contactID: UUID) async throws -> [OutboxItem] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM outbox WHERE contact_id = ? ORDER BY created_at, id", arguments: [contactID.db]).compactMap(Self.outboxItem)
        }
    }

    public func suppression(emailHash: Data) async throws -> Suppression? {
        // On the calling thread: the send-time check of an address Assent does not know reads it.
        try await readHere { db in
            try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM suppressions WHERE email_hash = ?"), arguments: [emailHash]).map { row in
                Suppression(emailHash: row["email_hash"], contactID: UUID(text: row["contact_id"])!,
                            erasedAt: Date(millisecondsSince1970: row["erased_at"]), reason: row["reason"], erasedBy: row["erased_by"])
            }
        }
    }

    public func setContactObjection(contactID: UUID, at: Date?) async throws {
        try await pool.write { db in
            try db.execute(sql: "UPDATE contacts SET objected_at = ? WHERE id = ?", arguments: [at?.millisecondsSince1970, contactID.db])
            if db.changesCount == 0 { throw StoreError.notFound(what: "contact", id: contactID.db) }
        }
    }

    // MARK: Staff

    public func insertStaffUser(_ user: StaffUser) async throws {
        try await mapUnique({
            try await pool.write { db in
                try db.execute(sql: """
                    INSERT INTO staff_users (id, email, name, role, password_hash, must_change_password, failed_sign_ins, locked_until, created_at, disabled_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """, arguments: Self.staffArguments(user))
            }
        }, value: { _ in user.email.value })
    }

    static func staffArguments(_ u: StaffUser) -> StatementArguments {
        [u.id.db, u.email.value, u.name, u.role.rawValue, u.passwordHash, u.mustChangePassword, u.failedSignIns,
         u.lockedUntil?.millisecondsSince1970, u.createdAt.millisecondsSince1970, u.disabledAt?.millisecondsSince1970]
    }

    public func recordStaffSignInFailure(userID: UUID, lockAfter: Int, lockUntil: Date) async throws -> Date? {
        // One write transaction: concurrent wrong guesses are counted one by one.
        try await pool.write { db in
            try db.execute(sql: "UPDATE staff_users SET failed_sign_ins = failed_sign_ins + 1 WHERE id = ?", arguments: [userID.db])
            let failed = try Int.fetchOne(db, sql: "SELECT failed_sign_ins FROM staff_users WHERE id = ?", arguments: [userID.db]) ?? 0
            guard failed >= lockAfter else { return nil }
            try db.execute(sql: "UPDATE staff_users SET failed_sign_ins = 0, locked_until = ? WHERE id = ?",
                           arguments: [lockUntil.millisecondsSince1970, userID.db])
            return lockUntil
        }
    }

    public func recordStaffSignInSuccess(userID: UUID, passwordHash: String) async throws -> Bool {
        try await pool.write { db in
            try db.execute(sql: """
                UPDATE staff_users SET failed_sign_ins = 0, locked_until = NULL WHERE id = ? AND password_hash = ? AND disabled_at IS NULL
                """, arguments: [userID.db, passwordHash])
            return db.changesCount == 1
        }
    }

    public func setStaffPassword(userID: UUID, expected: String?, newHash: String, mustChange: Bool) async throws -> Bool {
        try await pool.write { db in
            try db.execute(sql: """
                UPDATE staff_users SET password_hash = ?, must_change_password = ?, failed_sign_ins = 0, locked_until = NULL
                WHERE id = ? AND (? IS NULL OR password_hash = ?)
                """, arguments: [newHash, mustChange, userID.db, expected, expected])
            return db.changesCount == 1
        }
    }

    public func disableStaffUser(userID: UUID, at: Date) async throws {
        try await pool.write { db in
            try db.execute(sql: "UPDATE staff_users SET disabled_at = COALESCE(disabled_at, ?) WHERE id = ?", arguments: [at.millisecondsSince1970, userID.db])
            if db.changesCount == 0 { throw StoreError.notFound(what: "staff user", id: userID.db) }
        }
    }

    public func staffUser(id: UUID) async throws -> StaffUser? {
        try await pool.read { db in try Row.fetchOne(db, sql: "SELECT * FROM staff_users WHERE id = ?", arguments: [id.db]).flatMap(Self.staffUser) }
    }

    public func staffUser(email: EmailAddress) async throws -> StaffUser? {
        try await pool.read { db in try Row.fetchOne(db, sql: "SELECT * FROM staff_users WHERE email = ?", arguments: [email.value]).flatMap(Self.staffUser) }
    }

    public func staffUsers() async throws -> [StaffUser] {
        try await pool.read { db in try Row.fetchAll(db, sql: "SELECT * FROM staff_users ORDER BY email").compactMap(Self.staffUser) }
    }

    static func staffUser(_ row: Row) -> StaffUser? {
        guard let id = UUID(text: row["id"]), let email = try? EmailAddress(row["email"]) else { return nil }
        return StaffUser(id: id, email: email, name: row["name"], role: StaffUser.Role(rawValue: row["role"]) ?? .auditor,
                         passwordHash: row["password_hash"], mustChangePassword: row["must_change_password"], failedSignIns: row["failed_sign_ins"],
                         lockedUntil: (row["locked_until"] as Int64?).map(Date.init(millisecondsSince1970:)),
                         createdAt: Date(millisecondsSince1970: row["created_at"]),
                         disabledAt: (row["disabled_at"] as Int64?).map(Date.init(millisecondsSince1970:)))
    }

    public func insertStaffSession(_ session: StaffSession) async throws {
        try await pool.write { db in
            try db.execute(sql: "INSERT INTO staff_sessions (hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
                           arguments: [session.hash, session.userID.db, session.createdAt.millisecondsSince1970, session.expiresAt.millisecondsSince1970])
        }
    }

    public func staffSession(hash: Data) async throws -> StaffSession? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM staff_sessions WHERE hash = ?", arguments: [hash]).map { row in
                StaffSession(hash: row["hash"], userID: UUID(text: row["user_id"])!, createdAt: Date(millisecondsSince1970: row["created_at"]),
                             expiresAt: Date(millisecondsSince1970: row["expires_at"]))
            }
        }
    }

    public func extendStaffSession(hash: Data, expiresAt: Date) async throws {
        try await pool.write { db in
            try db.execute(sql: "UPDATE staff_sessions SET expires_at = ? WHERE hash = ?", arguments: [expiresAt.millisecondsSince1970, hash])
        }
    }

    public func deleteStaffSession(hash: Data) async throws {
        try await pool.write { db in try db.execute(sql: "DELETE FROM staff_sessions WHERE hash = ?", arguments: [hash]) }
    }

    public func deleteStaffSessions(userID: UUID) async throws {
        try await pool.write { db in try db.execute(sql: "DELETE FROM staff_sessions WHERE user_id = ?", arguments: [userID.db]) }
    }

    // MARK: Audit log

    public func appendAudit(_ e: AuditEntry) async throws {
        try await pool.write { db in
            try db.execute(sql: "INSERT INTO audit_log (id, at, actor_id, actor_email, action, target, detail, ip_address) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           arguments: [e.id.db, e.at.millisecondsSince1970, e.actorID?.db, e.actorEmail, e.action, e.target, e.detail, e.ipAddress])
        }
    }

    public func auditEntries(_ q: AuditQuery) async throws -> [AuditEntry] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: """
                SELECT * FROM audit_log
                WHERE (? IS NULL OR actor_id = ?) AND (? IS NULL OR action = ?) AND (? IS NULL OR target = ?)
                  AND (? IS NULL OR at >= ?) AND (? IS NULL OR at < ?)
                ORDER BY at DESC, id DESC LIMIT ?
                """, arguments: [q.actorID?.db, q.actorID?.db, q.action, q.action, q.target, q.target,
                                   q.since?.millisecondsSince1970, q.since?.millisecondsSince1970, q.until?.millisecondsSince1970,
                                   q.until?.millisecondsSince1970, q.limit]).map { row in
                AuditEntry(id: UUID(text: row["id"])!, at: Date(millisecondsSince1970: row["at"]),
                           actorID: (row["actor_id"] as String?).flatMap(UUID.init(uuidString:)), actorEmail: row["actor_email"], action: row["action"],
                           target: row["target"], detail: row["detail"], ipAddress: row["ip_address"])
            }
        }
    }

    // MARK: API keys

    public func insertAPIKey(_ key: APIKey) async throws {
        try await mapUnique({
            try await pool.write { db in
                try db.execute(sql: "INSERT INTO api_keys (id, name, scope, secret_hash, created_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?)",
                               arguments: [key.id, key.name, key.scope.rawValue, key.secretHash, key.createdAt.millisecondsSince1970,
                                           key.revokedAt?.millisecondsSince1970])
            }
        }, value: { _ in key.id })
    }

    public func apiKey(id: String) async throws -> APIKey? {
        try await pool.read { db in
            try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM api_keys WHERE id = ?"), arguments: [id]).map(Self.apiKey)
        }
    }

    public func apiKeys() async throws -> [APIKey] {
        try await pool.read { db in try Row.fetchAll(db, sql: "SELECT * FROM api_keys ORDER BY created_at, id").map(Self.apiKey) }
    }

    static func apiKey(_ row: Row) -> APIKey {
        APIKey(id: row["id"], name: row["name"], scope: APIScope(rawValue: row["scope"]) ?? .read, secretHash: row["secret_hash"],
               createdAt: Date(millisecondsSince1970: row["created_at"]),
               revokedAt: (row["revoked_at"] as Int64?).map(Date.init(millisecondsSince1970:)))
    }

    public func revokeAPIKey(id: String, at: Date) async throws -> Bool {
        try await pool.write { db in
            try db.execute(sql: "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", arguments: [at.millisecondsSince1970, id])
            return db.changesCount > 0
        }
    }

    // MARK: Segments

    public func insertSegment(_ segment: Segment) async throws {
        try await mapUnique({
            try await pool.write { db in
                try db.execute(sql: """
                    INSERT INTO segments (id, name, description, definition, created_by, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)
                    """, arguments: [segment.id, segment.name, segment.description, segment.definitionJSON, segment.createdBy,
                                     segment.createdAt.millisecondsSince1970, segment.updatedAt.millisecondsSince1970])
            }
        }, value: { _ in segment.id })
    }

    public func updateSegment(_ segment: Segment) async throws {
        let changed = try await pool.write { db in
            try db.execute(sql: "UPDATE segments SET name = ?, description = ?, definition = ?, updated_at = ? WHERE id = ?",
                           arguments: [segment.name, segment.description, segment.definitionJSON, segment.updatedAt.millisecondsSince1970, segment.id])
            return db.changesCount
        }
        if changed == 0 { throw StoreError.notFound(what: "segment", id: segment.id) }
    }

    public func deleteSegment(id: String) async throws -> Bool {
        try await pool.write { db in
            try db.execute(sql: "DELETE FROM segment_sizes WHERE segment_id = ?", arguments: [id])
            try db.execute(sql: "DELETE FROM segments WHERE id = ?", arguments: [id])
            return db.changesCount > 0
        }
    }

    public func segment(id: String) async throws -> Segment? {
        // Decoded inside the read: GRDB's Row is not Sendable, so mapping after it picked the
        // blocking overload of read (which held an executor thread waiting for a reader).
        try await pool.read { db in try Row.fetchOne(db, sql: "SELECT * FROM segments WHERE id = ?", arguments: [id]).map(Self.segment) }
    }

    public func segments() async throws -> [Segment] {
        try await pool.read { db in try Row.fetchAll(db, sql: "SELECT * FROM segments ORDER BY id").map(Self.segment) }
    }

    static func segment(_ row: Row) throws -> Segment {
        Segment(id: row["id"], name: row["name"], description: row["description"], query: try Segment.query(fromJSON: row["definition"]),
                createdBy: row["created_by"], createdAt: Date(millisecondsSince1970: row["created_at"]),
                updatedAt: Date(millisecondsSince1970: row["updated_at"]))
    }

    public func recordSegmentSize(_ size: SegmentSize) async throws {
        guard try await segment(id: size.segmentID) != nil else { throw StoreError.notFound(what: "segment", id: size.segmentID) }
        try await pool.write { db in
            try db.execute(sql: """
                INSERT INTO segment_sizes (segment_id, day, size, measured_at) VALUES (?, ?, ?, ?)
                ON CONFLICT (segment_id, day) DO UPDATE SET size = excluded.size, measured_at = excluded.measured_at
                """, arguments: [size.segmentID, size.day, size.size, size.measuredAt.millisecondsSince1970])
        }
    }

    public func segmentSizes(segmentID: String, limit: Int) async throws -> [SegmentSize] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM segment_sizes WHERE segment_id = ? ORDER BY day DESC LIMIT ?", arguments: [segmentID, limit])
                .map { SegmentSize(segmentID: $0["segment_id"], day: $0["day"], size: $0["size"], measuredAt: Date(millisecondsSince1970: $0["measured_at"])) }
                .reversed()
        }
    }

    // MARK: Re-permission

    public func dueRepermissions(now: Date, horizon: Date, limit: Int) async throws -> [RepermissionDue] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: """
                SELECT p.contact_id, p.topic_key, p.expires_at FROM preferences p
                JOIN topics t ON t.key = p.topic_key
                JOIN contacts c ON c.id = p.contact_id
                WHERE p.state = 'granted' AND p.expires_at IS NOT NULL AND p.expires_at > ? AND p.expires_at <= ?
                  AND t.status = 'active' AND t.repermission_days IS NOT NULL AND p.expires_at <= ? + t.repermission_days * 86400000
                  AND c.erased_at IS NULL AND c.objected_at IS NULL
                  AND NOT EXISTS (SELECT 1 FROM repermission_requests r
                                  WHERE r.contact_id = p.contact_id AND r.topic_key = p.topic_key AND r.grant_expires_at = p.expires_at)
                ORDER BY p.expires_at, p.contact_id, p.topic_key LIMIT ?
                """, arguments: [now.millisecondsSince1970, horizon.millisecondsSince1970, now.millisecondsSince1970, limit]).compactMap { row in
                UUID(text: row["contact_id"]).map {
                    RepermissionDue(contactID: $0, topicKey: row["topic_key"], expiresAt: Date(millisecondsSince1970: row["expires_at"]))
                }
            }
        }
    }

    public func insertRepermission(_ request: RepermissionRequest, email: OutboxItem) async throws -> Bool {
        try await pool.write { db in
            try Self.requireContact(request.contactID, db)
            try db.execute(sql: """
                INSERT INTO repermission_requests (contact_id, topic_key, grant_expires_at, sent_at, outbox_id) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT DO NOTHING
                """, arguments: [request.contactID.db, request.topicKey, request.grantExpiresAt.millisecondsSince1970,
                                 request.sentAt.millisecondsSince1970, request.outboxID.db])
            guard db.changesCount > 0 else { return false }
            try db.execute(sql: """
                INSERT INTO outbox (id, contact_id, kind, payload, status, attempts, next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [email.id.db, email.contactID?.db, email.kind, email.payload, email.status.rawValue, email.attempts,
                                   email.nextAttemptAt.millisecondsSince1970, email.createdAt.millisecondsSince1970])
            return true
        }
    }

    // MARK: Reports

    public func stateCounts(now: Date) async throws -> [StateCount] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: """
                SELECT p.topic_key, CASE WHEN p.state = 'granted' AND p.expires_at IS NOT NULL AND p.expires_at <= ? THEN 'expired' ELSE p.state END AS s,
                    COUNT(*) AS n
                FROM preferences p JOIN contacts c ON c.id = p.contact_id WHERE c.erased_at IS NULL GROUP BY p.topic_key, s
                """, arguments: [now.millisecondsSince1970]).compactMap { row in
                PreferenceState(rawValue: row["s"]).map { StateCount(topicKey: row["topic_key"], state: $0, count: row["n"]) }
            }
        }
    }

    public func contactCount() async throws -> Int {
        try await pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM contacts WHERE erased_at IS NULL") ?? 0 }
    }

    public func changeCounts(from: Date, to: Date, weekStart: Date) async throws -> [ChangeCount] {
        let origin = weekStart.millisecondsSince1970
        return try await pool.read { db in
            try Row.fetchAll(db, sql: """
                SELECT (occurred_at - ?) / 604800000 AS week, source,
                    SUM(CASE WHEN action IN ('granted', 'confirmed') THEN 1 ELSE 0 END) AS opt_ins,
                    SUM(CASE WHEN action = 'withdrawn' THEN 1 ELSE 0 END) AS opt_outs
                FROM consent_events WHERE occurred_at >= ? AND occurred_at < ? AND action IN ('granted', 'confirmed', 'withdrawn')
                GROUP BY week, source ORDER BY week, source
                """, arguments: [origin, from.millisecondsSince1970, to.millisecondsSince1970]).compactMap { row in
                ConsentSource(rawValue: row["source"]).map {
                    ChangeCount(week: Date(millisecondsSince1970: origin + (row["week"] as Int64) * 604_800_000), source: $0,
                                optIns: row["opt_ins"], optOuts: row["opt_outs"])
                }
            }
        }
    }

    public func confirmationOutcomes(from: Date, to: Date) async throws -> [ConfirmationOutcome] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: """
                SELECT r.topic_key, r.occurred_at,
                    (SELECT CASE WHEN n.action = 'confirmed' THEN n.occurred_at END FROM consent_events n
                     WHERE n.contact_id = r.contact_id AND n.topic_key = r.topic_key AND n.seq > r.seq ORDER BY n.seq LIMIT 1) AS confirmed_at
                FROM consent_events r
                WHERE r.action = 'requested' AND r.occurred_at >= ? AND r.occurred_at < ?
                """, arguments: [from.millisecondsSince1970, to.millisecondsSince1970]).map { row in
                ConfirmationOutcome(topicKey: row["topic_key"], requestedAt: Date(millisecondsSince1970: row["occurred_at"]),
                                    confirmedAt: (row["confirmed_at"] as Int64?).map(Date.init(millisecondsSince1970:)))
            }
        }
    }

    public func expiringCounts(now: Date) async throws -> [ExpiringCount] {
        let at = now.millisecondsSince1970, day: Int64 = 86_400_000
        return try await pool.read { db in
            try Row.fetchAll(db, sql: """
                SELECT topic_key, SUM(CASE WHEN expires_at <= ? THEN 1 ELSE 0 END) AS d30, SUM(CASE WHEN expires_at <= ? THEN 1 ELSE 0 END) AS d60,
                    COUNT(*) AS d90
                FROM preferences WHERE state = 'granted' AND expires_at > ? AND expires_at <= ? GROUP BY topic_key ORDER BY topic_key
                """, arguments: [at + 30 * day, at + 60 * day, at, at + 90 * day]).map { row in
                ExpiringCount(topicKey: row["topic_key"], within30: row["d30"], within60: row["d60"], within90: row["d90"])
            }
        }
    }

    // MARK: Webhooks

    static func insert(_ deliveries: [WebhookDelivery], _ db: Database) throws {
        guard !deliveries.isEmpty else { return }
        // An endpoint deleted since the ledger read its list gets nothing (the write itself goes ahead).
        let statement = try db.cachedStatement(sql: """
            INSERT INTO webhook_deliveries (id, endpoint_id, event_type, contact_id, payload, status, attempts, next_attempt_at, created_at,
                delivered_at, last_status_code, last_error)
            SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = ?)
            """)
        for d in deliveries {
            try statement.execute(arguments: [d.id.db, d.endpointID, d.eventType.rawValue, d.contactID?.db, d.payload, d.status.rawValue, d.attempts,
                                              d.nextAttemptAt.millisecondsSince1970, d.createdAt.millisecondsSince1970,
                                              d.deliveredAt?.millisecondsSince1970, d.lastStatusCode, d.lastError, d.endpointID])
        }
    }

    static func delivery(_ row: Row) -> WebhookDelivery? {
        guard let id = UUID(text: row["id"]), let type = WebhookEventType(rawValue: row["event_type"]),
              let status = WebhookDelivery.Status(rawValue: row["status"]) else { return nil }
        return WebhookDelivery(id: id, endpointID: row["endpoint_id"], eventType: type, contactID: (row["contact_id"] as String?).flatMap(UUID.init(uuidString:)),
                               payload: row["payload"], status: status, attempts: row["attempts"],
                               nextAttemptAt: Date(millisecondsSince1970: row["next_attempt_at"]), createdAt: Date(millisecondsSince1970: row["created_at"]),
                               deliveredAt: (row["delivered_at"] as Int64?).map(Date.init(millisecondsSince1970:)),
                               lastStatusCode: row["last_status_code"], lastError: row["last_error"])
    }

    static func endpointArguments(_ e: WebhookEndpoint) -> [any DatabaseValueConvertible & Sendable] {
        [e.url, e.description, e.events.map(\.rawValue).joined(separator: ","), TopicList.encode(e.topics),
         e.sources.map(\.rawValue).joined(separator: ","), e.enabled, e.allowPrivateNetwork, e.sealedSecret, e.updatedAt.millisecondsSince1970]
    }

    public func insertWebhookEndpoint(_ e: WebhookEndpoint) async throws {
        try await mapUnique({
            try await pool.write { db in
                try db.execute(sql: """
                    INSERT INTO webhook_endpoints (url, description, events, topics, sources, enabled, allow_private_network, sealed_secret, updated_at,
                        id, created_by, created_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """, arguments: StatementArguments(Self.endpointArguments(e) + [e.id, e.createdBy, e.createdAt.millisecondsSince1970]))
            }
        }, value: { _ in e.id })
    }

    public func updateWebhookEndpoint(_ e: WebhookEndpoint) async throws {
        let changed = try await pool.write { db in
            try db.execute(sql: """
                UPDATE webhook_endpoints SET url = ?, description = ?, events = ?, topics = ?, sources = ?, enabled = ?, allow_private_network = ?,
                    sealed_secret = ?, updated_at = ? WHERE id = ?
                """, arguments: StatementArguments(Self.endpointArguments(e) + [e.id]))
            return db.changesCount
        }
        if changed == 0 { throw StoreError.notFound(what: "webhook", id: e.id) }
    }

    public func deleteWebhookEndpoint(id: String) async throws -> Bool {
        try await pool.write { db in
            try db.execute(sql: "DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM webhook_deliveries WHERE endpoint_id = ?)", arguments: [id])
            try db.execute(sql: "DELETE FROM webhook_deliveries WHERE endpoint_id = ?", arguments: [id])
            try db.execute(sql: "DELETE FROM webhook_endpoints WHERE id = ?", arguments: [id])
            return db.changesCount > 0
        }
    }

    static func endpoint(_ row: Row) -> WebhookEndpoint {
        func list(_ text: String) -> [String] { text.split(separator: ",").map(String.init) }
        return WebhookEndpoint(id: row["id"], url: row["url"], description: row["description"],
                               events: list(row["events"]).compactMap(WebhookEventType.init(rawValue:)), topics: list(row["topics"]),
                               sources: list(row["sources"]).compactMap(ConsentSource.init(rawValue:)), enabled: row["enabled"],
                               allowPrivateNetwork: row["allow_private_network"], sealedSecret: row["sealed_secret"], createdBy: row["created_by"],
                               createdAt: Date(millisecondsSince1970: row["created_at"]), updatedAt: Date(millisecondsSince1970: row["updated_at"]))
    }

    public func webhookEndpoint(id: String) async throws -> WebhookEndpoint? {
        try await pool.read { db in try Row.fetchOne(db, sql: "SELECT * FROM webhook_endpoints WHERE id = ?", arguments: [id]).map(Self.endpoint) }
    }

    public func webhookEndpoints() async throws -> [WebhookEndpoint] {
        try await pool.read { db in try Row.fetchAll(db, sql: "SELECT * FROM webhook_endpoints ORDER BY created_at, id").map(Self.endpoint) }
    }

    public func insertWebhookDeliveries(_ deliveries: [WebhookDelivery]) async throws {
        do {
            try await pool.write { db in try Self.insert(deliveries, db) }
        } catch let error as DatabaseError where error.extendedResultCode == .SQLITE_CONSTRAINT_FOREIGNKEY {
            throw StoreError.notFound(what: "webhook", id: deliveries.first?.endpointID ?? "")
        }
    }

    public func claimWebhookDeliveries(now: Date, limit: Int, lease: TimeInterval) async throws -> [WebhookDelivery] {
        try await pool.write { db in
            let rows = try Row.fetchAll(db, sql: """
                SELECT d.* FROM webhook_deliveries d
                WHERE d.status = 'pending' AND d.next_attempt_at <= ?
                  AND EXISTS (SELECT 1 FROM webhook_endpoints w WHERE w.id = d.endpoint_id AND w.enabled)
                  AND (d.contact_id IS NULL OR NOT EXISTS (
                      SELECT 1 FROM webhook_deliveries e WHERE e.status = 'pending' AND e.endpoint_id = d.endpoint_id
                          AND e.contact_id = d.contact_id AND e.ordinal < d.ordinal))
                ORDER BY d.ordinal LIMIT ?
                """, arguments: [now.millisecondsSince1970, limit])
            var claimed: [WebhookDelivery] = []
            for row in rows {
                guard var d = Self.delivery(row) else { continue }
                d.attempts += 1
                d.nextAttemptAt = now.addingTimeInterval(lease)
                try db.execute(sql: "UPDATE webhook_deliveries SET attempts = ?, next_attempt_at = ? WHERE id = ?",
                               arguments: [d.attempts, d.nextAttemptAt.millisecondsSince1970, d.id.db])
                claimed.append(d)
            }
            return claimed
        }
    }

    public func recordWebhookAttempt(_ a: WebhookAttempt, outcome: WebhookOutcome, payload: Data?) async throws {
        try await pool.write { db in
            // Only the worker holding this claim records: a late answer to an attempt whose lease ran
            // out (and was claimed again) must not overwrite the newer outcome.
            guard try Int.fetchOne(db, sql: "SELECT 1 FROM webhook_deliveries WHERE id = ? AND status = 'pending' AND attempts = ?",
                                   arguments: [a.deliveryID.db, a.number]) != nil else { return }
            // Numbered after those already logged (a retry after `failed` starts a fresh count but keeps the log).
            try db.execute(sql: """
                INSERT INTO webhook_attempts (delivery_id, number, at, status_code, latency_ms, response, error)
                VALUES (?, (SELECT COALESCE(MAX(number), 0) + 1 FROM webhook_attempts WHERE delivery_id = ?), ?, ?, ?, ?, ?)
                """, arguments: [a.deliveryID.db, a.deliveryID.db, a.at.millisecondsSince1970, a.statusCode, a.latencyMilliseconds, a.response, a.error])
            let (status, next, delivered): (String, Int64?, Int64?) = switch outcome {
            case .delivered: ("delivered", nil, a.at.millisecondsSince1970)
            case .retry(let at): ("pending", at.millisecondsSince1970, nil)
            case .failed: ("failed", nil, nil)
            }
            try db.execute(sql: """
                UPDATE webhook_deliveries SET status = ?, next_attempt_at = COALESCE(?, next_attempt_at), delivered_at = ?, last_status_code = ?,
                    last_error = ?, payload = COALESCE(?, payload)
                WHERE id = ?
                """, arguments: [status, next, delivered, a.statusCode, a.error, payload, a.deliveryID.db])
        }
    }

    public func webhookDelivery(id: UUID) async throws -> WebhookDelivery? {
        try await pool.read { db in try Row.fetchOne(db, sql: "SELECT * FROM webhook_deliveries WHERE id = ?", arguments: [id.db]).flatMap(Self.delivery) }
    }

    public func webhookDeliveries(_ q: WebhookDeliveryQuery) async throws -> [WebhookDelivery] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: """
                SELECT * FROM webhook_deliveries
                WHERE (? IS NULL OR endpoint_id = ?) AND (? IS NULL OR status = ?) AND (? IS NULL OR contact_id = ?) AND (? IS NULL OR created_at >= ?)
                ORDER BY ordinal DESC LIMIT ?
                """, arguments: [q.endpointID, q.endpointID, q.status?.rawValue, q.status?.rawValue, q.contactID?.db, q.contactID?.db,
                                 q.since?.millisecondsSince1970, q.since?.millisecondsSince1970, q.limit]).compactMap(Self.delivery)
        }
    }

    public func webhookAttempts(deliveryID: UUID) async throws -> [WebhookAttempt] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM webhook_attempts WHERE delivery_id = ? ORDER BY number", arguments: [deliveryID.db]).map { row in
                WebhookAttempt(deliveryID: deliveryID, number: row["number"], at: Date(millisecondsSince1970: row["at"]), statusCode: row["status_code"],
                               latencyMilliseconds: row["latency_ms"], response: row["response"], error: row["error"])
            }
        }
    }

    public func retryWebhookDeliveries(ids: [UUID]?, endpointID: String?, now: Date) async throws -> Int {
        try await pool.write { db in
            var sql = "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = ? WHERE status = 'failed'"
            var arguments: [any DatabaseValueConvertible & Sendable] = [now.millisecondsSince1970]
            if let endpointID {
                sql += " AND endpoint_id = ?"
                arguments.append(endpointID)
            }
            if let ids {
                guard !ids.isEmpty else { return 0 }
                sql += " AND id IN (\(Array(repeating: "?", count: ids.count).joined(separator: ", ")))"
                arguments += ids.map(\.db)
            }
            try db.execute(sql: sql, arguments: StatementArguments(arguments))
            return db.changesCount
        }
    }

    // MARK: Idempotency

    public func beginIdempotency(scope: String, key: String, requestHash: Data, now: Date) async throws -> IdempotencyBegin {
        try await pool.write { db in
            if let row = try Row.fetchOne(db, sql: "SELECT * FROM idempotency_keys WHERE scope = ? AND key = ?", arguments: [scope, key]) {
                let at = Date(millisecondsSince1970: row["created_at"])
                let status: Int? = row["status"]
                let stale = status == nil && now.timeIntervalSince(at) > IdempotencyPolicy.inProgressTimeout
                let expired = now.timeIntervalSince(at) > IdempotencyPolicy.retention
                if !stale && !expired {
                    guard (row["request_hash"] as Data) == requestHash else { return .mismatch }
                    guard let status else { return .inProgress }
                    return .replay(StoredResponse(status: status, contentType: row["content_type"] ?? "application/json", body: row["body"] ?? Data()))
                }
            }
            // Forget keys past retention while we hold the write lock anyway.
            try db.execute(sql: "DELETE FROM idempotency_keys WHERE created_at < ?",
                           arguments: [now.addingTimeInterval(-IdempotencyPolicy.retention).millisecondsSince1970])
            try db.execute(sql: """
                INSERT INTO idempotency_keys (scope, key, request_hash, created_at) VALUES (?, ?, ?, ?)
                ON CONFLICT (scope, key) DO UPDATE SET request_hash = excluded.request_hash, status = NULL,
                    content_type = NULL, body = NULL, created_at = excluded.created_at
                """, arguments: [scope, key, requestHash, now.millisecondsSince1970])
            return .started
        }
    }

    public func completeIdempotency(scope: String, key: String, response: StoredResponse) async throws {
        try await pool.write { db in
            try db.execute(sql: "UPDATE idempotency_keys SET status = ?, content_type = ?, body = ? WHERE scope = ? AND key = ?",
                           arguments: [response.status, response.contentType, response.body, scope, key])
        }
    }

    public func abandonIdempotency(scope: String, key: String) async throws {
        try await pool.write { db in
            try db.execute(sql: "DELETE FROM idempotency_keys WHERE scope = ? AND key = ?", arguments: [scope, key])
        }
    }
}

extension UUID {
    /// The text form stored in every table: lower-case, so that ordering and equality agree everywhere.
    var db: String { lowercasedString }
}

/// Reads a row's columns by index.
protocol ColumnReader {
    func text(_ column: Int32) -> String?
    func int(_ column: Int32) -> Int64?
    func blob(_ column: Int32) -> Data?
}

extension Row: ColumnReader {
    func text(_ column: Int32) -> String? { self[Int(column)] }
    func int(_ column: Int32) -> Int64? { self[Int(column)] }
    func blob(_ column: Int32) -> Data? { self[Int(column)] }
}

/// One read-only connection for `readHere` and the single check, used by one thread at a time.
final class QuickReader: @unchecked Sendable {
    private let lock = NSLock()
    private var queue: DatabaseQueue?
    private let path: String
    private let configuration: Configuration

    init(path: String, configuration: Configuration) {
        self.path = path
        self.configuration = configuration
    }

    /// The body's result (boxed: the body may return nil), or nil when another thread has the connection.
    func tryRead<T>(_ body: (Database) throws -> T) throws -> (value: T, Void)? {
        guard lock.try() else { return nil }
        defer { lock.unlock() }
        if queue == nil { queue = try DatabaseQueue(path: path, configuration: configuration) }
        return (try queue!.inDatabase(body), ())
    }

    /// The single check's statement, prepared on this connection once and kept. A check through
    /// `tryRead` (GRDB's serialized access, its statement cache looked up by the SQL's text, its
    /// arguments) cost ~1.5 µs more of the server's CPU: 49.7-51.4 -> 48.6-49.0 µs per check under
    /// 64 connections at a million contacts (alternating runs).
    private var checkStatement: RawStatement?

    deinit {
        checkStatement = nil // finalized before its connection closes
    }

    /// `SQLiteStore.checkByEmail`'s row for the address (nil: no contact has it), or nil when
    /// another thread has the connection. The statement is stepped through the C API by the thread
    /// that holds the lock, outside GRDB's queue; nothing else uses this connection meanwhile.
    func tryCheck(email: String, topicKey: String) throws -> (value: CheckRow?, Void)? {
        guard lock.try() else { return nil }
        defer { lock.unlock() }
        if checkStatement == nil {
            if queue == nil { queue = try DatabaseQueue(path: path, configuration: configuration) }
            checkStatement = try queue!.inDatabase { db in RawStatement(try db.makeStatement(sql: SQLiteStore.checkByEmail), db) }
        }
        return (try SQLiteStore.checkRow(checkStatement!, email: email, topicKey: topicKey), ())
    }
}

/// A statement stepped through SQLite's C API, its rows read column by position, for the hot paths
/// where GRDB cost more than the query: `Row` decoding on reads, and on the writes every change
/// makes, GRDB's arguments (an array of existentials, each converted to a `DatabaseValue`, then
/// bound): an import of 300,000 contacts spent 46 µs per contact in its transactions of events,
/// preferences and chain heads. `bind` stores values as GRDB stores them (ids as lower-case text,
/// times as Unix milliseconds, data through the same `sqlite3_bind_blob` call), so either way of
/// writing reads back the same. Used only inside the `pool` access that made it (the single
/// check's: under its `QuickReader`'s lock); a write binds every parameter, and `execute` or
/// `reset` leaves the statement ready for the next use. Unlike GRDB's `execute`, a step
/// interrupted by a cancelled task surfaces as SQLite's interrupt error (`SQLITE_INTERRUPT`), not
/// as `CancellationError`; the transaction still rolls back.
struct RawStatement: RawColumns {
    let handle: OpaquePointer
    let statement: Statement
    let database: Database

    init(_ statement: Statement, _ database: Database) {
        self.statement = statement
        self.handle = statement.sqliteStatement
        self.database = database
    }

    private static let transient = unsafeBitCast(OpaquePointer(bitPattern: -1), to: sqlite3_destructor_type.self)

    private func check(_ code: Int32, _ index: Int32) throws {
        guard code == SQLITE_OK else { throw failure(code, "binding parameter \(index)") }
    }

    private func failure(_ code: Int32, _ doing: String? = nil) -> DatabaseError {
        let message = String(cString: sqlite3_errmsg(database.sqliteConnection))
        // The SQL from SQLite itself: GRDB's `Statement.sql` insists on GRDB's queue, which the single check's statement is stepped outside of.
        return DatabaseError(resultCode: ResultCode(rawValue: code), message: doing.map { "\($0): \(message)" } ?? message,
                             sql: String(cString: sqlite3_sql(handle)))
    }

    func bind(_ index: Int32, _ value: String?) throws {
        guard let value else { return try check(sqlite3_bind_null(handle, index), index) }
        try check(sqlite3_bind_text(handle, index, value, -1, Self.transient), index)
    }

    func bind(_ index: Int32, _ value: UUID) throws {
        let text = value.lowercasedUTF8
        try text.withUnsafeBufferPointer { bytes in
            try bytes.withMemoryRebound(to: CChar.self) {
                try check(sqlite3_bind_text(handle, index, $0.baseAddress, Int32($0.count), Self.transient), index)
            }
        }
    }

    func bind(_ index: Int32, _ value: Int64?) throws {
        guard let value else { return try check(sqlite3_bind_null(handle, index), index) }
        try check(sqlite3_bind_int64(handle, index, value), index)
    }

    func bind(_ index: Int32, _ value: Date?) throws {
        try bind(index, value?.millisecondsSince1970)
    }

    func bind(_ index: Int32, _ value: Data?) throws {
        guard let value else { return try check(sqlite3_bind_null(handle, index), index) }
        try value.withUnsafeBytes { try check(sqlite3_bind_blob(handle, index, $0.baseAddress, Int32($0.count), Self.transient), index) }
    }

    /// Runs a statement that returns no rows. Its values are let go of at once: a cached statement
    /// would otherwise hold the last contact's address, name and keys until its next use.
    func execute() throws {
        let code = sqlite3_step(handle)
        let error = code == SQLITE_DONE ? nil : failure(code)
        reset()
        if let error { throw error }
    }

    /// Moves to the next row; false when there is none. `reset` when done with the rows.
    func step() throws -> Bool {
        switch sqlite3_step(handle) {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        case let code:
            let error = failure(code)
            reset()
            throw error
        }
    }

    /// Ready for the next use, with no values held.
    func reset() {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
    }
}

/// A statement stepped directly through SQLite's C API, one row at a time,
/// that can look at the current row's contact id without consuming it. Used
/// only inside the `pool.read` that made it.
private final class RawCursor: RawColumns {
    private let statement: Statement
    let handle: OpaquePointer
    private let database: Database
    /// Where the contact id is in each row.
    private let idColumn: Int32
    private var onRow = false
    /// The current row's contact id; nil once the rows are done.
    private(set) var contactID: String?

    init(_ db: Database, _ sql: String, idColumn: Int32) throws {
        statement = try db.makeStatement(sql: sql)
        handle = statement.sqliteStatement
        database = db
        self.idColumn = idColumn
        try advance()
    }

    private func advance() throws {
        switch sqlite3_step(handle) {
        case SQLITE_ROW:
            onRow = true
            contactID = text(idColumn)
        case SQLITE_DONE:
            onRow = false
            contactID = nil
        case let code:
            throw DatabaseError(resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(database.sqliteConnection)),
                                sql: statement.sql)
        }
    }

    /// Decodes and consumes the rows of one contact.
    func take<T>(while id: String, _ decode: (RawCursor) -> T?) throws -> [T] {
        var out: [T] = []
        while onRow, contactID == id {
            if let value = decode(self) { out.append(value) }
            try advance()
        }
        return out
    }

}

/// The current row of a statement stepped through SQLite's C API, column by position.
protocol RawColumns: ColumnReader {
    var handle: OpaquePointer { get }
}

extension RawColumns {
    func text(_ column: Int32) -> String? {
        guard let bytes = sqlite3_column_text(handle, column) else { return nil }
        return String(decoding: UnsafeBufferPointer(start: bytes, count: Int(sqlite3_column_bytes(handle, column))), as: UTF8.self)
    }

    func int(_ column: Int32) -> Int64? {
        sqlite3_column_type(handle, column) == SQLITE_NULL ? nil : sqlite3_column_int64(handle, column)
    }

    /// An id column parsed where it lies (no String made for its text).
    func uuid(_ column: Int32) -> UUID? {
        guard let bytes = sqlite3_column_text(handle, column) else { return nil }
        return UUID(utf8: UnsafeBufferPointer(start: bytes, count: Int(sqlite3_column_bytes(handle, column))))
    }

    func blob(_ column: Int32) -> Data? {
        guard sqlite3_column_type(handle, column) != SQLITE_NULL else { return nil }
        let count = Int(sqlite3_column_bytes(handle, column))
        guard count > 0, let bytes = sqlite3_column_blob(handle, column) else { return Data() }
        return Data(bytes: bytes, count: count)
    }
}

/// Topic keys in one text column: keys are slugs, so a comma never appears in one.
enum TopicList {
    static func encode(_ keys: [String]) -> String { keys.joined(separator: ",") }
    static func decode(_ text: String?) -> [String] { (text ?? "").split(separator: ",").map(String.init) }
}
