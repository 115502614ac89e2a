import AssentCore
import AssentServer
import AssentStore
import AssentTestSupport
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

@Suite struct ReportAPITests {
    @Test(arguments: StoreKind.available)
    func reportsAnswerAsJSONOrCSVAndNameBadPeriods(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            try await api.createTopic("events", doubleOptIn: false)
            for email in ["a@example.com", "b@example.com"] {
                let id = try await api.createContact(email)
                _ = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: ["source": "api", "preferences": [["topic": "events", "granted": true]]])
            }
            let states = try await api.send(.get, "/api/v1/reports/states")
            #expect((states.items.first?["counts"] as? [String: Any])?["granted"] as? Int == 2, "\(states.text)")
            let csv = try await api.send(.get, "/api/v1/reports/states?format=csv")
            #expect(csv.headers[.contentType] == "text/csv; charset=utf-8" && csv.text == "topic,granted,pending,withdrawn,expired,none\r\nevents,2,0,0,0,0\r\n")
            let changes = try await api.send(.get, "/api/v1/reports/changes")
            #expect((changes.json["items"] as? [[String: Any]])?.first?["optIns"] as? Int == 2 && (changes.json["items"] as? [[String: Any]])?.first?["source"] as? String == "api")
            let today = String(WireDateForTests.today().prefix(10))
            let weekAgo = String(ISO8601DateFormatter().string(from: Date().addingTimeInterval(-7 * 86_400)).prefix(10))
            let throughToday = try await api.send(.get, "/api/v1/reports/changes?from=\(weekAgo)&to=\(today)")
            #expect((throughToday.json["items"] as? [[String: Any]])?.first?["optIns"] as? Int == 2, "a date alone means through that day")
            #expect(try await api.send(.get, "/api/v1/reports/changes?from=2026-02-01&to=2026-01-01").problemFields == ["from"])
            #expect(try await api.send(.get, "/api/v1/reports/changes?from=soon").problemFields == ["from"])
            #expect(try await api.send(.get, "/api/v1/reports/double-opt-in?format=xml").problemFields == ["format"])
            let funnel = try await api.send(.get, "/api/v1/reports/double-opt-in")
            #expect((funnel.json["items"] as? [[String: Any]])?.last?["requested"] as? Int == 0)
            #expect(try await api.send(.get, "/api/v1/reports/expiring").items.isEmpty)
        }
    }

    @Test(arguments: StoreKind.available)
    func theWholeStoreStreamsToAnAdminKeyAndEachExportIsAudited(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            try await api.createTopic("events", doubleOptIn: false)
            for email in ["a@example.com", "b@example.com"] {
                let id = try await api.createContact(email)
                _ = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: ["source": "api", "preferences": [["topic": "events", "granted": true]]])
            }
            let contacts = try await api.send(.get, "/api/v1/exports/contacts")
            #expect(contacts.status == .ok && contacts.headers[.contentType] == "text/csv; charset=utf-8", "\(contacts.text)")
            #expect(contacts.headers[.contentDisposition] == "attachment; filename=\"assent-contacts.csv\"")
            let lines = contacts.text.components(separatedBy: "\r\n")
            #expect(lines.count == 4 && lines[0].hasPrefix("id,email,name") && lines.last == "", "a header, two contacts: \(lines)")
            #expect(lines.contains { $0.contains(",a@example.com,") } && lines.contains { $0.contains(",b@example.com,") })
            let events = try await api.send(.get, "/api/v1/exports/events?format=ndjson")
            let objects = events.text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            #expect(events.headers[.contentType] == "application/x-ndjson" && objects.count == 2 && objects.allSatisfy { $0["action"] as? String == "granted" && $0["seq"] as? Int == 1 })
            let preferences = try await api.send(.get, "/api/v1/exports/preferences?format=csv")
            #expect(preferences.text.components(separatedBy: "\r\n").filter { $0.contains(",events,granted,") }.count == 2)

            #expect(try await api.send(.get, "/api/v1/exports/everything").status == .notFound)
            #expect(try await api.send(.get, "/api/v1/exports/events?format=xml").problemFields == ["format"])
            let writer = try await api.newKey(.write)
            #expect(try await api.send(.get, "/api/v1/exports/contacts", token: writer).status == .forbidden, "everyone's data: an admin key only")
            let audited = try await api.ledger.store.auditEntries(AuditQuery(action: "export_all"))
            #expect(Set(audited.compactMap(\.target)) == ["export:contacts", "export:events", "export:preferences"], "\(audited)")
        }
    }
}

