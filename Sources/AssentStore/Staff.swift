import AssentCore
import Crypto
import Foundation

/// The outcome of a console sign-in.
public enum StaffSignIn: Sendable {
    case signedIn(secret: String, user: StaffUser)
    /// Wrong address or password (the two are not told apart).
    case refused
    /// Too many failures: the account is locked until then.
    case locked(until: Date)
}

extension Ledger {
    /// A console session ends this long after sign-in, however busy.
    public static let staffSessionLifetime: TimeInterval = 8 * 3_600
    /// ... or after this long without a request.
    public static let staffIdleTimeout: TimeInterval = 30 * 60
    /// Consecutive wrong passwords that lock an account, and for how long.
    public static let signInFailuresBeforeLock = 5
    public static let signInLockDuration: TimeInterval = 15 * 60
    public static let minimumPasswordLength = 12

    // MARK: Users

    /// Adds a staff user. `actor` is who did it (nil: the command line or first start).
    public func createStaffUser(email text: String, name: String, role: StaffUser.Role, password: String, mustChangePassword: Bool,
                                actor: StaffUser?, ipAddress: String? = nil) async throws -> StaffUser {
        var problems: [ValidationError] = []
        var email: EmailAddress?
        do { email = try EmailAddress(text) } catch let DomainError.invalid(e) { problems += e }
        let name = name.trimmingCharacters(in: .whitespaces)
        if name.isEmpty { problems.append(.init(field: "name", "is required")) }
        do { try TextCheck.check(name, field: "name", max: Limits.nameLength) } catch let DomainError.invalid(e) { problems += e }
        problems += Self.passwordProblems(password, field: "password")
        if !problems.isEmpty { throw DomainError.invalid(problems) }
        let user = StaffUser(id: environment.newID(), email: email!, name: name, role: role, passwordHash: await passwordHasher.hash(password),
                             mustChangePassword: mustChangePassword, createdAt: now)
        do {
            try await store.insertStaffUser(user)
        } catch StoreError.duplicate {
            throw DomainError.conflict(field: "email", message: "a staff user with email '\(user.email.value)' already exists")
        }
        try await audit(actor, "user_create", target: "user:\(user.email.value)", detail: "role \(role.rawValue)", ipAddress: ipAddress)
        return user
    }

