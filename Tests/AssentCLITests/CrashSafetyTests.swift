import AssentCore
import AsyncHTTPClient
import AssentPostgres
import AssentSQLite
import AssentStore
import AssentTestSupport
import Foundation
import Testing

/// The real `assent serve`, killed with SIGKILL at random moments under
/// concurrent writes and restarted, then stopped with SIGTERM mid-load: no
/// write it acknowledged is lost, every chain verifies (which includes the
/// projection equalling a replay of the events), and every change's email is
/// in the outbox. On SQLite and on PostgreSQL.
@Suite(.serialized) struct CrashSafetyTests {
    static let kills = 20
    static var stores: [String] { ["sqlite"] + (TestPostgres.url != nil || TestPostgres.isCI ? ["postgres"] : []) }

    /// What the writers saw: acknowledged events, and requests that went unanswered.
    final class Tally: @unchecked Sendable {
        private let lock = NSLock()
        private var events: [String: String] = [:]
        private var statuses: [Int: Int] = [:]
        /// When requests that got no answer were sent (SIGTERM must drain those in flight).
        private var unanswered: [Date] = []
        private var answered = 0
        var requests: Int { lock.withLock { answered } }

        func acknowledged(_ ids: [String], contact: String, status: Int) {
            lock.withLock {
                answered += 1
                statuses[status, default: 0] += 1
                for id in ids { events[id] = contact }
            }
        }

        func failed(sentAt: Date) { lock.withLock { unanswered.append(sentAt) } }
        var acknowledgedEvents: [String: String] { lock.withLock { events } }
        var statusCounts: [Int: Int] { lock.withLock { statuses } }
        func unanswered(sentBetween start: Date, and end: Date) -> Int { lock.withLock { unanswered.filter { $0 >= start && $0 < end }.count } }
    }

