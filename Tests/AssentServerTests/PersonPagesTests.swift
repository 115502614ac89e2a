import AssentCore
import AssentServer
import AssentStore
import AssentTestSupport
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

/// Forms, the preference centre and one-click unsubscribe over HTTP, on every store.
@Suite struct FormAPITests {
    @Test(arguments: StoreKind.available)
    func formsAreCreatedVersionedAndRetiredThroughTheAPI(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            try await api.createTopic("events")
            try await api.createTopic("news")
            let created = try await api.send(.post, "/api/v1/forms", json: [
                "id": "newsletter", "title": "Stay in touch", "topics": ["events", ["key": "news", "noticeVersion": 1]],
                "allowedOrigins": ["https://www.example.org"], "askName": true,
            ])
            #expect(created.status == .created, "\(created.text)")
            #expect(created.headers[.location] == "/api/v1/forms/newsletter")
            #expect(created.json["version"] as? Int == 1 && created.json["kind"] as? String == "signup" && created.json["doubleOptIn"] as? Bool == true)
            #expect((created.json["topics"] as? [[String: Any]])?.map { $0["noticeVersion"] as? Int } == [1, 1])
            #expect(created.json["url"] as? String == "http://127.0.0.1:8080/f/newsletter")
            let patched = try await api.send(.patch, "/api/v1/forms/newsletter", json: ["title": "Hear from us", "successUrl": "https://www.example.org/thanks"])
            #expect(patched.status == .ok && patched.json["version"] as? Int == 2, "\(patched.text)")
            let v1 = try await api.send(.get, "/api/v1/forms/newsletter/versions/1")
            #expect(v1.json["title"] as? String == "Stay in touch" && v1.json["successUrl"] == nil)
            #expect(try await api.send(.get, "/api/v1/forms/newsletter/versions/3").status == .notFound)
            #expect(try await api.send(.get, "/api/v1/forms").items.map { $0["id"] as? String } == ["newsletter"])
            let retired = try await api.send(.delete, "/api/v1/forms/newsletter")
            #expect(retired.json["status"] as? String == "retired")
            #expect(try await api.send(.get, "/api/v1/forms").items.isEmpty)
            #expect(try await api.send(.get, "/api/v1/forms?includeRetired=true").items.count == 1)
            #expect(try await api.send(.get, "/api/v1/forms/newsletter/embed").status == .gone)
        }
    }

    @Test func badFormsAreRefusedNamingTheField() async throws {
        try await withAPI { api in
            try await api.createTopic("events")
            let bad = try await api.send(.post, "/api/v1/forms", json: ["id": "x", "title": "T", "topics": ["nope"], "kind": "survey"])
            #expect(bad.status == .unprocessableContent && bad.problemFields == ["kind"])
            let unknownTopic = try await api.send(.post, "/api/v1/forms", json: ["id": "x", "title": "T", "topics": ["nope"]])
            #expect(unknownTopic.status == .unprocessableContent && unknownTopic.problemFields == ["topics[0].key"])
            let extra = try await api.send(.post, "/api/v1/forms", json: ["id": "x", "title": "T", "topics": [["key": "events", "colour": "red"]]])
            #expect(extra.status == .badRequest && extra.problemFields == ["topics[0].colour"])
            let origin = try await api.send(.post, "/api/v1/forms", json: ["id": "x", "title": "T", "topics": ["events"], "allowedOrigins": ["example.org"]])
            #expect(origin.status == .unprocessableContent && origin.problemFields == ["allowedOrigins[0]"])
            #expect(try await api.send(.get, "/api/v1/forms?includeRetired=true").items.isEmpty)
            let reader = try await api.newKey(.read)
            #expect(try await api.send(.post, "/api/v1/forms", json: ["id": "x", "title": "T", "topics": ["events"]], token: reader).status == .forbidden)
        }
    }

    @Test func theEmbedSnippetPostsHereWithNoticesAndAHoneypot() async throws {
        let site = SiteConfiguration(publicURL: { "https://consent.example.org" }, organisation: "Example Ltd")
        try await withAPI(site: site) { api in
            try await api.createTopic("events")
            _ = try await api.send(.post, "/api/v1/forms", json: ["id": "newsletter", "title": "Stay <in> touch", "topics": ["events"]])
            let snippet = try await api.send(.get, "/api/v1/forms/newsletter/embed")
            #expect(snippet.status == .ok && snippet.headers[.contentType] == "text/html; charset=utf-8")
            let html = snippet.text
            #expect(html.contains("<form method=\"post\" action=\"https://consent.example.org/f/newsletter\""))
            #expect(html.contains("<input type=\"hidden\" name=\"v\" value=\"1\">"))
            #expect(html.contains("name=\"website\" tabindex=\"-1\""), "the honeypot")
            #expect(html.contains("style=\"position:absolute;left:-10000px"), "hidden without our stylesheet")
            #expect(html.contains("We will email you about events."), "the notice printed")
            #expect(html.contains("Stay &lt;in&gt; touch") && !html.contains("<in>"), "escaped")
            #expect(html.contains("<label for=\"assent-email\">Email address</label>"))
        }
    }
}