    static func passwordProblems(_ password: String, field: String) -> [ValidationError] {
        if password.count < minimumPasswordLength {
            return [.init(field: field, "must be at least \(minimumPasswordLength) characters")]
        }
        if password.count > 200 { return [.init(field: field, "must be at most 200 characters")] }
        if password.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
            return [.init(field: field, "must not contain control characters")]
        }
        return []
    }

    /// A random password for a new account or a reset, to be changed at first sign-in.
    public static func oneTimePassword() -> String {
        // 20 characters from an alphabet without look-alikes: about 100 bits.
        let alphabet = Array("abcdefghjkmnpqrstuvwxyzACDEFGHJKLMNPQRSTUVWXYZ23456789")
        return String(randomSecret().prefix(20).map { alphabet[Int($0) % alphabet.count] })
    }

    public func existingStaffUser(_ id: UUID) async throws -> StaffUser {
        guard let user = try await store.staffUser(id: id) else { throw DomainError.notFound(what: "staff user", id: id.uuidString.lowercased()) }
        return user
    }

    /// Disables an account and ends its sessions; its audit history stays.
    /// The last active administrator cannot be disabled.
    public func disableStaffUser(_ id: UUID, actor: StaffUser?, ipAddress: String? = nil) async throws -> StaffUser {
        let user = try await existingStaffUser(id)
        if user.id == actor?.id { throw DomainError.conflict(field: "id", message: "you cannot disable your own account") }
        guard user.isActive else { return user }
        if user.role == .admin, try await store.staffUsers().filter({ $0.role == .admin && $0.isActive }).count <= 1 {
            throw DomainError.conflict(field: "id", message: "\(user.email.value) is the last active administrator")
        }
        try await store.disableStaffUser(userID: user.id, at: now)
        try await store.deleteStaffSessions(userID: user.id)
        try await audit(actor, "user_disable", target: "user:\(user.email.value)", ipAddress: ipAddress)
        return try await existingStaffUser(id)
    }

    /// Sets a new one-time password (the user must change it), unlocks the
    /// account and ends its sessions. Returns the password to hand over.
    public func resetStaffPassword(_ id: UUID, actor: StaffUser?, ipAddress: String? = nil) async throws -> String {
        let user = try await existingStaffUser(id)
        if user.id == actor?.id { throw DomainError.conflict(field: "id", message: "change your own password under Change password instead") }
        let password = Self.oneTimePassword()
        _ = try await store.setStaffPassword(userID: user.id, expected: nil, newHash: await passwordHasher.hash(password), mustChange: true)
        try await store.deleteStaffSessions(userID: user.id)
        try await audit(actor, "user_password_reset", target: "user:\(user.email.value)", ipAddress: ipAddress)
        return password
    }

    // MARK: Signing in

    /// Checks a password; locks the account after repeated failures. Every
    /// attempt is audited. An unknown address costs the same bcrypt work as a
    /// known one, so the time taken does not tell them apart.
    public func signInStaff(email text: String, password: String, ipAddress: String?) async throws -> StaffSignIn {
        let at = now
        let typed = text.trimmingCharacters(in: .whitespaces)
        guard let email = try? EmailAddress(String(typed.prefix(Limits.emailLength))), let user = try await store.staffUser(email: email), user.isActive else {
            _ = await passwordHasher.hash(password)
            // What was typed is kept only if it is an address: people paste passwords into the wrong field.
            let named = (try? EmailAddress(String(typed.prefix(Limits.emailLength))))?.value ?? "(not an email address)"
            try await audit(nil, "sign_in_failed", actorEmail: named, detail: "unknown or disabled account", ipAddress: ipAddress)
            return .refused
        }
        if let until = user.lockedUntil, until > at {
            try await audit(user, "sign_in_failed", detail: "account locked", ipAddress: ipAddress)
            return .locked(until: until)
        }
        guard await passwordHasher.verify(password, user.passwordHash) else {
            let locked = try await store.recordStaffSignInFailure(userID: user.id, lockAfter: Self.signInFailuresBeforeLock,
                                                                  lockUntil: at.addingTimeInterval(Self.signInLockDuration))
            try await audit(user, "sign_in_failed", detail: locked == nil ? "wrong password" : "wrong password; account locked", ipAddress: ipAddress)
            return locked.map { .locked(until: $0) } ?? .refused
        }
        // Only if the account is still active with this password (not disabled or reset while bcrypt ran).
        guard try await store.recordStaffSignInSuccess(userID: user.id, passwordHash: user.passwordHash) else {
            try await audit(user, "sign_in_failed", detail: "account changed during sign-in", ipAddress: ipAddress)
            return .refused
        }
        let secret = try await openStaffSession(for: user)
        try await audit(user, "sign_in", ipAddress: ipAddress)
        return .signedIn(secret: secret, user: user)
    }

    private func openStaffSession(for user: StaffUser) async throws -> String {
        let secret = Self.randomSecret().base64URL
        let at = now
        try await store.insertStaffSession(StaffSession(hash: APIKey.hash(secret: secret), userID: user.id, createdAt: at,
                                                        expiresAt: at.addingTimeInterval(Self.staffIdleTimeout)))
        return secret
    }

    /// The user behind a console cookie while the session lasts; each use
    /// moves the idle timeout forward (never past the absolute lifetime).
    public func staffSession(secret: String) async throws -> StaffUser? {
        guard secret.count <= 100, let session = try await store.staffSession(hash: APIKey.hash(secret: secret)) else { return nil }
        let at = now
        let limit = session.createdAt.addingTimeInterval(Self.staffSessionLifetime)
        guard session.expiresAt > at, at < limit, let user = try await store.staffUser(id: session.userID), user.isActive else {
            try await store.deleteStaffSession(hash: session.hash)
            return nil
        }
        let next = min(limit, at.addingTimeInterval(Self.staffIdleTimeout))
        // Written at most once a minute per session.
        if next.timeIntervalSince(session.expiresAt) > 60 { try await store.extendStaffSession(hash: session.hash, expiresAt: next) }
        return user
    }

    public func signOutStaff(secret: String, user: StaffUser, ipAddress: String?) async throws {
        try await store.deleteStaffSession(hash: APIKey.hash(secret: secret))
        try await audit(user, "sign_out", ipAddress: ipAddress)
    }

    /// Changes one's own password; every session ends, and a new one is returned.
    public func changeStaffPassword(_ user: StaffUser, current: String, new: String, ipAddress: String?) async throws -> String {
        var problems: [ValidationError] = []
        if !(await passwordHasher.verify(current, user.passwordHash)) { problems.append(.init(field: "current", "is not your current password")) }
        problems += Self.passwordProblems(new, field: "new")
        if new == current { problems.append(.init(field: "new", "must differ from the current password")) }
        if !problems.isEmpty { throw DomainError.invalid(problems) }
        guard try await store.setStaffPassword(userID: user.id, expected: user.passwordHash, newHash: await passwordHasher.hash(new), mustChange: false) else {
            throw DomainError.conflict(field: "current", message: "your password was changed or reset meanwhile; sign in again")
        }
        try await store.deleteStaffSessions(userID: user.id)
        try await audit(user, "password_change", ipAddress: ipAddress)
        return try await openStaffSession(for: try await existingStaffUser(user.id))
    }

    /// The anti-forgery token of a console session's forms.
    public func staffCSRFToken(sessionSecret: String) -> String {
        Data(HMAC<SHA256>.authenticationCode(for: Data(sessionSecret.utf8), using: masterKey.derivedKey(purpose: "console-csrf/v1"))).base64URL
    }

    public func checkStaffCSRF(_ given: String?, sessionSecret: String) -> Bool {
        guard let given else { return false }
        let expected = Data(staffCSRFToken(sessionSecret: sessionSecret).utf8), actual = Data(given.utf8)
        return actual.constantTimeEquals(expected)
    }

    // MARK: Audit

    /// Appends to the audit log. `actor` nil is the command line or Assent itself.
    public func audit(_ actor: StaffUser?, _ action: String, actorEmail: String? = nil, target: String? = nil, detail: String? = nil,
                      ipAddress: String? = nil) async throws {
        try await store.appendAudit(AuditEntry(id: environment.newID(), at: now, actorID: actor?.id,
                                               actorEmail: actor?.email.value ?? actorEmail ?? "command line", action: action, target: target,
                                               detail: detail.map { String($0.prefix(1_000)) }, ipAddress: ipAddress))
    }
}
