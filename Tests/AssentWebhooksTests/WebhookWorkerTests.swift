import AssentCore
import AssentStore
import AssentTestSupport
import AssentWebhooks
import Foundation
import Testing

/// The worker against a real HTTP receiver (scripts/webhook-receiver.py) that
/// checks signatures with the Standard Webhooks reference library.
@Suite(.enabled(if: SMTPTestServer.shouldRun, "needs python3 with standardwebhooks: run scripts/test"))
struct WebhookWorkerTests {
    func worker(_ ledger: Ledger, backoffScale: Double = 0.001) -> WebhookWorker {
        var worker = WebhookWorker(ledger: ledger)
        worker.backoffScale = backoffScale // 0.001: the first retries in milliseconds, a day of them in under 90 seconds
        worker.timeout = .seconds(5)
        return worker
    }

    func change(_ ledger: Ledger, _ contact: Contact, _ topic: String, _ yes: Bool) async throws {
        _ = try await ledger.recordChange(ChangeRequest(contactID: contact.id, changes: [TopicChange(topicKey: topic, intent: yes ? .optIn : .optOut)],
                                                        source: .api, actor: .apiKey("test")))
    }

    @Test(arguments: StoreKind.available)
    func anOutageLosesNothingAndEachContactsMessagesArriveInOrderVerified(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        for key in ["events", "news"] { _ = try await ledger.createTopic(Topic(key: key, title: key, createdAt: Date()), noticeText: "About \(key).") }
        let receiver = try WebhookReceiver()
        let (endpoint, secret) = try await ledger.createWebhook(url: receiver.url, events: WebhookEventType.allCases, allowPrivateNetwork: true, createdBy: "test")
        var contacts: [Contact] = []
        for i in 0..<3 {
            let c = try await ledger.createContact(email: EmailAddress("p\(i)@example.com"), name: nil, externalID: "crm-\(i)", locale: nil)
            try await change(ledger, c, "events", true)
            try await change(ledger, c, "news", true)
            try await change(ledger, c, "events", false)
            contacts.append(c)
        }
        let worker = worker(ledger)
        // The receiver is down: attempts fail and are retried; later messages wait behind each contact's first.
        #expect(try await worker.runOnce() == 3)
        try await Task.sleep(for: .milliseconds(100))
        _ = try await worker.runOnce()
        let firstTries = try await ledger.store.webhookDeliveries(WebhookDeliveryQuery(endpointID: endpoint.id, status: .pending, limit: 100))
        #expect(firstTries.count == 12 && firstTries.filter { $0.attempts > 0 }.count == 3, "only the first of each contact was tried")
        let tried = try #require(firstTries.first { $0.attempts > 0 })
        let failedAttempt = try #require(try await ledger.store.webhookAttempts(deliveryID: tried.id).first)
        #expect(failedAttempt.statusCode == nil && failedAttempt.error != nil)

        try receiver.start(secret: secret)
        defer { receiver.stop() }
        let arrived = try await receiver.waitForVerified(12, timeout: 60) { _ = try await worker.runOnce() }
        #expect(Set(arrived.map(\.id)).count == 12, "every message arrived, signed as Standard Webhooks says")
        #expect(receiver.received().allSatisfy { $0.verified })
        for contact in contacts {
            let mine = arrived.filter { (($0.body?["data"] as? [String: any Sendable])?["contact"] as? [String: any Sendable])?["id"] as? String == contact.id.uuidString.lowercased() }
            var seen: [String] = []
            for r in mine where !seen.contains(r.id) { seen.append(r.id) }
            let ordered = seen.compactMap { id in mine.first { $0.id == id } }
            #expect(ordered.map { $0.body?["type"] as? String } == ["contact.created", "consent.changed", "consent.changed", "consent.changed"])
            let seqs = ordered.dropFirst().compactMap { ($0.body?["data"] as? [String: any Sendable])?["seq"] as? Double }
            #expect(seqs == [1, 2, 3], "in event order")
        }
        let all = try await ledger.store.webhookDeliveries(WebhookDeliveryQuery(endpointID: endpoint.id, limit: 100))
        #expect(all.allSatisfy { $0.status == .delivered && $0.lastStatusCode == 204 })
    }

