import AssentCore
import AssentPostgres
import AssentServer
import AssentSQLite
import AssentStore
import ArgumentParser
import Foundation

/// Options every command that opens the database shares. Flags win over
/// `ASSENT_*` environment variables, which win over the defaults.
struct StoreOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("SQLite database file (env ASSENT_DATABASE).", valueName: "path"))
    var database: String = ProcessInfo.processInfo.environment["ASSENT_DATABASE"] ?? "assent.sqlite"

    @Option(name: .long, help: ArgumentHelp("Master key file that wraps every contact's evidence key (env ASSENT_KEY_FILE; default: the database path + .key). ASSENT_MASTER_KEY (base64) overrides it.", valueName: "path"))
    var keyFile: String = ProcessInfo.processInfo.environment["ASSENT_KEY_FILE"] ?? ""

    @Option(name: .long, help: ArgumentHelp("SQLite durability: FULL fsyncs every commit (default), NORMAL survives a process crash but not power loss (env ASSENT_SQLITE_SYNCHRONOUS).", valueName: "mode"))
    var synchronous: String = ProcessInfo.processInfo.environment["ASSENT_SQLITE_SYNCHRONOUS"] ?? "FULL"

    /// Which database to use: `ASSENT_DATABASE_URL` (`postgres://...` or
    /// `sqlite:PATH`) when set, else the SQLite file `--database`.
    enum Target {
        case sqlite(path: String)
        case postgres(PostgresLocation, read: PostgresLocation?)
    }

    func target() throws -> Target {
        let env = ProcessInfo.processInfo.environment
        guard let url = env["ASSENT_DATABASE_URL"], !url.isEmpty else { return .sqlite(path: database) }
        if url.hasPrefix("sqlite://") { return .sqlite(path: String(url.dropFirst("sqlite://".count))) }
        if url.hasPrefix("sqlite:") { return .sqlite(path: String(url.dropFirst("sqlite:".count))) }
        if url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") {
            do {
                let primary = try PostgresLocation(url: url)
                let read = try env["ASSENT_DATABASE_READ_URL"].flatMap { $0.isEmpty ? nil : $0 }.map { text in
                    do { return try PostgresLocation(url: text) } catch let error as DomainError {
                        throw ValidationError("ASSENT_DATABASE_READ_URL: \(error.description.replacingOccurrences(of: "ASSENT_DATABASE_URL: ", with: ""))")
                    }
                }
                return .postgres(primary, read: read)
            } catch let error as DomainError {
                throw ValidationError(error.description)
            }
        }
        throw ValidationError("ASSENT_DATABASE_URL: '\(PostgresLocation.redacted(url))' is not a database URL (expected postgres://user:password@host:5432/database or sqlite:PATH)")
    }

    /// A description of the database for messages, without any password.
    func databaseDescription() throws -> String {
        switch try target() {
        case .sqlite(let path): "SQLite \(path)"
        case .postgres(let location, _): "PostgreSQL \(location.username)@\(location.host):\(location.port)/\(location.database)"
        }
    }

    /// `waitingForLock`: how long to keep trying while another process holds a SQLite
    /// database locked (the server, whose probes meanwhile read "starting"); zero: fail after
    /// SQLite's own ten seconds.
    /// `serving`: for `assent serve` (a PostgreSQL pool keeps its connections open).
    func openStore(waitingForLock: Duration = .zero, serving: Bool = false) async throws -> any LedgerStore {
        let deadline = ContinuousClock.now + waitingForLock
        while true {
            do {
                return try await openStoreOnce(serving: serving)
            } catch let locked as LockedDatabase {
                guard ContinuousClock.now < deadline else { throw ValidationError(locked.message) }
                FileHandle.standardError.write(Data("assent: the database is locked by another process; waiting\n".utf8))
                try await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// SQLite's busy timeout ran out: another process holds the file.
    struct LockedDatabase: Error { var message: String }

    private func openStoreOnce(serving: Bool) async throws -> any LedgerStore {
        let store: any LedgerStore
        switch try target() {
        case .sqlite(let path):
            guard let durability = SQLiteStore.Durability(rawValue: synchronous.uppercased()) else {
                throw ValidationError("--synchronous: '\(synchronous)' must be FULL or NORMAL")
            }
            do {
                store = try await SQLiteStore.open(path: path, durability: durability)
            } catch {
                let message = "--database: cannot open '\(path)': \(error)"
                if SQLiteStore.isLocked(error) { throw LockedDatabase(message: message) }
                throw ValidationError(message)
            }
        case .postgres(let location, let read):
            store = PostgresStore(location: location, readLocation: read, keepConnectionsOpen: serving)
        }
        do {
            try await store.migrate()
        } catch let error as ArgumentParser.ValidationError {
            throw error
        } catch let error as StoreError {
            throw ArgumentParser.ValidationError(error.description)
        } catch {
            let message = "cannot migrate \(try databaseDescription()): \(String(reflecting: error))"
            if SQLiteStore.isLocked(error) { throw LockedDatabase(message: message) }
            throw ValidationError(message)
        }
        return store
    }

    /// Opens the store and the master key, refusing a key that does not match the database.
    func openLedger(waitingForLock: Duration = .zero, serving: Bool = false) async throws -> Ledger {
        let store = try await openStore(waitingForLock: waitingForLock, serving: serving)
        let masterKey = try await loadMasterKey(for: store)
        var ledger = Ledger(store: store, masterKey: masterKey)
        ledger.passwordHasher = .bcrypt(cost: try Self.bcryptCost())
        return ledger
    }

    /// bcrypt's cost for staff passwords: 12 unless ASSENT_BCRYPT_COST says
    /// otherwise (tests lower it; production may raise it).
    static func bcryptCost() throws -> UInt8 {
        guard let text = ProcessInfo.processInfo.environment["ASSENT_BCRYPT_COST"], !text.isEmpty else { return 12 }
        guard let cost = UInt8(text), (4...16).contains(cost) else { throw ValidationError("ASSENT_BCRYPT_COST: '\(text)' must be from 4 to 16") }
        return cost
    }

    /// The master key file's default place: beside the SQLite file, or in the
    /// working directory for PostgreSQL (where ASSENT_MASTER_KEY is the better choice).
    func defaultKeyFile() throws -> String {
        switch try target() {
        case .sqlite(let path): path + ".key"
        case .postgres(let location, _): "assent-\(location.database).key"
        }
    }

    private func loadMasterKey(for store: any LedgerStore) async throws -> MasterKey {
        let sample = try await store.sampleWrappedKey()
        let key: MasterKey
        if let env = ProcessInfo.processInfo.environment["ASSENT_MASTER_KEY"], !env.isEmpty {
            do { key = try MasterKey(base64: env) } catch { throw ValidationError("ASSENT_MASTER_KEY: \(error)") }
        } else {
            let path = try keyFile.isEmpty ? defaultKeyFile() : keyFile
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

/// Where `--output` sends a command's rows: the file, or standard output. The file is created
/// (readable by its owner only: exports hold personal data) or emptied where it is, so that a
/// symbolic link, a named pipe or a device (`/dev/null`) is written through, not replaced.
/// (FileManager's `createFile` writes a new file and renames it over the path: run as root,
/// `--output /dev/null` replaced the machine's /dev/null with a plain file.)
func outputSink(_ output: String?) throws -> FileHandle {
    guard let output else { return .standardOutput }
    let descriptor = open(output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard descriptor >= 0 else {
        let reason = String(cString: strerror(errno))
        throw ValidationError("--output: cannot write \(output) (\(reason))")
    }
    return FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
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
    var display: String { UTCTime.rfc3339(self, milliseconds: false) }
}

/// Writes a line to standard output at once (unbuffered), so that a process
/// watching a pipe, such as a test or a supervisor, sees it immediately.
func emit(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
