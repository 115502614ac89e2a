import AssentCore
import AssentStore
import AssentTestSupport
import Foundation
import Testing

/// Staff accounts, sign-in, sessions and the audit log, on every store.
@Suite struct StaffTests {
    @Test(arguments: StoreKind.available)
    func signInLocksAfterRepeatedFailuresAndEverythingIsAudited(_ kind: StoreKind) async throws {
        let clock = TestClock(Date(timeIntervalSince1970: 1_800_000_000))
        let ledger = try await kind.makeLedger(now: { clock.now })
        let agent = try await ledger.createStaffUser(email: "Agent@Example.com", name: "Ana Agent", role: .agent,
                                                     password: "correct horse battery", mustChangePassword: false, actor: nil)
        #expect(agent.email.value == "agent@example.com" && agent.passwordHash != "correct horse battery")
        guard case .signedIn(let secret, _) = try await ledger.signInStaff(email: "agent@example.com", password: "correct horse battery", ipAddress: "192.0.2.1")
        else { Issue.record("sign-in failed"); return }
        #expect(try await ledger.staffSession(secret: secret)?.id == agent.id)
        for _ in 0..<(Ledger.signInFailuresBeforeLock - 1) {
            guard case .refused = try await ledger.signInStaff(email: "agent@example.com", password: "wrong password!", ipAddress: nil) else {
                Issue.record("a wrong password must be refused"); return
            }
        }
        guard case .locked(let until) = try await ledger.signInStaff(email: "agent@example.com", password: "wrong password!", ipAddress: nil) else {
            Issue.record("the fifth failure locks"); return
        }
        #expect(until == clock.now.addingTimeInterval(Ledger.signInLockDuration))
        guard case .locked = try await ledger.signInStaff(email: "agent@example.com", password: "correct horse battery", ipAddress: nil) else {
            Issue.record("locked even with the right password"); return
        }
        clock.now = until.addingTimeInterval(1)
        guard case .signedIn = try await ledger.signInStaff(email: "agent@example.com", password: "correct horse battery", ipAddress: nil) else {
            Issue.record("unlocked after the lock time"); return
        }
        guard case .refused = try await ledger.signInStaff(email: "nobody@example.com", password: "whatever12345", ipAddress: "192.0.2.9") else {
            Issue.record("unknown account"); return
        }
        let failures = try await ledger.store.auditEntries(AuditQuery(action: "sign_in_failed"))
        #expect(failures.count == Ledger.signInFailuresBeforeLock + 2)
        #expect(failures.first?.actorEmail == "nobody@example.com" && failures.first?.actorID == nil && failures.first?.ipAddress == "192.0.2.9")
        #expect(try await ledger.store.auditEntries(AuditQuery(actorID: agent.id, action: "sign_in")).count == 2)
    }