@Suite struct FormPageTests {
    func setUp(_ api: APIHarness, _ extra: [String: Any] = [:]) async throws {
        try await api.createTopic("events", doubleOptIn: false)
        try await api.createTopic("news", doubleOptIn: false)
        var body: [String: Any] = ["id": "newsletter", "title": "Stay in touch", "topics": ["events", "news"], "doubleOptIn": false,
                                   "allowedOrigins": ["https://www.example.org"], "askName": true]
        body.merge(extra) { $1 }
        let r = try await api.send(.post, "/api/v1/forms", json: body)
        #expect(r.status == .created, "\(r.text)")
    }

    func contactCount(_ api: APIHarness) async throws -> Int {
        try await api.ledger.store.contacts(after: nil, limit: 100).count
    }

    @Test(arguments: StoreKind.available)
    func theHostedPageIsAccessibleAndFramedOnlyByAllowedOrigins(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            try await setUp(api)
            let page = try await api.page(.get, "/f/newsletter", headers: [.acceptLanguage: "de-CH, en;q=0.5"])
            #expect(page.status == .ok)
            let csp = try #require(page.headers[.contentSecurityPolicy])
            #expect(csp.contains("frame-ancestors 'self' https://www.example.org") && csp.contains("default-src 'none'") && !csp.contains("script"))
            #expect(page.headers[.xContentTypeOptions] == "nosniff")
            let html = page.text
            #expect(html.contains("<html lang=\"de\">") && html.contains("E-Mail-Adresse"))
            #expect(html.contains("<fieldset id=\"assent-topics\">") && html.contains("<legend>"))
            #expect(html.contains("<label for=\"assent-topic-events\">Events</label>"))
            #expect(html.contains("aria-describedby=\"assent-notice-events\""))
            #expect(!html.contains("<script"))
            #expect(try await api.page(.get, "/f/nope").status == .notFound)
            #expect(try await api.page(.get, "/f/Not%20A%20Slug").status == .notFound)
        }
    }

    @Test(arguments: StoreKind.available)
    func aSignupRecordsSourceFormWithTheFormAndNoticeVersions(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            try await setUp(api)
            let r = try await api.page(.post, "/f/newsletter", form: "v=1&email=ann%40example.com&name=Ann+Lee&website=&topic=news",
                                       headers: [.origin: "https://www.example.org", .userAgent: "Browser/1"])
            #expect(r.status == .ok && r.text.contains("Thank you"), "\(r.text)")
            let contact = try #require(try await api.ledger.store.contact(email: EmailAddress("ann@example.com")))
            #expect(contact.name == "Ann Lee")
            let timeline = try await api.send(.get, "/api/v1/contacts/\(contact.id.uuidString.lowercased())/timeline").items
            #expect(timeline.count == 1)
            let event = try #require(timeline.first)
            #expect(event["source"] as? String == "form" && event["topic"] as? String == "news" && event["action"] as? String == "granted")
            #expect(event["noticeVersion"] as? Int == 1)
            let evidence = event["evidence"] as? [String: Any]
            #expect(evidence?["formId"] as? String == "newsletter" && evidence?["formVersion"] as? Int == 1)
            #expect(evidence?["userAgent"] as? String == "Browser/1")
            #expect((event["actor"] as? [String: Any])?["kind"] as? String == "subject")
        }
    }

    @Test(arguments: StoreKind.available)
    func aSuccessUrlRedirectsAndIsAllowedAsAFormAction(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            try await setUp(api, ["successUrl": "https://www.example.org/thanks"])
            #expect(try await api.page(.get, "/f/newsletter").headers[.contentSecurityPolicy]?.contains("form-action 'self' https://www.example.org;") == true)
            let r = try await api.page(.post, "/f/newsletter", form: "email=bob%40example.com&topic=events")
            #expect(r.status == .seeOther && r.headers[.location] == "https://www.example.org/thanks")
            #expect(try await api.send(.get, "/api/v1/check?email=bob%40example.com&topic=events").json["allowed"] as? Bool == true)
        }
    }

    @Test(arguments: StoreKind.available)
    func aBotFillingTheHoneypotGetsTheNormalAnswerAndChangesNothing(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            try await setUp(api)
            let bot = try await api.page(.post, "/f/newsletter", form: "email=bot%40example.com&topic=events&website=http%3A%2F%2Fspam.example")
            let person = try await api.page(.post, "/f/newsletter", form: "email=ann%40example.com&topic=events&website=")
            #expect(bot.status == person.status && bot.text == person.text)
            // With double opt-in the real answer is "check your inbox"; the bot's must be the same.
            _ = try await api.send(.patch, "/api/v1/forms/newsletter", json: ["doubleOptIn": true])
            let bot2 = try await api.page(.post, "/f/newsletter", form: "email=bot%40example.com&topic=news&website=x")
            let person2 = try await api.page(.post, "/f/newsletter", form: "email=bob%40example.com&topic=news&website=")
            #expect(bot2.text == person2.text && person2.text.contains("check your inbox"))
            #expect(try await api.ledger.store.contact(email: EmailAddress("bot@example.com")) == nil)
            #expect(try await contactCount(api) == 2)
            let json = try await api.page(.post, "/f/newsletter", form: #"{"email":"bot2@example.com","topics":["events"],"website":"x"}"#,
                                          headers: [.contentType: "application/json"])
            #expect(json.status == .ok && json.json["status"] as? String == "ok" && json.json["confirmationRequired"] as? Bool == true)
            #expect(try await contactCount(api) == 2)
        }
    }

    @Test(arguments: StoreKind.available)
    func badPostsShowTheFormAgainWithErrorsAndChangeNothing(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            try await setUp(api)
            let r = try await api.page(.post, "/f/newsletter", form: "email=not-an-email&name=Ann&website=")
            #expect(r.status == .unprocessableContent)
            let html = r.text
            #expect(html.contains("role=\"alert\"") && html.contains("href=\"#assent-email\"") && html.contains("href=\"#assent-topics\""))
            #expect(html.contains("Enter an email address like name@example.com.") && html.contains("Please choose at least one topic."))
            #expect(html.contains("value=\"not-an-email\"") && html.contains("aria-invalid=\"true\""), "what was typed is kept")
            let unknown = try await api.page(.post, "/f/newsletter", form: "email=ann%40example.com&topic=secret")
            #expect(unknown.status == .unprocessableContent && unknown.text.contains("not offered by this form"))
            let badVersion = try await api.page(.post, "/f/newsletter", form: "v=abc&email=ann%40example.com&topic=events")
            #expect(badVersion.status == .badRequest)
            let json = try await api.page(.post, "/f/newsletter", form: #"{"email":"ann@example.com","topics":[],"extra":1}"#,
                                          headers: [.contentType: "application/json"])
            #expect(json.status == .badRequest && json.problemFields == ["extra"])
            let tooBig = try await api.page(.post, "/f/newsletter", form: "email=" + String(repeating: "a", count: 20_000))
            #expect(tooBig.status == .contentTooLarge)
            #expect(try await contactCount(api) == 0)
        }
    }

    @Test(arguments: StoreKind.available)
    func postsFromOriginsNotAllowedAreRefused(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            try await setUp(api)
            let evil = try await api.page(.post, "/f/newsletter", form: "email=ann%40example.com&topic=events", headers: [.origin: "https://evil.example"])
            #expect(evil.status == .forbidden)
            let preflightEvil = try await api.page(.options, "/f/newsletter", headers: [.origin: "https://evil.example", .accessControlRequestMethod: "POST"])
            #expect(preflightEvil.status == .forbidden && preflightEvil.headers[.accessControlAllowOrigin] == nil)
            #expect(try await contactCount(api) == 0)
            let preflight = try await api.page(.options, "/f/newsletter", headers: [.origin: "https://www.example.org", .accessControlRequestMethod: "POST"])
            #expect(preflight.status == .noContent && preflight.headers[.accessControlAllowOrigin] == "https://www.example.org")
            #expect(preflight.headers[.accessControlAllowHeaders] == "Content-Type")
            let json = try await api.page(.post, "/f/newsletter", form: #"{"email":"ann@example.com","topics":["events"]}"#,
                                          headers: [.contentType: "application/json", .origin: "https://www.example.org"])
            #expect(json.status == .ok && json.headers[.accessControlAllowOrigin] == "https://www.example.org", "\(json.text)")
            #expect(json.json["confirmationRequired"] as? Bool == false)
            let invalid = try await api.page(.post, "/f/newsletter", form: #"{"email":"x","topics":["events"]}"#,
                                             headers: [.contentType: "application/json", .origin: "https://www.example.org"])
            #expect(invalid.status == .unprocessableContent && invalid.problemFields == ["email"])
            #expect(invalid.headers[.accessControlAllowOrigin] == "https://www.example.org", "a script can read why")
            // Same-origin posts (the hosted page) are always allowed.
            let own = try await api.page(.post, "/f/newsletter", form: "email=bob%40example.com&topic=events", headers: [.origin: "http://127.0.0.1:8080"])
            #expect(own.status == .ok)
            // "Origin: null" (privacy settings, sandboxed frames) is judged like no Origin at all.
            let null = try await api.page(.post, "/f/newsletter", form: "email=cy%40example.com&topic=events", headers: [.origin: "null"])
            #expect(null.status == .ok)
        }
    }

    @Test func postsArePerAddressRateLimited() async throws {
        try await withAPI(site: SiteConfiguration(formPostsPerMinute: 3)) { api in
            try await setUp(api)
            for i in 0..<3 {
                #expect(try await api.page(.post, "/f/newsletter", form: "email=p\(i)%40example.com&topic=events").status == .ok)
            }
            let limited = try await api.page(.post, "/f/newsletter", form: "email=p9%40example.com&topic=events")
            #expect(limited.status == .tooManyRequests && Int(limited.headers[.retryAfter] ?? "") ?? 0 >= 1)
            #expect(try await api.ledger.store.contact(email: EmailAddress("p9@example.com")) == nil)
        }
    }

    @Test(arguments: StoreKind.available)
    func aDoubleOptInFormSaysCheckYourInbox(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            try await setUp(api, ["doubleOptIn": true])
            let r = try await api.page(.post, "/f/newsletter", form: "email=ann%40example.com&topic=events&topic=news")
            #expect(r.status == .ok && r.text.contains("check your inbox"))
            #expect(try await api.send(.get, "/api/v1/check?email=ann%40example.com&topic=events").json["reason"] as? String == "pending")
            #expect(try await api.ledger.store.outboxItems(status: .pending, limit: 10).map(\.kind) == [ConfirmationEmail.kind])
        }
    }

    @Test(arguments: StoreKind.available)
    func anOldPageCannotBringBackARemovedTopicOrALooserRule(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            try await setUp(api) // version 1: no double opt-in, events and news
            _ = try await api.send(.patch, "/api/v1/forms/newsletter", json: ["doubleOptIn": true, "topics": ["events"]])
            let old = try await api.page(.post, "/f/newsletter", form: "v=1&email=ann%40example.com&topic=events")
            #expect(old.status == .ok)
            let check = try await api.send(.get, "/api/v1/check?email=ann%40example.com&topic=events").json
            #expect(check["reason"] as? String == "pending", "version 2's double opt-in applies to a post from a version-1 page")
            let removed = try await api.page(.post, "/f/newsletter", form: "v=1&email=bob%40example.com&topic=news")
            #expect(removed.status == .unprocessableContent && removed.text.contains("not offered by this form"))
            let id = try #require(try await api.ledger.store.contact(email: EmailAddress("ann@example.com"))).id.uuidString.lowercased()
            let evidence = try await api.send(.get, "/api/v1/contacts/\(id)/timeline").items.first?["evidence"] as? [String: Any]
            #expect(evidence?["formVersion"] as? Int == 1, "the version the person saw is still the evidence")
        }
    }

    @Test(arguments: StoreKind.available)
    func aRetiredFormAnswersGone(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            try await setUp(api)
            _ = try await api.send(.delete, "/api/v1/forms/newsletter")
            #expect(try await api.page(.get, "/f/newsletter").status == .gone)
            let post = try await api.page(.post, "/f/newsletter", form: "email=ann%40example.com&topic=events")
            #expect(post.status == .gone && post.text.contains("no longer available"))
            #expect(try await contactCount(api) == 0)
        }
    }

    @Test(arguments: StoreKind.available)
    func aPreferencesFormOpenedFromTheirLinkShowsAndChangesTheirState(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            try await setUp(api, ["id": "prefs", "kind": "preferences"])
            let id = try await api.createContact("ann@example.com")
            _ = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: ["source": "api", "preferences": [["topic": "events", "granted": true]]])
            let links = try await api.send(.get, "/api/v1/contacts/\(id)/links")
            let centre = try #require(links.json["preferenceCentreUrl"] as? String)
            let token = String(centre.split(separator: "/").last!)
            let page = try await api.page(.get, "/f/prefs?c=\(token)")
            #expect(page.status == .ok && page.text.contains("id=\"assent-topic-events\" aria-describedby=\"assent-notice-events\" checked"))
            #expect(!page.text.contains("name=\"email\""), "a known person is not asked for an address")
            let saved = try await api.page(.post, "/f/prefs", form: "v=1&c=\(token)&topic=news&website=")
            #expect(saved.status == .ok, "\(saved.text)")
            let timeline = try await api.send(.get, "/api/v1/contacts/\(id)/timeline").items
            #expect(timeline.prefix(2).map { "\($0["topic"]!):\($0["action"]!):\($0["source"]!)" }.sorted() == ["events:withdrawn:form", "news:granted:form"])
            #expect(try await api.page(.get, "/f/prefs?c=forged").status == .notFound)
        }
    }
}

