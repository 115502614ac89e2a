import AssentCore
import AssentSQLite
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import GRDB
import Testing

/// Runs the built `assent` executable as a user would.
struct CLI {
    let directory: URL

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("assent-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    static var executable: URL {
        // Tests/AssentCLITests/CLITests.swift -> package root -> .build/debug/assent
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return root.appendingPathComponent(".build/debug/assent")
    }

    var databasePath: String { directory.appendingPathComponent("assent.sqlite").path }

    struct Result {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    @discardableResult
    func run(_ arguments: [String], environment: [String: String] = [:]) throws -> Result {
        let process = Process()
        process.executableURL = Self.executable
        process.arguments = arguments
        process.currentDirectoryURL = directory
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("ASSENT_") }
        env["ASSENT_BCRYPT_COST"] = "4" // staff passwords: fast in tests
        env.merge(environment) { _, new in new }
        process.environment = env
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self), stderr: String(decoding: stderr, as: UTF8.self))
    }
}

@Suite(.serialized) struct CLITests {
    @Test func executableIsBuilt() {
        #expect(FileManager.default.isExecutableFile(atPath: CLI.executable.path), "build with `swift build --build-tests` first")
    }

    @Test func topicsContactsAndVerifyWorkFromTheCommandLine() throws {
        let cli = try CLI()
        let added = try cli.run(["topics", "add", "hr-training", "--title", "HR training", "--category", "training",
                                 "--notice", "We will email you about HR courses."])
        #expect(added.status == 0, "\(added.stderr)")
        #expect(try cli.run(["topics", "list"]).stdout.contains("hr-training  HR training"))
        let contact = try cli.run(["contacts", "add", "Ann@Example.com", "--name", "Ann Lee", "--external-id", "crm-7"])
        #expect(contact.status == 0 && contact.stdout.contains("<ann@example.com>"))
        let shown = try cli.run(["contacts", "show", "crm-7"])
        #expect(shown.stdout.contains("hr-training: No (none)"), "\(shown.stdout)")
        let verified = try cli.run(["verify"])
        #expect(verified.status == 0 && verified.stdout.contains("every chain intact"))
        #expect(FileManager.default.fileExists(atPath: cli.databasePath + ".key"))
        let attributes = try FileManager.default.attributesOfItem(atPath: cli.databasePath + ".key")
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
    }

    @Test func badInputIsNamedAndChangesNothing() throws {
        let cli = try CLI()
        let badKey = try cli.run(["topics", "add", "HR Training", "--title", "x", "--notice", "n"])
        #expect(badKey.status != 0 && badKey.stderr.contains("key: 'HR Training' must be a slug"), "\(badKey.stderr)")
        let badEmail = try cli.run(["contacts", "add", "not-an-email"])
        #expect(badEmail.status != 0 && badEmail.stderr.contains("email:"))
        let badScope = try cli.run(["keys", "create", "--name", "x", "--scope", "root"])
        #expect(badScope.status != 0 && badScope.stderr.contains("--scope"))
        let badStatus = try cli.run(["outbox", "list", "--status", "lost"])
        #expect(badStatus.status != 0 && badStatus.stderr.contains("--status: 'lost' must be pending, sent or dead"), "\(badStatus.stderr)")
        let noTarget = try cli.run(["outbox", "retry"])
        #expect(noTarget.status != 0 && noTarget.stderr.contains("give an item id or --all"))
        let badID = try cli.run(["outbox", "retry", "not-an-id"])
        #expect(badID.status != 0 && badID.stderr.contains("is not an outbox item id"))
        let unknownID = try cli.run(["outbox", "retry", UUID().uuidString])
        #expect(unknownID.status != 0 && unknownID.stderr.contains("no dead outbox item"))
        #expect(try cli.run(["outbox", "list"]).stdout.contains("the outbox is empty"))
        let badURL = try cli.run(["topics", "list"], environment: ["ASSENT_DATABASE_URL": "mysql://x"])
        #expect(badURL.status != 0 && badURL.stderr.contains("ASSENT_DATABASE_URL"))
        #expect(try cli.run(["topics", "list"]).stdout.contains("no topics yet"))
        #expect(try cli.run(["keys", "list"]).stdout.isEmpty)
    }

