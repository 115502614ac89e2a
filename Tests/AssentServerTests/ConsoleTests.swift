import AssentCore
@testable import AssentServer
import AssentStore
import AssentTestSupport
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

/// A staff member signed in to the console under test.
struct StaffBrowser {
    let api: APIHarness
    let cookie: String
    let csrf: String

    static func signIn(_ api: APIHarness, _ email: String, _ password: String) async throws -> StaffBrowser {
        let r = try await api.page(.post, "/console/signin", form: "email=\(email.replacingOccurrences(of: "@", with: "%40"))&password=\(password.replacingOccurrences(of: " ", with: "+"))")
        #expect(r.status == .seeOther, "sign-in: \(r.text)")
        let cookie = String(try #require(r.headers[.setCookie]).split(separator: ";")[0])
        let home = try await api.page(.get, r.headers[.location] ?? "/console", headers: [.cookie: cookie])
        let marker = "name=\"csrf\" value=\""
        let start = try #require(home.text.range(of: marker)).upperBound
        return StaffBrowser(api: api, cookie: cookie, csrf: String(home.text[start...].prefix { $0 != "\"" }))
    }

    func get(_ path: String) async throws -> APIHarness.Reply {
        try await api.page(.get, path, headers: [.cookie: cookie])
    }

    func post(_ path: String, _ form: String = "", csrf: String? = nil) async throws -> APIHarness.Reply {
        try await api.page(.post, path, form: "csrf=\(csrf ?? self.csrf)" + (form.isEmpty ? "" : "&" + form), headers: [.cookie: cookie])
    }
}

func staff(_ api: APIHarness, _ role: StaffUser.Role, _ email: String? = nil) async throws -> StaffBrowser {
    let address = email ?? "\(role.rawValue)@example.com"
    _ = try await api.ledger.createStaffUser(email: address, name: role.rawValue.capitalized, role: role, password: "\(role.rawValue) password 1",
                                             mustChangePassword: false, actor: nil)
    return try await StaffBrowser.signIn(api, address, "\(role.rawValue) password 1")
}

@Suite struct ConsoleTests {
    /// Every console route x every role and no one: exactly the allowed ones get through.
    @Test(arguments: [StoreKind.memory, .sqlite])
    func authorisationMatrix(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            try await api.createTopic("events")
            let contact = try await api.createContact("jo@example.com")
            _ = try await api.send(.post, "/api/v1/forms", json: ["id": "newsletter", "title": "News", "topics": ["events"]])
            _ = try await api.send(.post, "/api/v1/segments", json: ["id": "event-fans", "name": "Event fans", "topics": ["events"]])
            let hook = try #require(try await api.send(.post, "/api/v1/webhooks", json: ["url": "http://127.0.0.1:9/hooks", "events": ["contact.created"],
                                                                                         "allowPrivateNetwork": true]).json["id"] as? String)
            _ = try await api.createContact("someone@example.com")
            let delivery = try #require(try await api.ledger.store.webhookDeliveries(WebhookDeliveryQuery(endpointID: hook)).first?.id.uuidString.lowercased())
            let keyID = try #require(try await api.ledger.store.apiKeys().first?.id)
            let target = try await api.ledger.createStaffUser(email: "target@example.com", name: "Target", role: .agent, password: "target password 1",
                                                              mustChangePassword: false, actor: nil)
            let browsers: [(StaffUser.Role, StaffBrowser)] = [
                (.agent, try await staff(api, .agent)), (.auditor, try await staff(api, .auditor)), (.admin, try await staff(api, .admin)),
            ]
            let all = try await console(api).routes
            let routes = all.filter { $0.path != "/console/signout" } + all.filter { $0.path == "/console/signout" } // signing out last
            func path(_ route: ConsoleRoute) -> String {
                var p = route.path
                let id = p.hasPrefix("/console/contacts") ? contact : p.hasPrefix("/console/forms") ? "newsletter"
                    : p.hasPrefix("/console/segments") ? "event-fans" : p.hasPrefix("/console/webhooks") ? hook
                    : p.hasPrefix("/console/keys") ? keyID : target.id.uuidString.lowercased()
                p = p.replacingOccurrences(of: "{id}", with: id).replacingOccurrences(of: "{key}", with: "events").replacingOccurrences(of: "{version}", with: "1")
                    .replacingOccurrences(of: "{delivery}", with: delivery)
                return p
            }
            for route in routes {
                let anonymous = try await api.page(route.method, path(route), form: route.method == .post ? "" : nil)
                let toSignIn = anonymous.status == .seeOther && anonymous.headers[.location] == "/console/signin"
                #expect(toSignIn == (route.roles != nil), "anonymous \(route.method) \(route.path): \(anonymous.status)")
            }
            for (role, browser) in browsers {
                for route in routes where route.roles != nil {
                    let r = route.method == .get ? try await browser.get(path(route)) : try await browser.post(path(route))
                    let allowed = route.roles!.contains(role)
                    // Signing out answers with the sign-in page by design; elsewhere that means "not signed in".
                    let refused = r.status == .forbidden
                        || (route.path != "/console/signout" && r.status == .seeOther && r.headers[.location] == "/console/signin")
                    #expect(refused == !allowed, "\(role) \(route.method) \(route.path): \(r.status) \(r.headers[.location] ?? "")")
                    if route.path == "/console/signout" {
                        #expect(try await browser.get("/console").headers[.location] == "/console/signin", "\(role) is signed out")
                    }
                }
            }
        }
    }

    func console(_ api: APIHarness) async throws -> ConsolePages {
        ConsolePages(ledger: api.ledger, pages: try await Pages(site: SiteConfiguration()), signInLimiter: RateLimiter(limit: 100))
    }

    @Test(arguments: StoreKind.available)
    func anAgentRecordsAPhoneInstructionAndTheTimelineShowsIt(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            try await api.createTopic("events")
            try await api.createTopic("news")
            _ = try await api.send(.post, "/api/v1/topics/news/notices", json: ["text": "News, second wording."])
            let contact = try await api.createContact("jo@example.com")
            let agent = try await staff(api, .agent)
            let search = try await agent.get("/console?q=JO%40example")
            #expect(search.text.contains("href=\"/console/contacts/\(contact)\""))
            let form = try await agent.get("/console/contacts/\(contact)/record")
            #expect(form.status == .ok && form.text.contains("<select id=\"change-events\" name=\"change-events\">"))
            let recorded = try await agent.post("/console/contacts/\(contact)/record",
                                                "change-events=yes&notice-events=1&change-news=yes&notice-news=1&channel=phone&occurred=2026-01-05T09%3A30"
                                                + "&note=Jo+called+and+asked+for+events+and+news.")
            #expect(recorded.status == .seeOther && recorded.headers[.location] == "/console/contacts/\(contact)?recorded=2", "\(recorded.text)")
            let page = try await agent.get("/console/contacts/\(contact)?recorded=2")
            #expect(page.text.components(separatedBy: "<span class=\"badge badge-verbal\">Verbal/phone</span>").count == 3, "both changes with the Verbal badge")
            #expect(page.text.contains("Recorded 2 change(s)."))
            #expect(page.text.contains("href=\"/console/notices/news/1\">v1</a>"), "the notice read out, linked")
            #expect(!page.text.contains("Jo called"), "an agent does not see evidence")
            let timeline = try await api.send(.get, "/api/v1/contacts/\(contact)/timeline").items
            #expect(timeline.count == 2 && timeline.allSatisfy { $0["source"] as? String == "staff" && $0["channel"] as? String == "phone" })
            #expect(timeline.allSatisfy { ($0["occurredAt"] as? String)?.hasPrefix("2026-01-05T09:30") == true })
            #expect(timeline.allSatisfy { ($0["evidence"] as? [String: Any])?["note"] as? String == "Jo called and asked for events and news." })
            #expect(timeline.first { $0["topic"] as? String == "news" }?["noticeVersion"] as? Int == 1)
            let entry = try #require(try await api.ledger.store.auditEntries(AuditQuery(action: "record_instruction")).first)
            #expect(entry.actorEmail == "agent@example.com" && entry.target == "contact:\(contact)")
        }
    }

    @Test(arguments: StoreKind.available)
    func anAgentAddsSomeoneWhoPhonesInForTheFirstTime(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            let agent = try await staff(api, .agent)
            let added = try await agent.post("/console/contacts", "email=New.Caller%40example.com&name=New+Caller&externalId=crm-42&locale=de")
            #expect(added.status == .seeOther, "\(added.text)")
            let contact = try #require(try await api.ledger.store.contact(email: EmailAddress("new.caller@example.com")))
            #expect(added.headers[.location] == "/console/contacts/\(contact.id.uuidString.lowercased())")
            #expect(contact.name == "New Caller" && contact.externalID == "crm-42" && contact.locale == "de")
            let again = try await agent.post("/console/contacts", "email=new.caller%40example.com")
            #expect(again.status == .conflict && again.text.contains("already exists"))
            let bad = try await agent.post("/console/contacts", "email=nope")
            #expect(bad.status == .unprocessableContent && bad.text.contains("email:"))
            #expect(try await agent.get("/console?q=crm-42").text.contains("new.caller@example.com"))
            let auditor = try await staff(api, .auditor)
            #expect(try await auditor.post("/console/contacts", "email=x%40example.com").status == .forbidden)
            #expect(try await api.ledger.store.auditEntries(AuditQuery(action: "contact_create")).count == 1)
        }
    }

    @Test func theConsoleReadsAndShowsTimesInItsTimeZone() async throws {
        let site = SiteConfiguration(consoleTimeZone: TimeZone(identifier: "Europe/Berlin")!)
        try await withAPI(site: site) { api in
            try await api.createTopic("events")
            let contact = try await api.createContact("jo@example.com")
            let agent = try await staff(api, .agent)
            #expect(try await agent.get("/console/contacts/\(contact)/record").text.contains("When they said it (Europe/Berlin time;"))
            _ = try await agent.post("/console/contacts/\(contact)/record", "change-events=yes&channel=phone&occurred=2026-07-01T13%3A00&note=Yes.")
            let event = try #require(try await api.send(.get, "/api/v1/contacts/\(contact)/timeline").items.first)
            #expect((event["occurredAt"] as? String)?.hasPrefix("2026-07-01T11:00:00") == true, "13:00 in Berlin in summer is 11:00 UTC")
            #expect(try await agent.get("/console/contacts/\(contact)").text.contains("1 Jul 2026 at 13:00 GMT+2"))
            #expect(try await agent.get("/console?q=%00").status == .ok, "a NUL byte matches nothing")
            let auditor = try await staff(api, .auditor)
            #expect(try await auditor.get("/console/audit?target=%00").status == .unprocessableContent)
        }
    }

    @Test func badInstructionsAreExplainedAndRecordNothing() async throws {
        try await withAPI { api in
            try await api.createTopic("events")
            let contact = try await api.createContact("jo@example.com")
            let agent = try await staff(api, .agent)
            let empty = try await agent.post("/console/contacts/\(contact)/record", "channel=phone&note=")
            #expect(empty.status == .unprocessableContent && empty.text.contains("Choose at least one topic") && empty.text.contains("Note: write what"))
            let future = try await agent.post("/console/contacts/\(contact)/record", "change-events=yes&channel=phone&occurred=2999-01-01T00%3A00&note=x")
            #expect(future.status == .unprocessableContent && future.text.contains("When they said it: must not be in the future"))
            #expect(future.text.contains("<option value=\"yes\" selected>"), "what was entered is kept")
            let garbage = try await agent.post("/console/contacts/\(contact)/record", "change-events=yes&channel=pigeon&note=x")
            #expect(garbage.status == .unprocessableContent)
            let noCSRF = try await agent.post("/console/contacts/\(contact)/record", "change-events=yes&channel=phone&note=x", csrf: "forged")
            #expect(noCSRF.status == .forbidden)
            #expect(try await api.send(.get, "/api/v1/contacts/\(contact)/timeline").items.isEmpty)
        }
    }

    @Test func anAuditorSeesEvidenceOnlyOnPurposeAndThatIsAudited() async throws {
        try await withAPI { api in
            try await api.createTopic("events")
            let contact = try await api.createContact("jo@example.com")
            let agent = try await staff(api, .agent)
            _ = try await agent.post("/console/contacts/\(contact)/record", "change-events=yes&channel=in_person&note=Said+yes+at+the+fair.")
            let auditor = try await staff(api, .auditor)
            let plain = try await auditor.get("/console/contacts/\(contact)")
            #expect(!plain.text.contains("Said yes at the fair.") && plain.text.contains("Verbal/in person"))
            #expect(!plain.text.contains("Record an instruction"), "an auditor changes nothing")
            #expect(try await auditor.post("/console/contacts/\(contact)/record", "change-events=no&channel=phone&note=x").status == .forbidden)
            let shown = try await auditor.get("/console/contacts/\(contact)/evidence")
            #expect(shown.status == .ok && shown.text.contains("Said yes at the fair."))
            #expect(try await agent.get("/console/contacts/\(contact)/evidence").status == .forbidden)
            let views = try await api.ledger.store.auditEntries(AuditQuery(action: "view_evidence"))
            #expect(views.count == 1 && views[0].actorEmail == "auditor@example.com" && views[0].target == "contact:\(contact)")
            let export = try await auditor.get("/console/contacts/\(contact)/export")
            #expect(export.status == .ok && (export.json["events"] as? [[String: Any]])?.count == 1)
            let log = try await auditor.get("/console/audit?action=view_evidence")
            #expect(log.status == .ok && log.text.contains("auditor@example.com") && !log.text.contains(">record_instruction</td>"))
            let verify = try await auditor.post("/console/verify")
            #expect(verify.status == .ok && verify.text.contains("Every chain is intact: 1 contacts, 1 events."))
        }
    }

    @Test func theFirstAdministratorMustChooseAPasswordAndWrongPasswordsLock() async throws {
        try await withAPI { api in
            _ = try await api.ledger.createStaffUser(email: "admin@assent.localhost", name: "Administrator", role: .admin,
                                                     password: "one time password", mustChangePassword: true, actor: nil)
            let first = try await StaffBrowser.signIn(api, "admin@assent.localhost", "one time password")
            let topics = try await first.get("/console/topics")
            #expect(topics.status == .seeOther && topics.headers[.location] == "/console/password")
            let changed = try await first.post("/console/password", "current=one+time+password&new=my+own+good+password")
            #expect(changed.status == .seeOther)
            #expect(try await first.get("/console/topics").status == .seeOther, "the old session ended")
            let admin = try await StaffBrowser.signIn(api, "admin@assent.localhost", "my own good password")
            #expect(try await admin.get("/console/topics").status == .ok)
            for _ in 0..<4 {
                #expect(try await api.page(.post, "/console/signin", form: "email=admin%40assent.localhost&password=guess").status == .unauthorized)
            }
            let locked = try await api.page(.post, "/console/signin", form: "email=admin%40assent.localhost&password=guess")
            let unknown = try await api.page(.post, "/console/signin", form: "email=nobody%40example.com&password=guess")
            #expect(locked.status == unknown.status && locked.text == unknown.text.replacingOccurrences(of: "nobody@example.com", with: "admin@assent.localhost"),
                    "a locked account looks like a wrong password")
            #expect(try await api.page(.post, "/console/signin", form: "email=admin%40assent.localhost&password=my+own+good+password").status
                == .unauthorized, "locked")
            let evil = try await api.page(.post, "/console/signin", form: "email=admin%40assent.localhost&password=x",
                                          headers: [.origin: "https://evil.example"])
            #expect(evil.status == .forbidden)
        }
    }

    @Test func adminsManageTopicsFormsKeysAndUsersAndEachChangeIsAudited() async throws {
        try await withAPI { api in
            let admin = try await staff(api, .admin)
            let created = try await admin.post("/console/topics", "key=events&title=Events&category=news&notice=We+email+you+about+events.&doi=1")
            #expect(created.status == .seeOther && created.headers[.location] == "/console/topics/events")
            let bad = try await admin.post("/console/topics", "key=Bad+Key&title=&notice=")
            #expect(bad.status == .unprocessableContent && bad.text.contains("key:"))
            #expect(try await admin.post("/console/topics/events", "title=Our+events&category=news&description=Twice+a+year").text.contains("Saved."))
            #expect(try await admin.post("/console/topics/events/notices", "text=Events%2C+second+wording.").text.contains("Notice version 2 is current."))
            #expect(try await api.ledger.store.topic(key: "events")?.title == "Our events")
            let form = try await admin.post("/console/forms", "id=newsletter&title=Stay+in+touch&topic=events&kind=signup&doi=1&origins=https%3A%2F%2Fwww.example.org")
            #expect(form.status == .ok && form.text.contains("/f/newsletter"))
            #expect(try await api.ledger.store.form(id: "newsletter")?.definition.allowedOrigins == ["https://www.example.org"])
            let shown = try await admin.get("/console/forms/newsletter")
            #expect(shown.status == .ok && shown.text.contains("&lt;form method=&quot;post&quot; action=&quot;http://127.0.0.1:8080/f/newsletter&quot;"),
                    "the embed code, escaped for reading")
            let edited = try await admin.post("/console/forms/newsletter", "title=Hear+from+us&topic=events&kind=signup&origins=")
            #expect(edited.status == .ok && edited.text.contains("Saved as version 2."))
            #expect(try await api.ledger.store.form(id: "newsletter")?.definition.doubleOptIn == false, "an unticked box turns it off")
            #expect(try await api.ledger.store.form(id: "newsletter", version: 1)?.definition.title == "Stay in touch")
            let key = try await admin.post("/console/keys", "name=CRM+sync&scope=write")
            let token = try #require(key.text.range(of: "<code class=\"secret\">").map { String(key.text[$0.upperBound...].prefix { $0 != "<" }) })
            #expect(try await api.send(.get, "/api/v1/topics", token: token).status == .ok, "the shown key works")
            let user = try await admin.post("/console/users", "email=new.agent%40example.com&name=New+Agent&role=agent")
            let password = try #require(user.text.range(of: "<code class=\"secret\">").map { String(user.text[$0.upperBound...].prefix { $0 != "<" }) })
            let newcomer = try await StaffBrowser.signIn(api, "new.agent@example.com", password)
            #expect(try await newcomer.get("/console").headers[.location] == "/console/password")
            #expect(try await admin.post("/console/topics/events/retire").text.contains("Retired."))
            let actions = Set(try await api.ledger.store.auditEntries(AuditQuery()).map(\.action))
            #expect(actions.isSuperset(of: ["topic_create", "topic_update", "notice_publish", "topic_retire", "form_create", "key_create", "user_create"]))
        }
    }
}