    @Test func aWrongSignatureIsRejectedByTheReceiverAndAPermanentlyFailingOneEndsFailed() async throws {
        let ledger = try await StoreKind.sqlite.makeLedger()
        _ = try await ledger.createTopic(Topic(key: "events", title: "Events", createdAt: Date()), noticeText: "About events.")
        let wrong = try WebhookReceiver()
        let (wrongEndpoint, _) = try await ledger.createWebhook(url: wrong.url, events: [.consentChanged], allowPrivateNetwork: true, createdBy: "test")
        try wrong.start(secret: WebhookSignature.newSecret()) // not the endpoint's secret
        defer { wrong.stop() }
        let broken = try WebhookReceiver(status: 500)
        let (brokenEndpoint, brokenSecret) = try await ledger.createWebhook(url: broken.url, events: [.consentChanged], allowPrivateNetwork: true, createdBy: "test")
        try broken.start(secret: brokenSecret)
        defer { broken.stop() }
        let jo = try await ledger.createContact(email: EmailAddress("jo@example.com"), name: nil, externalID: nil, locale: nil)
        try await change(ledger, jo, "events", true)
        let worker = worker(ledger, backoffScale: 0.0002) // the whole day of retries in about 17 seconds
        let deadline = Date().addingTimeInterval(90)
        while Date() < deadline {
            _ = try await worker.runOnce()
            let failed = try await ledger.store.webhookDeliveries(WebhookDeliveryQuery(status: .failed))
            if failed.count == 2 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        let rejected = wrong.received()
        #expect(!rejected.isEmpty && rejected.allSatisfy { !$0.verified }, "the reference library refuses a signature made with another secret")
        let failed = try #require(try await ledger.store.webhookDeliveries(WebhookDeliveryQuery(endpointID: brokenEndpoint.id)).first)
        #expect(failed.status == .failed && failed.lastStatusCode == 500 && failed.attempts == 10, "ten attempts over (a scaled) day, then failed")
        let log = try await ledger.store.webhookAttempts(deliveryID: failed.id)
        #expect(log.count == 10 && log.allSatisfy { $0.statusCode == 500 && $0.latencyMilliseconds >= 0 })
        #expect(try await ledger.store.webhookDeliveries(WebhookDeliveryQuery(endpointID: wrongEndpoint.id)).first?.lastStatusCode == 400)
        #expect(broken.received().allSatisfy { $0.verified }, "the failing receiver did get correctly signed messages")
    }

    @Test func aPrivateAddressIsRefusedAtSendTimeUnlessAllowed() async throws {
        let ledger = try await StoreKind.memory.makeLedger()
        _ = try await ledger.createTopic(Topic(key: "events", title: "Events", createdAt: Date()), noticeText: "About events.")
        let (endpoint, _) = try await ledger.createWebhook(url: "http://127.0.0.1:9/hooks", events: [.consentChanged], allowPrivateNetwork: true, createdBy: "test")
        var locked = endpoint
        locked.allowPrivateNetwork = false
        try await ledger.store.updateWebhookEndpoint(locked) // as if DNS now pointed somewhere private
        let jo = try await ledger.createContact(email: EmailAddress("jo@example.com"), name: nil, externalID: nil, locale: nil)
        try await change(ledger, jo, "events", true)
        #expect(try await worker(ledger).runOnce() == 1)
        let delivery = try #require(try await ledger.store.webhookDeliveries(WebhookDeliveryQuery()).first)
        #expect(delivery.lastError?.hasPrefix("refused: '127.0.0.1' resolves to 127.0.0.1, a loopback") == true, "\(delivery.lastError ?? "-")")
    }
}
