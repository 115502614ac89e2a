import AssentCore
import AssentServer
import AssentStore
import AssentTestSupport
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

/// Access export, erasure and objection over the API and in the console.
@Suite struct RightsAPITests {
    @Test(arguments: StoreKind.available)
    func exportEraseAndSuppressOverTheAPI(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            try await api.createTopic("events", doubleOptIn: false)
            let id = try await api.createContact("jo@example.com")
            _ = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: [
                "source": "staff", "channel": "phone", "evidence": ["note": "Jo said yes."], "preferences": [["topic": "events", "granted": true]]])
            let export = try await api.send(.get, "/api/v1/contacts/\(id)/export")
            #expect(export.status == .ok && (export.json["contact"] as? [String: Any])?["email"] as? String == "jo@example.com")
            #expect((export.json["events"] as? [[String: Any]])?.first.flatMap { ($0["evidence"] as? [String: Any])?["note"] as? String } == "Jo said yes.")
            #expect((export.json["receipts"] as? [[String: Any]])?.count == 1)
            let html = try await api.send(.get, "/api/v1/contacts/\(id)/export?format=html")
            #expect(html.status == .ok && html.headers[.contentType] == "text/html; charset=utf-8" && html.text.contains("“Jo said yes.”"))
            #expect(try await api.send(.get, "/api/v1/contacts/\(id)/export?format=pdf").problemFields == ["format"])
            let writer = try await api.newKey(.write)
            #expect(try await api.send(.post, "/api/v1/contacts/\(id)/erase", json: ["reason": "x"], token: writer).status == .forbidden)
            #expect(try await api.send(.post, "/api/v1/contacts/\(id)/erase", json: ["reason": " "]).problemFields == ["reason"])
            let erased = try await api.send(.post, "/api/v1/contacts/\(id)/erase", json: ["reason": "Jo's email of 2026-11-29"])
            #expect(erased.status == .ok && erased.json["erasedAt"] is String && erased.json["name"] is NSNull, "\(erased.text)")
            #expect((erased.json["email"] as? String)?.hasSuffix("@erased.invalid") == true)
            #expect(try await api.send(.get, "/api/v1/check?email=jo%40example.com&topic=events").json["reason"] as? String == "suppressed")
            let again = try await api.send(.post, "/api/v1/contacts", json: ["email": "jo@example.com"])
            #expect(again.status == .conflict && again.problemFields == ["email"] && again.text.contains("freshConsent"))
            let back = try await api.send(.post, "/api/v1/contacts", json: ["email": "jo@example.com", "freshConsent": "Jo signed up at the fair, form 12."])
            #expect(back.status == .created)
            let timeline = try await api.send(.get, "/api/v1/contacts/\(id)/timeline").items
            #expect(timeline.map { $0["source"] as? String } == ["system", "staff"], "Assent's withdrawal, then the phone entry")
            let staffEvidence = timeline.last?["evidence"] as? [String: Any]
            #expect(staffEvidence?["shredded"] as? Bool == true && staffEvidence?["note"] is NSNull, "the note is unreadable: \(timeline)")
            #expect(try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: ["source": "api", "preferences": [["topic": "events", "granted": true]]]).status == .gone)
            // No address, so no links to send to it (the API fuzzing found these answered 200).
            #expect(try await api.send(.get, "/api/v1/contacts/\(id)/links").status == .gone)
            #expect(try await api.send(.post, "/api/v1/contacts/\(id)/links/rotate").status == .gone)
        }
    }

    @Test func anObjectionOverTheAPIBlocksLaterAPIOptIns() async throws {
        try await withAPI { api in
            try await api.createTopic("events", doubleOptIn: false)
            let id = try await api.createContact("jo@example.com")
            _ = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: ["source": "api", "preferences": [["topic": "events", "granted": true]]])
            let objected = try await api.send(.post, "/api/v1/contacts/\(id)/object", json: ["note": "Jo wrote: no more marketing."])
            #expect(objected.status == .ok && objected.json["withdrawn"] as? [String] == ["events"], "\(objected.text)")
            #expect((objected.json["contact"] as? [String: Any])?["objectedAt"] is String)
            let refused = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: ["source": "api", "preferences": [["topic": "events", "granted": true]]])
            #expect(refused.status == .unprocessableContent && refused.text.contains("objected to all direct marketing"))
        }
    }

    @Test func aDPOTakesARequestFromTheRegisterToAnErasure() async throws {
        let clock = TestClock(ISO8601DateFormatter().date(from: "2026-03-10T09:00:00Z")!)
        try await withAPI(now: { clock.now }) { api in
            try await api.createTopic("events", doubleOptIn: false)
            let id = try await api.createContact("jo@example.com")
            let agent = try await staff(api, .agent)
            let recorded = try await agent.post("/console/requests", "contact=jo%40example.com&kind=erasure&channel=letter&received=2026-02-01T10%3A00"
                                                + "&identity=Signature+checked&note=Delete+everything")
            #expect(recorded.status == .ok && recorded.text.contains("Recorded: erasure request, due 1 Mar 2026"), "\(recorded.text)")
            let bad = try await agent.post("/console/requests", "contact=nobody%40example.com&kind=erasure&channel=letter")
            #expect(bad.status == .unprocessableContent && bad.text.contains("no contact matches"))
            let admin = try await staff(api, .admin)
            let register = try await admin.get("/console/requests")
            #expect(register.text.contains("<tr class=\"overdue\">") && register.text.contains("overdue</strong>"))
            #expect(try await agent.post("/console/requests/\(try #require(try await api.ledger.store.subjectRequests(contactID: nil, status: .open, limit: 1).first).id.uuidString.lowercased())/extend", "reason=x").status == .forbidden)
            _ = try await admin.post("/console/contacts/\(id)/erase", "reason=Letter+of+2026-02-01&confirm=yes")
            let after = try await admin.get("/console/requests")
            #expect(after.text.contains("closed") && after.text.contains(": erased") && !after.text.contains("Delete everything"), "the note is gone with the person")
        }
    }

    @Test func detailsAreRectifiedThroughAnAuditedPath() async throws {
        try await withAPI { api in
            let id = try await api.createContact("jo@example.com")
            let agent = try await staff(api, .agent)
            let saved = try await agent.post("/console/contacts/\(id)", "email=jo.bloggs%40example.com&name=Jo+Bloggs&externalId=&locale=en")
            #expect(saved.status == .ok && saved.text.contains("Saved: email, name, language."), "\(saved.text)")
            #expect(try await api.ledger.store.contact(email: EmailAddress("jo.bloggs@example.com"))?.name == "Jo Bloggs")
            let bad = try await agent.post("/console/contacts/\(id)", "email=nope")
            #expect(bad.text.contains("Nothing was saved: email:"))
            _ = try await api.send(.patch, "/api/v1/contacts/\(id)", json: ["name": "Jo B."])
            let log = try await api.ledger.store.auditEntries(AuditQuery(action: "contact_rectify"))
            #expect(log.map(\.detail) == ["changed name", "changed email, name, language"], "which fields, never their values")
            let auditor = try await staff(api, .auditor)
            #expect(try await auditor.post("/console/contacts/\(id)", "email=x%40example.com").status == .forbidden)
            let printable = try await auditor.get("/console/contacts/\(id)/export.html")
            #expect(printable.status == .ok && printable.text.contains("<h1>Personal data held about jo.bloggs@example.com</h1>"))
        }
    }

    @Test func anAdminErasesInTheConsoleAndTheAgentSeesTheSkeleton() async throws {
        try await withAPI { api in
            try await api.createTopic("events", doubleOptIn: false)
            let id = try await api.createContact("jo@example.com")
            let agent = try await staff(api, .agent)
            _ = try await agent.post("/console/contacts/\(id)/record", "change-events=yes&channel=phone&note=Yes+please.")
            let admin = try await staff(api, .admin)
            let unconfirmed = try await admin.post("/console/contacts/\(id)/erase", "reason=Request")
            #expect(unconfirmed.text.contains("Nothing was erased: tick the box"))
            #expect(try await agent.post("/console/contacts/\(id)/erase", "reason=x&confirm=yes").status == .forbidden)
            let done = try await admin.post("/console/contacts/\(id)/erase", "reason=Jo%27s+request+by+phone&confirm=yes")
            #expect(done.status == .seeOther)
            let page = try await agent.get("/console/contacts/\(id)")
            #expect(page.text.contains("This person's data was erased on") && !page.text.contains("jo@example.com") && !page.text.contains("Record an instruction"))
            #expect(page.text.contains("Verbal/phone") && page.text.contains(">System</span>"), "the skeleton stays: the phone entry and Assent's withdrawal")
            #expect(try await api.ledger.store.auditEntries(AuditQuery(action: "erase_contact")).first?.actorEmail == "admin@example.com")
        }
    }
}
