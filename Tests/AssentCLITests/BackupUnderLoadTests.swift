import AssentCore
import AssentPostgres
import AssentSQLite
import AssentStore
import AssentTestSupport
import Foundation
import Testing

/// `assent backup` while the real server takes writes from 8 concurrent
/// writers: the copy is one consistent moment (every chain in it verifies),
/// it holds every event acknowledged before the backup began, and the server
/// went on writing meanwhile. SQLite: a file copy; PostgreSQL: pg_dump,
/// restored into an empty database with pg_restore.
@Suite struct BackupUnderLoadTests {
    @Test(arguments: CrashSafetyTests.stores)
    func aBackupTakenDuringWritesOpensAndVerifies(_ store: String) async throws {
        let cli = try CLI()
        var environment = ["ASSENT_MASTER_KEY": MasterKey.generate().base64]
        if store == "postgres" { environment["ASSENT_DATABASE_URL"] = try await TestPostgres.freshDatabase().url }
        let server = try ServerProcess(cli: cli, environment: environment)
        defer { server.stop() }
        let token = try #require(server.token)
        let topics = ["events", "news", "offers"]
        let contacts = try await CrashSafetyTests.seed(server, token: token, topics: topics)

        let tally = CrashSafetyTests.Tally()
        let writers = CrashSafetyTests.load(server, token: token, contacts: contacts, topics: topics, seed: UInt64.random(in: 0...UInt64(UInt32.max)),
                                            tally: tally)
        while tally.requests < 100 { try await Task.sleep(for: .milliseconds(5)) }
        let before = tally.acknowledgedEvents
        let copy = cli.directory.appendingPathComponent(store == "postgres" ? "copy.dump" : "copy.sqlite").path
        let backup = try cli.run(["backup", copy], environment: environment)
        let answeredAtBackup = tally.requests
        // Writes go on after the copy was taken.
        while tally.requests < answeredAtBackup + 50 { try await Task.sleep(for: .milliseconds(5)) }
        writers.cancel()
        await writers.value
        server.stop()
        #expect(backup.status == 0, "\(backup.stderr)")

        // The copy opens (restored, on PostgreSQL), verifies, and holds every event acknowledged before the backup began.
        var copyEnvironment = environment
        let stored: any LedgerStore
        if store == "postgres" {
            let restored = try await TestPostgres.freshDatabase()
            let restore = Process()
            restore.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            restore.arguments = ["pg_restore", "--no-owner", "--dbname", restored.url, copy]
            try restore.run()
            restore.waitUntilExit()
            #expect(restore.terminationStatus == 0, "pg_restore")
            copyEnvironment["ASSENT_DATABASE_URL"] = restored.url
            stored = PostgresStore(location: restored, maxConnections: 2)
        } else {
            copyEnvironment["ASSENT_DATABASE"] = copy
            stored = try SQLiteStore(path: copy)
        }
        defer { (stored as? PostgresStore)?.shutdown() }
        let verified = try cli.run(["verify"], environment: copyEnvironment)
        #expect(verified.status == 0 && verified.stdout.contains("every chain intact"), "\(verified.stdout)\(verified.stderr)")
        var missing = 0
        for id in before.keys where try await stored.event(id: UUID(uuidString: id)!) == nil { missing += 1 }
        #expect(missing == 0, "\(missing) of \(before.count) events acknowledged before the backup are not in it")
        let live = try cli.run(["verify"], environment: environment)
        #expect(live.status == 0)
        let copied = Self.events(verified.stdout), written = Self.events(live.stdout)
        #expect(copied >= before.count && copied < written, "the copy has \(copied) events, the live database \(written): writes went on meanwhile")
        print("backup under load (\(store)): \(copied) events copied while \(written - copied) more were written; \(before.count) acknowledged before it, all in the copy; the copy verifies")
    }

    /// The event count in `assent verify`'s "ok: N contacts, M events, ..." line.
    static func events(_ output: String) -> Int {
        let words = output.split(separator: " ")
        return words.firstIndex(of: "events,").flatMap { Int(words[$0 - 1]) } ?? -1
    }
}