@Suite struct ConsoleSegmentTests {
    @Test(arguments: StoreKind.available)
    func anAgentSavesASegmentAndSeesItsSizeOverTimeAsAChartWithItsNumbers(_ kind: StoreKind) async throws {
        let clock = TestClock(Date(timeIntervalSince1970: 1_800_000_000))
        try await withAPI(kind, now: { clock.now }) { api in
            try await api.createTopic("events", category: "events", doubleOptIn: false)
            try await api.createTopic("news", doubleOptIn: false)
            for (email, topics) in [("a@example.com", ["events"]), ("b@example.com", ["news"])] {
                let id = try await api.createContact(email)
                _ = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: ["source": "api", "preferences": topics.map { ["topic": $0, "granted": true] }])
            }
            let first = try await staff(api, .agent)
            let list = try await first.get("/console/segments")
            #expect(list.status == .ok && list.text.contains("No segments yet.") && list.text.contains("name=\"category\" value=\"events\""))
            let bad = try await first.post("/console/segments", "id=Bad+Id&name=&topic=events")
            #expect(bad.status == .unprocessableContent && bad.text.contains("id:") && bad.text.contains("name: is required"), "\(bad.text)")
            let saved = try await first.post("/console/segments", "id=event-fans&name=Event+fans&category=events")
            #expect(saved.status == .seeOther && saved.headers[.location] == "/console/segments/event-fans")
            // Tomorrow one more person joins; the scheduler measures again.
            clock.now = clock.now.addingTimeInterval(86_400)
            let id = try await api.createContact("c@example.com")
            _ = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: ["source": "api", "preferences": [["topic": "events", "granted": true]]])
            #expect(await Scheduler(ledger: api.ledger).runOnce().segmentsMeasured == 1)
            let agent = try await staff(api, .agent, "next-day@example.com") // yesterday's session has expired
            let page = try await agent.get("/console/segments/event-fans")
            #expect(page.status == .ok && page.text.contains("topics in events"))
            #expect(page.text.contains("<svg class=\"chart\"") && page.text.contains("role=\"img\"") && page.text.contains("From 1 contacts on 2027-01-15 to 2 on 2027-01-16"))
            #expect(page.text.contains("<tr><td>2027-01-16</td><td>2</td>") && page.text.contains("<tr><td>2027-01-15</td><td>1</td>"), "the numbers behind the chart")
            #expect(!page.text.contains("export.csv"), "agents do not download people's links")
            _ = try await api.send(.patch, "/api/v1/segments/event-fans", json: ["createdSince": "2020-01-01T00:00:00Z"])
            let edited = try await agent.post("/console/segments/event-fans", "name=Everyone&topic=events&topic=news")
            #expect((try await api.send(.get, "/api/v1/segments/event-fans").json["createdSince"] as? String)?.hasPrefix("2020-01-01T00:00:00") == true,
                    "the console form keeps filters it does not show")
            #expect(edited.status == .ok && edited.text.contains("Saved.") && edited.text.contains("granted any of events, news"))
            let measured = try await agent.post("/console/segments/event-fans/measure")
            #expect(measured.text.contains("3 contacts may be sent it today."))
            #expect(try await agent.post("/console/segments/event-fans/delete").status == .forbidden)

            let admin = try await staff(api, .admin)
            let csv = try await admin.get("/console/segments/event-fans/export.csv")
            #expect(csv.status == .ok && csv.headers[.contentType] == "text/csv; charset=utf-8" && csv.text.split(separator: "\r\n").count == 4)
            #expect(try await admin.post("/console/segments/event-fans/delete").headers[.location] == "/console/segments")
            let audit = try await api.ledger.store.auditEntries(AuditQuery(limit: 20)).map(\.action)
            #expect(["segment_create", "segment_update", "segment_measure", "segment_export", "segment_delete"].allSatisfy(audit.contains))
        }
    }
}

