import AssentCore
import AssentStore
import AssentTestSupport
import Foundation
import Testing

@Suite struct WebhookSigningTests {
    /// The example of the Standard Webhooks specification.
    @Test func signaturesMatchTheStandardWebhooksExample() throws {
        let signature = WebhookSignature.sign(id: "msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp: 1_614_265_330, body: Data(#"{"test": 2432232314}"#.utf8),
                                              secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        #expect(signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        #expect(WebhookSignature.sign(id: "x", timestamp: 1, body: Data(), secret: "not-a-secret") == nil)
        let fresh = WebhookSignature.newSecret()
        #expect(fresh.hasPrefix("whsec_") && WebhookSignature.key(fresh)?.count == 32)
    }

    @Test func onlyPublicAddressesAreReachableByDefault() async {
        for address in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "93.184.216.34"] {
            #expect(WebhookAddressPolicy.isPublic(address), "\(address)")
        }
        for address in ["127.0.0.1", "10.0.0.5", "172.16.3.4", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1",
                        "::1", "::", "fe80::1", "fd00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::a00:1", "::10.0.0.1", "fec0::1",
                        "2002:0a00:0001::1", "64:ff9b:1::1", "not an address"] {
            #expect(!WebhookAddressPolicy.isPublic(address), "\(address)")
        }
        #expect(await WebhookAddressPolicy.refusal(url: "http://127.0.0.1:9/hook", allowPrivateNetwork: false)?.contains("loopback") == true)
        #expect(await WebhookAddressPolicy.refusal(url: "http://127.0.0.1:9/hook", allowPrivateNetwork: true) == nil)
        #expect(await WebhookAddressPolicy.refusal(url: "http://[::1]:9/hook", allowPrivateNetwork: false) != nil)
        #expect(await WebhookAddressPolicy.refusal(url: "http://localhost/hook", allowPrivateNetwork: false) != nil)
    }
}

@Suite struct WebhookStoreTests {
    func setup(_ kind: StoreKind) async throws -> (Ledger, WebhookEndpoint, TestClock) {
        let clock = TestClock(Date(timeIntervalSince1970: 1_800_000_000))
        let ledger = try await kind.makeLedger(now: { clock.now })
        try await seedTopics(ledger)
        let (endpoint, secret) = try await ledger.createWebhook(url: "http://127.0.0.1:9/hook", events: WebhookEventType.allCases,
                                                               allowPrivateNetwork: true, createdBy: "test")
        #expect(try ledger.webhookSecret(endpoint) == secret, "stored sealed, readable by the worker")
        return (ledger, endpoint, clock)
    }

    @Test(arguments: StoreKind.available)
    func changesEnqueueSignedPayloadsWithThemAndOnlyForMatchingEndpoints(_ kind: StoreKind) async throws {
        let (ledger, all, _) = try await setup(kind)
        let (newsOnly, _) = try await ledger.createWebhook(url: "http://127.0.0.1:9/news", events: [.consentChanged], topics: ["news"],
                                                          sources: [.api], allowPrivateNetwork: true, createdBy: "test")
        let (off, _) = try await ledger.createWebhook(url: "http://127.0.0.1:9/off", events: [.consentChanged], allowPrivateNetwork: true, createdBy: "test")
        _ = try await ledger.updateWebhook(id: off.id) { $0.enabled = false }
        let jo = try await ledger.createContact(email: EmailAddress("jo@example.com"), name: "Jo", externalID: "crm-1", locale: nil)
        _ = try await optIn(ledger, jo, ["events", "news"])
        _ = try await optIn(ledger, jo, ["hr-training"], source: .staff, note: "phone", channel: .phone)
        await #expect(throws: DomainError.self) { _ = try await optIn(ledger, jo, ["nope"]) }
        let toAll = try await ledger.store.webhookDeliveries(WebhookDeliveryQuery(endpointID: all.id)).reversed().map { $0 }
        #expect(toAll.map(\.eventType) == [.contactCreated, .consentChanged, .consentChanged, .consentChanged], "a refused change enqueues nothing")
        let body = try #require(try JSONSerialization.jsonObject(with: toAll[1].payload) as? [String: Any])
        let data = try #require(body["data"] as? [String: Any])
        #expect(body["type"] as? String == "consent.changed" && data["topic"] as? String == "events" && data["to"] as? String == "granted")
        #expect((data["contact"] as? [String: Any])?["email"] as? String == "jo@example.com" && (data["contact"] as? [String: Any])?["externalId"] as? String == "crm-1")
        let events = try await ledger.store.events(contactID: jo.id, beforeSeq: nil, limit: 10)
        #expect(data["eventId"] as? String == events.last { $0.topicKey == "events" }?.id.uuidString.lowercased())
        let toNews = try await ledger.store.webhookDeliveries(WebhookDeliveryQuery(endpointID: newsOnly.id))
        let newsBody = try toNews.first.flatMap { try JSONSerialization.jsonObject(with: $0.payload) as? [String: Any] }
        #expect(toNews.count == 1 && (newsBody?["data"] as? [String: Any])?["topic"] as? String == "news", "topic and source filters: news from the API only")
        #expect(try await ledger.store.webhookDeliveries(WebhookDeliveryQuery(endpointID: off.id)).count == 3, "a disabled endpoint's messages queue")
        let claimed = try await ledger.store.claimWebhookDeliveries(now: Date().addingTimeInterval(86_400 * 365 * 10), limit: 100, lease: 60)
        #expect(!claimed.contains { $0.endpointID == off.id } && !claimed.isEmpty, "but wait until it is enabled again")
        // An endpoint deleted after the ledger read its list gets nothing, and the change still goes through.
        _ = try await ledger.store.deleteWebhookEndpoint(id: newsOnly.id) // behind the ledger's back: its list is a second old
        _ = try await optOut(ledger, jo, ["news"])
        #expect(try await ledger.store.webhookDeliveries(WebhookDeliveryQuery(endpointID: newsOnly.id)).isEmpty)
    }

