import AssentCore
import AsyncHTTPClient
import AssentTestSupport
import Foundation
import Testing

/// While `assent serve` opens and migrates its database, its address answers:
/// `/healthz` 200 (alive), `/readyz` and the API 503 with Retry-After (not ready).
@Suite struct StartingTests {
    /// `fresh`: on a connection of its own (closed after), so that it may be served by another event loop.
    static func status(_ port: Int, _ path: String, fresh: Bool = false) async -> (status: Int, retryAfter: String?, body: String)? {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        if fresh { request.headers.add(name: "Connection", value: "close") }
        // Generous: under the whole suite's parallel load on two cores (and a busy process beside it)
        // an answer here once took more than 2 s.
        guard let response = try? await HTTPClient.shared.execute(request, timeout: .seconds(10)),
              let body = try? await response.body.collect(upTo: 1 << 20) else { return nil }
        return (Int(response.status.code), response.headers.first(name: "Retry-After"), String(buffer: body))
    }

    @Test func probesSeeALiveServerThatIsNotReadyWhileTheDatabaseIsMigrated() async throws {
        let cli = try CLI()
        // Another process holds the (new, empty) database file exclusively until told to let go, so the migration waits.
        let locker = Process()
        locker.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        locker.arguments = ["python3", "-c", """
            import sqlite3, sys
            c = sqlite3.connect(sys.argv[1], isolation_level=None)
            c.execute('BEGIN EXCLUSIVE')
            print('locked', flush=True)
            sys.stdin.readline()
            """, cli.databasePath]
        let lockerOut = Pipe(), lockerIn = Pipe()
        locker.standardOutput = lockerOut
        locker.standardInput = lockerIn
        try locker.run()
        defer { if locker.isRunning { locker.terminate() } }
        _ = lockerOut.fileHandleForReading.availableData // "locked"

        let port = try freeLocalPort()
        let server = Process()
        server.executableURL = CLI.executable
        server.arguments = ["serve", "--port", String(port), "--log-level", "warning"]
        server.currentDirectoryURL = cli.directory
        server.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("ASSENT_") }.merging(["ASSENT_BCRYPT_COST": "4"]) { _, new in new }
        server.standardOutput = FileHandle.nullDevice
        try server.run()
        defer { if server.isRunning { server.terminate(); server.waitUntilExit() } }

        // While the lock is held: alive, not ready.
        var starting: (status: Int, retryAfter: String?, body: String)?
        for _ in 0..<1_500 where starting == nil {
            starting = await Self.status(port, "/readyz")
            if starting == nil { try await Task.sleep(for: .milliseconds(20)) }
        }
        let ready = try #require(starting)
        #expect(ready.status == 503 && ready.retryAfter == "5" && ready.body.contains("starting"), "\(ready)")
        #expect(await Self.status(port, "/healthz")?.status == 200)
        let api = await Self.status(port, "/api/v1/topics")
        #expect(api?.status == 503 && api?.body.contains("urn:assent:problem:unavailable") == true, "\(String(describing: api))")
        // Each on a new connection, which the server hands to its event loops in turn: every loop
        // answers while the database waits for its lock (none is held up by the opening or migrating).
        for i in 0..<6 {
            let probe = await Self.status(port, "/healthz", fresh: true)
            #expect(probe?.status == 200, "fresh connection \(i): \(String(describing: probe))")
        }

        // Once the lock goes, the migration runs and the real server takes the address.
        lockerIn.fileHandleForWriting.write(Data("go\n".utf8))
        locker.waitUntilExit()
        var readyAfter: Int?
        for _ in 0..<300 where readyAfter != 200 {
            readyAfter = await Self.status(port, "/readyz")?.status
            if readyAfter != 200 { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(readyAfter == 200)
        #expect(await Self.status(port, "/api/v1/topics")?.status == 401, "the real API: a key is needed")
    }
}