    @Test func aMissingOrWrongMasterKeyIsRefusedOnceEvidenceExists() throws {
        let cli = try CLI()
        try cli.run(["contacts", "add", "ann@example.com"])
        try FileManager.default.removeItem(atPath: cli.databasePath + ".key")
        let missing = try cli.run(["topics", "list"])
        #expect(missing.status != 0 && missing.stderr.contains("is missing"), "\(missing.stderr)")
        let wrong = try cli.run(["topics", "list"], environment: ["ASSENT_MASTER_KEY": MasterKey.generate().base64])
        #expect(wrong.status != 0 && wrong.stderr.contains("does not match"), "\(wrong.stderr)")
    }

    @Test func keysAreCreatedListedAndRevoked() throws {
        let cli = try CLI()
        let created = try cli.run(["keys", "create", "--name", "CRM sync", "--scope", "write"])
        #expect(created.status == 0)
        let token = created.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(token.hasPrefix("assent_"))
        let id = String(token.dropFirst("assent_".count).prefix { $0 != "_" })
        let listed = try cli.run(["keys", "list"]).stdout
        #expect(listed.contains(id) && listed.contains("write") && !listed.contains(token))
        #expect(try cli.run(["keys", "revoke", id]).status == 0)
        #expect(try cli.run(["keys", "list"]).stdout.contains("REVOKED"))
        #expect(try cli.run(["keys", "revoke", id]).status != 0)
    }

    /// `assent verify` exits non-zero and names the contact when a row of the file is edited.
    /// Tasks run on the event loops by default (every other test's server); Swift's own pool is the fallback.
    @Test func theServerAlsoRunsOnSwiftsOwnThreadPool() async throws {
        let cli = try CLI()
        try cli.run(["topics", "add", "news", "--title", "News", "--notice", "News by email."])
        let serve = try ServerProcess(cli: cli, environment: ["ASSENT_TASKS_ON_EVENT_LOOPS": "false"])
        defer { serve.stop() }
        let id = try await serve.createContactAndOptIn(email: "pool@example.com", topic: "news")
        let check = try await serve.get("/api/v1/check?email=pool%40example.com&topic=news", token: serve.token)
        let answer = String(decoding: check.body, as: UTF8.self)
        #expect(check.status == 200 && answer.contains("\"allowed\":true") && answer.contains(id), "\(answer)")
    }

    @Test func verifyFailsOnATamperedFile() async throws {
        let cli = try CLI()
        try cli.run(["topics", "add", "news", "--title", "News", "--notice", "News by email."])
        let serve = try ServerProcess(cli: cli)
        defer { serve.stop() }
        let id = try await serve.createContactAndOptIn(email: "victim@example.com", topic: "news")
        serve.stop()
        #expect(try cli.run(["verify"]).status == 0)

        let queue = try DatabaseQueue(path: cli.databasePath)
        try await queue.write { db in
            try db.execute(sql: "DROP TRIGGER consent_events_immutable_update")
            try db.execute(sql: "UPDATE consent_events SET source = 'staff' WHERE contact_id = ?", arguments: [id])
        }
        let verified = try cli.run(["verify"])
        #expect(verified.status == 2)
        #expect(verified.stdout.contains("BROKEN contact \(id) event #1: edited"), "\(verified.stdout)")
    }

