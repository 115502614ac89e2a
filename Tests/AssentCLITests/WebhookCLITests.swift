import AssentTestSupport
import Foundation
import Testing

/// `assent serve` delivering webhooks to a real receiver that checks every
/// signature with the Standard Webhooks reference library, across a receiver
/// outage and a server killed mid-queue.
@Suite(.serialized, .enabled(if: SMTPTestServer.shouldRun, "needs python3 with standardwebhooks: run scripts/test"))
struct WebhookCLITests {
    @Test func aServerKilledMidQueueLosesNothingAndTheCommandLineManagesTheLog() async throws {
        let cli = try CLI()
        #expect(try cli.run(["topics", "add", "events", "--title", "Events", "--notice", "Events by email.", "--no-double-opt-in"]).status == 0)
        let receiver = try WebhookReceiver(directory: cli.directory)
        let environment = ["ASSENT_WEBHOOK_BACKOFF_SCALE": "0.001"]
        let server = try ServerProcess(cli: cli, environment: environment)
        let token = try #require(server.token)
        let created = try await server.request("POST", "/api/v1/webhooks", token: token,
                                               body: ["url": receiver.url, "events": ["consent.changed"], "allowPrivateNetwork": true])
        #expect(created.status == 201, "\(String(decoding: created.body, as: UTF8.self))")
        let webhook = try #require(try JSONSerialization.jsonObject(with: created.body) as? [String: Any])
        let id = try #require(webhook["id"] as? String), secret = try #require(webhook["secret"] as? String)
        // 4 people x 3 changes while the receiver is down.
        var contacts: [String] = []
        for i in 0..<4 {
            let contact = try await server.createContactAndOptIn(email: "p\(i)@example.com", topic: "events")
            for granted in [false, true] {
                let put = try await server.request("PUT", "/api/v1/contacts/\(contact)/preferences", token: token,
                                                   body: ["source": "api", "preferences": [["topic": "events", "granted": granted]]])
                #expect(put.status == 200)
            }
            contacts.append(contact)
        }
        try await Task.sleep(for: .milliseconds(500))
        kill(server.process.processIdentifier, SIGKILL) // mid-queue: nothing delivered, some attempts in flight
        server.process.waitUntilExit()
        let listed = try cli.run(["webhooks", "list"]).stdout
        #expect(listed.contains(id) && listed.contains("12 pending, 0 failed"), "\(listed)")

        try receiver.start(secret: secret)
        defer { receiver.stop() }
        let restarted = try ServerProcess(cli: cli, environment: environment)
        defer { restarted.stop() }
        // The killed server's claims are held for their lease (30 s) before the new one takes them over.
        let arrived = try await receiver.waitForVerified(12, timeout: 90)
        #expect(Set(arrived.map(\.id)).count == 12, "every acknowledged change reached the receiver after the restart")
        #expect(receiver.received().allSatisfy { $0.verified }, "every message checks out with the reference library")
        for contact in contacts {
            var seqs: [Double] = [], seen: Set<String> = []
            for r in arrived where !seen.contains(r.id) {
                let data = r.body?["data"] as? [String: any Sendable]
                guard (data?["contact"] as? [String: any Sendable])?["id"] as? String == contact else { continue }
                seen.insert(r.id)
                if let seq = data?["seq"] as? Double { seqs.append(seq) }
            }
            #expect(seqs == [1, 2, 3], "contact \(contact): in event order")
        }

        // The log from the command line.
        var delivered = ""
        for _ in 0..<100 {
            delivered = try cli.run(["webhooks", "deliveries", "--webhook", id, "--status", "delivered"]).stdout
            if delivered.split(separator: "\n").count == 12 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(delivered.split(separator: "\n").count == 12 && delivered.contains("HTTP 204"), "\(delivered)")
        let first = String(delivered.drop { $0 == " " }.prefix(36))
        let detail = try cli.run(["webhooks", "deliveries", "--id", first]).stdout
        #expect(detail.contains("\"type\":\"consent.changed\"") && detail.contains("HTTP 204"), "\(detail)")
        let replayed = try cli.run(["webhooks", "replay", "--webhook", id, "--since", "2000-01-01"])
        #expect(replayed.stdout == "queued 12 deliveries to \(id) again\n", "\(replayed.stdout)\(replayed.stderr)")
        #expect(Set(try await receiver.waitForVerified(24, timeout: 60).map(\.id)).count == 24, "a replay sends copies with new ids")
        #expect(try cli.run(["webhooks", "disable", id]).stdout == "disabled webhook \(id)\n")
        #expect(try cli.run(["webhooks", "show", id]).stdout.contains("disabled; added by API key"))
        let bad = try cli.run(["webhooks", "add", "http://127.0.0.1:9/x"])
        #expect(bad.status != 0 && bad.stderr.contains("loopback"), "\(bad.stderr)")
        let added = try cli.run(["webhooks", "add", "http://127.0.0.1:9/x", "--event", "contact.erased", "--allow-private-network"])
        #expect(added.status == 0 && added.stdout.contains("whsec_"))
        #expect(try cli.run(["webhooks", "retry", "--all"]).stdout == "0 failed deliveries are pending again\n")
        #expect(try cli.run(["webhooks", "remove", id]).stdout == "deleted webhook \(id)\n")
    }
}