    @Test(arguments: StoreKind.available)
    func sessionsEndWhenIdleAtTheirLimitAndOnPasswordChange(_ kind: StoreKind) async throws {
        let clock = TestClock(Date(timeIntervalSince1970: 1_800_000_000))
        let ledger = try await kind.makeLedger(now: { clock.now })
        let user = try await ledger.createStaffUser(email: "a@example.com", name: "A", role: .auditor, password: "first password 1",
                                                    mustChangePassword: true, actor: nil)
        guard case .signedIn(let secret, _) = try await ledger.signInStaff(email: "a@example.com", password: "first password 1", ipAddress: nil) else {
            Issue.record("sign-in"); return
        }
        // Used every 20 minutes, the session lives until its absolute limit.
        for _ in 0..<23 {
            clock.now = clock.now.addingTimeInterval(20 * 60)
            #expect(try await ledger.staffSession(secret: secret) != nil)
        }
        clock.now = clock.now.addingTimeInterval(20 * 60)
        #expect(try await ledger.staffSession(secret: secret) == nil, "8 hours is the limit")
        guard case .signedIn(let second, _) = try await ledger.signInStaff(email: "a@example.com", password: "first password 1", ipAddress: nil) else {
            Issue.record("sign-in"); return
        }
        clock.now = clock.now.addingTimeInterval(Ledger.staffIdleTimeout + 1)
        #expect(try await ledger.staffSession(secret: second) == nil, "idle for too long")
        guard case .signedIn(let third, _) = try await ledger.signInStaff(email: "a@example.com", password: "first password 1", ipAddress: nil) else {
            Issue.record("sign-in"); return
        }
        await #expect(throws: DomainError.invalid([ValidationError(field: "current", "is not your current password"),
                                                   ValidationError(field: "new", "must be at least 12 characters")])) {
            _ = try await ledger.changeStaffPassword(user, current: "nope", new: "short", ipAddress: nil)
        }
        let fresh = try await ledger.changeStaffPassword(user, current: "first password 1", new: "my own password 2", ipAddress: nil)
        #expect(try await ledger.staffSession(secret: third) == nil, "other sessions end")
        #expect(try await ledger.staffSession(secret: fresh)?.mustChangePassword == false)
    }

    @Test(arguments: StoreKind.available)
    func disabledUsersCannotSignInAndBadUsersAreRefused(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        let admin = try await ledger.createStaffUser(email: "admin@example.com", name: "Admin", role: .admin, password: "admin password 1",
                                                     mustChangePassword: false, actor: nil)
        let agent = try await ledger.createStaffUser(email: "agent@example.com", name: "Agent", role: .agent, password: "agent password 1",
                                                     mustChangePassword: false, actor: admin)
        guard case .signedIn(let secret, _) = try await ledger.signInStaff(email: "agent@example.com", password: "agent password 1", ipAddress: nil) else {
            Issue.record("sign-in"); return
        }
        _ = try await ledger.disableStaffUser(agent.id, actor: admin)
        #expect(try await ledger.staffSession(secret: secret) == nil)
        guard case .refused = try await ledger.signInStaff(email: "agent@example.com", password: "agent password 1", ipAddress: nil) else {
            Issue.record("a disabled account signs in"); return
        }
        await #expect(throws: DomainError.conflict(field: "id", message: "you cannot disable your own account")) {
            _ = try await ledger.disableStaffUser(admin.id, actor: admin)
        }
        do {
            _ = try await ledger.createStaffUser(email: "bad", name: " ", role: .agent, password: "short", mustChangePassword: false, actor: admin)
            Issue.record("accepted")
        } catch let DomainError.invalid(errors) {
            #expect(errors.map(\.field) == ["email", "name", "password"])
        }
        await #expect(throws: DomainError.conflict(field: "email", message: "a staff user with email 'agent@example.com' already exists")) {
            _ = try await ledger.createStaffUser(email: "agent@example.com", name: "Again", role: .agent, password: "agent password 2",
                                                 mustChangePassword: false, actor: admin)
        }
        let log = try await ledger.store.auditEntries(AuditQuery())
        #expect(log.map(\.action).contains("user_disable") && log.first { $0.action == "user_create" && $0.target == "user:agent@example.com" }?.actorID == admin.id)
        let reset = try await ledger.resetStaffPassword(agent.id, actor: admin)
        #expect(reset.count == 20)
    }

    @Test(arguments: StoreKind.available)
    func parallelWrongGuessesStillLockAndAStaleSignInCannotUndoADisable(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        let admin = try await ledger.createStaffUser(email: "admin@example.com", name: "Admin", role: .admin, password: "admin password 1",
                                                     mustChangePassword: false, actor: nil)
        let agent = try await ledger.createStaffUser(email: "agent@example.com", name: "Agent", role: .agent, password: "agent password 1",
                                                     mustChangePassword: false, actor: nil)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<12 { group.addTask { _ = try await ledger.signInStaff(email: "agent@example.com", password: "a wrong guess", ipAddress: nil) } }
            try await group.waitForAll()
        }
        #expect(try await ledger.store.staffUser(id: agent.id)?.lockedUntil != nil, "every guess counted, none overwritten")
        // A sign-in that read the account before an admin disabled it cannot revive it.
        let stale = try #require(try await ledger.store.staffUser(id: admin.id))
        let other = try await ledger.createStaffUser(email: "admin2@example.com", name: "Admin 2", role: .admin, password: "admin password 2",
                                                     mustChangePassword: false, actor: nil)
        _ = try await ledger.disableStaffUser(admin.id, actor: other)
        #expect(try await ledger.store.recordStaffSignInSuccess(userID: admin.id, passwordHash: stale.passwordHash) == false)
        #expect(try await ledger.store.staffUser(id: admin.id)?.isActive == false)
        // Nor a password that was reset meanwhile.
        let before = try #require(try await ledger.store.staffUser(id: other.id)).passwordHash
        #expect(try await ledger.store.setStaffPassword(userID: other.id, expected: "not the hash", newHash: "x", mustChange: false) == false)
        #expect(try await ledger.store.staffUser(id: other.id)?.passwordHash == before)
        await #expect(throws: DomainError.conflict(field: "id", message: "admin2@example.com is the last active administrator")) {
            _ = try await ledger.disableStaffUser(other.id, actor: nil)
        }
        await #expect(throws: DomainError.conflict(field: "id", message: "change your own password under Change password instead")) {
            _ = try await ledger.resetStaffPassword(other.id, actor: other)
        }
        guard case .refused = try await ledger.signInStaff(email: "my secret password", password: "x", ipAddress: nil) else { Issue.record("refused"); return }
        #expect(try await ledger.store.auditEntries(AuditQuery(action: "sign_in_failed")).first?.actorEmail == "(not an email address)",
                "a password typed into the email field is not kept")
    }

    @Test(arguments: StoreKind.databases)
    func theAuditLogIsAppendOnlyInTheDatabase(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await ledger.audit(nil, "verify", detail: "intact")
        await #expect(throws: (any Error).self) { try await tamper(ledger.store, "UPDATE audit_log SET detail = 'forged'") }
        await #expect(throws: (any Error).self) { try await tamper(ledger.store, "DELETE FROM audit_log") }
        #expect(try await ledger.store.auditEntries(AuditQuery()).map(\.detail) == ["intact"])
    }
}