    @Test(arguments: StoreKind.available)
    func oneContactsDeliveriesAreClaimedInOrderAndFailuresRetryThenFail(_ kind: StoreKind) async throws {
        let (ledger, endpoint, clock) = try await setup(kind)
        let jo = try await ledger.createContact(email: EmailAddress("jo@example.com"), name: nil, externalID: nil, locale: nil)
        let bo = try await ledger.createContact(email: EmailAddress("bo@example.com"), name: nil, externalID: nil, locale: nil)
        _ = try await optIn(ledger, jo, ["events"])
        _ = try await optIn(ledger, bo, ["events"])
        let store = ledger.store
        var now = clock.now
        // First claim: each contact's earliest only (contact.created), never a later one before it.
        let first = try await store.claimWebhookDeliveries(now: now, limit: 10, lease: 60)
        #expect(first.map(\.eventType) == [.contactCreated, .contactCreated] && Set(first.compactMap(\.contactID)) == [jo.id, bo.id])
        #expect(first.allSatisfy { $0.attempts == 1 })
        #expect(try await store.claimWebhookDeliveries(now: now, limit: 10, lease: 60).isEmpty, "claimed ones hold the rest back")
        let joFirst = try #require(first.first { $0.contactID == jo.id }), boFirst = try #require(first.first { $0.contactID == bo.id })
        try await store.recordWebhookAttempt(WebhookAttempt(deliveryID: boFirst.id, number: 1, at: now, statusCode: 204, latencyMilliseconds: 12, response: "", error: nil),
                                             outcome: .delivered, payload: nil)
        try await store.recordWebhookAttempt(WebhookAttempt(deliveryID: joFirst.id, number: 1, at: now, statusCode: 503, latencyMilliseconds: 40, response: "down", error: nil),
                                             outcome: .retry(at: now.addingTimeInterval(30)), payload: nil)
        let next = try await store.claimWebhookDeliveries(now: now, limit: 10, lease: 60)
        #expect(next.map(\.contactID) == [bo.id], "Bo's next is due; Jo's waits behind the one being retried")
        now = now.addingTimeInterval(31)
        let retried = try await store.claimWebhookDeliveries(now: now, limit: 10, lease: 60)
        #expect(retried.map(\.id) == [joFirst.id] && retried.first?.attempts == 2)
        try await store.recordWebhookAttempt(WebhookAttempt(deliveryID: joFirst.id, number: 2, at: now, statusCode: nil, latencyMilliseconds: 10_000, response: nil,
                                                            error: "timed out"), outcome: .failed, payload: nil)
        let failed = try #require(try await store.webhookDelivery(id: joFirst.id))
        #expect(failed.status == .failed && failed.lastError == "timed out" && failed.lastStatusCode == nil)
        #expect(try await store.claimWebhookDeliveries(now: now, limit: 10, lease: 60).map(\.contactID) == [jo.id], "a failed one no longer holds the rest back")
        #expect(try await store.retryWebhookDeliveries(ids: [joFirst.id], endpointID: nil, now: now) == 1)
        #expect(try await store.webhookDeliveries(WebhookDeliveryQuery(endpointID: endpoint.id, status: .failed)).isEmpty)
        let again = try await store.claimWebhookDeliveries(now: now.addingTimeInterval(61), limit: 10, lease: 60)
        #expect(again.contains { $0.id == joFirst.id && $0.attempts == 1 }, "a retry starts a fresh count")
        try await store.recordWebhookAttempt(WebhookAttempt(deliveryID: joFirst.id, number: 1, at: now, statusCode: 200, latencyMilliseconds: 5, response: "ok", error: nil),
                                             outcome: .delivered, payload: nil)
        let log = try await store.webhookAttempts(deliveryID: joFirst.id)
        #expect(log.map(\.number) == [1, 2, 3] && log.map(\.statusCode) == [503, nil, 200] && log[0].response == "down", "the log keeps every attempt")
        #expect(WebhookDelivery.retryDelay(afterAttempt: 1) == 30 && WebhookDelivery.retryDelay(afterAttempt: 10) == nil)
        #expect((1...9).compactMap(WebhookDelivery.retryDelay(afterAttempt:)).reduce(0, +) > 20 * 3_600, "retries span about a day")
    }

