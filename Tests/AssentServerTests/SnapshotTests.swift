import AssentCore
import AssentServer
import AssentStore
import AssentTestSupport
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

/// The HTML of every person-facing page, compared with a reviewed copy in
/// `Snapshots/`, so that any change to what people see shows up in review.
/// Secrets (link tokens, CSRF tokens) are replaced by placeholders; time is fixed.
/// After an intended change, re-record with ASSENT_RECORD_SNAPSHOTS=1 and review the diff.
@Suite(.serialized) struct SnapshotTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Snapshots")

    func assertSnapshot(_ html: String, named name: String, replacing secrets: [String: String] = [:],
                        sourceLocation: SourceLocation = #_sourceLocation) throws {
        var text = html
        for (secret, placeholder) in secrets.sorted(by: { $0.key.count > $1.key.count }) where !secret.isEmpty {
            text = text.replacingOccurrences(of: secret, with: placeholder)
        }
        let file = Self.directory.appendingPathComponent("\(name).html")
        let record = ProcessInfo.processInfo.environment["ASSENT_RECORD_SNAPSHOTS"] == "1"
        guard !record, let stored = try? String(contentsOf: file, encoding: .utf8) else {
            try FileManager.default.createDirectory(at: Self.directory, withIntermediateDirectories: true)
            try text.write(to: file, atomically: true, encoding: .utf8)
            if !record { Issue.record("no snapshot \(name).html yet: recorded it; review and commit it", sourceLocation: sourceLocation) }
            return
        }
        #expect(text == stored, "\(name).html differs from the page; if intended, re-record with ASSENT_RECORD_SNAPSHOTS=1", sourceLocation: sourceLocation)
    }

    @Test func everyPersonFacingPage() async throws {
        let clock = TestClock(Date(timeIntervalSince1970: 1_795_000_000)) // 18 November 2026
        let site = SiteConfiguration(publicURL: { "https://consent.example.org" }, organisation: "Example Ltd")
        try await withAPI(site: site, now: { clock.now }) { api in
            for (key, title, category, doi) in [("events", "Events", "Events", true), ("news", "Newsletter", "News", false)] {
                let r = try await api.send(.post, "/api/v1/topics", json: ["key": key, "title": title, "category": category, "requiresDoubleOptIn": doi,
                                                                          "description": key == "news" ? "Once a month." : "",
                                                                          "notice": "We will email you about \(title.lower). Unsubscribe at any time."])
                #expect(r.status == .created)
            }
            _ = try await api.send(.post, "/api/v1/forms", json: ["id": "newsletter", "title": "Stay in touch", "topics": ["events", "news"],
                                                                  "introduction": "Choose what you would like to hear about.\n\nWe never share your address.",
                                                                  "askName": true, "allowedOrigins": ["https://www.example.org"]])
            try assertSnapshot(try await api.page(.get, "/f/newsletter").text, named: "form")
            try assertSnapshot(try await api.send(.get, "/api/v1/forms/newsletter/embed").text, named: "form-embed")
            try assertSnapshot(try await api.page(.post, "/f/newsletter", form: "v=1&email=nope&website=").text, named: "form-errors")
            try assertSnapshot(try await api.page(.post, "/f/newsletter", form: "v=1&email=jo%40example.com&name=Jo&topic=events&topic=news&website=").text,
                               named: "form-thanks")
            try assertSnapshot(try await api.page(.get, "/f/missing").text, named: "not-found")

            let item = try #require(try await api.ledger.store.outboxItems(status: .pending, limit: 10).first { $0.kind == ConfirmationEmail.kind })
            let confirmToken = try ConfirmationEmail.open(item, masterKey: api.ledger.masterKey).token
            try assertSnapshot(try await api.page(.get, "/confirm/\(confirmToken)").text, named: "confirm", replacing: [confirmToken: "{token}"])
            try assertSnapshot(try await api.page(.post, "/confirm/\(confirmToken)", form: "topic=events").text, named: "confirmed",
                               replacing: [confirmToken: "{token}"])

            let contact = try #require(try await api.ledger.store.contact(email: EmailAddress("jo@example.com")))
            let links = try await api.send(.get, "/api/v1/contacts/\(contact.id.uuidString.lowercased())/links?topic=news")
            let centre = URL(string: links.json["preferenceCentreUrl"] as? String ?? "")!.path
            let unsubscribe = URL(string: links.json["unsubscribeUrl"] as? String ?? "")!.path
            let tokens = [String(centre.dropFirst(3)): "{centre-token}", String(unsubscribe.dropFirst(3)): "{unsubscribe-token}"]
            try assertSnapshot(try await api.page(.get, centre).text, named: "preference-centre", replacing: tokens)
            try assertSnapshot(try await api.page(.post, centre, form: "shown=events%3A1&shown=news%3A1&topic=events&action=save").text,
                               named: "preference-centre-saved", replacing: tokens)
            try assertSnapshot(try await api.page(.get, unsubscribe).text, named: "unsubscribe", replacing: tokens)
            try assertSnapshot(try await api.page(.post, unsubscribe, form: "List-Unsubscribe=One-Click").text, named: "unsubscribed", replacing: tokens)

            try assertSnapshot(try await api.page(.get, "/portal").text, named: "portal")
            try assertSnapshot(try await api.page(.post, "/portal", form: "email=jo%40example.com&website=").text, named: "portal-link-sent")
            var signInItem: OutboxItem?
            for _ in 0..<500 where signInItem == nil { // the link is made after the answer
                signInItem = try await api.ledger.store.outboxItems(status: .pending, limit: 10).first { $0.kind == PortalLinkEmail.kind }
                if signInItem == nil { try await Task.sleep(for: .milliseconds(10)) }
            }
            let signIn = try #require(signInItem)
            let signInToken = try PortalLinkEmail.open(signIn, masterKey: api.ledger.masterKey).token
            try assertSnapshot(try await api.page(.get, "/portal/signin/\(signInToken)").text, named: "portal-sign-in", replacing: [signInToken: "{token}"])
            let signedIn = try await api.page(.post, "/portal/signin/\(signInToken)")
            let cookie = String(try #require(signedIn.headers[.setCookie]).split(separator: ";")[0])
            let home = try await api.page(.get, "/portal/home", headers: [.cookie: cookie]).text
            let csrf = String(home[try #require(home.range(of: "name=\"csrf\" value=\"")).upperBound...].prefix { $0 != "\"" })
            try assertSnapshot(home, named: "portal-home", replacing: [csrf: "{csrf}"])
            try assertSnapshot(try await api.page(.post, "/portal/signin/\(signInToken)").text, named: "portal-link-used")
        }
    }
}

extension SnapshotTests {
    @Test func theMainConsolePages() async throws {
        let clock = TestClock(Date(timeIntervalSince1970: 1_795_000_000))
        let site = SiteConfiguration(publicURL: { "https://consent.example.org" }, organisation: "Example Ltd")
        try await withAPI(site: site, now: { clock.now }) { api in
            for (key, title) in [("events", "Events"), ("news", "Newsletter")] {
                _ = try await api.send(.post, "/api/v1/topics", json: ["key": key, "title": title, "category": "News", "notice": "We will email you about \(title.lower)."])
            }
            let created = try await api.send(.post, "/api/v1/contacts", json: ["email": "jo@example.com", "name": "Jo Bloggs", "externalId": "crm-7"])
            let id = created.json["id"] as? String ?? ""
            // Fixed ids for the people, so that the pages are the same on every run.
            _ = try await api.ledger.store.insertStaffUser(StaffUser(id: UUID(uuidString: "00000000-0000-4000-8000-00000000a9e7")!,
                                                                    email: try EmailAddress("agent@example.com"), name: "Ana Agent", role: .agent,
                                                                    passwordHash: await api.ledger.passwordHasher.hash("agent password 1"), createdAt: clock.now))
            _ = try await api.ledger.store.insertStaffUser(StaffUser(id: UUID(uuidString: "00000000-0000-4000-8000-0000000a0d17")!,
                                                                    email: try EmailAddress("auditor@example.com"), name: "Avi Auditor", role: .auditor,
                                                                    passwordHash: await api.ledger.passwordHasher.hash("auditor password 1"), createdAt: clock.now))
            clock.now += 1
            let agent = try await StaffBrowser.signIn(api, "agent@example.com", "agent password 1")
            clock.now += 1
            let secrets = [id: "{contact-id}", agent.csrf: "{csrf}"]
            try assertSnapshot(try await api.page(.get, "/console/signin").text, named: "console-signin")
            try assertSnapshot(try await agent.get("/console?q=jo").text, named: "console-search", replacing: secrets)
            try assertSnapshot(try await agent.get("/console/contacts/\(id)/record").text, named: "console-record", replacing: secrets)
            clock.now += 1
            _ = try await agent.post("/console/contacts/\(id)/record", "change-events=yes&notice-events=1&change-news=no&channel=phone"
                                     + "&occurred=2026-11-17T16%3A45&note=Jo+asked+for+event+invitations+on+the+phone.")
            try assertSnapshot(try await agent.get("/console/contacts/\(id)").text, named: "console-contact", replacing: secrets)
            clock.now += 1
            let auditor = try await StaffBrowser.signIn(api, "auditor@example.com", "auditor password 1")
            clock.now += 1
            let auditorSecrets = [id: "{contact-id}", auditor.csrf: "{csrf}"]
            try assertSnapshot(try await auditor.get("/console/contacts/\(id)/evidence").text, named: "console-evidence", replacing: auditorSecrets)
            try assertSnapshot(try await auditor.get("/console/topics").text, named: "console-topics", replacing: auditorSecrets)
            try assertSnapshot(try await auditor.get("/console/audit").text, named: "console-audit", replacing: auditorSecrets)
            // A segment measured on three days: its page with the chart and the numbers.
            _ = try await agent.post("/console/segments", "id=event-fans&name=Event+fans&description=Invitations&topic=events")
            for day in 1...2 {
                clock.now += 86_400
                if day == 2 {
                    let other = try await api.createContact("bo@example.com")
                    _ = try await api.send(.put, "/api/v1/contacts/\(other)/preferences", json: ["source": "api", "preferences": [["topic": "events", "granted": true]]])
                }
                _ = try await api.ledger.measureSegmentsDue()
            }
            let reader = try await StaffBrowser.signIn(api, "auditor@example.com", "auditor password 1")
            try assertSnapshot(try await reader.get("/console/segments/event-fans").text, named: "console-segment", replacing: [reader.csrf: "{csrf}"])
            // The reports of this small history: four charts with their numbers.
            try assertSnapshot(try await reader.get("/console/reports").text, named: "console-reports", replacing: [reader.csrf: "{csrf}"])
        }
    }
}

private extension String {
    var lower: String { lowercased() }
}
