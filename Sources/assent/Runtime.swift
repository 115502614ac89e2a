import AssentCore
import AssentSQLite
import AssentStore
import ArgumentParser
import Foundation
import GRDB

/// Options every command that opens the database shares. Flags win over
/// `ASSENT_*` environment variables, which win over the defaults.
struct StoreOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("SQLite database file (env ASSENT_DATABASE).", valueName: "path"))
    var database: String = ProcessInfo.processInfo.environment["ASSENT_DATABASE"] ?? "assent.sqlite"

    @Option(name: .long, help: ArgumentHelp("Master key file that wraps every contact's evidence key (env ASSENT_KEY_FILE; default: the database path + .key). ASSENT_MASTER_KEY (base64) overrides it.", valueName: "path"))
    var keyFile: String = ProcessInfo.processInfo.environment["ASSENT_KEY_FILE"] ?? ""

    @Option(name: .long, help: ArgumentHelp("SQLite durability: FULL fsyncs every commit (default), NORMAL survives a process crash but not power loss (env ASSENT_SQLITE_SYNCHRONOUS).", valueName: "mode"))
    var synchronous: String = ProcessInfo.processInfo.environment["ASSENT_SQLITE_SYNCHRONOUS"] ?? "FULL"

    /// `ASSENT_DATABASE_URL` may name the SQLite file as `sqlite:///abs/path` or `sqlite:relative/path`.
    func databasePath() throws -> String {
        guard let url = ProcessInfo.processInfo.environment["ASSENT_DATABASE_URL"], !url.isEmpty else { return database }
        if url.hasPrefix("sqlite://") { return String(url.dropFirst("sqlite://".count)) }
        if url.hasPrefix("sqlite:") { return String(url.dropFirst("sqlite:".count)) }
        if url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") {
            throw ValidationError("ASSENT_DATABASE_URL: PostgreSQL is not supported by this build yet; use sqlite:PATH or unset it")
        }
        throw ValidationError("ASSENT_DATABASE_URL: '\(url)' is not a database URL (expected sqlite:PATH)")
    }

    func openStore() async throws -> SQLiteStore {
        guard let durability = SQLiteStore.Durability(rawValue: synchronous.uppercased()) else {
            throw ValidationError("--synchronous: '\(synchronous)' must be FULL or NORMAL")
        }
        let path = try databasePath()
        let store: SQLiteStore
        do {
            store = try SQLiteStore(path: path, durability: durability)
        } catch {
            throw ValidationError("--database: cannot open '\(path)': \(error)")
        }
        try await store.migrate()
        return store
    }

    /// Opens the store and the master key, refusing a key that does not match the database.
    func openLedger() async throws -> Ledger {
        let store = try await openStore()
        let masterKey = try await loadMasterKey(for: store)
        return Ledger(store: store, masterKey: masterKey)
    }

    private func loadMasterKey(for store: SQLiteStore) async throws -> MasterKey {
        let sample = try await store.pool.read { db in
            try Row.fetchOne(db, sql: "SELECT contact_id, wrapped_key FROM contact_keys LIMIT 1")
                .map { (UUID(uuidString: $0["contact_id"])!, $0["wrapped_key"] as Data) }
        }
        let key: MasterKey
        if let env = ProcessInfo.processInfo.environment["ASSENT_MASTER_KEY"], !env.isEmpty {
            do { key = try MasterKey(base64: env) } catch { throw ValidationError("ASSENT_MASTER_KEY: \(error)") }
        } else {
            let path = try keyFile.isEmpty ? databasePath() + ".key" : keyFile
            if FileManager.default.fileExists(atPath: path) {
                let text = try String(contentsOfFile: path, encoding: .utf8)
                do { key = try MasterKey(base64: text) } catch { throw ValidationError("key file \(path): \(error)") }
            } else {
                guard sample == nil else {
                    throw ValidationError("master key file \(path) is missing, but the database holds sealed evidence; restore the key file or set ASSENT_MASTER_KEY")
                }
                key = MasterKey.generate()
                guard FileManager.default.createFile(atPath: path, contents: Data((key.base64 + "\n").utf8),
                                                     attributes: [.posixPermissions: 0o600]) else {
                    throw ValidationError("cannot write master key file \(path)")
                }
            }
        }
        if let (contactID, wrapped) = sample {
            do { _ = try key.unwrap(wrapped, contactID: contactID) } catch {
                throw ValidationError("the master key does not match this database (it cannot open stored contact keys)")
            }
        }
        return key
    }
}

/// Prints a domain error the way a person can act on it, and exits non-zero.
func reportingErrors<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as DomainError {
        throw ValidationError(error.description)
    } catch let error as StoreError {
        throw ValidationError(error.description)
    }
}

extension Date {
    var display: String { ISO8601DateFormatter.string(from: self, timeZone: TimeZone(identifier: "UTC")!, formatOptions: [.withInternetDateTime]) }
}

/// Writes a line to standard output at once (unbuffered), so that a process
/// watching a pipe, such as a test or a supervisor, sees it immediately.
func emit(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
