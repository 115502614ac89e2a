import AssentCore
import Crypto
import AssentPostgres
import AssentSQLite
import AssentStore
import Foundation
import GRDB
import Logging
import PostgresNIO

/// Every backend the tests run against. A new store joins by adding a case;
/// every conformance and API test then runs on it too.
public enum StoreKind: String, CaseIterable, Sendable, CustomStringConvertible {
    case memory
    case sqlite
    case postgres

    public var description: String { rawValue }

    /// The stores this run can use. PostgreSQL needs `ASSENT_TEST_POSTGRES_URL`
    /// (set by `scripts/test`, which starts a throwaway server); under `CI=true`
    /// it is always included, so a missing server fails the run instead of
    /// silently skipping.
    public static var available: [StoreKind] {
        if TestPostgres.url != nil || TestPostgres.isCI { return allCases }
        return [.memory, .sqlite]
    }

    /// The database stores only (for tests about files, processes, SQL).
    public static var databases: [StoreKind] { available.filter { $0 != .memory } }

    public func makeStore() async throws -> any LedgerStore {
        switch self {
        case .memory:
            return MemoryStore()
        case .sqlite:
            let store = try SQLiteStore(path: try TestDirectory.make().appendingPathComponent("ledger.sqlite").path)
            try await store.migrate()
            return store
        case .postgres:
            let store = PostgresStore(location: try await TestPostgres.freshDatabase(), maxConnections: 8)
            try await store.migrate()
            return store
        }
    }

    public func makeLedger(now: @escaping @Sendable () -> Date = { Date() }) async throws -> Ledger {
        var ledger = Ledger(store: try await makeStore(), masterKey: .generate(), environment: LedgerEnvironment(now: now))
        ledger.passwordHasher = .testing
        return ledger
    }
}

public enum TestDirectory {
    public static func make() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("assent-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }
}

public enum TestPostgresError: Error, CustomStringConvertible {
    case missing
    case notLocal(String)

    public var description: String {
        switch self {
        case .missing:
            "ASSENT_TEST_POSTGRES_URL is not set: run the tests with scripts/test, which starts a throwaway PostgreSQL server"
        case .notLocal(let host):
            "ASSENT_TEST_POSTGRES_URL points at '\(host)': tests create and drop databases, so only 127.0.0.1/localhost is allowed"
        }
    }
}

/// Throwaway databases on the test server: one fresh database per store.
public enum TestPostgres {
    public static var isCI: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }
    public static var url: String? {
        ProcessInfo.processInfo.environment["ASSENT_TEST_POSTGRES_URL"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The server's location, refusing anything but this machine.
    public static func server() throws -> PostgresLocation {
        guard let url else { throw TestPostgresError.missing }
        let location = try PostgresLocation(url: url)
        guard location.isLocal else { throw TestPostgresError.notLocal(location.host) }
        return location
    }

    /// Creates an empty database with a unique name and returns its location. Each call has a
    /// connection of its own, closed after: one connection shared by every test of the process
    /// once stopped answering under load (a full run hung after a CREATE DATABASE had completed).
    public static func freshDatabase() async throws -> PostgresLocation {
        var location = try server()
        let name = "assent_t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        let connection = try await PostgresConnection.connect(
            configuration: .init(host: location.host, port: location.port, username: location.username, password: location.password,
                                 database: location.database, tls: .disable),
            id: 1, logger: Logger(label: "assent.tests"))
        do {
            for try await _ in try await connection.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"), logger: Logger(label: "assent.tests")) {}
            try await connection.close()
        } catch {
            try? await connection.close()
            throw error
        }
        location.database = name
        return location
    }
}

/// Raw SQL against a database store, as someone with direct access could run it.
public func tamper(_ store: any LedgerStore, _ statements: String...) async throws {
    if let sqlite = store as? SQLiteStore {
        try await sqlite.pool.write { db in
            for statement in statements { try db.execute(sql: statement) }
        }
    } else if let postgres = store as? PostgresStore {
        for statement in statements { try await postgres.unsafeExecute(statement) }
    } else {
        throw TestPostgresError.missing
    }
}

/// Drops the triggers that keep events immutable, as an attacker would first.
public func dropImmutabilityTriggers(_ store: any LedgerStore) async throws {
    if store is SQLiteStore {
        try await tamper(store, "DROP TRIGGER consent_events_immutable_update", "DROP TRIGGER consent_events_immutable_delete")
    } else {
        try await tamper(store, "DROP TRIGGER consent_events_immutable ON consent_events")
    }
}

/// A settable clock for tests.
public final class TestClock: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Date
    public init(_ start: Date) { value = start }
    public var now: Date {
        get { lock.withLock { value } }
        set { lock.withLock { value = newValue } }
    }
}

extension PasswordHasher {
    /// A fast stand-in for bcrypt in store tests (salted SHA-256); the server
    /// tests use real bcrypt at a low cost.
    public static let testing = PasswordHasher(
        hash: { password in
            let salt = UUID().uuidString
            return "test$" + salt + "$" + Data(SHA256.hash(data: Data((salt + password).utf8))).base64EncodedString()
        },
        verify: { password, hash in
            let parts = hash.split(separator: "$").map(String.init)
            return parts.count == 3 && parts[0] == "test" && Data(SHA256.hash(data: Data((parts[1] + password).utf8))).base64EncodedString() == parts[2]
        })
}

/// A deterministic generator (SplitMix64), so that a randomised test can be replayed from its seed.
public struct SplitMix: RandomNumberGenerator {
    public var state: UInt64

    public init(state: UInt64) { self.state = state }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
public func freeLocalPort() throws -> Int {
    struct NoPort: Error {}
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw NoPort() }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard bound else { throw NoPort() }
    return Int(UInt16(bigEndian: address.sin_port))
}
