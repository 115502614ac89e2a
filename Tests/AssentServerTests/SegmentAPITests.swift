import AssentCore
import AssentServer
import AssentStore
import AssentTestSupport
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

@Suite struct SegmentAPITests {
    @Test(arguments: StoreKind.available)
    func segmentsAreSavedMeasuredExportedAndDeleted(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            try await api.createTopic("events", category: "events", doubleOptIn: false)
            try await api.createTopic("webinars", category: "events", doubleOptIn: false)
            try await api.createTopic("news", doubleOptIn: false)
            for (email, topics) in [("a@example.com", ["events"]), ("b@example.com", ["webinars", "news"]), ("c@example.com", ["news"])] {
                let id = try await api.createContact(email)
                _ = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: ["source": "api", "preferences": topics.map { ["topic": $0, "granted": true] }])
            }
            let created = try await api.send(.post, "/api/v1/segments", json: ["id": "event-fans", "name": "Event fans", "categories": ["events"]])
            #expect(created.status == .created && created.headers[.location] == "/api/v1/segments/event-fans", "\(created.text)")
            #expect(created.json["categories"] as? [String] == ["events"] && created.json["match"] as? String == "any")
            #expect(created.json["latestSize"] is NSNull && (created.json["createdBy"] as? String)?.hasPrefix("API key ") == true)
            let measured = try await api.send(.post, "/api/v1/segments/event-fans/measure")
            #expect(measured.status == .ok && measured.json["size"] as? Int == 2, "\(measured.text)")
            let one = try await api.send(.get, "/api/v1/segments/event-fans")
            #expect((one.json["sizes"] as? [[String: Any]])?.map { $0["size"] as? Int } == [2])
            #expect(try await api.send(.get, "/api/v1/segments").items.map { ($0["latestSize"] as? [String: Any])?["size"] as? Int } == [2])
            let csv = try await api.send(.get, "/api/v1/segments/event-fans/audience")
            let lines = csv.text.split(separator: "\r\n")
            #expect(csv.status == .ok && lines.first?.hasPrefix("email,name,external_id,locale,events_granted_at,webinars_granted_at,") == true && lines.count == 3)
            #expect(try await api.send(.get, "/api/v1/segments/event-fans/audience?count=true").json["count"] as? Int == 2)
            #expect(try await api.send(.get, "/api/v1/audience?categories=events&count=true").json["count"] as? Int == 2, "the same filter ad hoc")

            let patched = try await api.send(.patch, "/api/v1/segments/event-fans", json: ["topics": ["news"], "categories": [], "name": "News readers"])
            #expect(patched.status == .ok && patched.json["name"] as? String == "News readers", "\(patched.text)")
            #expect(try await api.send(.get, "/api/v1/segments/event-fans/audience?count=true").json["count"] as? Int == 2)

            // Bad input names the field and saves nothing.
            #expect(try await api.send(.post, "/api/v1/segments", json: ["id": "x", "name": "X", "topics": ["nope"]]).problemFields == ["topics[0]"])
            #expect(try await api.send(.post, "/api/v1/segments", json: ["id": "x", "name": "X"]).problemFields == ["topics"])
            #expect(try await api.send(.post, "/api/v1/segments", json: ["id": "x", "name": "X", "categories": ["none"]]).problemFields == ["categories[0]"])
            let taken = try await api.send(.post, "/api/v1/segments", json: ["id": "event-fans", "name": "X", "topics": ["news"]])
            #expect(taken.status == .conflict && taken.problemFields == ["id"])
            #expect(try await api.send(.post, "/api/v1/segments", json: ["id": "x", "name": "X", "topics": ["news"], "match": "most"]).problemFields == ["match"])
            #expect(try await api.send(.post, "/api/v1/segments", json: ["id": "x", "name": "X", "topics": ["news"], "colour": "red"]).problemFields == ["colour"])
            #expect(try await api.send(.patch, "/api/v1/segments/event-fans", json: ["topics": []]).problemFields == ["topics"])
            #expect(try await api.send(.get, "/api/v1/segments").items.count == 1)

            // A retired topic makes the definition stale: export says so.
            _ = try await api.send(.delete, "/api/v1/topics/news")
            let stale = try await api.send(.get, "/api/v1/segments/event-fans/audience")
            #expect(stale.status == .conflict && stale.problemFields == ["topics[0]"], "\(stale.text)")