@Suite struct PreferenceCentreTests {
    func contactWithLinks(_ api: APIHarness, topic: String? = nil) async throws -> (id: String, centre: String, unsubscribe: String) {
        try await api.createTopic("events", category: "Events")
        try await api.createTopic("news", category: "Newsletters")
        try await api.createTopic("offers", category: "Newsletters")
        let id = try await api.createContact("ann@example.com")
        _ = try await api.send(.put, "/api/v1/contacts/\(id)/preferences",
                               json: ["source": "api", "preferences": [["topic": "events", "granted": true], ["topic": "news", "granted": true]]])
        let links = try await api.send(.get, "/api/v1/contacts/\(id)/links" + (topic.map { "?topic=\($0)" } ?? ""))
        #expect(links.status == .ok, "\(links.text)")
        func path(_ key: String) -> String { URL(string: links.json[key] as? String ?? "")!.path }
        return (id, path("preferenceCentreUrl"), path("unsubscribeUrl"))
    }

    @Test(arguments: StoreKind.available)
    func theCentreListsTopicsByCategoryWithStateAndNotice(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            let (_, centre, _) = try await contactWithLinks(api)
            let page = try await api.page(.get, centre)
            #expect(page.status == .ok)
            let html = page.text
            #expect(html.contains("ann@example.com"))
            let events = try #require(html.range(of: "<legend>Events</legend>")), letters = try #require(html.range(of: "<legend>Newsletters</legend>"))
            #expect(events.lowerBound < letters.lowerBound)
            #expect(html.contains("id=\"topic-events\" aria-describedby=\"state-events notice-events\" checked"))
            #expect(html.contains("id=\"topic-offers\" aria-describedby=\"state-offers notice-offers\">"))
            #expect(html.contains("<input type=\"hidden\" name=\"shown\" value=\"offers:1\">"))
            #expect(html.contains("We will email you about offers."))
            #expect(page.headers[.contentSecurityPolicy]?.contains("frame-ancestors 'none'") == true)
            #expect(page.headers[.cacheControl] == "no-store")
        }
    }

    @Test(arguments: StoreKind.available)
    func savingRecordsSourcePreferenceCentreAndUnsubscribeAllWithdrawsEverything(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            let (id, centre, _) = try await contactWithLinks(api)
            let saved = try await api.page(.post, centre, form: "shown=events%3A1&shown=news%3A1&shown=offers%3A1&topic=news&topic=offers&action=save")
            #expect(saved.status == .ok && saved.text.contains("Your preferences are saved."), "\(saved.text)")
            var timeline = try await api.send(.get, "/api/v1/contacts/\(id)/timeline").items
            // Offers asks for double opt-in: the link may have been forwarded, so a new yes is confirmed by email.
            #expect(timeline.prefix(2).map { "\($0["topic"]!):\($0["action"]!):\($0["source"]!):\($0["noticeVersion"]!)" }.sorted()
                == ["events:withdrawn:preference_centre:1", "offers:requested:preference_centre:1"])
            #expect(saved.text.contains("We sent you an email to confirm the new topics."))
            let again = try await api.page(.post, centre, form: "shown=events%3A1&shown=news%3A1&shown=offers%3A1&topic=news&topic=offers&action=save")
            #expect(again.text.contains("Nothing changed."))
            let all = try await api.page(.post, centre, form: "action=unsubscribe-all")
            // offers (pending), news (granted) are withdrawn; events already was.
            #expect(all.status == .ok && all.text.contains("You are unsubscribed from everything."))
            timeline = try await api.send(.get, "/api/v1/contacts/\(id)/timeline").items
            #expect(timeline.prefix(2).allSatisfy { $0["action"] as? String == "withdrawn" && $0["source"] as? String == "preference_centre" })
            for topic in ["events", "news", "offers"] {
                #expect(try await api.send(.get, "/api/v1/check?email=ann%40example.com&topic=\(topic)").json["allowed"] as? Bool == false)
            }
            let bad = try await api.page(.post, centre, form: "shown=events%3Aone&topic=events&action=save")
            #expect(bad.status == .unprocessableContent)
        }
    }

    @Test(arguments: StoreKind.available)
    func forgedAndRotatedLinksAreRefused(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            let (id, centre, unsubscribe) = try await contactWithLinks(api)
            #expect(try await api.page(.get, centre + "x").status == .notFound)
            #expect(try await api.page(.get, "/p/" + unsubscribe.dropFirst(3)).status == .notFound, "an unsubscribe token is not a centre token")
            let rotated = try await api.send(.post, "/api/v1/contacts/\(id)/links/rotate")
            #expect(rotated.status == .ok && URL(string: rotated.json["preferenceCentreUrl"] as? String ?? "")?.path != centre)
            let old = try await api.page(.get, centre)
            #expect(old.status == .notFound && old.text.contains("This link is not valid"))
            #expect(try await api.page(.post, unsubscribe, form: "List-Unsubscribe=One-Click").status == .notFound)
            #expect(try await api.send(.get, "/api/v1/check?email=ann%40example.com&topic=events").json["allowed"] as? Bool == true)
        }
    }

    @Test(arguments: StoreKind.available)
    func oneClickUnsubscribeWithdrawsOnPostOnly(_ kind: StoreKind) async throws {
        try await withAPI(kind) { api in
            let (id, _, unsubscribe) = try await contactWithLinks(api, topic: "news")
            let shown = try await api.page(.get, unsubscribe)
            #expect(shown.status == .ok && shown.text.contains("<strong>News</strong>") && shown.text.contains("<form method=\"post\" action=\"\(unsubscribe)\">"))
            #expect(try await api.send(.get, "/api/v1/check?email=ann%40example.com&topic=news").json["allowed"] as? Bool == true, "a GET changes nothing")
            // As a mail client sends it (RFC 8058).
            let done = try await api.page(.post, unsubscribe, form: "List-Unsubscribe=One-Click", headers: [.userAgent: "MailProvider/1"])
            #expect(done.status == .ok && done.text.contains("You are unsubscribed"))
            #expect(try await api.send(.get, "/api/v1/check?email=ann%40example.com&topic=news").json["reason"] as? String == "withdrawn")
            #expect(try await api.send(.get, "/api/v1/check?email=ann%40example.com&topic=events").json["allowed"] as? Bool == true, "other topics stay")
            let event = try #require(try await api.send(.get, "/api/v1/contacts/\(id)/timeline").items.first)
            #expect(event["source"] as? String == "one_click_unsubscribe" && (event["actor"] as? [String: Any])?["kind"] as? String == "subject")
            let twice = try await api.page(.post, unsubscribe, form: "List-Unsubscribe=One-Click")
            #expect(twice.status == .ok && twice.text.contains("nothing changed"))
            #expect(try await api.send(.get, "/api/v1/contacts/\(id)/timeline").items.count == 3)
        }
    }

    @Test func validUnsubscribesAreNeverRateLimitedButGuessingIs() async throws {
        // A mail provider's servers send many unsubscribes from one address.
        try await withAPI(site: SiteConfiguration(linkPostsPerMinute: 2)) { api in
            try await api.createTopic("news", doubleOptIn: false)
            var links: [String] = []
            for i in 0..<5 {
                let id = try await api.createContact("p\(i)@example.com")
                _ = try await api.send(.put, "/api/v1/contacts/\(id)/preferences", json: ["source": "api", "preferences": [["topic": "news", "granted": true]]])
                links.append(URL(string: try await api.send(.get, "/api/v1/contacts/\(id)/links").json["unsubscribeUrl"] as? String ?? "")!.path)
            }
            for link in links {
                let r = try await api.page(.post, link, form: "List-Unsubscribe=One-Click", headers: [.userAgent: "Provider\tBot/1"])
                #expect(r.status == .ok && r.text.contains("You are unsubscribed"), "a tab in the user agent is evidence, not an error: \(r.status) \(r.text)")
            }
            for i in 0..<5 {
                #expect(try await api.send(.get, "/api/v1/check?email=p\(i)%40example.com&topic=news").json["reason"] as? String == "withdrawn")
            }
            let statuses = try await (0..<3).asyncMap { _ in try await api.page(.post, "/u/forged-token", form: "List-Unsubscribe=One-Click").status }
            #expect(statuses == [.notFound, .notFound, .tooManyRequests])
        }
    }

    @Test func theLinksAPIGivesRFC8058HeadersAndNeedsTheWriteScope() async throws {
        try await withAPI(site: SiteConfiguration(publicURL: { "https://consent.example.org/" })) { api in
            try await api.createTopic("news")
            let id = try await api.createContact("ann@example.com")
            let links = try await api.send(.get, "/api/v1/contacts/\(id)/links?topic=news")
            let url = try #require(links.json["unsubscribeUrl"] as? String)
            #expect(url.hasPrefix("https://consent.example.org/u/"))
            let headers = links.json["headers"] as? [String: String]
            #expect(headers?["List-Unsubscribe"] == "<\(url)>" && headers?["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click")
            #expect(links.json["topic"] as? String == "news")
            #expect(try await api.send(.get, "/api/v1/contacts/\(id)/links?topic=nope").problemFields == ["topic"])
            let reader = try await api.newKey(.read)
            #expect(try await api.send(.get, "/api/v1/contacts/\(id)/links", token: reader).status == .forbidden)
        }
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for element in self { out.append(try await transform(element)) }
        return out
    }
}