    @Test func serveCreatesTheFirstAdminKeyOnceAndServes() async throws {
        let cli = try CLI()
        let first = try ServerProcess(cli: cli)
        #expect(first.output.contains("First start: created an admin API key"))
        #expect(try await first.get("/healthz").status == 200)
        #expect(try await first.get("/api/v1/topics").status == 401)
        #expect(try await first.get("/api/v1/topics", token: first.token).status == 200)
        first.stop()
        let second = try ServerProcess(cli: cli)
        defer { second.stop() }
        #expect(!second.output.contains("First start"))
        #expect(try await second.get("/api/v1/topics", token: first.token).status == 200)
    }

    @Test func backupCopiesALiveDatabaseThatVerifies() throws {
        let cli = try CLI()
        try cli.run(["topics", "add", "news", "--title", "News", "--notice", "News by email."])
        try cli.run(["contacts", "add", "ann@example.com"])
        let copy = cli.directory.appendingPathComponent("copy.sqlite").path
        let backup = try cli.run(["backup", copy])
        #expect(backup.status == 0, "\(backup.stderr)")
        let shown = try cli.run(["contacts", "show", "ann@example.com", "--database", copy, "--key-file", cli.databasePath + ".key"])
        #expect(shown.status == 0 && shown.stdout.contains("<ann@example.com>"), "\(shown.stderr)")
        let again = try cli.run(["backup", copy])
        #expect(again.status != 0 && again.stderr.contains("already exists"))
        let onPostgres = try cli.run(["backup", "x.sqlite"], environment: ["ASSENT_DATABASE_URL": "postgres://127.0.0.1/x"])
        #expect(onPostgres.status != 0 && onPostgres.stderr.contains("pg_dump"))
    }

    @Test func serveRefusesBadFlags() throws {
        let cli = try CLI()
        let badPort = try cli.run(["serve", "--port", "70000"])
        #expect(badPort.status != 0 && badPort.stderr.contains("--port"))
        let badLevel = try cli.run(["serve", "--log-level", "loud"])
        #expect(badLevel.status != 0 && badLevel.stderr.contains("--log-level"))
        let badReceipts = try cli.run(["serve", "--receipt-emails", "granted,requested"])
        #expect(badReceipts.status != 0 && badReceipts.stderr.contains("--receipt-emails: 'requested'"), "\(badReceipts.stderr)")
        let badSMTP = try cli.run(["serve"], environment: ["ASSENT_SMTP_URL": "smtp://mail.example.com?starttls=maybe"])
        #expect(badSMTP.status != 0 && badSMTP.stderr.contains("--smtp-url"), "\(badSMTP.stderr)")
        let badExecutor = try cli.run(["serve"], environment: ["ASSENT_TASKS_ON_EVENT_LOOPS": "maybe"])
        #expect(badExecutor.status != 0 && badExecutor.stderr.contains("ASSENT_TASKS_ON_EVENT_LOOPS: 'maybe'"), "\(badExecutor.stderr)")
        let badFrom = try cli.run(["serve", "--mail-from", "nobody"])
        #expect(badFrom.status != 0 && badFrom.stderr.contains("--mail-from"))
        // This session's limits and schedules: out of range is refused by name, and nothing is created.
        for (flag, value) in [("--public-requests-per-minute", "0"), ("--failed-auth-per-minute", "-3"), ("--header-timeout", "0"),
                              ("--body-timeout", "100000"), ("--verify-every-hours", "-1")] {
            let bad = try cli.run(["serve", flag, value])
            #expect(bad.status != 0 && bad.stderr.contains(flag), "\(flag) \(value): \(bad.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: cli.databasePath), "no database was made by a refused start")
    }

    /// A port another process listens on is named, with what to do, before anything is created,
    /// and that is the only error said: no background job reports itself as failing.
    @Test func aPortInUseIsNamedAndIsTheOnlyErrorSaid() async throws {
        let first = try ServerProcess(cli: try CLI())
        defer { first.stop() }
        let second = try CLI()
        let refused = try second.run(["serve", "--port", String(first.port)])
        #expect(refused.status != 0)
        #expect(!FileManager.default.fileExists(atPath: second.databasePath), "nothing was created by a start that could not listen")
        #expect(!refused.stdout.contains("assent_"), "no admin key was shown")
        #expect(refused.stderr.contains("cannot listen on 127.0.0.1:\(first.port): the port is in use"), "\(refused.stderr)")
        #expect(!refused.stderr.contains(" error "), "\(refused.stderr)")
        #expect(try await first.get("/healthz").status == 200, "the first server serves on")
        // An address this machine does not have (TEST-NET-1) is named the same way, also before anything is made.
        let third = try CLI()
        let elsewhere = try third.run(["serve", "--host", "192.0.2.1", "--port", String(first.port)])
        #expect(elsewhere.status != 0)
        #expect(elsewhere.stderr.contains("cannot listen on 192.0.2.1:\(first.port): this machine has no such address"), "\(elsewhere.stderr)")
        #expect(!FileManager.default.fileExists(atPath: third.databasePath))
        // And a host name that names nothing.
        let fourth = try CLI()
        let nowhere = try fourth.run(["serve", "--host", "no such host", "--port", String(first.port)])
        #expect(nowhere.status != 0)
        #expect(nowhere.stderr.contains("cannot listen on no such host:\(first.port): this machine has no such address"), "\(nowhere.stderr)")
        #expect(!FileManager.default.fileExists(atPath: fourth.databasePath))
    }
}

/// `assent serve` on a free port, for tests that need the real process.
final class ServerProcess: @unchecked Sendable {
    let process = Process()
    let port: Int
    let output: String
    let token: String?