@Suite struct ConsoleWebhookTests {
    @Test(arguments: StoreKind.available)
    func anAdminAddsAWebhookSeesItsSecretOnceAndReadsTheDeliveryLog(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            try await api.createTopic("events", doubleOptIn: false)
            let admin = try await staff(api, .admin)
            let refused = try await admin.post("/console/webhooks", "url=http%3A%2F%2F10.0.0.8%2Fhooks&event=consent.changed")
            #expect(refused.status == .unprocessableContent && refused.text.contains("private address"), "\(refused.text)")
            let added = try await admin.post("/console/webhooks", "url=http%3A%2F%2F127.0.0.1%3A9%2Fhooks&event=consent.changed&event=contact.created&private=1&description=CRM")
            #expect(added.status == .ok && added.text.contains("whsec_") && added.text.contains("shown only this once"), "\(added.text)")
            let endpoint = try #require(try await api.ledger.store.webhookEndpoints().first)
            #expect(endpoint.createdBy == "admin@example.com" && endpoint.allowPrivateNetwork && endpoint.description == "CRM")
            let contact = try await api.createContact("jo@example.com")
            _ = try await api.send(.put, "/api/v1/contacts/\(contact)/preferences", json: ["source": "api", "preferences": [["topic": "events", "granted": true]]])
            let list = try await admin.get("/console/webhooks")
            #expect(list.text.contains("http://127.0.0.1:9/hooks") && list.text.contains("<td>2</td><td>0</td>"), "two pending, none failed")
            let page = try await admin.get("/console/webhooks/\(endpoint.id)")
            #expect(page.status == .ok && page.text.contains("consent.changed") && page.text.contains("contact.created") && !page.text.contains("whsec_"))
            let delivery = try #require(try await api.ledger.store.webhookDeliveries(WebhookDeliveryQuery(endpointID: endpoint.id)).first)
            let detail = try await admin.get("/console/webhooks/\(endpoint.id)/deliveries/\(delivery.id.uuidString.lowercased())")
            #expect(detail.status == .ok && detail.text.contains("&quot;type&quot; : &quot;consent.changed&quot;") && detail.text.contains("Not attempted yet."), "\(detail.text)")
            let disabled = try await admin.post("/console/webhooks/\(endpoint.id)/enabled", "enabled=0")
            #expect(disabled.text.contains("Disabled: new messages wait") && disabled.text.contains("disabled: new messages wait"))
            let replayed = try await admin.post("/console/webhooks/\(endpoint.id)/replay", "since=2020-01-01")
            #expect(replayed.text.contains("2 messages since 2020-01-01 will be sent again."))
            #expect(try await admin.post("/console/webhooks/\(endpoint.id)/replay", "since=yesterday").status == .unprocessableContent)
            let auditor = try await staff(api, .auditor)
            #expect(try await auditor.get("/console/webhooks/\(endpoint.id)").status == .ok, "auditors read the log")
            #expect(try await auditor.post("/console/webhooks/\(endpoint.id)/delete").status == .forbidden)
            #expect(try await admin.post("/console/webhooks/\(endpoint.id)/delete").headers[.location] == "/console/webhooks")
            #expect(try await api.ledger.store.webhookEndpoints().isEmpty)
        }
    }
}