@Suite struct ConsoleReportAndImportTests {
    @Test(arguments: StoreKind.available)
    func anAdminUploadsACSVSeesTheDryRunImportsItAndTheReportsShowIt(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            try await api.createTopic("events", doubleOptIn: false)
            try await api.createTopic("news", doubleOptIn: false)
            let admin = try await staff(api, .admin)
            func upload(_ csv: String, evidence: String = "Paper forms from the 2026 fair; notice v1", csrf: String? = nil) async throws -> APIHarness.Reply {
                let boundary = "----assent-test-boundary"
                var body = ""
                for (name, value) in [("csrf", csrf ?? admin.csrf), ("evidence", evidence)] {
                    body += "--\(boundary)\r\nContent-Disposition: form-data; name=\"\(name)\"\r\n\r\n\(value)\r\n"
                }
                body += "--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"contacts.csv\"\r\nContent-Type: text/csv\r\n\r\n\(csv)\r\n--\(boundary)--\r\n"
                return try await api.page(.post, "/console/import", form: body,
                                          headers: [.cookie: admin.cookie, .contentType: "multipart/form-data; boundary=\(boundary)"])
            }
            let csv = "email,name,events,news\r\njo@example.com,\"Bloggs, Jo\",yes,no\r\nbo@example.com,Bo,yes,yes\r\n"
            let dry = try await upload(csv)
            #expect(dry.status == .ok && dry.text.contains("What the file would change") && dry.text.contains("<dt>Grants</dt><dd>3</dd>"), "\(dry.text)")
            #expect(try await api.ledger.store.contact(email: EmailAddress("jo@example.com")) == nil, "the dry run wrote nothing")
            let action = try #require(dry.text.range(of: #"/console/import/[0-9a-f-]{36}"#, options: .regularExpression).map { String(dry.text[$0]) })
            let done = try await admin.post(action)
            #expect(done.status == .ok && done.text.contains("What was imported") && done.text.contains("<dt>New contacts</dt><dd>2</dd>"), "\(done.text)")
            #expect(try await admin.post(action).status == .gone, "an upload is imported once")
            let jo = try #require(try await api.ledger.store.contact(email: EmailAddress("jo@example.com")))
            let note = try await api.ledger.timeline(contactID: jo.id, beforeSeq: nil, limit: 1).first?.personal?.note
            #expect(note == "Paper forms from the 2026 fair; notice v1" && jo.name == "Bloggs, Jo")

            let bad = try await upload("email,events\r\nnot-an-email,yes\r\n")
            #expect(bad.status == .unprocessableContent && bad.text.contains("line 2, column 1: &#39;not-an-email&#39; is not an email address")
                    || bad.text.contains("line 2, column 1: 'not-an-email' is not an email address"), "\(bad.text)")
            #expect(try await upload(csv, evidence: "").status == .unprocessableContent, "the evidence statement is required")
            #expect(try await upload(csv, csrf: "forged").status == .forbidden, "the token inside the upload is checked")
            let agent = try await staff(api, .agent)
            #expect(try await agent.get("/console/import").status == .forbidden, "imports are for admins")

            let reports = try await agent.get("/console/reports")
            #expect(reports.status == .ok && reports.text.components(separatedBy: "<svg class=\"chart\"").count == 5, "four charts")
            #expect(reports.text.contains("Granted per topic: events 2, news 1."), "\(reports.text)")
            #expect(reports.text.contains("<td>events</td><td>2</td>") && reports.text.contains("href=\"/console/reports/states.csv\""))
            let statesCSV = try await agent.get("/console/reports/states.csv")
            #expect(statesCSV.text == "topic,granted,pending,withdrawn,expired,none\r\nevents,2,0,0,0,0\r\nnews,1,0,0,0,1\r\n", "\(statesCSV.text)")
            #expect(try await agent.get("/console/reports/nope.csv").status == .notFound)
            #expect(try await agent.get("/console/reports?from=2026-13-45").status == .badRequest)
        }
    }
}

enum WireDateForTests {
    static func today() -> String { ISO8601DateFormatter().string(from: Date()) }
}
