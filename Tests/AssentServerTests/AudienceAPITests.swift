import AssentCore
import AssentServer
import AssentStore
import AssentTestSupport
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

@Suite struct AudienceAPITests {
    @Test(arguments: StoreKind.available)
    func anAudienceStreamsAsCSVOrNDJSONWithLinksAndCounts(_ kind: StoreKind) async throws {
        try await withAPI(kind, site: SiteConfiguration(publicURL: { "https://consent.example.org" })) { api in
            try await api.createTopic("events", doubleOptIn: false)
            try await api.createTopic("news", doubleOptIn: false)
            for (email, name, topics) in [("a@example.com", "=HYPERLINK(\"x\")", ["events"]), ("b@example.com", "Bo, Jr.", ["events", "news"]),
                                          ("c@example.com", "Cy", ["news"])] {
                let id = try await api.send(.post, "/api/v1/contacts", json: ["email": email, "name": name]).json["id"] as? String ?? ""
                _ = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: ["source": "api", "preferences": topics.map { ["topic": $0, "granted": true] }])
            }
            let csv = try await api.send(.get, "/api/v1/audience?topics=events")
            #expect(csv.status == .ok && csv.headers[.contentType] == "text/csv; charset=utf-8", "\(csv.text)")
            let lines = csv.text.split(separator: "\r\n").map(String.init)
            #expect(lines.first == "email,name,external_id,locale,events_granted_at,preference_centre_url,unsubscribe_url")
            #expect(lines.count == 3 && lines.contains { $0.hasPrefix("a@example.com,\"'=HYPERLINK(\"\"x\"\")\",") }, "quoted, and no formula: \(lines)")
            #expect(lines.contains { $0.hasPrefix("b@example.com,\"Bo, Jr.\",") && $0.contains(",https://consent.example.org/p/") && $0.contains(",https://consent.example.org/u/") })
            let all = try await api.send(.get, "/api/v1/audience?topics=events,news&match=all&format=ndjson")
            let objects = all.text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            #expect(objects.map { $0["email"] as? String } == ["b@example.com"] && (objects.first?["grants"] as? [String: Any])?.count == 2)
            #expect(try await api.send(.get, "/api/v1/audience?topics=news&count=true").json["count"] as? Int == 2)
            #expect(try await api.send(.get, "/api/v1/audience?topics=nope").problemFields == ["topics[0]"])
            #expect(try await api.send(.get, "/api/v1/audience").problemFields == ["topics"])
            #expect(try await api.send(.get, "/api/v1/audience?topics=events&format=xml").problemFields == ["format"])
            #expect(try await api.send(.get, "/api/v1/audience?topics=events&match=some").problemFields == ["match"])
            #expect(try await api.send(.get, "/api/v1/audience?topics=events&changedSince=yesterday").problemFields == ["changedSince"])
            let reader = try await api.newKey(.read)
            #expect(try await api.send(.get, "/api/v1/audience?topics=events", token: reader).status == .forbidden)
        }
    }

    /// Each page is written on two threads (in halves) while the page before it is handed on:
    /// every row still comes once, in the store's order, as the bytes a page of one member
    /// gives, and its links open for that member.
    @Test(arguments: StoreKind.available)
    func pagesWrittenOnTwoThreadsGiveEveryRowOnceInOrder(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        _ = try await ledger.createTopic(Topic(key: "news", title: "News", createdAt: Date()), noticeText: "News.")
        let created = try await ledger.createContacts((0..<700).map { (email: try EmailAddress("p\($0)@example.com"), name: "P \($0)", externalID: nil, locale: nil) })
        for result in created {
            let id = try result.get().contact.id
            _ = try await ledger.recordChange(ChangeRequest(contactID: id, changes: [TopicChange(topicKey: "news", intent: .optIn)], source: .api, actor: .apiKey("k")))
        }
        let query = try await ledger.validate(AudienceQuery(topics: ["news"]))
        let base = "https://consent.example.org"
        // Pages of 300, 300 and 100: the first two are written in halves (handed on as two parts), the last whole.
        var parts: [[UInt8]] = []
        try await AudienceRows.stream(query, ledger: ledger, base: base, format: "csv", pageSize: 300) { parts.append($0) }
        var oneByOne: [UInt8] = []
        try await ledger.audience(query, pageSize: 300) { members in
            for member in members { oneByOne += try await AudienceRows.lines([member], query: query, ledger: ledger, base: base, format: "csv") }
        }
        #expect(parts.count == 5, "two halves of each full page, the last page whole")
        #expect(Array(parts.joined()) == oneByOne)
        let rows = String(decoding: Array(parts.joined()), as: UTF8.self).split(separator: "\r\n").map(String.init)
        #expect(rows.count == 700 && Set(rows.map { $0.prefix { $0 != "," } }).count == 700)
        for row in rows.prefix(3) + rows.suffix(3) {
            let email = String(row.prefix { $0 != "," })
            let centre = try #require(row.split(separator: ",").first { $0.hasPrefix(base + "/p/") }).dropFirst(base.count + 3)
            #expect(try await ledger.resolveLink(String(centre), purpose: .preferenceCentre)?.contact.email.value == email, "\(row)")
        }
        var ndjson: [UInt8] = []
        try await AudienceRows.stream(query, ledger: ledger, base: base, format: "ndjson", pageSize: 300) { ndjson += $0 }
        let emails = String(decoding: ndjson, as: UTF8.self).split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["email"] as? String
        }
        #expect(emails == rows.map { String($0.prefix { $0 != "," }) })
    }

    /// A store that reads pages as bytes (SQLite) writes the very bytes the members path
    /// writes, in both formats, over page ends inside a contact's grants, with text that needs
    /// quoting or escaping, missing fields, a contact with no link secret yet and an erased one.
    @Test(arguments: StoreKind.available)
    func pagesReadAsBytesWriteWhatMembersWrite(_ kind: StoreKind) async throws {
        let ledger = try await kind.makeLedger()
        for key in ["events", "news", "offers"] {
            _ = try await ledger.createTopic(Topic(key: key, title: key, requiresDoubleOptIn: false, createdAt: Date()), noticeText: "\(key).")
        }
        let names: [String?] = ["=SUM(A1)", "Bo, \"Jr.\"", nil, "Zoë \\ Ünal", "", "+1", "Ann"]
        var ids: [UUID] = []
        for i in 0..<150 {
            let contact = try await ledger.createContact(email: EmailAddress("p\(i)@example.com"), name: names[i % names.count],
                                                         externalID: i % 4 == 0 ? nil : "crm-\(i)", locale: [nil, "en", "de-AT"][i % 3])
            ids.append(contact.id)
            let topics = [["events"], ["news"], ["events", "news", "offers"], ["offers", "news"]][i % 4]
            _ = try await ledger.recordChange(ChangeRequest(contactID: contact.id, changes: topics.map { TopicChange(topicKey: $0, intent: .optIn) },
                                                            source: .api, actor: .apiKey("k")))
        }
        // A contact as an older Assent stored it, with no link secret yet; and an erased one.
        let legacy = Contact(id: UUID.timeOrdered(), email: try EmailAddress("legacy@example.com"), createdAt: Date())
        try await ledger.store.insertContact(NewContact(contact: legacy, wrappedKey: try ledger.masterKey.wrap(.generate(), contactID: legacy.id), webhooks: []))
        _ = try await ledger.recordChange(ChangeRequest(contactID: legacy.id, changes: [TopicChange(topicKey: "news", intent: .optIn)], source: .api, actor: .apiKey("k")))
        _ = try await ledger.eraseContact(ids[2], reason: "test", erasedBy: "test")
        let base = "https://consent.example.org"
        for topics in [["news"], ["events", "news", "offers"], ["offers", "events"]] {
            let query = try await ledger.validate(AudienceQuery(topics: topics))
            for format in ["csv", "ndjson"] {
                var streamed: [UInt8] = []
                try await AudienceRows.stream(query, ledger: ledger, base: base, format: format, pageSize: 7) { streamed += $0 }
                var members: [UInt8] = []
                try await ledger.audience(query, pageSize: 1_000) { members += try await AudienceRows.lines($0, query: query, ledger: ledger, base: base, format: format) }
                #expect(streamed == members, "\(topics) \(format)")
                let text = String(decoding: streamed, as: UTF8.self)
                #expect(text.contains("legacy@example.com") == topics.contains("news") && !text.contains("p2@example.com"), "\(topics) \(format)")
            }
        }
        // A topic named twice has two columns, both filled.
        let twice = try await ledger.validate(AudienceQuery(topics: ["news", "news"]))
        var csv: [UInt8] = []
        try await AudienceRows.stream(twice, ledger: ledger, base: base, format: "csv", pageSize: 7) { csv += $0 }
        let rows = String(decoding: csv, as: UTF8.self).split(separator: "\r\n").map { $0.split(separator: ",", omittingEmptySubsequences: false) }
        #expect(!rows.isEmpty && rows.allSatisfy { $0.count >= 8 && !$0[$0.count - 4].isEmpty && $0[$0.count - 4] == $0[$0.count - 3] }, "\(rows.prefix(2))")
    }

    @Test func tenThousandAddressesAreCheckedInOneCallAndBadOnesNamed() async throws {
        try await withAPI { api in
            try await api.createTopic("news", doubleOptIn: false)
            let id = try await api.createContact("known@example.com")
            _ = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: ["source": "api", "preferences": [["topic": "news", "granted": true]]])
            let emails = ["known@example.com"] + (1..<9_999).map { "person\($0)@example.com" } + ["Jörg.O'Brien@Bücher.example"]
            let r = try await api.send(.post, "/api/v1/check", json: ["topic": "news", "emails": emails])
            #expect(r.status == .ok, "\(r.text.prefix(300))")
            // The answer is written by hand; it must be the bytes the API's JSON encoder writes (sorted keys).
            let reencoded = try JSONSerialization.data(withJSONObject: r.json, options: [.sortedKeys, .withoutEscapingSlashes])
            #expect(String(decoding: reencoded, as: UTF8.self) + "\n" == r.text)
            #expect(r.text.contains("\"email\":\"jörg.o'brien@bücher.example\""))
            let results = r.json["results"] as? [[String: Any]] ?? []
            #expect(results.count == 10_000 && results.first?["allowed"] as? Bool == true && results.first?["reason"] as? String == "granted")
            #expect(results.dropFirst().allSatisfy { $0["reason"] as? String == "unknown" })
            let tooMany = try await api.send(.post, "/api/v1/check", json: ["topic": "news", "emails": emails + ["one@example.com"]])
            #expect(tooMany.status == .unprocessableContent && tooMany.problemFields == ["emails"])
            let bad = try await api.send(.post, "/api/v1/check", json: ["topic": "news", "emails": ["ok@example.com", "not-an-email"]])
            #expect(bad.status == .unprocessableContent && bad.problemFields == ["emails[1]"])
            #expect(try await api.send(.post, "/api/v1/check", json: ["topic": "nope", "emails": ["ok@example.com"]]).problemFields == ["topic"])
        }
    }
}