    /// Writers that keep changing random preferences until the server goes away.
    static func load(_ server: ServerProcess, token: String, contacts: [String], topics: [String], seed: UInt64, tally: Tally) -> Task<Void, Never> {
        Task {
            await withTaskGroup(of: Void.self) { group in
                for writer in 0..<8 {
                    group.addTask {
                        var random = SplitMix(state: seed &+ UInt64(writer))
                        while !Task.isCancelled {
                            let contact = contacts[Int(random.next() % UInt64(contacts.count))]
                            let topic = topics[Int(random.next() % UInt64(topics.count))]
                            var request = HTTPClientRequest(url: "http://127.0.0.1:\(server.port)/api/v1/contacts/\(contact)/preferences")
                            request.method = .PUT
                            request.headers.add(name: "Authorization", value: "Bearer \(token)")
                            request.headers.add(name: "Content-Type", value: "application/json")
                            request.body = .bytes(Data(#"{"source":"api","preferences":[{"topic":"\#(topic)","granted":\#(random.next() % 2 == 0)}]}"#.utf8))
                            let sentAt = Date()
                            do {
                                let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
                                let data = Data(buffer: try await response.body.collect(upTo: 1 << 20))
                                let status = Int(response.status.code)
                                let recorded = (try? JSONSerialization.jsonObject(with: data) as? [String: Any])?["recorded"] as? [[String: Any]] ?? []
                                tally.acknowledged(status / 100 == 2 ? recorded.compactMap { $0["id"] as? String } : [], contact: contact, status: status)
                            } catch {
                                tally.failed(sentAt: sentAt)
                                if !server.process.isRunning { return }
                                try? await Task.sleep(for: .milliseconds(20))
                            }
                        }
                    }
                }
            }
        }
    }

    /// Three topics without double opt-in and 40 contacts through the API; the contacts' ids.
    static func seed(_ server: ServerProcess, token: String, topics: [String]) async throws -> [String] {
        for topic in topics {
            let r = try await server.request("POST", "/api/v1/topics", token: token,
                                             body: ["key": topic, "title": topic, "notice": "About \(topic).", "requiresDoubleOptIn": false])
            #expect(r.status == 201)
        }
        var contacts: [String] = []
        for i in 0..<40 {
            let r = try await server.request("POST", "/api/v1/contacts", token: token, body: ["email": "person\(i)@example.com"])
            contacts.append(try #require((try JSONSerialization.jsonObject(with: r.body) as? [String: Any])?["id"] as? String))
        }
        return contacts
    }

    @Test(arguments: stores)
    func noAcknowledgedWriteIsLostAcrossKillsAndAStop(_ store: String) async throws {
        let cli = try CLI()
        var environment = ["ASSENT_MASTER_KEY": MasterKey.generate().base64, "ASSENT_RECEIPT_EMAILS": "granted,withdrawn"]
        var postgres: PostgresLocation?
        if store == "postgres" {
            let database = try await TestPostgres.freshDatabase()
            postgres = database
            environment["ASSENT_DATABASE_URL"] = database.url
        }
        let first = try ServerProcess(cli: cli, environment: environment)
        let token = try #require(first.token)
        let topics = ["events", "news", "offers"]
        let contacts = try await Self.seed(first, token: token, topics: topics)

        // A new seed every run (ASSENT_CRASH_SEED repeats one); each kill's timing and writes follow from it.
        let seed = ProcessInfo.processInfo.environment["ASSENT_CRASH_SEED"].flatMap { UInt64($0) } ?? UInt64.random(in: 0...UInt64(UInt32.max))
        let tally = Tally()
        var server = first
        for round in 0..<Self.kills {
            if round > 0 { server = try ServerProcess(cli: cli, environment: environment) }
            var random = SplitMix(state: seed &+ UInt64(round) &* 0x1_0000_0001)
            let answered = tally.requests
            let writers = Self.load(server, token: token, contacts: contacts, topics: topics, seed: random.next(), tally: tally)
            // Under load (a few writes answered), then at a random moment.
            while tally.requests < answered + 5 { try await Task.sleep(for: .milliseconds(5)) }
            try await Task.sleep(for: .milliseconds(Int(random.next() % 400)))
            kill(server.process.processIdentifier, SIGKILL)
            server.process.waitUntilExit()
            #expect(server.process.terminationReason == .uncaughtSignal)
            writers.cancel()
            await writers.value
        }

        // SIGTERM: requests already in flight are answered, then the process exits cleanly.
        server = try ServerProcess(cli: cli, environment: environment)
        let lastRound = Date()
        let writers = Self.load(server, token: token, contacts: contacts, topics: topics, seed: seed ^ 0x5157_7E57, tally: tally)
        try await Task.sleep(for: .milliseconds(400))
        let terminatedAt = Date()
        kill(server.process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(20)
        while server.process.isRunning, Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(!server.process.isRunning, "SIGTERM stops the server within 20 s")
        #expect(server.process.terminationReason == .exit && server.process.terminationStatus == 0, "a clean exit")
        writers.cancel()
        await writers.value
        #expect(tally.unanswered(sentBetween: lastRound, and: terminatedAt.addingTimeInterval(-0.05)) == 0, "every request in flight at SIGTERM was answered")

        let acknowledged = tally.acknowledgedEvents
        let statuses = tally.statusCounts
        #expect(statuses.keys.allSatisfy { $0 == 200 }, "only 200s: \(statuses)")
        #expect(acknowledged.count > Self.kills * 5, "enough writes were acknowledged to mean something: \(acknowledged.count)")

        // Every acknowledged event is stored; every change queued its receipt email with it.
        let ledgerStore: any LedgerStore = if let postgres { PostgresStore(location: postgres, maxConnections: 2) }
            else { try SQLiteStore(path: cli.databasePath) }
        defer { (ledgerStore as? PostgresStore)?.shutdown() }
        var missing: [String] = []
        for id in acknowledged.keys where try await ledgerStore.event(id: UUID(uuidString: id)!) == nil { missing.append(id) }
        #expect(missing.isEmpty, "\(missing.count) of \(acknowledged.count) acknowledged events are missing (ASSENT_CRASH_SEED=\(seed))")
        var stored = 0
        for contact in contacts {
            let id = UUID(uuidString: contact)!
            let events = try await ledgerStore.events(contactID: id, beforeSeq: nil, limit: 100_000)
            let receipts = try await ledgerStore.outboxItems(contactID: id).filter { $0.kind == ReceiptEmail.kind }
            #expect(receipts.count == events.count, "contact \(contact): \(events.count) changes but \(receipts.count) receipt emails queued")
            stored += events.count
        }
        let verified = try cli.run(["verify"], environment: environment)
        #expect(verified.status == 0 && verified.stdout.contains("every chain intact"), "\(verified.stdout)\(verified.stderr)")
        print("crash safety (\(store), ASSENT_CRASH_SEED=\(seed)): \(Self.kills) SIGKILLs and a SIGTERM survived; \(tally.requests) writes answered, "
              + "\(acknowledged.count) acknowledged events all stored (\(stored) in all), every chain verified")
    }
}
