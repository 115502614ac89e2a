import AssentCore
import AssentServer
import AssentStore
import AssentTestSupport
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

@Suite struct WebhookAPITests {
    @Test(arguments: StoreKind.available)
    func webhooksAreManagedAndTheirDeliveryLogIsReadable(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            try await api.createTopic("events", doubleOptIn: false)
            let refused = try await api.send(.post, "/api/v1/webhooks", json: ["url": "http://127.0.0.1:9/hooks", "events": ["consent.changed"]])
            #expect(refused.status == .unprocessableContent && refused.problemFields == ["url"] && refused.text.contains("loopback"), "\(refused.text)")
            #expect(try await api.send(.post, "/api/v1/webhooks", json: ["url": "http://127.0.0.1:9/hooks", "events": ["consent.nope"]]).problemFields == ["events[0]"])
            #expect(try await api.send(.post, "/api/v1/webhooks", json: ["url": "http://127.0.0.1:9/hooks", "events": ["consent.changed"], "sources": ["fax"]])
                .problemFields == ["sources[0]"])
            let created = try await api.send(.post, "/api/v1/webhooks", json: ["url": "http://127.0.0.1:9/hooks", "events": ["consent.changed", "contact.created"],
                                                                              "topics": ["events"], "allowPrivateNetwork": true, "description": "CRM"])
            #expect(created.status == .created, "\(created.text)")
            let id = try #require(created.json["id"] as? String)
            let secret = try #require(created.json["secret"] as? String)
            #expect(secret.hasPrefix("whsec_") && created.headers[.location] == "/api/v1/webhooks/\(id)")
            let read = try await api.send(.get, "/api/v1/webhooks/\(id)")
            #expect(read.json["secret"] == nil && read.json["topics"] as? [String] == ["events"] && read.json["enabled"] as? Bool == true)
            #expect(!read.text.contains(secret), "the secret is shown once")

            let contact = try await api.createContact("jo@example.com")
            _ = try await api.send(.put, "/api/v1/contacts/\(contact)/preferences", json: ["source": "api", "preferences": [["topic": "events", "granted": true]]])
            let log = try await api.send(.get, "/api/v1/webhooks/\(id)/deliveries")
            #expect(log.items.map { $0["eventType"] as? String } == ["consent.changed", "contact.created"], "\(log.text)")
            #expect(log.items.allSatisfy { $0["status"] as? String == "pending" && $0["payload"] == nil })
            let deliveryID = try #require(log.items.first?["id"] as? String)
            let one = try await api.send(.get, "/api/v1/webhooks/\(id)/deliveries/\(deliveryID)")
            #expect(((one.json["payload"] as? [String: Any])?["data"] as? [String: Any])?["topic"] as? String == "events")
            #expect(one.json["attemptLog"] as? [Any] != nil)
            #expect(try await api.send(.post, "/api/v1/webhooks/\(id)/deliveries/\(deliveryID)/retry").status == .conflict, "only failed ones")
            #expect(try await api.send(.get, "/api/v1/webhooks/\(id)/deliveries/not-a-uuid").status == .badRequest)
            #expect(try await api.send(.get, "/api/v1/webhooks/\(id)/deliveries?status=lost").problemFields == ["status"])
            #expect(try await api.send(.post, "/api/v1/webhooks/\(id)/replay", json: ["since": "2020-01-01T00:00:00Z"]).json["count"] as? Int == 2)
            #expect(try await api.send(.get, "/api/v1/webhooks/\(id)/deliveries").items.count == 4)
            #expect(try await api.send(.post, "/api/v1/webhooks/\(id)/retry").json["count"] as? Int == 0)

            let patched = try await api.send(.patch, "/api/v1/webhooks/\(id)", json: ["enabled": false, "events": ["contact.erased"]])
            #expect(patched.status == .ok && patched.json["enabled"] as? Bool == false && patched.json["events"] as? [String] == ["contact.erased"])
            #expect(try await api.send(.patch, "/api/v1/webhooks/\(id)", json: ["allowPrivateNetwork": false]).problemFields == ["url"])
            let rotated = try await api.send(.post, "/api/v1/webhooks/\(id)/secret")
            #expect((rotated.json["secret"] as? String).map { $0 != secret && $0.hasPrefix("whsec_") } == true)

            let writer = try await api.newKey(.write)
            #expect(try await api.send(.get, "/api/v1/webhooks", token: writer).status == .forbidden, "webhooks are for admins")
            #expect(try await api.send(.delete, "/api/v1/webhooks/\(id)").status == .ok)
            #expect(try await api.send(.get, "/api/v1/webhooks/\(id)").status == .notFound)
            let audit = try await api.ledger.store.auditEntries(AuditQuery(limit: 50)).map(\.action)
            #expect(["webhook_create", "webhook_update", "webhook_secret", "webhook_replay", "webhook_delete"].allSatisfy(audit.contains))
        }
    }
}