            let reader = try await api.newKey(.read)
            #expect(try await api.send(.get, "/api/v1/segments", token: reader).status == .ok)
            #expect(try await api.send(.post, "/api/v1/segments", json: ["id": "y", "name": "Y", "topics": ["events"]], token: reader).status == .forbidden)
            let writer = try await api.newKey(.write)
            #expect(try await api.send(.delete, "/api/v1/segments/event-fans", token: writer).status == .forbidden, "deleting is for admins, as in the console")
            #expect(try await api.send(.delete, "/api/v1/segments/event-fans").status == .ok)
            #expect(try await api.send(.get, "/api/v1/segments/event-fans").status == .notFound)
            let audit = try await api.ledger.store.auditEntries(AuditQuery(limit: 10)).map(\.action)
            #expect(audit.contains("segment_create") && audit.contains("segment_update") && audit.contains("segment_delete"))
        }
    }
}

@Suite struct RenewalPageTests {
    @Test(arguments: StoreKind.available)
    func theRenewalPageShowsTheTopicAndItsButtonRenewsWithFreshEvidence(_ kind: StoreKind) async throws {
        let clock = TestClock(Date(timeIntervalSince1970: 1_800_000_000))
        try await withAPI(kind, now: { clock.now }) { api in
            let topic = try await api.send(.post, "/api/v1/topics", json: ["key": "events", "title": "Events", "notice": "Invitations to our events.",
                                                                          "requiresDoubleOptIn": false, "consentLifetimeDays": 30, "repermissionDaysBefore": 7])
            #expect(topic.status == .created && topic.json["repermissionDaysBefore"] as? Int == 7, "\(topic.text)")
            #expect(try await api.send(.patch, "/api/v1/topics/events", json: ["repermissionDaysBefore": 30]).problemFields == ["repermissionDaysBefore"])
            let id = try await api.createContact("jo@example.com")
            _ = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: ["source": "api", "preferences": [["topic": "events", "granted": true]]])
            clock.now = clock.now.addingTimeInterval(24 * 86_400)
            let ran = await Scheduler(ledger: api.ledger).runOnce()
            #expect(ran.repermissionsQueued == 1 && ran.expired == 0)
            let item = try #require(try await api.ledger.store.outboxItems(status: .pending, limit: 10).first { $0.kind == RepermissionEmail.kind })
            let path = "/r/\(try RepermissionEmail.open(item, masterKey: api.ledger.masterKey).token)"

            let shown = try await api.page(.get, path)
            #expect(shown.status == .ok && shown.text.contains("Invitations to our events.") && shown.text.contains("<form method=\"post\" action=\"\(path)\">"))
            #expect(shown.text.contains("Your consent ends on") && shown.text.contains("name=\"noticeVersion\" value=\"1\""))
            #expect(try await api.send(.get, "/api/v1/contacts/\(id)/timeline").items.count == 1, "a GET changes nothing")

            let renewed = try await api.page(.post, path, form: "noticeVersion=1", headers: [.userAgent: "Mail/1"])
            #expect(renewed.status == .ok && renewed.text.contains("You will keep receiving emails about Events."), "\(renewed.text)")
            let timeline = try await api.send(.get, "/api/v1/contacts/\(id)/timeline").items
            #expect(timeline.count == 2 && timeline.first?["action"] as? String == "granted" && timeline.first?["source"] as? String == "email_link")
            let check = try await api.send(.get, "/api/v1/check?email=jo%40example.com&topic=events").json
            #expect(check["allowed"] as? Bool == true && (check["expiresAt"] as? String)?.hasPrefix("2027-") == true, "a new lifetime from today: \(check)")
            let again = try await api.page(.post, path, form: "noticeVersion=1")
            #expect(again.status == .ok && again.text.contains("You already renewed"))
            #expect(try await api.send(.get, "/api/v1/contacts/\(id)/timeline").items.count == 2)

            let bogus = try await api.page(.get, "/r/AAAA" + path.dropFirst(7))
            #expect(bogus.status == .notFound && bogus.text.contains("This link is not valid"))
            #expect(try await api.page(.post, "/r/not-a-token", form: "").status == .notFound)
        }
    }
}
