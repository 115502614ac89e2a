import AssentCore
import AssentPostgres
import AssentStore
import AssentTestSupport
import Foundation
import Testing

/// Several `assent serve` processes on one PostgreSQL database, as behind a
/// load balancer: concurrent writes to the same contacts through both lose
/// nothing, duplicate nothing, and leave every chain verifiable.
@Suite(.serialized, .enabled(if: TestPostgres.url != nil || TestPostgres.isCI, "needs PostgreSQL: run scripts/test"))
struct MultiInstanceTests {
    @Test func twoServersWritingTheSameContactsLoseAndDuplicateNothing() async throws {
        let database = try await TestPostgres.freshDatabase()
        let environment = ["ASSENT_DATABASE_URL": database.url, "ASSENT_MASTER_KEY": MasterKey.generate().base64]
        let cli = try CLI()
        let a = try ServerProcess(cli: cli, environment: environment)
        defer { a.stop() }
        let token = try #require(a.token, "the first server prints the initial admin key")
        let b = try ServerProcess(cli: cli, environment: environment)
        defer { b.stop() }
        #expect(b.token == nil, "the second instance finds the key the first created")

        let topics = ["events", "news", "hr-training"]
        for topic in topics {
            let r = try await a.request("POST", "/api/v1/topics", token: token, body: ["key": topic, "title": topic, "notice": "About \(topic)."])
            #expect(r.status == 201)
        }
        var contacts: [String] = []
        for i in 0..<4 {
            let r = try await b.request("POST", "/api/v1/contacts", token: token, body: ["email": "person\(i)@example.com"])
            contacts.append(try #require((try JSONSerialization.jsonObject(with: r.body) as? [String: Any])?["id"] as? String))
        }

        // 8 writers, 25 writes each, alternating servers, all on 4 contacts.
        let servers = [a, b]
        let contactIDs = contacts
        let outcomes = try await withThrowingTaskGroup(of: (statuses: [Int], eventIDs: [String]).self) { group in
            for writer in 0..<8 {
                group.addTask {
                    var statuses: [Int] = [], ids: [String] = []
                    for step in 0..<25 {
                        let contact = contactIDs[(writer * 7 + step) % contactIDs.count]
                        let topic = topics[(writer + step) % topics.count]
                        let body: [String: Any] = ["source": "api", "preferences": [["topic": topic, "granted": (writer + step / 2).isMultiple(of: 2)]]]
                        let r = try await servers[(writer + step) % 2].request("PUT", "/api/v1/contacts/\(contact)/preferences", token: token, body: body)
                        statuses.append(r.status)
                        let recorded = (try? JSONSerialization.jsonObject(with: r.body) as? [String: Any])?["recorded"] as? [[String: Any]] ?? []
                        ids += recorded.compactMap { $0["id"] as? String }
                    }
                    return (statuses, ids)
                }
            }
            return try await group.reduce(into: [(statuses: [Int], eventIDs: [String])]()) { $0.append($1) }
        }
        let statuses = outcomes.flatMap(\.statuses)
        let acknowledged = outcomes.flatMap(\.eventIDs)
        #expect(statuses.count == 200 && statuses.allSatisfy { $0 == 200 }, "\(Dictionary(grouping: statuses, by: { $0 }).mapValues(\.count))")
        #expect(Set(acknowledged).count == acknowledged.count, "no event acknowledged twice")
        #expect(acknowledged.count > 20)

        let store = PostgresStore(location: database, maxConnections: 2)
        defer { store.shutdown() }
        var stored: [String] = []
        for contact in contacts {
            let events = try await store.events(contactID: UUID(uuidString: contact)!, beforeSeq: nil, limit: 10_000)
            #expect(events.map(\.seq) == Array((1...Int64(max(events.count, 1))).reversed()).suffix(events.count), "gap-free sequence")
            stored += events.map { $0.id.uuidString.lowercased() }
        }
        #expect(Set(stored) == Set(acknowledged), "every acknowledged event is stored, and nothing else")
        #expect(stored.count == acknowledged.count)

        a.stop()
        b.stop()
        let verified = try cli.run(["verify"], environment: environment)
        #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")
        #expect(verified.stdout.contains("ok: 4 contacts, \(acknowledged.count) events"), "\(verified.stdout)")
    }

    /// Both servers' outbox workers drain one queue: every confirmation email
    /// is sent exactly once (FOR UPDATE SKIP LOCKED claims), whichever server
    /// took the request.
    @Test(.enabled(if: SMTPTestServer.shouldRun, "needs aiosmtpd: run scripts/test"))
    func twoServersSendEachEmailOnce() async throws {
        let smtp = try SMTPTestServer()
        defer { smtp.stop() }
        let database = try await TestPostgres.freshDatabase()
        let environment = ["ASSENT_DATABASE_URL": database.url, "ASSENT_MASTER_KEY": MasterKey.generate().base64,
                           "ASSENT_SMTP_URL": "smtp://127.0.0.1:\(smtp.port)?starttls=none"]
        let cli = try CLI()
        let a = try ServerProcess(cli: cli, environment: environment)
        defer { a.stop() }
        let token = try #require(a.token)
        let b = try ServerProcess(cli: cli, environment: environment)
        defer { b.stop() }
        let topic = try await a.request("POST", "/api/v1/topics", token: token, body: ["key": "news", "title": "News", "notice": "News by email."])
        #expect(topic.status == 201)

        let count = 30
        let servers = [a, b]
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<count {
                group.addTask {
                    let server = servers[i % 2]
                    let created = try await server.request("POST", "/api/v1/contacts", token: token, body: ["email": "reader\(i)@example.com"])
                    let id = try #require((try JSONSerialization.jsonObject(with: created.body) as? [String: Any])?["id"] as? String)
                    let put = try await server.request("PUT", "/api/v1/contacts/\(id)/preferences", token: token,
                                                       body: ["source": "form", "preferences": [["topic": "news", "granted": true]]])
                    #expect(put.status == 200)
                }
            }
            try await group.waitForAll()
        }
        let messages = try await smtp.waitForMessages(count, timeout: 30)
        // Give a would-be duplicate time to arrive before counting.
        try await Task.sleep(for: .seconds(2))
        let all = smtp.messages()
        let recipients = all.compactMap { raw in raw.components(separatedBy: "\n").first { $0.hasPrefix("To: ") } }
        #expect(messages.count >= count && all.count == count, "\(all.count) emails for \(count) requests")
        #expect(Set(recipients).count == count, "one email per person")
        a.stop()
        b.stop()
        let outbox = try cli.run(["outbox", "list", "--status", "pending"], environment: environment)
        #expect(outbox.stdout.contains("the outbox is empty"), "\(outbox.stdout)")
    }

