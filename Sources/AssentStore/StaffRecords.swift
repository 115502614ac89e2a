import AssentCore
import Foundation

/// A member of staff who signs in to the console.
public struct StaffUser: Sendable, Equatable {
    public enum Role: String, Sendable, CaseIterable, Codable {
        /// Settings, topics, notices, forms, users and API keys; and everything the others do.
        case admin
        /// Finds contacts, records what people said, sees timelines.
        case agent
        /// Reads everything, runs exports and `verify`; changes nothing.
        case auditor
    }

    public var id: UUID
    /// The sign-in name.
    public var email: EmailAddress
    public var name: String
    public var role: Role
    /// bcrypt.
    public var passwordHash: String
    /// Set for a password someone else chose (the first-run admin's): it must be changed at the next sign-in.
    public var mustChangePassword: Bool
    public var failedSignIns: Int
    public var lockedUntil: Date?
    public var createdAt: Date
    public var disabledAt: Date?

    public init(id: UUID, email: EmailAddress, name: String, role: Role, passwordHash: String, mustChangePassword: Bool = false,
                failedSignIns: Int = 0, lockedUntil: Date? = nil, createdAt: Date, disabledAt: Date? = nil) {
        self.id = id
        self.email = email
        self.name = name
        self.role = role
        self.passwordHash = passwordHash
        self.mustChangePassword = mustChangePassword
        self.failedSignIns = failedSignIns
        self.lockedUntil = lockedUntil
        self.createdAt = createdAt
        self.disabledAt = disabledAt
    }

    public var isActive: Bool { disabledAt == nil }
}

/// A signed-in console session, stored by the hash of the cookie's secret.
public struct StaffSession: Sendable, Equatable {
    public var hash: Data
    public var userID: UUID
    public var createdAt: Date
    /// Moves forward with use (idle timeout), never past `createdAt` + the absolute lifetime.
    public var expiresAt: Date

    public init(hash: Data, userID: UUID, createdAt: Date, expiresAt: Date) {
        self.hash = hash
        self.userID = userID
        self.createdAt = createdAt
        self.expiresAt = expiresAt
    }
}

/// One staff action in the append-only audit log.
public struct AuditEntry: Sendable, Equatable {
    public var id: UUID
    public var at: Date
    /// nil for a failed sign-in to an unknown account.
    public var actorID: UUID?
    /// The account as it was named (kept if the user is later disabled).
    public var actorEmail: String
    /// What was done, e.g. `sign_in`, `view_evidence`, `record_instruction`.
    public var action: String
    /// What it was done to, e.g. `contact:<id>`, `topic:events`.
    public var target: String?
    /// A short description; never a secret.
    public var detail: String?
    public var ipAddress: String?

    public init(id: UUID, at: Date, actorID: UUID?, actorEmail: String, action: String, target: String? = nil, detail: String? = nil,
                ipAddress: String? = nil) {
        self.id = id
        self.at = at
        self.actorID = actorID
        self.actorEmail = actorEmail
        self.action = action
        self.target = target
        self.detail = detail
        self.ipAddress = ipAddress
    }
}

/// Which audit entries to read: all filters optional, newest first.
public struct AuditQuery: Sendable, Equatable {
    public var actorID: UUID?
    public var action: String?
    public var target: String?
    public var since: Date?
    public var until: Date?
    public var limit: Int

    public init(actorID: UUID? = nil, action: String? = nil, target: String? = nil, since: Date? = nil, until: Date? = nil, limit: Int = 200) {
        self.actorID = actorID
        self.action = action
        self.target = target
        self.since = since
        self.until = until
        self.limit = limit
    }
}

/// Password hashing, injected so tests can use a cheap cost. The live one is
/// bcrypt (hummingbird-auth's) on NIO's blocking thread pool, set up by the
/// server and the CLI: it is slow on purpose and must not hold up the async threads.
public struct PasswordHasher: Sendable {
    public var hash: @Sendable (String) async -> String
    public var verify: @Sendable (_ password: String, _ hash: String) async -> Bool

    public init(hash: @escaping @Sendable (String) async -> String, verify: @escaping @Sendable (String, String) async -> Bool) {
        self.hash = hash
        self.verify = verify
    }

    /// Fails loudly: a ledger that was not given a hasher cannot manage staff.
    public static let unavailable = PasswordHasher(hash: { _ in preconditionFailure("no password hasher configured") },
                                                   verify: { _, _ in preconditionFailure("no password hasher configured") })
}
