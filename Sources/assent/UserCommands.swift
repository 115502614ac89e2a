import AssentCore
import AssentStore
import ArgumentParser
import Foundation

struct Users: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Manage staff users of the console (roles: admin, agent, auditor).",
                                                    subcommands: [Add.self, List.self, Disable.self, ResetPassword.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a staff user; prints a one-time password they change at first sign-in.",
            discussion: "With --password-stdin the password is read from standard input instead and need not be changed.")
        @OptionGroup var store: StoreOptions
        @Argument(help: "Their email, used to sign in.") var email: String
        @Option(help: "Their name.") var name: String
        @Option(help: "admin, agent or auditor.") var role: String
        @Flag(help: "Read the password from standard input (at least 12 characters).") var passwordStdin = false

        func run() async throws {
            guard let role = StaffUser.Role(rawValue: role) else { throw ValidationError("--role: '\(role)' must be admin, agent or auditor") }
            var password = Ledger.oneTimePassword()
            if passwordStdin {
                guard let line = readLine(strippingNewline: true) else { throw ValidationError("--password-stdin: nothing on standard input") }
                password = line
            }
            let ledger = try await store.openLedger()
            let user = try await reportingErrors {
                try await ledger.createStaffUser(email: email, name: name, role: role, password: password, mustChangePassword: !passwordStdin, actor: nil)
            }
            print("added \(user.role.rawValue) \(user.email.value) (\(user.name))")
            if !passwordStdin {
                print("one-time password: \(password)")
                FileHandle.standardError.write(Data("the password is not shown again; they choose their own at the first sign-in\n".utf8))
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List staff users.")
        @OptionGroup var store: StoreOptions

        func run() async throws {
            let ledger = try await store.openLedger()
            let users = try await ledger.store.staffUsers()
            if users.isEmpty { print("no staff users yet; 'assent serve' creates the first administrator") }
            for u in users {
                let status = !u.isActive ? "disabled" : (u.lockedUntil.map { $0 > Date() ? "locked until \($0.display)" : "active" } ?? "active")
                print("\(u.email.value)  \(u.name)  \(u.role.rawValue)  \(status)\(u.mustChangePassword ? "  (must change password)" : "")")
            }
        }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Disable a staff user and end their sessions.")
        @OptionGroup var store: StoreOptions
        @Argument var email: String

        func run() async throws {
            let ledger = try await store.openLedger()
            let user = try await reportingErrors { () -> StaffUser in
                guard let found = try await ledger.store.staffUser(email: EmailAddress(email)) else { throw ValidationError("no staff user '\(email)'") }
                return try await ledger.disableStaffUser(found.id, actor: nil)
            }
            print("disabled \(user.email.value)")
        }
    }

    struct ResetPassword: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Give a staff user a new one-time password (also unlocks the account).")
        @OptionGroup var store: StoreOptions
        @Argument var email: String

        func run() async throws {
            let ledger = try await store.openLedger()
            let password = try await reportingErrors { () -> String in
                guard let found = try await ledger.store.staffUser(email: EmailAddress(email)) else { throw ValidationError("no staff user '\(email)'") }
                return try await ledger.resetStaffPassword(found.id, actor: nil)
            }
            print("one-time password: \(password)")
        }
    }
}