    @Test(arguments: StoreKind.available)
    func erasureReplacesAContactsMessagesWithContactErasedAndReplayResends(_ kind: StoreKind) async throws {
        let (ledger, endpoint, clock) = try await setup(kind)
        let jo = try await ledger.createContact(email: EmailAddress("jo@example.com"), name: nil, externalID: "crm-9", locale: nil)
        let bo = try await ledger.createContact(email: EmailAddress("bo@example.com"), name: nil, externalID: nil, locale: nil)
        _ = try await optIn(ledger, jo, ["events"])
        _ = try await ledger.recordSubjectRequest(contactID: bo.id, kind: .access, channel: "email", note: nil)
        _ = try await ledger.eraseContact(jo.id, reason: "asked", erasedBy: "test")
        let joMessages = try await ledger.store.webhookDeliveries(WebhookDeliveryQuery(contactID: jo.id))
        #expect(joMessages.map(\.eventType) == [.contactErased], "the rest carried the address and went with it")
        #expect(joMessages[0].nextAttemptAt == clock.now.addingTimeInterval(WebhookDelivery.claimLease), "after any attempt in flight has ended")
        // A change decided before the erasure cannot be committed after it.
        await #expect(throws: StoreError.self) {
            try await ledger.store.commit(LedgerCommit(contactID: jo.id, expectedHead: try await ledger.store.ledgerState(contactID: jo.id).head,
                                                       events: [], preferences: []))
        }
        let erased = try #require(try JSONSerialization.jsonObject(with: joMessages[0].payload) as? [String: Any])
        #expect(((erased["data"] as? [String: Any])?["contact"] as? [String: Any])?["externalId"] as? String == "crm-9")
        #expect(try await ledger.store.webhookDeliveries(WebhookDeliveryQuery(contactID: bo.id)).map(\.eventType) == [.dsrRequestCreated, .contactCreated])
        clock.now = clock.now.addingTimeInterval(60)
        let since = Date(timeIntervalSince1970: 1_800_000_000)
        #expect(try await ledger.replayWebhooks(endpointID: endpoint.id, since: since) == 3)
        let all = try await ledger.store.webhookDeliveries(WebhookDeliveryQuery(endpointID: endpoint.id))
        #expect(all.count == 6 && Set(all.map(\.id)).count == 6 && all.prefix(3).allSatisfy { $0.createdAt == clock.now }, "new ids, due now")
        #expect(Array(all.prefix(3).map(\.eventType).reversed()) == Array(all.suffix(3).map(\.eventType).reversed()), "in the original order")
        try await ledger.deleteWebhook(id: endpoint.id)
        #expect(try await ledger.store.webhookDeliveries(WebhookDeliveryQuery(endpointID: endpoint.id)).isEmpty)
    }

    @Test(arguments: [StoreKind.memory])
    func badWebhooksAreRefusedNamingTheField(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        try await seedTopics(ledger)
        func fields(_ url: String, events: [WebhookEventType] = [.consentChanged], topics: [String] = [], allow: Bool = false) async -> [String] {
            do {
                _ = try await ledger.createWebhook(url: url, events: events, topics: topics, allowPrivateNetwork: allow, createdBy: "t")
                return []
            } catch DomainError.invalid(let errors) { return errors.map(\.field) } catch { return ["\(error)"] }
        }
        #expect(await fields("ftp://example.com/x") == ["url"])
        #expect(await fields("http://user:pw@127.0.0.1/x", allow: true) == ["url"])
        #expect(await fields("http://127.0.0.1/x") == ["url"], "loopback without the admin's permission")
        #expect(await fields("http://169.254.169.254/latest/meta-data") == ["url"])
        #expect(await fields("http://127.0.0.1/x", events: []) .sorted() == ["events", "url"])
        #expect(await fields("http://127.0.0.1/x", topics: ["nope"], allow: true) == ["topics[0]"])
        #expect(try await ledger.store.webhookEndpoints().isEmpty)
    }
}