    /// Heavy reads go to ASSENT_DATABASE_READ_URL: verify works through it, and a wrong one is named at once.
    @Test func verifyReadsThroughTheReadURL() async throws {
        let database = try await TestPostgres.freshDatabase()
        let cli = try CLI()
        let environment = ["ASSENT_DATABASE_URL": database.url, "ASSENT_DATABASE_READ_URL": database.url]
        #expect(try cli.run(["contacts", "add", "ann@example.com"], environment: environment).status == 0)
        let verified = try cli.run(["verify"], environment: environment)
        #expect(verified.status == 0 && verified.stdout.contains("ok:"), "\(verified.stderr)")
        var unreachable = environment
        unreachable["ASSENT_DATABASE_READ_URL"] = "postgres://postgres@127.0.0.1:1/replica?sslmode=disable"
        let refused = try cli.run(["verify"], environment: unreachable)
        #expect(refused.status != 0 && refused.stderr.contains("read replica at postgres@127.0.0.1:1/replica"), "\(refused.stderr)")
    }

    @Test func migrateReportsThePostgresSchema() async throws {
        let database = try await TestPostgres.freshDatabase()
        let cli = try CLI()
        let migrated = try cli.run(["migrate"], environment: ["ASSENT_DATABASE_URL": database.url])
        #expect(migrated.status == 0, "\(migrated.stderr)")
        #expect(migrated.stdout.contains("PostgreSQL postgres@127.0.0.1") && migrated.stdout.contains("0012_check_index (12 applied)"), "\(migrated.stdout)")
        let bad = try cli.run(["migrate"], environment: ["ASSENT_DATABASE_URL": "postgres://127.0.0.1:1/nowhere?sslmode=disable"])
        #expect(bad.status != 0 && bad.stderr.contains("cannot connect to PostgreSQL at postgres@127.0.0.1:1/nowhere"), "\(bad.stderr)")
        let badMode = try cli.run(["migrate"], environment: ["ASSENT_DATABASE_URL": "postgres://127.0.0.1/x?sslmode=sometimes"])
        #expect(badMode.status != 0 && badMode.stderr.contains("sslmode"), "\(badMode.stderr)")
    }
}