    /// `arguments` come after the defaults (a later flag wins); `logFile` takes the server's standard error.
    init(cli: CLI, environment: [String: String] = [:], arguments: [String] = [], logFile: URL? = nil) throws {
        process.executableURL = CLI.executable
        process.arguments = ["serve", "--port", "0", "--log-level", "warning"] + arguments
        if let logFile {
            FileManager.default.createFile(atPath: logFile.path, contents: nil)
            process.standardError = try FileHandle(forWritingTo: logFile)
        }
        process.currentDirectoryURL = cli.directory
        process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("ASSENT_") }
            .merging(["ASSENT_BCRYPT_COST": "4"]) { _, new in new }.merging(environment) { _, new in new }
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        // Read until the "serving" line, with a deadline.
        var text = ""
        let deadline = Date().addingTimeInterval(30)
        let handle = out.fileHandleForReading
        while !text.contains("press Ctrl-C"), Date() < deadline {
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        output = text
        guard let range = text.range(of: #"http://127\.0\.0\.1:(\d+)/"#, options: .regularExpression),
              let port = Int(text[range].dropFirst("http://127.0.0.1:".count).dropLast()) else {
            process.terminate()
            throw CLIError.serverDidNotStart(text)
        }
        self.port = port
        token = text.range(of: #"assent_[0-9a-f]+_[A-Za-z0-9_-]+"#, options: .regularExpression).map { String(text[$0]) }
    }

    enum CLIError: Error { case serverDidNotStart(String) }

    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }

    func get(_ path: String, token: String? = nil) async throws -> (status: Int, body: Data) {
        try await request("GET", path, token: token, body: nil)
    }

    func request(_ method: String, _ path: String, token: String?, body: Any?) async throws -> (status: Int, body: Data) {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        request.httpMethod = method
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        if let body {
            request.httpBody = try JSONSerialization.data(withJSONObject: body)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, data)
    }

    func createContactAndOptIn(email: String, topic: String) async throws -> String {
        let created = try await request("POST", "/api/v1/contacts", token: token, body: ["email": email])
        let id = try #require((try JSONSerialization.jsonObject(with: created.body) as? [String: Any])?["id"] as? String)
        let put = try await request("PUT", "/api/v1/contacts/\(id)/preferences", token: token,
                                    body: ["source": "api", "preferences": [["topic": topic, "granted": true]]])
        #expect(put.status == 200)
        return id
    }
}
